"""Element-wise activations. Kernels take flat (1-D) views: the layer passes x.reshape(-1).

Backward kernels read the saved forward output y where the derivative is a function of it
(sigmoid, tanh), and the input x where it is not (relu, leaky relu: PyTorch's gradient at 0 is 0).
"""

import numpy as np
from numba import njit, prange

from .. import elementwise
from .random import splitmix64


@njit(cache=True, parallel=True)
def relu_forward(x, y):
    zero = x.dtype.type(0)
    for i in prange(x.size):
        y[i] = x[i] if x[i] > zero else zero


@njit(cache=True, parallel=True)
def relu_backward(x, dy, dx):
    zero = x.dtype.type(0)
    for i in prange(x.size):
        dx[i] = dy[i] if x[i] > zero else zero


@njit(cache=True, parallel=True)
def leaky_relu_forward(x, negative_slope, y):
    slope = x.dtype.type(negative_slope)
    for i in prange(x.size):
        y[i] = x[i] if x[i] > 0 else x[i] * slope


@njit(cache=True, parallel=True)
def leaky_relu_backward(x, dy, negative_slope, dx):
    slope = x.dtype.type(negative_slope)
    for i in prange(x.size):
        dx[i] = dy[i] if x[i] > 0 else dy[i] * slope


@njit(cache=True, parallel=True)
def sigmoid_forward(x, y):
    one = x.dtype.type(1)
    for i in prange(x.size):
        # Split by sign so exp never overflows.
        if x[i] >= 0:
            y[i] = one / (one + np.exp(-x[i]))
        else:
            e = np.exp(x[i])
            y[i] = e / (one + e)


@njit(cache=True, parallel=True)
def sigmoid_backward(y, dy, dx):
    one = y.dtype.type(1)
    for i in prange(y.size):
        dx[i] = dy[i] * y[i] * (one - y[i])


@njit(cache=True, parallel=True)
def tanh_forward(x, y):
    for i in prange(x.size):
        y[i] = np.tanh(x[i])


@njit(cache=True, parallel=True)
def tanh_backward(y, dy, dx):
    one = y.dtype.type(1)
    for i in prange(y.size):
        dx[i] = dy[i] * (one - y[i] * y[i])


# y[n] = softmax(x[n]), returning the row's log-sum-exp (elementwise.py, shared with the CUDA kernels)
softmax_row = njit(cache=True, inline="always")(elementwise.softmax_row)


@njit(cache=True, parallel=True)
def softmax_forward(x, y):
    """Row-wise softmax of a (n, classes) array."""
    for n in prange(x.shape[0]):
        softmax_row(x, n, y)


@njit(cache=True, parallel=True)
def softmax_backward(y, dy, dx):
    """dx_j = y_j (dy_j - sum_k dy_k y_k), row by row."""
    for n in prange(y.shape[0]):
        dot = y.dtype.type(0)
        for j in range(y.shape[1]):
            dot += dy[n, j] * y[n, j]
        for j in range(y.shape[1]):
            dx[n, j] = y[n, j] * (dy[n, j] - dot)


@njit(cache=True, parallel=True)
def copy_forward(x, y):
    """y = x for flat views: Flatten's forward and backward (a copy keeps every tensor in its own buffer)."""
    for i in prange(x.size):
        y[i] = x[i]


def dropout_workspace_shapes(shape):
    """name -> per-sample shape: `mask`, the kept elements' scale (0 where dropped), written by the
    forward and read by the backward; shape is the layer's per-sample input shape."""
    return {"mask": tuple(shape)}


@njit(cache=True, parallel=True)
def dropout_forward(x, p, seed, offset, y, mask):
    """Inverted dropout: keep with probability 1 - p and scale by 1 / (1 - p).

    The mask is a pure function of (seed, offset + i) through a splitmix64 hash, so it
    does not depend on the thread count and is reproducible from the step counter alone.
    """
    scale = x.dtype.type(1.0 / (1.0 - p))
    zero = x.dtype.type(0)
    for i in prange(x.size):
        z = splitmix64(seed, offset + i)
        u = (z >> np.uint64(11)) * (1.0 / 9007199254740992.0)  # 53 random bits -> [0, 1)
        keep = scale if u >= p else zero
        mask[i] = keep
        y[i] = x[i] * keep


@njit(cache=True, parallel=True)
def dropout_backward(dy, dx, mask):
    for i in prange(dy.size):
        dx[i] = dy[i] * mask[i]
