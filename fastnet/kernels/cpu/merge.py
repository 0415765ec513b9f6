"""Kernels for the graph layers: Add, Concat, Slice, and the sum of gradients at a fan-out.

Element-wise kernels take flat (1-D) views. Channel copies take 3-D views (M, C, inner): the
batch and every axis before the concatenation axis folded into M, every axis after it into inner.
"""

from numba import njit, prange


@njit(cache=True, parallel=True)
def add_forward(a, b, y, relu):
    """y = a + b, then max(y, 0) where relu (a ReLU fused into the Add: relu_forward's expression)."""
    zero = y.dtype.type(0)
    for i in prange(y.size):
        v = a[i] + b[i]
        y[i] = (v if v > zero else zero) if relu else v


@njit(cache=True, parallel=True)
def accumulate(dst, src):
    """dst += src: a second reader's gradient added into a tensor's gradient, or Add's third input."""
    for i in prange(dst.size):
        dst[i] += src[i]


@njit(cache=True, parallel=True)
def fill(x, value):
    """x[:] = value (Slice's backward clears the channels its section does not cover)."""
    v = x.dtype.type(value)
    for i in prange(x.size):
        x[i] = v


@njit(cache=True, parallel=True)
def copy_channels(src, src_offset, dst, dst_offset, count, accumulate):
    """dst[m, dst_offset + c, i] = src[m, src_offset + c, i] for c < count (+= when accumulate).
    Concat's forward places each input; its backward and Slice's forward cut one out."""
    M, inner = dst.shape[0], dst.shape[2]
    for p in prange(M * count):
        m = p // count
        c = p - m * count
        for i in range(inner):
            if accumulate:
                dst[m, dst_offset + c, i] += src[m, src_offset + c, i]
            else:
                dst[m, dst_offset + c, i] = src[m, src_offset + c, i]
