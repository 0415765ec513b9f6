"""Normalize: y = (x - mean) / std per channel, as torchvision's Normalize, so that a model can take
raw inputs (a checkpoint then carries its input statistics in its spec, and `predict` needs nothing
else remembered)."""

import math

import numpy as np

from ..errors import ShapeError
from .base import Layer


def _values(value, what):
    """A number -> float; a non-empty sequence of numbers -> tuple of floats."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return float(value)
    if (isinstance(value, (list, tuple, np.ndarray)) and len(value) > 0
            and all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                    for v in value)):
        return tuple(float(v) for v in value)
    raise ShapeError(f"Normalize: {what} must be a number or a non-empty sequence of numbers (one per "
                     f"channel), got {value!r}")


class Normalize(Layer):
    """y = (x - mean) / std, with mean and std each a number (for every element) or a sequence of
    one number per channel: along the first per-sample axis (axis 1 of the batch), the C of
    (C, H, W) images or the features of a flat input, as torchvision.transforms.Normalize.
    No parameters and no buffers: mean and std are configuration, so spec files, checkpoints and
    ONNX exports (Sub, Div) carry them. dx = dy / std."""

    draws_seed = False   # put in front of a network, it leaves the network's initialisation as it was

    def __init__(self, mean=0.0, std=1.0, name=None):
        super().__init__(name)
        self.mean = _values(mean, "mean")
        self.std = _values(std, "std")
        means = self.mean if isinstance(self.mean, tuple) else (self.mean,)
        stds = self.std if isinstance(self.std, tuple) else (self.std,)
        if not all(math.isfinite(m) for m in means):
            raise ShapeError(f"Normalize: mean must be finite, got {mean!r}")
        if not all(math.isfinite(s) and s > 0 for s in stds):
            raise ShapeError(f"Normalize: std must be finite and > 0, got {std!r}")
        # what the kernels take: tuples of one value, or of one per channel
        self.means, self.stds = means, stds

    def output_shape(self, input_shapes):
        if len(input_shapes) != 1:
            raise ShapeError(f"{self.describe()}: expected 1 input, got {len(input_shapes)}")
        shape = tuple(input_shapes[0])
        channels = shape[0]
        for what, values in (("mean", self.means), ("std", self.stds)):
            if len(values) not in (1, channels):
                raise ShapeError(f"{self.describe()}: {what} has {len(values)} values, the input "
                                 f"{shape} has {channels} channels (axis 1): give one value or "
                                 f"{channels}")
        return shape

    def _view(self, a):
        """(n, channels, inner) view of a batch."""
        n, channels = a.shape[0], a.shape[1]
        return a.reshape(n, channels, a.size // max(n * channels, 1))

    def forward(self, k, slot, xs, y, train):
        k.normalize_forward(self._view(xs[0]), self.means, self.stds, self._view(y))

    def backward(self, k, slot, xs, y, dy, dxs):
        if dxs[0] is not None:
            k.normalize_backward(self._view(dy), self.stds, self._view(dxs[0]))
