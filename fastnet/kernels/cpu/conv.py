"""2-D convolution over NCHW images (PyTorch's conv2d: cross-correlation, no dilation, no groups).

Shapes (PyTorch's layouts):
    x (N, C, H, W)   w (O, C, KH, KW)   b (O,)   y (N, O, OH, OW)
    OH = (H + 2*ph - KH) // sh + 1,   OW = (W + 2*pw - KW) // sw + 1
    P = OH * OW (output pixels per image),   K = C * KH * KW (one column's length)

    y[n, o, oh, ow] = b[o] + sum_{c, kh, kw} w[o, c, kh, kw] * x[n, c, oh*sh - ph + kh, ow*sw - pw + kw]

with x read as 0 outside the image (zero padding).

Lowering, one image at a time: im2col writes the image's (K, P) column matrix
    cols[(c*KH + kh)*KW + kw, oh*OW + ow] = x[n, c, oh*sh - ph + kh, ow*sw - pw + kw]
row by row, each row a run along ow (a contiguous copy when the stride is 1), and then
    forward          y[n] (O, P) = w (O, K) @ cols (K, P), + b    -- already NCHW, no layout pass
    backward params  dw.T (K, O) += cols (K, P) @ dy[n].T (P, O)  -- cols recomputed, not stored
    backward input   dcols (K, P) = w.T (K, O) @ dy[n] (O, P);  dx[n] = col2im(dcols)
Each thread owns a contiguous block of images and a (K, P) scratch matrix that stays in its cache
from im2col through the GEMMs to col2im; BLAS runs single-threaded inside (fastnet/threads.py).
Measured against one GEMM over the whole batch (the (N*P, K) columns of every image, then a
layout pass to NCHW): 1.4x faster on cnn's second convolution and 3x on its first (C=1), and no
batch-sized column buffer (58 MB for cnn at batch 256).

col2im writes dx[n] of its own image only, so no two threads add into one element. The weight
gradient is summed per thread into partial[t] (each image's product lands in product[t] first:
np.dot overwrites), then the threads' sums are added into dw. The product is taken transposed,
(K, O) = cols @ dy[n].T: OpenBLAS ran it 1.6-2x faster than dy[n] @ cols.T (O, K) on the zoo's shapes
(e.g. 26 vs 49 us for O=16, K=144, P=784). Workspaces, all (T, ...) with T = gemm.BLOCKS threads
(see `conv2d_workspace_shapes`): cols (T, K, P), partial (T, O, K), product (T, K, O).
Nothing here allocates.
"""

import numpy as np
from numba import njit, prange

from .gemm import BLOCKS, matmul


def conv2d_output_hw(H, W, KH, KW, sh, sw, ph, pw):
    """(OH, OW), or a non-positive size where the kernel does not fit the padded image."""
    return (H + 2 * ph - KH) // sh + 1, (W + 2 * pw - KW) // sw + 1


def conv2d_workspace_shapes(C, H, W, O, KH, KW, sh, sw, ph, pw):
    """The workspaces the kernels need, name -> full shape (no batch axis: one slice per thread)."""
    OH, OW = conv2d_output_hw(H, W, KH, KW, sh, sw, ph, pw)
    K = C * KH * KW
    return {"cols": (BLOCKS, K, OH * OW), "partial": (BLOCKS, O, K), "product": (BLOCKS, K, O)}


