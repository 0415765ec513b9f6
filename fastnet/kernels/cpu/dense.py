"""Fully connected layer: y = x @ W.T + b, with W of shape (out_features, in_features) as PyTorch.

The matrix products go through BLAS (np.dot with an `out` argument: no allocation, and
the transposed operands are F-ordered views, so BLAS reads them without copies); the two whose
rows are independent are split over the threads by matmul_rows, the weight gradient (a sum
over the batch) by matmul_tn.
"""

import numpy as np
from numba import njit, prange

from .gemm import matmul_rows, matmul_tn


@njit(cache=True, parallel=True)
def dense_forward(x, w, b, y):
    """y[n, o] = sum_i x[n, i] w[o, i] + b[o]."""
    matmul_rows(x, w.T, y)
    for n in prange(y.shape[0]):
        for o in range(y.shape[1]):
            y[n, o] += b[o]


@njit(cache=True)
def dense_forward_nobias(x, w, y):
    matmul_rows(x, w.T, y)


@njit(cache=True)
def dense_backward_input(dy, w, dx):
    """dx[n, i] = sum_o dy[n, o] w[o, i]."""
    matmul_rows(dy, w, dx)


@njit(cache=True)
def dense_backward_weight(x, dy, dw, partial):
    """dw[o, i] = sum_n dy[n, o] x[n, i]; partial: per-thread sums (gemm.partial_sums_shape)."""
    matmul_tn(dy, x, dw, partial)


@njit(cache=True, parallel=True)
def bias_backward(dy, db):
    """db[o] = sum_n dy[n, o]: each thread owns a slice of outputs, so no two write one element."""
    for o in prange(dy.shape[1]):
        acc = dy.dtype.type(0)
        for n in range(dy.shape[0]):
            acc += dy[n, o]
        db[o] = acc
