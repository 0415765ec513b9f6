"""Embedding: a table lookup forward (a gather), a scatter-add backward into the table's gradient.

Tokens arrive as values of the model's float dtype (the input buffer is the model's; float32
holds every integer below 2^24 exactly, and the layer refuses a larger table in float32): each is
rounded to the nearest integer, and one outside [0, V) (or NaN) gives a zero row forward and adds
nothing backward, so no kernel reads or writes outside the table. The model refuses such tokens in
its input before any kernel runs (Embedding.check_input); the guard is for tokens a layer computed.

The backward writes dW = 0, then dW[t_i] += dy[i] for every token i in order 0..M-1. Tokens repeat,
so rows of dW are written by several tokens: the threads split the embedding dimension instead, in
blocks of BLOCK adjacent columns, and each adds every token's share of its columns. No two threads
write one element, and every element sums its tokens in the same order on every thread count (and
in the CUDA kernel's order: the two agree bit for bit).
"""

import math

from numba import njit, prange

BLOCK = 16      # columns of dW one thread of the backward owns (one cache line of float32)


@njit(cache=True, inline="always")
def _row(value, rows):
    """The table row of a token value: the nearest integer, or -1 outside [0, rows) or NaN."""
    if not (value >= -0.5 and value < rows - 0.5):
        return -1
    return int(math.floor(value + 0.5))


@njit(cache=True, parallel=True)
def embedding_forward(tokens, weight, y):
    """y[i, :] = weight[tokens[i], :] for tokens (M,), weight (V, D), y (M, D)."""
    V, D = weight.shape
    zero = y.dtype.type(0)
    for i in prange(tokens.shape[0]):
        t = _row(tokens[i], V)
        for j in range(D):
            y[i, j] = weight[t, j] if t >= 0 else zero


@njit(cache=True, parallel=True)
def embedding_backward(tokens, dy, padding_idx, dweight):
    """dweight = 0, then dweight[tokens[i], :] += dy[i, :] for i = 0..M-1, except the tokens equal
    to padding_idx (-1: none), whose row's gradient stays zero (torch's padding_idx).
    Zeroed in parallel over rows, then added in parallel over blocks of BLOCK columns: no two
    threads write one element."""
    M, D = dy.shape
    V = dweight.shape[0]
    zero = dweight.dtype.type(0)
    for v in prange(V):             # rows: contiguous memory per thread
        for j in range(D):
            dweight[v, j] = zero
    for b in prange((D + BLOCK - 1) // BLOCK):
        j0 = b * BLOCK
        j1 = min(D, j0 + BLOCK)
        for i in range(M):
            t = _row(tokens[i], V)
            if t >= 0 and t != padding_idx:
                for j in range(j0, j1):
                    dweight[t, j] += dy[i, j]