@njit(cache=True)
def _valid_ow(OW, W, sw, pw, kw):
    """The range [lo, hi) of ow whose input column ow*sw - pw + kw lies inside 0..W-1."""
    lo = max(0, -((kw - pw) // sw))            # ceil((pw - kw) / sw), at least 0
    hi = min(OW, (W - 1 + pw - kw) // sw + 1)
    return lo, max(lo, hi)


@njit(cache=True)
def _im2col_image(x, n, cols, KH, KW, sh, sw, ph, pw):
    """cols[(c*KH + kh)*KW + kw, oh*OW + ow] = x[n, c, oh*sh - ph + kh, ow*sw - pw + kw], 0 outside."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    OW = (W + 2 * pw - KW) // sw + 1
    OH = cols.shape[1] // OW
    zero = x.dtype.type(0)
    for c in range(C):
        for kh in range(KH):
            for kw in range(KW):
                row = cols[(c * KH + kh) * KW + kw]
                lo, hi = _valid_ow(OW, W, sw, pw, kw)
                for oh in range(OH):
                    h = oh * sh - ph + kh
                    base = oh * OW
                    if h < 0 or h >= H:
                        for ow in range(OW):
                            row[base + ow] = zero
                        continue
                    for ow in range(lo):
                        row[base + ow] = zero
                    w0 = kw - pw                         # input column of ow is w0 + ow * sw
                    for ow in range(lo, hi):
                        row[base + ow] = x[n, c, h, w0 + ow * sw]
                    for ow in range(hi, OW):
                        row[base + ow] = zero


@njit(cache=True)
def _col2im_image(dcols, dx, n, KH, KW, sh, sw, ph, pw):
    """dx[n] = the adjoint of _im2col_image: each column entry added back to the pixel it came from."""
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    OW = (W + 2 * pw - KW) // sw + 1
    OH = dcols.shape[1] // OW
    dx[n] = dx.dtype.type(0)
    for c in range(C):
        for kh in range(KH):
            for kw in range(KW):
                row = dcols[(c * KH + kh) * KW + kw]
                lo, hi = _valid_ow(OW, W, sw, pw, kw)
                for oh in range(OH):
                    h = oh * sh - ph + kh
                    if h < 0 or h >= H:
                        continue
                    w0 = kw - pw                         # input column of ow is w0 + ow * sw
                    base = oh * OW
                    for ow in range(lo, hi):
                        dx[n, c, h, w0 + ow * sw] += row[base + ow]


@njit(cache=True, parallel=True)
def conv2d_forward(x, w, b, cols, y, sh, sw, ph, pw):
    """y = conv2d(x, w) + b (b may be None: no bias). cols: per-thread scratch (T, K, P)."""
    N = x.shape[0]
    O, C, KH, KW = w.shape
    K = C * KH * KW
    P = y.shape[2] * y.shape[3]
    T = cols.shape[0]
    w2 = w.reshape(O, K)
    for t in prange(T):
        scratch = cols[t]
        for n in range(N * t // T, N * (t + 1) // T):
            _im2col_image(x, n, scratch, KH, KW, sh, sw, ph, pw)
            yn = y[n].reshape(O, P)
            matmul(w2, scratch, yn)
            if b is not None:
                for o in range(O):
                    bo = b[o]
                    for p in range(P):
                        yn[o, p] += bo


@njit(cache=True, parallel=True)
def conv2d_backward(x, w, dy, cols, partial, product, dw, db, dx, sh, sw, ph, pw):
    """dw[o, c, kh, kw] = sum_{n, oh, ow} dy[n, o, oh, ow] x[n, c, oh*sh - ph + kh, ow*sw - pw + kw];
    db[o] = sum_{n, oh, ow} dy[n, o, oh, ow]  (db None: no bias);
    dx[n, c, h, w] = sum of dy[n, o, oh, ow] w[o, c, kh, kw] over the windows that read (h, w)
    (dx None: not wanted). All written, not accumulated."""
    N = x.shape[0]
    O, C, KH, KW = w.shape
    K = C * KH * KW
    P = dy.shape[2] * dy.shape[3]
    T = cols.shape[0]
    w2 = w.reshape(O, K)
    for t in prange(T):
        scratch = cols[t]
        partial[t] = dw.dtype.type(0)
        for n in range(N * t // T, N * (t + 1) // T):
            dyn = dy[n].reshape(O, P)
            _im2col_image(x, n, scratch, KH, KW, sh, sw, ph, pw)
            matmul(scratch, dyn.T, product[t])
            for o in range(O):
                for k in range(K):
                    partial[t, o, k] += product[t, k, o]
            if dx is not None:
                matmul(w2.T, dyn, scratch)          # the columns are done with: reuse as dcols
                _col2im_image(scratch, dx, n, KH, KW, sh, sw, ph, pw)
    dw2 = dw.reshape(O, K)
    for o in prange(O):
        for k in range(K):
            acc = partial[0, o, k]
            for t in range(1, T):
                acc += partial[t, o, k]
            dw2[o, k] = acc
        if db is not None:
            total = dy.dtype.type(0)
            for n in range(N):
                for oh in range(dy.shape[2]):
                    for ow in range(dy.shape[3]):
                        total += dy[n, o, oh, ow]
            db[o] = total
