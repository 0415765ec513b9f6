"""Element-wise activations on the GPU: one thread per element of flat (1-D) views, as the CPU
kernels take them; the row-wise softmax: one thread per row.

Scalars (slopes, scales) are converted to the data's dtype on the host, as the CPU kernels convert
theirs, so the arithmetic is done in that dtype as in kernels/cpu/activation.py.
"""

import math

import numpy as np
from numba import cuda

from .. import elementwise
from .launch import grid_1d
from .random import seed_u64, splitmix64

# y[n] = softmax(x[n]), returning the row's log-sum-exp (elementwise.py, shared with the CPU kernels)
softmax_row = cuda.jit(device=True, cache=True)(elementwise.softmax_row)


@cuda.jit(cache=True)
def _relu_forward_kernel(x, y):
    i = cuda.grid(1)
    if i < x.size:
        y[i] = x[i] if x[i] > 0 else x.dtype.type(0)   # typed 0: no float64 round trip


@cuda.jit(cache=True)
def _relu_backward_kernel(x, dy, dx):
    i = cuda.grid(1)
    if i < x.size:
        dx[i] = dy[i] if x[i] > 0 else dy.dtype.type(0)   # PyTorch's gradient at 0 is 0


@cuda.jit(cache=True)
def _leaky_relu_forward_kernel(x, slope, y):
    i = cuda.grid(1)
    if i < x.size:
        y[i] = x[i] if x[i] > 0 else x[i] * slope


@cuda.jit(cache=True)
def _leaky_relu_backward_kernel(x, dy, slope, dx):
    i = cuda.grid(1)
    if i < x.size:
        dx[i] = dy[i] if x[i] > 0 else dy[i] * slope


@cuda.jit(cache=True)
def _sigmoid_forward_kernel(x, y):
    one = x.dtype.type(1)
    i = cuda.grid(1)
    if i < x.size:
        # Split by sign so exp never overflows.
        if x[i] >= 0:
            y[i] = one / (one + math.exp(-x[i]))
        else:
            e = math.exp(x[i])
            y[i] = e / (one + e)


@cuda.jit(cache=True)
def _sigmoid_backward_kernel(y, dy, dx):
    one = y.dtype.type(1)
    i = cuda.grid(1)
    if i < y.size:
        dx[i] = dy[i] * y[i] * (one - y[i])


@cuda.jit(cache=True)
def _tanh_forward_kernel(x, y):
    i = cuda.grid(1)
    if i < x.size:
        y[i] = math.tanh(x[i])


@cuda.jit(cache=True)
def _tanh_backward_kernel(y, dy, dx):
    one = y.dtype.type(1)
    i = cuda.grid(1)
    if i < y.size:
        dx[i] = dy[i] * (one - y[i] * y[i])


@cuda.jit(cache=True)
def _copy_kernel(x, y):
    i = cuda.grid(1)
    if i < x.size:
        y[i] = x[i]


@cuda.jit(cache=True)
def _dropout_forward_kernel(x, p, seed, offset, scale, mask, y):
    i = cuda.grid(1)
    if i < x.size:
        z = splitmix64(seed, offset + i)
        u = (z >> np.uint64(11)) * (1.0 / 9007199254740992.0)   # 53 random bits -> [0, 1)
        keep = scale if u >= p else x.dtype.type(0)
        mask[i] = keep
        y[i] = x[i] * keep


@cuda.jit(cache=True)
def _dropout_backward_kernel(dy, dx, mask):
    i = cuda.grid(1)
    if i < dy.size:
        dx[i] = dy[i] * mask[i]


@cuda.jit(cache=True)
def _softmax_forward_kernel(x, y):
    n = cuda.grid(1)
    if n < x.shape[0]:
        softmax_row(x, n, y)


@cuda.jit(cache=True)
def _softmax_backward_kernel(y, dy, dx):
    n = cuda.grid(1)
    if n < y.shape[0]:
        # dx_j = y_j (dy_j - sum_k dy_k y_k)
        dot = y.dtype.type(0)
        for j in range(y.shape[1]):
            dot += dy[n, j] * y[n, j]
        for j in range(y.shape[1]):
            dx[n, j] = y[n, j] * (dy[n, j] - dot)


# ---- host side ----


def relu_forward(x, y):
    blocks, threads = grid_1d(x.size)
    _relu_forward_kernel[blocks, threads](x, y)


def relu_backward(x, dy, dx):
    blocks, threads = grid_1d(x.size)
    _relu_backward_kernel[blocks, threads](x, dy, dx)


def leaky_relu_forward(x, negative_slope, y):
    blocks, threads = grid_1d(x.size)
    _leaky_relu_forward_kernel[blocks, threads](x, x.dtype.type(negative_slope), y)


def leaky_relu_backward(x, dy, negative_slope, dx):
    blocks, threads = grid_1d(x.size)
    _leaky_relu_backward_kernel[blocks, threads](x, dy, x.dtype.type(negative_slope), dx)


def sigmoid_forward(x, y):
    blocks, threads = grid_1d(x.size)
    _sigmoid_forward_kernel[blocks, threads](x, y)


def sigmoid_backward(y, dy, dx):
    blocks, threads = grid_1d(y.size)
    _sigmoid_backward_kernel[blocks, threads](y, dy, dx)


def tanh_forward(x, y):
    blocks, threads = grid_1d(x.size)
    _tanh_forward_kernel[blocks, threads](x, y)


def tanh_backward(y, dy, dx):
    blocks, threads = grid_1d(y.size)
    _tanh_backward_kernel[blocks, threads](y, dy, dx)


def softmax_forward(x, y):
    """Row-wise softmax of a (n, classes) array: one thread per row."""
    blocks, threads = grid_1d(x.shape[0])
    _softmax_forward_kernel[blocks, threads](x, y)


def softmax_backward(y, dy, dx):
    """dx_j = y_j (dy_j - sum_k dy_k y_k), one thread per row."""
    blocks, threads = grid_1d(y.shape[0])
    _softmax_backward_kernel[blocks, threads](y, dy, dx)


def copy_forward(x, y):
    """y = x for flat views."""
    blocks, threads = grid_1d(x.size)
    _copy_kernel[blocks, threads](x, y)


def dropout_workspace_shapes(shape):
    """name -> per-sample shape: `mask`, the kept elements' scale (0 where dropped), as the CPU's."""
    return {"mask": tuple(shape)}


def dropout_forward(x, p, seed, offset, y, mask):
    """Inverted dropout with the CPU kernel's mask: keep element i when the 53-bit uniform drawn
    from splitmix64(seed, offset + i) is >= p, and scale it by 1 / (1 - p)."""
    blocks, threads = grid_1d(x.size)
    _dropout_forward_kernel[blocks, threads](x, float(p), seed_u64(seed), int(offset),
                                             x.dtype.type(1.0 / (1.0 - p)), mask, y)


def dropout_backward(dy, dx, mask):
    blocks, threads = grid_1d(dy.size)
    _dropout_backward_kernel[blocks, threads](dy, dx, mask)
