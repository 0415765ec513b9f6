"""Layers: configuration plus the code that drives the kernels (see base.py for the contract)."""

from .activation import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .base import Layer, Slot, WorkspaceSpec
from .dense import Dense
from .dropout import Dropout
from .reshape import Flatten
