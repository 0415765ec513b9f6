"""Flatten: (C, H, W) -> (C*H*W,), as torch.nn.Flatten(); Reshape: any per-sample shape of the same
size, as x.reshape(N, *shape) in PyTorch (torch.nn.Unflatten for a flat input)."""

import math

from ..errors import ShapeError
from .base import Layer


class Flatten(Layer):
    def output_shape(self, input_shapes):
        return (math.prod(input_shapes[0]),)

    def forward(self, k, slot, xs, y, train):
        k.copy_forward(xs[0].reshape(-1), y.reshape(-1))

    def backward(self, k, slot, xs, y, dy, dxs):
        if dxs[0] is not None:
            k.copy_forward(dy.reshape(-1), dxs[0].reshape(-1))


class Reshape(Flatten):
    """Each sample reshaped to `shape` (no batch axis), elements in the same C order: a 1x28x28
    image as Reshape((28, 28)) is 28 steps of 28 features. One entry may be -1: the size the others
    leave, as in torch.reshape. The data is copied (layers own their outputs), the gradient back."""

    def __init__(self, shape, name=None):
        super().__init__(name)
        if isinstance(shape, int) and not isinstance(shape, bool):
            shape = (shape,)
        if (not isinstance(shape, (tuple, list)) or not shape
                or not all(isinstance(s, int) and not isinstance(s, bool) and (s >= 1 or s == -1) for s in shape)
                or list(shape).count(-1) > 1):
            raise ShapeError(f"Reshape: shape must be a non-empty tuple of positive ints with at most "
                             f"one -1, got {shape!r}")
        self.shape = tuple(shape)

    def output_shape(self, input_shapes):
        size = math.prod(input_shapes[0])
        known = math.prod(s for s in self.shape if s != -1)
        if (-1 in self.shape and size % known) or (-1 not in self.shape and size != known):
            raise ShapeError(f"{self.describe()}: cannot reshape a per-sample shape {tuple(input_shapes[0])} "
                             f"({size} elements) to {self.shape}")
        return tuple(size // known if s == -1 else s for s in self.shape)
