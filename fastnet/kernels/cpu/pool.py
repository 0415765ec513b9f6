"""Pooling over NCHW images: max, average and global average, with PyTorch's semantics.

Windows: output pixel (oh, ow) reads input rows oh*sh - ph ... oh*sh - ph + kh - 1 and columns
ow*sw - pw ... ow*sw - pw + kw - 1; rows/columns outside the image are padding. ceil_mode=False
(the output size is floor((H + 2*ph - kh) / sh) + 1), so every window lies inside the padded image
and, since ph <= kh/2 and pw <= kw/2 (checked by the layer), holds at least one real pixel.

- Max pooling: padding counts as -inf; ties go to the first maximum in scan order (row-major over
  the window) and a NaN wins over any number, exactly as PyTorch's CPU kernel. `argmax` (an
  integer array shaped like y, int32 or int64) holds the flat index h * W + w of the chosen pixel
  within its (H, W) plane, the same numbers as `max_pool2d(..., return_indices=True)`.
- Average pooling: count_include_pad=True, so every window sum is divided by kh * kw.
- Global average pooling: y[n, c] = mean over the (H, W) plane; y has shape (N, C).

Parallelism: every kernel runs `prange` over the N * C planes. A plane's outputs and its input
gradient belong to one thread, so the backward kernels can add into overlapping windows
(stride < kernel) without two threads ever writing the same element.

Workspace (maxpool2d_workspace_shapes): `argmax`, int32 (half the memory traffic of int64; any
integer array works), written by the forward and read by the backward. The other pools need none.
"""

import numpy as np
from numba import njit, prange

from .. import elementwise
from ..shapes import pool2d_output_hw
from ..workspace import WorkspaceSpec

# (start, end) of a window's real cells along one axis (elementwise.py, shared with the CUDA kernels)
_window = njit(cache=True, inline="always")(elementwise.window_bounds)


def maxpool2d_workspace_shapes(C, H, W, kh, kw, sh, sw, ph, pw):
    """name -> WorkspaceSpec: `argmax`, per sample, int32, shaped like the output (C, OH, OW)."""
    return {"argmax": WorkspaceSpec((C, *pool2d_output_hw(H, W, kh, kw, sh, sw, ph, pw)), np.int32)}


@njit(cache=True, parallel=True)
def maxpool2d_forward(x, y, kh, kw, sh, sw, ph, pw, argmax):
    """y[n, c, oh, ow] = max over the window; argmax[n, c, oh, ow] = flat index of that pixel in the plane."""
    if kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0:
        _maxpool2x2_forward(x, y, argmax)   # the common case, unrolled (bench/NOTES.md, pool)
        return
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    ninf = x.dtype.type(-np.inf)
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        for oh in range(OH):
            hs, he = _window(oh, sh, ph, kh, H)
            for ow in range(OW):
                ws, we = _window(ow, sw, pw, kw, W)
                best = ninf
                besti = hs * W + ws          # PyTorch's starting index: the first real pixel
                for h in range(hs, he):
                    for w in range(ws, we):
                        v = x[n, c, h, w]
                        if v > best or v != v:   # strict '>': the first maximum wins; NaN wins
                            best = v
                            besti = h * W + w
                y[n, c, oh, ow] = best
                argmax[n, c, oh, ow] = besti


@njit(cache=True, parallel=True)
def _maxpool2x2_forward(x, y, argmax):
    """maxpool2d_forward for a 2x2 window, stride 2, no padding: the same numbers, unrolled."""
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        for oh in range(OH):
            top = x[n, c, 2 * oh]
            bottom = x[n, c, 2 * oh + 1]
            for ow in range(OW):
                w = 2 * ow
                best = top[w]                    # scan order: top-left, top-right, bottom-left, bottom-right
                besti = 2 * oh * W + w
                v = top[w + 1]
                if v > best or v != v:
                    best = v
                    besti = 2 * oh * W + w + 1
                v = bottom[w]
                if v > best or v != v:
                    best = v
                    besti = (2 * oh + 1) * W + w
                v = bottom[w + 1]
                if v > best or v != v:
                    best = v
                    besti = (2 * oh + 1) * W + w + 1
                y[n, c, oh, ow] = best
                argmax[n, c, oh, ow] = besti


