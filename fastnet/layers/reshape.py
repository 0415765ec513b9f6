"""Flatten: (C, H, W) -> (C*H*W,), as torch.nn.Flatten()."""

import math

from .base import Layer


class Flatten(Layer):
    def output_shape(self, input_shapes):
        return (math.prod(input_shapes[0]),)

    def forward(self, k, slot, xs, y, train):
        k.copy_forward(xs[0].reshape(-1), y.reshape(-1))

    def backward(self, k, slot, xs, y, dy, dxs):
        if dxs[0] is not None:
            k.copy_forward(dy.reshape(-1), dxs[0].reshape(-1))
