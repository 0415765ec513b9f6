"""Fully connected layer on the GPU: y = x @ W.T + b, W of shape (out_features, in_features).

The three products are the tiled GEMM of gemm.py on 3-D views (a leading axis of length 1):
    forward          y (N, O)  = x (N, I) @ W.T (I, O) + b   (bias fused into the GEMM)
    backward input   dx (N, I) = dy (N, O) @ W (O, I)
    backward weight  dW (O, I) = dy.T (O, N) @ x (N, I)      (the batch is the reduction axis)
No workspaces: the GEMM writes y's columns itself (the CPU's forward splits them into a scratch
product) and the (out, in) tiles give the weight gradient its parallelism, with no partial sums.
"""

from numba import cuda

from .gemm import gemm
from .launch import grid_1d


@cuda.jit(cache=True)
def _bias_backward_kernel(dy, db):
    o = cuda.grid(1)
    if o < dy.shape[1]:
        # One thread per output column, rows in order, in the data's dtype: the CPU kernel's sum.
        # Adjacent threads read adjacent columns of a row (coalesced).
        acc = dy.dtype.type(0)
        for n in range(dy.shape[0]):
            acc += dy[n, o]
        db[o] = acc


# ---- host side ----


def _as3(a):
    """A (rows, cols) device array as (1, rows, cols): a view, no copy."""
    return a.reshape(1, a.shape[0], a.shape[1])


def dense_workspace_shapes(in_features, out_features):
    """No workspaces on the GPU (see the module's docstring)."""
    return {}


def dense_forward(x, w, b, y):
    """y[n, o] = sum_i x[n, i] w[o, i] + b[o] (b None: no bias)."""
    gemm(_as3(x), _as3(w), _as3(y), bias=b, trans_b=True)


def dense_backward_input(dy, w, dx):
    """dx[n, i] = sum_o dy[n, o] w[o, i]."""
    gemm(_as3(dy), _as3(w), _as3(dx))


def dense_backward_weight(x, dy, dw):
    """dw[o, i] = sum_n dy[n, o] x[n, i]."""
    gemm(_as3(dy), _as3(x), _as3(dw), trans_a=True)


def bias_backward(dy, db):
    """db[o] = sum_n dy[n, o]. One thread per output feature."""
    blocks, threads = grid_1d(dy.shape[1])
    _bias_backward_kernel[blocks, threads](dy, db)
