"""A compiled model rebuilt from a checkpoint (fastnet/checkpoint.py's format), without the code
that built it: the network from the spec it carries, compiled with the saved settings, then the
weights, optimizer state and progress put back. `fastnet.load` is `load`."""

import json
import os

from . import algorithms, checkpoint, schedules
from .data import augment as augmentation
from .errors import CheckpointError, FastnetError
from .optim import SGD, Adam, AdamW
from .spec import from_spec

OPTIMIZERS = {cls.__name__: cls for cls in (SGD, Adam, AdamW)}


def load(path, batch_size=None, device=None):
    """A compiled model from a checkpoint, without the code that built it.
    batch_size / device override the saved ones (e.g. a larger batch for evaluation)."""
    tensors, metadata = checkpoint.read(path)
    name = os.fspath(path)
    try:
        spec = json.loads(metadata["spec"])
        settings = json.loads(metadata["compile"])
        step, epoch = int(metadata["step"]), int(metadata["epoch"])
        rng_state = json.loads(metadata["shuffle_rng"])
        schedule = schedules.from_config(json.loads(metadata.get("schedule", "null")))
        info = json.loads(metadata.get("info", "{}"))
        augment = augmentation.from_config(json.loads(metadata.get("augment", "null")))
        # what each convolution ran, so a resume runs the same arithmetic (im2col before it was saved)
        conv_algorithm = settings.get("conv_algorithms", "im2col")
        algorithms.check_request(conv_algorithm)
        opt_settings = dict(settings["optimizer"])
        optimizer = OPTIMIZERS[opt_settings.pop("type")](**opt_settings)
    except (KeyError, ValueError, TypeError, FastnetError) as err:
        raise CheckpointError(f"{name}: the checkpoint's metadata is incomplete or malformed "
                              f"({type(err).__name__}: {err})") from None
    try:
        network = from_spec(spec)
        model = network.compile(batch_size=batch_size or settings["batch_size"], loss=settings["loss"],
                                optimizer=optimizer, device=device or settings["device"],
                                seed=settings["seed"], dtype=settings["dtype"], conv_algorithm=conv_algorithm)
    except FastnetError as err:
        raise CheckpointError(f"{name}: the saved network cannot be rebuilt: {err}") from None
    weights = {k: v for k, v in tensors.items() if not k.startswith(checkpoint.OPTIMIZER_PREFIX)}
    model.load_state_dict(weights)      # names, shapes and finiteness checked: CheckpointError
    for state_name, buffer in model.opt_state.items():
        saved = tensors.get(checkpoint.OPTIMIZER_PREFIX + state_name)
        if saved is None or saved.shape != buffer.shape:
            raise CheckpointError(f"{name}: optimizer state {state_name!r} is missing or has the "
                                  f"wrong shape")
        model.k.copy_in(buffer, saved)
    model.step, model.epoch = step, epoch
    model._shuffle_rng.bit_generator.state = rng_state
    model.schedule, model.augment, model.info = schedule, augment, info
    return model