@njit(cache=True, parallel=True)
def maxpool2d_backward(dy, dx, kh, kw, sh, sw, ph, pw, argmax):
    """dx = 0, then dx[n, c, argmax[n, c, oh, ow]] += dy[n, c, oh, ow] (windows may overlap)."""
    if kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0:
        _maxpool2x2_backward(dy, argmax, dx)
        return
    N, C, H, W = dx.shape
    OH, OW = dy.shape[2], dy.shape[3]
    zero = dx.dtype.type(0)
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        for h in range(H):
            for w in range(W):
                dx[n, c, h, w] = zero
        for oh in range(OH):
            for ow in range(OW):
                i = argmax[n, c, oh, ow]
                h = i // W
                dx[n, c, h, i - h * W] += dy[n, c, oh, ow]


@njit(cache=True, parallel=True)
def _maxpool2x2_backward(dy, argmax, dx):
    """maxpool2d_backward for a 2x2 window, stride 2, no padding: the windows tile the plane, so
    each dx element is written once, dy where it was the window's maximum and 0 elsewhere, with
    no zeroing pass and no scattered adds (faster on the zoo's pools: bench/NOTES.md, pool)."""
    N, C, H, W = dx.shape
    OH, OW = dy.shape[2], dy.shape[3]
    zero = dx.dtype.type(0)
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        for oh in range(OH):
            top = dx[n, c, 2 * oh]
            bottom = dx[n, c, 2 * oh + 1]
            for ow in range(OW):
                g = dy[n, c, oh, ow]
                i = argmax[n, c, oh, ow] - 2 * oh * W - 2 * ow     # 0, 1, W or W + 1
                top[2 * ow] = g if i == 0 else zero
                top[2 * ow + 1] = g if i == 1 else zero
                bottom[2 * ow] = g if i == W else zero
                bottom[2 * ow + 1] = g if i == W + 1 else zero
            for w in range(2 * OW, W):          # an odd width's last column is in no window
                top[w] = zero
                bottom[w] = zero
        for h in range(2 * OH, H):              # nor is an odd height's last row
            for w in range(W):
                dx[n, c, h, w] = zero


@njit(cache=True, parallel=True)
def avgpool2d_forward(x, y, kh, kw, sh, sw, ph, pw):
    """y[n, c, oh, ow] = (sum of the window's real pixels) / (kh * kw)   (count_include_pad=True)."""
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    inv = x.dtype.type(1.0 / (kh * kw))
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        for oh in range(OH):
            hs, he = _window(oh, sh, ph, kh, H)
            for ow in range(OW):
                ws, we = _window(ow, sw, pw, kw, W)
                acc = x.dtype.type(0)
                for h in range(hs, he):
                    for w in range(ws, we):
                        acc += x[n, c, h, w]
                y[n, c, oh, ow] = acc * inv


@njit(cache=True, parallel=True)
def avgpool2d_backward(dy, dx, kh, kw, sh, sw, ph, pw):
    """dx = 0, then every real pixel of window (oh, ow) gets dy[n, c, oh, ow] / (kh * kw) added."""
    N, C, H, W = dx.shape
    OH, OW = dy.shape[2], dy.shape[3]
    inv = dx.dtype.type(1.0 / (kh * kw))
    zero = dx.dtype.type(0)
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        for h in range(H):
            for w in range(W):
                dx[n, c, h, w] = zero
        for oh in range(OH):
            hs, he = _window(oh, sh, ph, kh, H)
            for ow in range(OW):
                ws, we = _window(ow, sw, pw, kw, W)
                g = dy[n, c, oh, ow] * inv
                for h in range(hs, he):
                    for w in range(ws, we):
                        dx[n, c, h, w] += g


# fastmath "reassoc" only (no nnan/ninf: NaN and inf propagate) lets LLVM vectorise the sum.
@njit(cache=True, parallel=True, fastmath={"reassoc"})
def global_avgpool2d_forward(x, y):
    """y[n, c] = mean of x[n, c, :, :]  (the sum is accumulated in float64)."""
    N, C, H, W = x.shape
    inv = 1.0 / (H * W)
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        acc = 0.0
        for h in range(H):
            for w in range(W):
                acc += x[n, c, h, w]
        y[n, c] = acc * inv


@njit(cache=True, parallel=True)
def global_avgpool2d_backward(dy, dx):
    """dx[n, c, h, w] = dy[n, c] / (H * W)."""
    N, C, H, W = dx.shape
    inv = dx.dtype.type(1.0 / (H * W))
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        g = dy[n, c] * inv
        for h in range(H):
            for w in range(W):
                dx[n, c, h, w] = g
