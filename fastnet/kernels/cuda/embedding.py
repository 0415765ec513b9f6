"""Embedding on the GPU, with the arithmetic of kernels/cpu/embedding.py: tokens as float values
rounded to the nearest integer, a token outside [0, V) (or NaN) a zero row forward and nothing
backward.

Forward: one thread per output element (adjacent threads copy adjacent columns of one row).
Backward: dW = 0 (one thread per element), then one thread per column j adds dy[i, j] into
dW[t_i, j] for every token i in order 0..M-1. Repeated tokens write the same rows, so the threads
split the columns, not the tokens: no atomics, no two threads write one element, and each element
is summed in the CPU kernel's order, so the two agree bit for bit and a run repeats exactly
(atomic adds would finish in a different order on each run). Adjacent threads read adjacent
elements of dy and write adjacent elements of dW: the accesses coalesce. The price is parallelism
of D threads looping over M tokens, small beside the layers that read the embeddings.
"""

import math

from numba import cuda

from .launch import grid_1d
from .merge import fill


@cuda.jit(device=True, cache=True)
def _row(value, rows):
    """The table row of a token value: the nearest integer, or -1 outside [0, rows) or NaN."""
    if not (value >= -0.5 and value < rows - 0.5):
        return -1
    return int(math.floor(value + 0.5))


@cuda.jit(cache=True)
def _forward_kernel(tokens, weight, y):
    V, D = weight.shape
    idx = cuda.grid(1)
    if idx < tokens.shape[0] * D:
        i = idx // D
        j = idx - i * D
        t = _row(tokens[i], V)
        y[i, j] = weight[t, j] if t >= 0 else y.dtype.type(0)


@cuda.jit(cache=True)
def _backward_kernel(tokens, dy, padding_idx, dweight):
    M, D = dy.shape
    V = dweight.shape[0]
    j = cuda.grid(1)
    if j < D:
        for i in range(M):
            t = _row(tokens[i], V)
            if t >= 0 and t != padding_idx:
                dweight[t, j] += dy[i, j]


# ---- host side ----


def embedding_forward(tokens, weight, y):
    """y[i, :] = weight[tokens[i], :] for tokens (M,), weight (V, D), y (M, D)."""
    blocks, threads = grid_1d(y.size)
    _forward_kernel[blocks, threads](tokens, weight, y)


def embedding_backward(tokens, dy, padding_idx, dweight):
    """dweight = 0, then dweight[tokens[i], :] += dy[i, :] for i = 0..M-1 but the tokens equal to
    padding_idx (-1: none). One thread per column."""
    fill(dweight.reshape(dweight.size), 0.0)
    blocks, threads = grid_1d(dy.shape[1])
    _backward_kernel[blocks, threads](tokens, dy, int(padding_idx), dweight)
