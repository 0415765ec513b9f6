"""Layers: configuration plus the code that drives the kernels (see base.py for the contract).

A new layer is a module here (its class registers itself for spec files: Layer.types) and one
import line below; `fastnet` exports every registered class (fn.Dense, fn.Conv2D, ...).
"""

from .activation import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .base import Layer, Slot, WorkspaceSpec
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .embedding import Embedding
from .merge import Add, Concat, Slice
from .norm import BatchNorm1D, BatchNorm2D
from .normalize import Normalize
from .pool import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from .recurrent import GRU, LSTM, RNN
from .reshape import Flatten, Reshape

__all__ = ["Layer", *(cls.__name__ for cls in Layer.types.values())]
