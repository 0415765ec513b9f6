"""Choosing among a layer's algorithms at compile (Layer.algorithms: a convolution's im2col + GEMM,
Winograd, ...), as cuDNN's benchmark mode does: each algorithm that computes the layer is timed on
the layer's real shapes and batch (a forward and a backward on random data), and the fastest is
kept.

The measurements are kept on disk (`cache_path()`: $FASTNET_CACHE_DIR, else $XDG_CACHE_HOME/fastnet
or ~/.cache/fastnet, file algorithms.json), keyed by the machine (the CPU as LLVM names it, the
thread count, the device, fastnet's version) and the layer (its type, configuration, input shape,
batch, dtype, whether its input gradient is computed). So compile stays fast after the first time,
and the same seed on the same machine gives the same numbers run after run. A checkpoint records
what each layer ran (Model.algorithms), and a model loaded from it runs the same, so a resume is
bit-identical wherever it runs on the same device.

`conv_algorithm` (compile's argument) is "auto" (measure), an algorithm's name (forced where it
computes the layer; the layer's default, im2col, elsewhere) or {layer prefix: name} (a
checkpoint's record; a layer it does not name is measured).
"""

import json
import os
import statistics
import time

import numpy as np

from ._version import __version__
from .atomic import atomic_write
from .errors import SpecError
from .kernels.workspace import allocate
from .layers.base import Slot

AUTO = "auto"
NAMES = ("im2col", "direct", "winograd")      # every algorithm some device has (kernels/*/conv_algorithms)
ROUNDS = 5                          # alternating rounds; the median of each algorithm's is kept
ROUND_SECONDS = 0.004               # at least this long a round (several calls on a small layer)
_MEASURED = {}                      # this process's choices: kept even where the disk cache cannot be


def check_request(requested):
    """A clear error for a conv_algorithm that is none of: "auto", a name in NAMES, {prefix: name}."""
    if isinstance(requested, dict):
        bad = {prefix: name for prefix, name in requested.items() if name not in NAMES}
        if bad:
            raise SpecError(f"conv_algorithm: unknown algorithm(s) {bad}; expected one of {', '.join(NAMES)}")
    elif requested != AUTO and requested not in NAMES:
        raise SpecError(f"conv_algorithm must be 'auto', one of {', '.join(NAMES)}, or a dict "
                         f"{{layer: algorithm}}; got {requested!r}")


def workspace_shapes(layer, input_shapes, k, algorithm):
    """The layer's workspaces for the algorithm it runs (None: a layer with one way to compute)."""
    if algorithm is None:
        return layer.workspace_shapes(input_shapes, k)
    return layer.workspace_shapes(input_shapes, k, algorithm=algorithm)


def choose(layer, prefix, input_shapes, k, device, batch, dtype, requested, input_grad):
    """The algorithm the layer at `prefix` runs (None where the layer has only one way)."""
    choices = tuple(layer.algorithms(input_shapes, k))
    if not choices:
        return None
    if isinstance(requested, dict):
        if prefix in requested:
            name = requested[prefix]
            # a record made on another device may name one this device lacks: its default then
            return name if name in choices else choices[0]
        requested = AUTO
    if requested != AUTO:
        return requested if requested in choices else choices[0]
    if len(choices) == 1:
        return choices[0]
    key = _key(layer, input_shapes, device, batch, dtype, input_grad, choices)
    entry = _MEASURED.get(key) or _read_cache().get(key)
    if not isinstance(entry, dict) or entry.get("choice") not in choices:
        seconds = measure(layer, input_shapes, k, batch, dtype, choices, input_grad)
        entry = {"choice": min(seconds, key=seconds.get), "seconds": seconds}
        cache = _read_cache()
        cache[key] = entry
        _write_cache(cache)
    _MEASURED[key] = entry
    return entry["choice"]


def measure(layer, input_shapes, k, batch, dtype, choices, input_grad, seed=0):
    """{algorithm: seconds} of one forward and backward of the layer at this batch (median of
    ROUNDS alternating rounds), on random data."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)

    def filled(shape, scale=1.0):
        array = k.zeros(shape, dtype)
        k.copy_in(array, (rng.standard_normal(shape) * scale).astype(dtype))
        return array

    x = filled((batch, *input_shapes[0]))
    out_shape = (batch, *layer.output_shape(input_shapes))
    params = {name: filled(shape, 0.1) for name, shape in layer.param_shapes(input_shapes).items()}
    grads = {name: k.zeros(p.shape, dtype) for name, p in params.items()}
    y, dy = k.zeros(out_shape, dtype), filled(out_shape)
    dx = k.zeros(x.shape, dtype) if input_grad else None
    slots = {}
    for name in choices:
        work = allocate(k.zeros, workspace_shapes(layer, input_shapes, k, name), batch, dtype)
        slots[name] = Slot(layer, 0, "measure", params, grads, {}, work, 0)
        slots[name].algorithm = name

    def run(slot, calls):
        start = time.perf_counter()
        for _ in range(calls):
            layer.forward(k, slot, [x], y, True)
            layer.backward(k, slot, [x], y, dy, [dx])
        return (time.perf_counter() - start) / calls

    calls = {name: max(1, int(ROUND_SECONDS / max(run(slot, 1), 1e-7))) for name, slot in slots.items()}
    times = {name: [] for name in choices}
    for round_ in range(ROUNDS):
        for name in (choices if round_ % 2 == 0 else choices[::-1]):
            times[name].append(run(slots[name], calls[name]))
    return {name: statistics.median(values) for name, values in times.items()}


def cache_path():
    folder = os.environ.get("FASTNET_CACHE_DIR")
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(base, "fastnet")
    return os.path.join(folder, "algorithms.json")


def cached_choices():
    """{layer key: {"choice": name, "seconds": {name: s}}} of every measurement on disk."""
    return _read_cache()


def _key(layer, input_shapes, device, batch, dtype, input_grad, choices):
    import llvmlite.binding as llvm
    import numba

    config = {name: value for name, value in layer.config().items() if name != "name"}
    machine = f"{llvm.get_host_cpu_name()} threads={numba.get_num_threads()} {device} fastnet {__version__}"
    return (f"{machine} | {layer.type_name} {json.dumps(config, sort_keys=True)} input={list(input_shapes[0])} "
            f"batch={batch} {np.dtype(dtype).name} dx={bool(input_grad)} of {','.join(choices)}")


def _read_cache():
    try:
        with open(cache_path(), encoding="utf-8") as f:
            cache = json.load(f)
    except (OSError, ValueError):       # none yet, or unreadable: measure again and rewrite it
        return {}
    return cache if isinstance(cache, dict) else {}


def _write_cache(cache):
    path = cache_path()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_write(path) as f:
            f.write(json.dumps(cache, indent=1, sort_keys=True).encode())
    except OSError:                     # a read-only home: the choice holds for this run only
        pass
