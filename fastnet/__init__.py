"""fastnet: a JIT-compiled CNN/MLP training engine. Numba kernels with explicit backward passes,
a static graph compiled once, a minibatch trainer.

    import fastnet as fn
    model = fn.Sequential([fn.Flatten(), fn.Dense(128), fn.ReLU(), fn.Dense(10)]).compile(
        input_shape=(1, 28, 28), batch_size=64, optimizer=fn.SGD(lr=0.05, momentum=0.9))
    model.fit(x_train, y_train, epochs=2)
"""

from . import callbacks, data, distributed, losses, models, schedules, threads
from ._version import __version__  # noqa: F401
from .data import datasets  # fn.datasets.load(...): fastnet/data/datasets.py
from .errors import (
    BusyError,
    CheckpointError,
    DataError,
    DistributedError,
    DivergenceError,
    FastnetError,
    MemoryBudgetError,
    MonitorError,
    ShapeError,
    SpecError,
)
from .graph import Graph, Sequential
from .layers import *  # noqa: F403 (Layer and every layer class: fn.Dense, fn.Conv2D, ...)
from .model import History, Model
from .nodes import Input
from .onnx_import import from_onnx
from .optim import SGD, Adam, AdamW
from .restore import load
from .spec import from_spec, to_spec

threads.use_single_threaded_blas()  # one pool of threads, Numba's: see threads.py
