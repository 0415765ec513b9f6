"""Checkpoints in the safetensors format: weights as tensors, everything else as JSON metadata.

Tensors: the model's state_dict under its own names ("0.weight", "3.running_mean", ...), so
`safetensors.torch.load_file` gives a dict that torch.nn.Module.load_state_dict takes (pass
strict=False, or drop the "optimizer." entries); the optimizer's state as "optimizer.<name>"
(flat arrays over all parameters, in parameter order).
Metadata (strings): "format" = "fastnet", "fastnet_version", "spec" (the network, to_spec's JSON,
with input_shape), "compile" (batch size, loss, optimizer type and arguments, dtype, seed, device),
"step" (optimizer steps taken), "epoch" (epochs completed by fit), "shuffle_rng" (the state of the
generator that orders the next epoch's batches), "schedule" (the learning-rate schedule, or null), "augment" (fit's augmentation, or null),
"info" (model.info: free-form JSON, e.g. the input normalisation `fastnet train` used).

No pickle: safetensors holds only raw arrays and strings. Saving is atomic (fastnet/atomic.py):
a crash mid-save leaves the previous file whole.
"""

import json
import os

import numpy as np

from . import schedules
from ._version import __version__
from .data import augment as augmentation
from .atomic import atomic_write
from .errors import CheckpointError, FastnetError
from .optim import SGD, Adam, AdamW
from .spec import from_spec, to_spec

OPTIMIZERS = {cls.__name__: cls for cls in (SGD, Adam, AdamW)}
OPTIMIZER_PREFIX = "optimizer."


def save(model, path):
    """Write the model (weights, buffers, optimizer state, spec, progress) to `path` atomically."""
    from safetensors.numpy import save as to_bytes

    tensors = {name: np.ascontiguousarray(array) for name, array in model.state_dict().items()}
    for name, array in model.opt_state.items():
        tensors[OPTIMIZER_PREFIX + name] = model.k.to_host(array)
    spec = to_spec(model.network)
    spec["input_shape"] = list(model.input_shape)
    optimizer = model.optimizer
    metadata = {
        "format": "fastnet",
        "fastnet_version": __version__,
        "spec": json.dumps(spec),
        "compile": json.dumps({
            "batch_size": model.batch_size, "loss": model.loss_fn.name, "dtype": model.dtype.name,
            "seed": model.seed, "device": model.device,
            "optimizer": {"type": type(optimizer).__name__, **_plain(vars(optimizer))}}),
        "step": str(model.step),
        "epoch": str(model.epoch),
        "shuffle_rng": json.dumps(model._shuffle_rng.bit_generator.state),
        "schedule": json.dumps(None if model.schedule is None else model.schedule.config()),
        "augment": json.dumps(None if model.augment is None else model.augment.config()),
        "info": json.dumps(model.info),
    }
    data = to_bytes(tensors, metadata=metadata)
    with atomic_write(path) as f:
        f.write(data)


def load(path, batch_size=None, device=None):
    """A compiled model from a checkpoint, without the code that built it.
    batch_size / device override the saved ones (e.g. a larger batch for evaluation)."""
    tensors, metadata = _read(path)
    name = os.fspath(path)
    try:
        spec = json.loads(metadata["spec"])
        settings = json.loads(metadata["compile"])
        step, epoch = int(metadata["step"]), int(metadata["epoch"])
        rng_state = json.loads(metadata["shuffle_rng"])
        schedule = schedules.from_config(json.loads(metadata.get("schedule", "null")))
        info = json.loads(metadata.get("info", "{}"))
        augment = augmentation.from_config(json.loads(metadata.get("augment", "null")))
        opt_settings = dict(settings["optimizer"])
        optimizer = OPTIMIZERS[opt_settings.pop("type")](**opt_settings)
    except (KeyError, ValueError, TypeError) as err:
        raise CheckpointError(f"{name}: the checkpoint's metadata is incomplete or malformed "
                              f"({type(err).__name__}: {err})") from None
    try:
        network = from_spec(spec)
        model = network.compile(batch_size=batch_size or settings["batch_size"], loss=settings["loss"],
                                optimizer=optimizer, device=device or settings["device"],
                                seed=settings["seed"], dtype=settings["dtype"])
    except FastnetError as err:
        raise CheckpointError(f"{name}: the saved network cannot be rebuilt: {err}") from None
    weights = {k: v for k, v in tensors.items() if not k.startswith(OPTIMIZER_PREFIX)}
    model.load_state_dict(weights)      # names, shapes and finiteness checked: CheckpointError
    for state_name, buffer in model.opt_state.items():
        saved = tensors.get(OPTIMIZER_PREFIX + state_name)
        if saved is None or saved.shape != buffer.shape:
            raise CheckpointError(f"{name}: optimizer state {state_name!r} is missing or has the "
                                  f"wrong shape")
        model.k.copy_in(buffer, saved)
    model.step, model.epoch = step, epoch
    model._shuffle_rng.bit_generator.state = rng_state
    model.schedule, model.augment, model.info = schedule, augment, info
    return model


def _read(path):
    """(tensors, metadata) of a safetensors file; anything wrong with it is a CheckpointError."""
    from safetensors import safe_open

    name = os.fspath(path)
    if not os.path.isfile(name):
        raise CheckpointError(f"{name}: no such checkpoint file")
    try:
        with safe_open(name, framework="numpy") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as err:  # safetensors raises its own error types for every malformed file
        raise CheckpointError(f"{name}: not a readable safetensors checkpoint (truncated or "
                              f"corrupt?): {err}") from None
    if metadata.get("format") != "fastnet":
        raise CheckpointError(f"{name}: a safetensors file, but not a fastnet checkpoint (no "
                              f"format=fastnet metadata); load its weights with load_state_dict")
    return tensors, metadata


def _plain(values):
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
