"""Fully connected layer: y = x @ W.T + b, with W of shape (out_features, in_features) as PyTorch.

The matrix products go through BLAS (np.dot with an `out` argument: no allocation, and
the transposed operands are F-ordered views, so BLAS reads them without copies); the two whose
rows are independent are split over the threads by matmul_rows, the weight gradient (a sum
over the batch) by matmul_tn. The forward product of a small batch is split over the output
features instead (see _forward_by_features).
"""

import numpy as np
from numba import njit, prange

from .gemm import BLOCKS, MIN_ROWS, matmul, matmul_rows, matmul_tn

# Fewer rows than this per thread and the forward product is split over the output features:
# OpenBLAS ran (32 x 784) @ (784 x 256) at 74 GFLOP/s on one core and (64 x 784) @ (784 x 128) at
# 90; mlp's and cnn's first Dense at batch 64 ran 1.15-1.25x faster split so, batch 256 the same.
WIDE_ROWS = 64


@njit(cache=True, parallel=True)
def dense_forward(x, w, b, y, scratch):
    """y[n, o] = sum_i x[n, i] w[o, i] + b[o]. scratch: (N, O) workspace (see _forward_by_features)."""
    if x.shape[0] < WIDE_ROWS * BLOCKS and w.shape[0] >= MIN_ROWS * BLOCKS:
        _forward_by_features(x, w, b, y, scratch)
        return
    matmul_rows(x, w.T, y)
    for n in prange(y.shape[0]):
        for o in range(y.shape[1]):
            y[n, o] += b[o]


@njit(cache=True)
def dense_forward_nobias(x, w, y, scratch):
    if x.shape[0] < WIDE_ROWS * BLOCKS and w.shape[0] >= MIN_ROWS * BLOCKS:
        _forward_by_features(x, w, None, y, scratch)
    else:
        matmul_rows(x, w.T, y)


@njit(cache=True, parallel=True)
def _forward_by_features(x, w, b, y, scratch):
    """y = x @ w.T (+ b: None for none), thread t computing the output features o0 <= o < o1 as
    one product into its own part of scratch (np.dot writes a whole contiguous matrix, which the
    columns y[:, o0:o1] are not), then copying them into y."""
    N, O = y.shape
    flat = scratch.reshape(-1)
    for t in prange(BLOCKS):
        o0 = O * t // BLOCKS
        o1 = O * (t + 1) // BLOCKS
        part = flat[N * o0:N * o1].reshape(N, o1 - o0)
        matmul(x, w[o0:o1].T, part)
        for n in range(N):
            for o in range(o0, o1):
                y[n, o] = part[n, o - o0] if b is None else part[n, o - o0] + b[o]


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
