"""Pooling over NCHW images on the GPU: max, average and global average, with the semantics of
kernels/cpu/pool.py (PyTorch's): max padding is -inf, the first maximum in scan order wins, a NaN
wins over any number, argmax holds h * W + w within the plane; average pooling divides by kh * kw
(count_include_pad=True); ceil_mode=False.

Forward kernels: one thread per output element. Backward:
- average pooling: one thread per input pixel, gathering from the windows that cover it, in the
  order the CPU kernel adds them (the same sums, bit for bit).
- max pooling: one thread per output element adds its gradient at argmax with an atomic add,
  after a pass that zeroes dx. Windows that do not overlap (stride >= kernel, the usual 2x2) never
  send two gradients to one pixel; where they do overlap, the additions may come in any order
  (rounding-level differences from the CPU's scan order).
- global average pooling: one thread per input pixel.
"""

import math

import numpy as np
from numba import cuda

from .. import elementwise
from ..shapes import pool2d_output_hw
from ..workspace import WorkspaceSpec
from .launch import grid_1d

# window bounds along one axis (elementwise.py, shared with the CPU kernels)
_window = cuda.jit(device=True, cache=True)(elementwise.window_bounds)
_covering = cuda.jit(device=True, cache=True)(elementwise.windows_covering)


@cuda.jit(cache=True)
def _maxpool_forward_kernel(x, y, argmax, kh, kw, sh, sw, ph, pw):
    N, C, OH, OW = y.shape
    H = x.shape[2]
    W = x.shape[3]
    idx = cuda.grid(1)
    if idx < N * C * OH * OW:
        ow = idx % OW
        oh = (idx // OW) % OH
        c = (idx // (OW * OH)) % C
        n = idx // (OW * OH * C)
        hs, he = _window(oh, sh, ph, kh, H)
        ws, we = _window(ow, sw, pw, kw, W)
        best = x.dtype.type(-math.inf)      # typed: compare in the data's dtype
        besti = hs * W + ws                  # PyTorch's starting index: the first real pixel
        for h in range(hs, he):
            for w in range(ws, we):
                v = x[n, c, h, w]
                if v > best or v != v:       # strict '>': the first maximum wins; NaN wins
                    best = v
                    besti = h * W + w
        y[n, c, oh, ow] = best
        argmax[n, c, oh, ow] = besti


@cuda.jit(cache=True)
def _zero_kernel(a):
    i = cuda.grid(1)
    if i < a.size:
        a[i] = 0


@cuda.jit(cache=True)
def _maxpool_backward_kernel(dy, argmax, dx):
    N, C, OH, OW = dy.shape
    W = dx.shape[3]
    idx = cuda.grid(1)
    if idx < N * C * OH * OW:
        ow = idx % OW
        oh = (idx // OW) % OH
        c = (idx // (OW * OH)) % C
        n = idx // (OW * OH * C)
        i = argmax[n, c, oh, ow]
        h = i // W
        # Atomic: overlapping windows may pick the same pixel (see the module's docstring).
        cuda.atomic.add(dx, (n, c, h, i - h * W), dy[n, c, oh, ow])


@cuda.jit(cache=True)
def _avgpool_forward_kernel(x, y, kh, kw, sh, sw, ph, pw, inv):
    N, C, OH, OW = y.shape
    H = x.shape[2]
    W = x.shape[3]
    idx = cuda.grid(1)
    if idx < N * C * OH * OW:
        ow = idx % OW
        oh = (idx // OW) % OH
        c = (idx // (OW * OH)) % C
        n = idx // (OW * OH * C)
        hs, he = _window(oh, sh, ph, kh, H)
        ws, we = _window(ow, sw, pw, kw, W)
        acc = x.dtype.type(0)
        for h in range(hs, he):
            for w in range(ws, we):
                acc += x[n, c, h, w]
        y[n, c, oh, ow] = acc * inv


@cuda.jit(cache=True)
def _avgpool_backward_kernel(dy, dx, kh, kw, sh, sw, ph, pw, inv):
    N, C, H, W = dx.shape
    OH = dy.shape[2]
    OW = dy.shape[3]
    idx = cuda.grid(1)
    if idx < N * C * H * W:
        w = idx % W
        h = (idx // W) % H
        c = (idx // (W * H)) % C
        n = idx // (W * H * C)
        oh_lo, oh_hi = _covering(h, sh, ph, kh, OH)      # the windows that hold (h, w)
        ow_lo, ow_hi = _covering(w, sw, pw, kw, OW)
        acc = dx.dtype.type(0)
        for oh in range(oh_lo, oh_hi):
            for ow in range(ow_lo, ow_hi):
                acc += dy[n, c, oh, ow] * inv
        dx[n, c, h, w] = acc


@cuda.jit(cache=True)
def _global_avgpool_forward_kernel(x, y):
    N, C, H, W = x.shape
    p = cuda.grid(1)
    if p < N * C:
        n = p // C
        c = p - n * C
        acc = np.float64(0.0)                # float64, as the CPU kernel
        for h in range(H):
            for w in range(W):
                acc += x[n, c, h, w]
        y[n, c] = acc * (1.0 / (H * W))


@cuda.jit(cache=True)
def _global_avgpool_backward_kernel(dy, dx, inv):
    N, C, H, W = dx.shape
    idx = cuda.grid(1)
    if idx < N * C * H * W:
        w = idx % W
        h = (idx // W) % H
        c = (idx // (W * H)) % C
        n = idx // (W * H * C)
        dx[n, c, h, w] = dy[n, c] * inv


# ---- host side ----


def maxpool2d_workspace_shapes(C, H, W, kh, kw, sh, sw, ph, pw):
    """name -> WorkspaceSpec: `argmax`, per sample, int32, shaped like the output (as the CPU's)."""
    return {"argmax": WorkspaceSpec((C, *pool2d_output_hw(H, W, kh, kw, sh, sw, ph, pw)), np.int32)}


def maxpool2d_forward(x, y, kh, kw, sh, sw, ph, pw, argmax):
    """y = max over each window, argmax = flat index of its pixel in the plane. One thread per output."""
    blocks, threads = grid_1d(y.size)
    _maxpool_forward_kernel[blocks, threads](x, y, argmax, kh, kw, sh, sw, ph, pw)


def maxpool2d_backward(dy, dx, kh, kw, sh, sw, ph, pw, argmax):
    """dx = 0, then dx[n, c, argmax[n, c, oh, ow]] += dy[n, c, oh, ow]. One thread per element of dx
    (zeroing), then one per element of dy (atomic adds); argmax alone says where, so the window
    geometry (which the CPU kernel uses to write the tiled 2x2 case in one pass) is not needed."""
    blocks, threads = grid_1d(dx.size)
    _zero_kernel[blocks, threads](dx.reshape(dx.size))
    blocks, threads = grid_1d(dy.size)
    _maxpool_backward_kernel[blocks, threads](dy, argmax, dx)


def avgpool2d_forward(x, y, kh, kw, sh, sw, ph, pw):
    """y = (sum of the window's real pixels) / (kh * kw). One thread per output."""
    blocks, threads = grid_1d(y.size)
    _avgpool_forward_kernel[blocks, threads](x, y, kh, kw, sh, sw, ph, pw, x.dtype.type(1.0 / (kh * kw)))


def avgpool2d_backward(dy, dx, kh, kw, sh, sw, ph, pw):
    """dx[n, c, h, w] = sum of dy / (kh * kw) over the windows holding (h, w). One thread per input pixel."""
    blocks, threads = grid_1d(dx.size)
    _avgpool_backward_kernel[blocks, threads](dy, dx, kh, kw, sh, sw, ph, pw, dx.dtype.type(1.0 / (kh * kw)))


def global_avgpool2d_forward(x, y):
    """y[n, c] = mean of x[n, c] (summed in float64). One thread per (n, c) plane."""
    blocks, threads = grid_1d(x.shape[0] * x.shape[1])
    _global_avgpool_forward_kernel[blocks, threads](x, y)


def global_avgpool2d_backward(dy, dx):
    """dx[n, c, h, w] = dy[n, c] / (H * W). One thread per element of dx."""
    blocks, threads = grid_1d(dx.size)
    _global_avgpool_backward_kernel[blocks, threads](dy, dx, dx.dtype.type(1.0 / (dx.shape[2] * dx.shape[3])))
