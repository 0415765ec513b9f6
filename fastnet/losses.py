"""Losses, with PyTorch's reductions: cross_entropy (softmax fused, mean over rows, integer
labels) and mse (mean over every element). A loss checks targets, owns the target buffer and its
kernels' workspace (what k.<loss>_workspace_shapes declares), and drives its kernels; the model
divides the summed loss by `count(n)`.
"""

import math

import numpy as np

from .errors import DataError, ShapeError, SpecError
from .kernels.workspace import allocate


class CrossEntropy:
    name = "cross_entropy"
    has_accuracy = True

    def check_output(self, out_shape):
        if len(out_shape) != 1 or out_shape[0] < 2:
            raise ShapeError(f"cross_entropy needs a network output of shape (classes,) with at "
                             f"least 2 classes, got {out_shape}")

    def target_buffer(self, k, batch, out_shape, dtype):
        return k.zeros(batch, np.int64)

    def workspace(self, k, batch, out_shape, dtype):
        """The softmax probabilities the forward writes for the backward: (batch, classes)."""
        return allocate(k.zeros, k.cross_entropy_workspace_shapes(out_shape[0]), batch, dtype)["probs"]

    def check_targets(self, y, n, out_shape, what="y"):
        """Integer class labels of shape (n,) in [0, classes); returns them as int64."""
        y = np.asarray(y)
        if y.shape != (n,):
            raise ShapeError(f"{what}: expected labels of shape ({n},) (one class index per row), "
                             f"got {y.shape}")
        if y.dtype.kind not in "iu":
            if y.dtype.kind != "f" or not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
                raise DataError(f"{what}: labels must be integers (class indices), got dtype {y.dtype}")
        classes = out_shape[0]
        if n and (y.min() < 0 or y.max() >= classes):
            bad = y[(y < 0) | (y >= classes)]
            raise DataError(f"{what}: labels must be in [0, {classes - 1}] for a {classes}-class output; "
                            f"found {bad.size} out of range, e.g. {bad[0]!r}")
        return y.astype(np.int64, copy=False)

    def count(self, n, out_shape):
        return n

    def forward(self, k, out, target, work):
        return k.cross_entropy_forward(out, target, probs=work)

    def backward(self, k, out, target, work, scale, dout):
        k.cross_entropy_backward(target, scale, dout, probs=work)

    def correct(self, k, out, target):
        return k.count_correct(out, target)


class MSE:
    name = "mse"
    has_accuracy = False

    def check_output(self, out_shape):
        pass

    def target_buffer(self, k, batch, out_shape, dtype):
        return k.zeros((batch, *out_shape), dtype)

    def workspace(self, k, batch, out_shape, dtype):
        return None

    def check_targets(self, y, n, out_shape, what="y"):
        y = np.asarray(y)
        if y.shape != (n, *out_shape):
            raise ShapeError(f"{what}: mse expects targets of the output's shape {(n, *out_shape)}, "
                             f"got {y.shape}")
        if y.dtype.kind not in "iuf" or not np.all(np.isfinite(y)):
            raise DataError(f"{what}: mse targets must be finite numbers")
        return y

    def count(self, n, out_shape):
        return n * math.prod(out_shape)

    def forward(self, k, out, target, work):
        return k.mse_forward(out.reshape(-1), target.reshape(-1))

    def backward(self, k, out, target, work, scale, dout):
        k.mse_backward(out.reshape(-1), target.reshape(-1), scale, dout.reshape(-1))

    def correct(self, k, out, target):
        return None


cross_entropy = CrossEntropy()
mse = MSE()
LOSSES = {"cross_entropy": cross_entropy, "mse": mse}


def get(loss):
    if isinstance(loss, (CrossEntropy, MSE)):
        return loss
    if loss not in LOSSES:
        raise SpecError(f"unknown loss {loss!r}: expected one of {', '.join(LOSSES)}")
    return LOSSES[loss]
