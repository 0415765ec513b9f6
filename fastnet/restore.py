"""A compiled model rebuilt from a checkpoint (fastnet/checkpoint.py's format), without the code
that built it: the network from the spec it carries, compiled with the saved settings, then the
weights, optimizer state and progress put back. `fastnet.load` is `load`."""

import json
import math
import os

from . import algorithms, checkpoint, schedules
from .data import augment as augmentation
from .errors import CheckpointError, FastnetError
from .nodes import as_shape
from .optim import SGD, Adam, AdamW
from .spec import from_spec

OPTIMIZERS = {cls.__name__: cls for cls in (SGD, Adam, AdamW)}

# The most memory a checkpoint may make `load` allocate, in bytes: compile's max_memory (its memory
# budget is checked before anything is allocated); None: what the machine has available.
MEMORY_LIMIT = None
WEIGHT_SLACK = 2**20     # values a spec may declare beyond what the file holds before compiling


def load(path, batch_size=None, device=None, max_memory=None):
    """A compiled model from a checkpoint, without the code that built it.
    batch_size / device override the saved ones (e.g. a larger batch for evaluation); max_memory is
    compile's (default MEMORY_LIMIT: what the machine has available)."""
    tensors, metadata = checkpoint.read(path)
    name = os.fspath(path)
    try:
        spec = json.loads(metadata["spec"])
        settings = json.loads(metadata["compile"])
        if not isinstance(settings, dict) or not isinstance(settings.get("optimizer"), dict):
            raise TypeError("compile must be a JSON object with an optimizer object")
        step, epoch = int(metadata["step"]), int(metadata["epoch"])
        rng_state = json.loads(metadata["shuffle_rng"])
        position = _position(json.loads(metadata.get("position", "null")))
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
        batch_size = settings["batch_size"] if batch_size is None else batch_size
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise CheckpointError(f"{name}: the checkpoint's batch_size must be a positive integer, got "
                                  f"{batch_size!r}")
        network = from_spec(spec)
        _check_size(name, network, spec, settings, batch_size, tensors)
        model = network.compile(batch_size=batch_size, loss=settings["loss"],
                                optimizer=optimizer, device=device or settings["device"],
                                seed=settings["seed"], dtype=settings["dtype"], conv_algorithm=conv_algorithm,
                                max_memory=MEMORY_LIMIT if max_memory is None else max_memory)
    except CheckpointError:
        raise
    except (FastnetError, KeyError, ValueError, TypeError, OverflowError) as err:
        raise CheckpointError(f"{name}: the saved network cannot be rebuilt: "
                              f"{type(err).__name__}: {err}") from None
    weights = {k: v for k, v in tensors.items() if not k.startswith(checkpoint.OPTIMIZER_PREFIX)}
    model.load_state_dict(weights)      # names, shapes and finiteness checked: CheckpointError
    for state_name, buffer in model.opt_state.items():
        saved = tensors.get(checkpoint.OPTIMIZER_PREFIX + state_name)
        if saved is None or saved.shape != buffer.shape:
            raise CheckpointError(f"{name}: optimizer state {state_name!r} is missing or has the "
                                  f"wrong shape")
        model.k.copy_in(buffer, saved)
    model.step, model.epoch = step, epoch
    try:
        model._shuffle_rng.bit_generator.state = rng_state
    except (ValueError, TypeError, KeyError, OverflowError) as err:
        raise CheckpointError(f"{name}: the checkpoint's shuffle_rng is not a generator state "
                              f"({type(err).__name__}: {err})") from None
    if position is not None:
        try:    # the state that drew the epoch's order must be one this generator takes
            type(model._shuffle_rng.bit_generator)().state = position["rng"]
        except (ValueError, TypeError, KeyError, OverflowError) as err:
            raise CheckpointError(f"{name}: the checkpoint's position holds no generator state "
                                  f"({type(err).__name__}: {err})") from None
    model.position = model._resume_position = position
    model.schedule, model.augment, model.info = schedule, augment, info
    return model


def _position(position):
    """A mid-epoch position (Model.position) as saved, checked: None, or a dict of the right types."""
    if position is None:
        return None
    counts = ("rows", "batch", "correct", "seen")
    if (not isinstance(position, dict) or set(position) != {"rng", "total", *counts}
            or not all(isinstance(position[key], int) and not isinstance(position[key], bool)
                       and position[key] >= 0 for key in counts)
            or not isinstance(position["total"], (int, float)) or not math.isfinite(position["total"])):
        raise ValueError(f"position must be null or an object of rng, rows, batch, total, correct, seen; "
                         f"got {str(position)[:200]}")
    return position


def _check_size(name, network, spec, settings, batch_size, tensors):
    """Before compiling: the parameters and buffers the spec declares must be held by the file, give
    or take WEIGHT_SLACK (a lying spec cannot make `load` allocate far more weights than the file
    carries); what the compiled model needs is compile's memory budget (MEMORY_LIMIT its max_memory)."""
    input_node, nodes = network.nodes(as_shape(spec.get("input_shape") or network.input_shape))
    seen, weights = set(), 0
    for node in nodes:
        if id(node.layer) in seen:
            continue
        seen.add(id(node.layer))
        in_shapes = [src.shape for src in node.inputs]
        shapes = [*node.layer.param_shapes(in_shapes).values(), *node.layer.buffer_shapes(in_shapes).values()]
        weights += sum(math.prod(shape) for shape in shapes)
    held = sum(t.size for k, t in tensors.items() if not k.startswith(checkpoint.OPTIMIZER_PREFIX))
    # Slack: a mismatch by a few values compiles, and load_state_dict then names the tensor.
    if weights > held + WEIGHT_SLACK:
        raise CheckpointError(f"{name}: the saved spec declares {weights} parameters and buffers but the "
                              f"file holds only {held} values for them")
