"""Fully connected layer: y = x @ W.T + b, with W of shape (out_features, in_features) as PyTorch.

The matrix products go through BLAS (matmul.py: one single-threaded call per block, the transposed
operands are views, so BLAS reads them without copies); the two whose rows are independent are
split over the threads by matmul_rows, the weight gradient (a sum over the batch) by matmul_tn.
The forward product of a small batch is split over the output features instead (see
_forward_by_features).

Workspaces (dense_workspace_shapes): `product`, (N, O), the forward's per-thread products where it
splits over the features; `partial`, (T - 1, O, I) with T = matmul.BLOCKS threads, the weight
gradient's per-thread sums.
"""

from numba import njit, prange

from ..workspace import WorkspaceSpec
from .matmul import BLOCKS, MIN_ROWS, matmul, matmul_rows, matmul_tn, partial_sums_shape

# Fewer rows than this per thread and the forward product is split over the output features:
# OpenBLAS runs a product with more rows and fewer columns faster, so a small batch goes faster
# split so (see bench/NOTES.md, dense).
WIDE_ROWS = 64


def dense_workspace_shapes(in_features, out_features):
    """name -> shape of the workspaces the dense kernels take: `product` per sample, `partial` whole."""
    return {"product": (out_features,),
            "partial": WorkspaceSpec(partial_sums_shape((out_features, in_features)), per_sample=False)}


@njit(cache=True)
def dense_forward(x, w, b, y, product):
    """y[n, o] = sum_i x[n, i] w[o, i] + b[o] (b None: no bias). product: (N, O) workspace (see
    _forward_by_features)."""
    if x.shape[0] < WIDE_ROWS * BLOCKS and w.shape[0] >= MIN_ROWS * BLOCKS:
        _forward_by_features(x, w, b, y, product)
        return
    matmul_rows(x, w.T, y)
    if b is not None:
        _add_bias(y, b)


@njit(cache=True, parallel=True)
def _add_bias(y, b):
    """y[n, o] += b[o], rows over the threads."""
    for n in prange(y.shape[0]):
        for o in range(y.shape[1]):
            y[n, o] += b[o]


@njit(cache=True, parallel=True)
def _forward_by_features(x, w, b, y, product):
    """y = x @ w.T (+ b: None for none), thread t computing the output features o0 <= o < o1 as
    one product into its own part of `product` (BLAS writes a whole matrix with contiguous rows,
    which the columns y[:, o0:o1] are not), then copying them into y."""
    N, O = y.shape
    flat = product.reshape(-1)
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
    """dw[o, i] = sum_n dy[n, o] x[n, i]; partial: the per-thread sums (dense_workspace_shapes)."""
    matmul_tn(dy, x, dw, partial)


@njit(cache=True, parallel=True)
def bias_backward(dy, db):
    """db[o] = sum_n dy[n, o]: each thread owns a slice of outputs, so no two write one element."""
    for o in prange(dy.shape[1]):
        acc = dy.dtype.type(0)
        for n in range(dy.shape[0]):
            acc += dy[n, o]
        db[o] = acc
