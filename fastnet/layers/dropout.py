"""Inverted dropout, seeded and reproducible."""

from ..errors import ShapeError
from .base import Layer


class Dropout(Layer):
    """Zero each element with probability p in training and scale the rest by 1 / (1 - p);
    identity in evaluation.

    The mask is a hash of (layer seed, optimizer step, element index): the same for every
    train-mode forward between two optimizer steps (so `gradients` is reproducible and can be
    checked by finite differences), different after each step, and independent of threads.
    """

    def __init__(self, p=0.5, name=None):
        super().__init__(name)
        if not 0.0 <= p < 1.0:
            raise ShapeError(f"Dropout: p must be in [0, 1), got {p!r}")
        self.p = float(p)

    def output_shape(self, input_shapes):
        return tuple(input_shapes[0])

    def workspace_shapes(self, input_shapes, k):
        return k.dropout_workspace_shapes(input_shapes[0])

    def forward(self, k, slot, xs, y, train):
        if not train or self.p == 0.0:
            k.copy_forward(xs[0].reshape(-1), y.reshape(-1))
            return
        n = xs[0].shape[0]
        row = y[0].size
        # Disjoint counters per step: rows of a step never reuse another step's numbers.
        offset = (slot.step * 2**32 + slot.row_offset * row) % 2**62
        # the kernels take flat views: the mask too, by its name
        k.dropout_forward(xs[0].reshape(-1), self.p, slot.seed, offset, y.reshape(-1),
                          mask=slot.work("mask", n).reshape(-1))

    def backward(self, k, slot, xs, y, dy, dxs):
        if dxs[0] is None:
            return
        if self.p == 0.0:
            k.copy_forward(dy.reshape(-1), dxs[0].reshape(-1))
            return
        n = dy.shape[0]
        k.dropout_backward(dy.reshape(-1), dxs[0].reshape(-1), mask=slot.work("mask", n).reshape(-1))
