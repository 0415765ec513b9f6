"""Kernels for the graph layers on the GPU (Add, Concat, Slice, the sum of gradients at a fan-out),
as kernels/cpu/merge.py: flat (1-D) views for the element-wise ones, (M, C, inner) views for the
channel copies. One thread per element written.
"""

from numba import cuda

from .launch import grid_1d


@cuda.jit(cache=True)
def _add_kernel(a, b, y, relu):
    i = cuda.grid(1)
    if i < y.size:
        v = a[i] + b[i]
        zero = y.dtype.type(0)
        y[i] = (v if v > zero else zero) if relu else v


@cuda.jit(cache=True)
def _accumulate_kernel(dst, src):
    i = cuda.grid(1)
    if i < dst.size:
        dst[i] += src[i]


@cuda.jit(cache=True)
def _fill_kernel(x, value):
    i = cuda.grid(1)
    if i < x.size:
        x[i] = value


@cuda.jit(cache=True)
def _copy_channels_kernel(src, src_offset, dst, dst_offset, count, accumulate):
    M = dst.shape[0]
    inner = dst.shape[2]
    idx = cuda.grid(1)
    if idx < M * count * inner:
        i = idx % inner                      # adjacent threads copy adjacent elements (coalesced)
        c = (idx // inner) % count
        m = idx // (inner * count)
        if accumulate:
            dst[m, dst_offset + c, i] += src[m, src_offset + c, i]
        else:
            dst[m, dst_offset + c, i] = src[m, src_offset + c, i]


# ---- host side ----


def add_forward(a, b, y, relu):
    """y = a + b, then max(y, 0) where relu."""
    blocks, threads = grid_1d(y.size)
    _add_kernel[blocks, threads](a, b, y, relu)


def accumulate(dst, src):
    """dst += src."""
    blocks, threads = grid_1d(dst.size)
    _accumulate_kernel[blocks, threads](dst, src)


def fill(x, value):
    """x[:] = value."""
    blocks, threads = grid_1d(x.size)
    _fill_kernel[blocks, threads](x, x.dtype.type(value))


def copy_channels(src, src_offset, dst, dst_offset, count, accumulate):
    """dst[m, dst_offset + c, i] = src[m, src_offset + c, i] for c < count (+= when accumulate)."""
    blocks, threads = grid_1d(dst.shape[0] * count * dst.shape[2])
    _copy_channels_kernel[blocks, threads](src, int(src_offset), dst, int(dst_offset), int(count),
                                           bool(accumulate))
