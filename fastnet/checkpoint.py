"""Checkpoints in the safetensors format: weights as tensors, everything else as JSON metadata.

Tensors: the model's state_dict under its own names ("0.weight", "3.running_mean", ...), so
`safetensors.torch.load_file` gives a dict that torch.nn.Module.load_state_dict takes (pass
strict=False, or drop the "optimizer." entries); the optimizer's state as "optimizer.<name>"
(flat arrays over all parameters, in parameter order).
Metadata (strings): "format" = "fastnet", "fastnet_version", "spec" (the network, to_spec's JSON,
with input_shape), "compile" (batch size, loss, optimizer type and arguments, dtype, seed, device,
the algorithm each convolution ran),
"step" (optimizer steps taken), "epoch" (epochs completed by fit), "shuffle_rng" (the state of the
generator that orders the next epoch's batches), "position" (where fit was within an epoch, for a
checkpoint saved mid-epoch: the generator state that drew the epoch's order, the next batch, the
epoch's running sums; null between epochs), "schedule" (the learning-rate schedule, or null),
"augment" (fit's augmentation, or null), "info" (model.info: free-form JSON, e.g. the input
normalisation `fastnet train` used).

No pickle: safetensors holds only raw arrays and strings. Saving is atomic (fastnet/atomic.py):
a crash mid-save leaves the previous file whole. A save that fails (a full disk, a read-only
folder) raises CheckpointError naming the file, its cause the OSError, and leaves no temporary
file behind.

This module is the file format, below the model (Model.save calls `save`); rebuilding a model from
a checkpoint needs the spec reader and the networks above the model, and is fastnet/restore.py's.
"""

import json
import os

import numpy as np

from ._version import __version__
from .atomic import atomic_write
from .errors import CheckpointError

OPTIMIZER_PREFIX = "optimizer."


def save(model, path):
    """Write the model (weights, buffers, optimizer state, spec, progress) to `path` atomically."""
    from safetensors.numpy import save as to_bytes

    tensors = {name: np.ascontiguousarray(array) for name, array in model.state_dict().items()}
    for name, array in model.opt_state.items():
        tensors[OPTIMIZER_PREFIX + name] = model.k.to_host(array)
    spec = model.network.to_spec()
    spec["input_shape"] = list(model.input_shape)
    optimizer = model.optimizer
    metadata = {
        "format": "fastnet",
        "fastnet_version": __version__,
        "spec": json.dumps(spec),
        "compile": json.dumps({
            "batch_size": model.batch_size, "loss": model.loss_fn.name, "dtype": model.dtype.name,
            "seed": model.seed, "device": model.device, "conv_algorithms": model.algorithms,
            "optimizer": {"type": type(optimizer).__name__, **_plain(vars(optimizer))}}),
        "step": str(model.step),
        "epoch": str(model.epoch),
        "shuffle_rng": json.dumps(model._shuffle_rng.bit_generator.state),
        "position": json.dumps(model.position),
        "schedule": json.dumps(None if model.schedule is None else model.schedule.config()),
        "augment": json.dumps(None if model.augment is None else model.augment.config()),
        "info": json.dumps(model.info),
    }
    data = to_bytes(tensors, metadata=metadata)
    try:
        with atomic_write(path) as f:
            f.write(data)
    except OSError as err:
        # A full disk, a read-only folder, a failed rename: the previous file is whole (atomic_write
        # removed its temporary file). A CheckpointError, so `fastnet train` reports it in one line;
        # the OSError is its __cause__ (err.__cause__.errno is errno.ENOSPC for a full disk).
        raise CheckpointError(f"cannot save the checkpoint {os.fspath(path)}: {err}; the previous "
                              f"file there (if any) is unchanged") from err


def read(path):
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
