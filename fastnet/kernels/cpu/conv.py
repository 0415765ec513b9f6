"""2-D convolution over NCHW images (PyTorch's conv2d: cross-correlation, no dilation, no groups).

Shapes (PyTorch's layouts):
    x (N, C, H, W)   w (O, C, KH, KW)   b (O,)   y (N, O, OH, OW)
    OH = (H + 2*ph - KH) // sh + 1,   OW = (W + 2*pw - KW) // sw + 1
    P = OH * OW (output pixels per image),   K = C * KH * KW (one column's length)

    y[n, o, oh, ow] = b[o] + sum_{c, kh, kw} w[o, c, kh, kw] * x[n, c, oh*sh - ph + kh, ow*sw - pw + kw]

with x read as 0 outside the image (zero padding).

Workspaces (given by the caller, first axis the batch; see `conv2d_workspace_shapes`):
    cols    (N, P, K)  im2col: cols[n, oh*OW + ow, (c*KH + kh)*KW + kw]
                       = x[n, c, oh*sh - ph + kh, ow*sw - pw + kw]  (0 in the padding).
                       Viewed as the (N*P, K) matrix the GEMM reads row after row.
    mat     (N, P, O)  the GEMM's result / operand in (pixel, out-channel) order:
                       forward:  mat[n, p, o] = sum_k cols[n, p, k] w[o, k]   (before the bias)
                       backward: mat[n, p, o] = dy[n, o, p]                   (dy laid out for BLAS)
    dcols   (N, P, K)  the gradient of cols: dcols[n, p, k] = sum_o dy[n, o, p] w[o, k].

Every workspace must be C-contiguous (a view ws[:n] of a C-contiguous (batch, ...) array is), so
that `cols.reshape(N*P, K)` and `w.reshape(O, K)` are views, and the transposed operands handed to
np.dot are F-ordered views that BLAS reads without copies. Nothing here allocates.

The computation, per direction:
    forward          im2col(x) -> cols;  mat = cols @ w.T  (one GEMM over the batch);
                     y[n, o, p] = mat[n, p, o] + b[o]  (layout pass with the bias fused in)
    backward_params  mat = dy in (pixel, channel) order; db[o] = sum_{n,p} dy[n, o, p];
                     dw = mat.T @ cols  (one GEMM against the forward's columns)
    backward_input   dcols = mat @ w  (one GEMM);  dx = col2im(dcols)
backward_input reads the `mat` written by backward_params, so the caller runs params first.
Parameter gradients are written (overwritten), not accumulated. dcols may be the very array that
held cols: backward_params is the last reader of cols, and backward_input writes dcols only after.

Parallelism (`prange`): im2col over the N*OH output rows (each writes its own rows of cols);
the layout passes over images/planes; the bias gradient over output channels; col2im over images
(each thread owns dx[n] and may add into it, so overlapping windows never race). BLAS runs its
own threads between the Numba loops, never at the same time.
"""

import numpy as np
from numba import njit, prange

from .gemm import matmul_rows, matmul_tn


def conv2d_output_hw(H, W, KH, KW, sh, sw, ph, pw):
    """(OH, OW), or a non-positive size where the kernel does not fit the padded image."""
    return (H + 2 * ph - KH) // sh + 1, (W + 2 * pw - KW) // sw + 1


def conv2d_workspace_shapes(C, H, W, O, KH, KW, sh, sw, ph, pw):
    """Per-sample shapes of the workspaces the kernels need: name -> shape (no batch axis).

    "cols" holds the forward's im2col columns and must survive from forward to backward; the
    layer then reuses it as dcols (after backward_params has read it). "mat" is the GEMM's
    (pixel, out-channel) matrix: the forward's product, then dy laid out for the backward GEMMs.
    """
    OH, OW = conv2d_output_hw(H, W, KH, KW, sh, sw, ph, pw)
    P = OH * OW
    return {"cols": (P, C * KH * KW), "mat": (P, O)}


@njit(cache=True, parallel=True)
def conv2d_im2col(x, cols, KH, KW, sh, sw, ph, pw):
    """cols[n, oh*OW + ow, (c*KH + kh)*KW + kw] = x[n, c, oh*sh - ph + kh, ow*sw - pw + kw] (0 outside)."""
    N, C, H, W = x.shape
    OW = (W + 2 * pw - KW) // sw + 1
    OH = cols.shape[1] // OW
    zero = x.dtype.type(0)
    for r in prange(N * OH):
        n = r // OH
        oh = r - n * OH
        h0 = oh * sh - ph
        for ow in range(OW):
            p = oh * OW + ow
            w0 = ow * sw - pw
            j = 0
            for c in range(C):
                for kh in range(KH):
                    h = h0 + kh
                    if h < 0 or h >= H:
                        for kw in range(KW):
                            cols[n, p, j + kw] = zero
                    elif w0 >= 0 and w0 + KW <= W:      # the whole row lies inside the image
                        for kw in range(KW):
                            cols[n, p, j + kw] = x[n, c, h, w0 + kw]
                    else:
                        for kw in range(KW):
                            wi = w0 + kw
                            if wi >= 0 and wi < W:
                                cols[n, p, j + kw] = x[n, c, h, wi]
                            else:
                                cols[n, p, j + kw] = zero
                    j += KW


@njit(cache=True, parallel=True)
def conv2d_col2im(dcols, dx, KH, KW, sh, sw, ph, pw):
    """dx[n, c, h, w] = sum of dcols[n, oh*OW + ow, (c*KH + kh)*KW + kw] over h = oh*sh - ph + kh,
    w = ow*sw - pw + kw (the adjoint of im2col; padding positions are dropped).

    One image per iteration: a thread zeroes its own dx[n] and adds into it, reading dcols[n]
    in order, so overlapping windows add up without two threads touching one element.
    """
    N, C, H, W = dx.shape
    OW = (W + 2 * pw - KW) // sw + 1
    OH = dcols.shape[1] // OW
    zero = dx.dtype.type(0)
    for n in prange(N):
        for c in range(C):
            for h in range(H):
                for wi in range(W):
                    dx[n, c, h, wi] = zero
        for oh in range(OH):
            h0 = oh * sh - ph
            for ow in range(OW):
                p = oh * OW + ow
                w0 = ow * sw - pw
                inside_w = w0 >= 0 and w0 + KW <= W
                j = 0
                for c in range(C):
                    for kh in range(KH):
                        h = h0 + kh
                        if h >= 0 and h < H:
                            if inside_w:
                                for kw in range(KW):
                                    dx[n, c, h, w0 + kw] += dcols[n, p, j + kw]
                            else:
                                for kw in range(KW):
                                    wi = w0 + kw
                                    if wi >= 0 and wi < W:
                                        dx[n, c, h, wi] += dcols[n, p, j + kw]
                        j += KW


@njit(cache=True, parallel=True)
def _mat_to_nchw_bias(mat, b, y):
    """y[n, o, oh, ow] = mat[n, oh*OW + ow, o] + b[o]; one (n, o) plane per iteration."""
    N, O, OH, OW = y.shape
    for q in prange(N * O):
        n = q // O
        o = q - n * O
        bo = b[o]
        for oh in range(OH):
            for ow in range(OW):
                y[n, o, oh, ow] = mat[n, oh * OW + ow, o] + bo


@njit(cache=True, parallel=True)
def _mat_to_nchw(mat, y):
    """y[n, o, oh, ow] = mat[n, oh*OW + ow, o]; one (n, o) plane per iteration."""
    N, O, OH, OW = y.shape
    for q in prange(N * O):
        n = q // O
        o = q - n * O
        for oh in range(OH):
            for ow in range(OW):
                y[n, o, oh, ow] = mat[n, oh * OW + ow, o]


@njit(cache=True, parallel=True)
def _nchw_to_mat(dy, mat):
    """mat[n, oh*OW + ow, o] = dy[n, o, oh, ow]; one output row (n, oh) per iteration."""
    N, O, OH, OW = dy.shape
    for r in prange(N * OH):
        n = r // OH
        oh = r - n * OH
        for ow in range(OW):
            p = oh * OW + ow
            for o in range(O):
                mat[n, p, o] = dy[n, o, oh, ow]


@njit(cache=True, parallel=True)
def _bias_grad(dy, db):
    """db[o] = sum_{n, oh, ow} dy[n, o, oh, ow]; each thread owns a slice of the channels."""
    N, O, OH, OW = dy.shape
    for o in prange(O):
        acc = dy.dtype.type(0)
        for n in range(N):
            for oh in range(OH):
                for ow in range(OW):
                    acc += dy[n, o, oh, ow]
        db[o] = acc


@njit(cache=True)
def conv2d_forward(x, w, b, cols, mat, y, sh, sw, ph, pw):
    """y = conv2d(x, w) + b.  Writes cols (kept for backward), mat (scratch) and y."""
    N = x.shape[0]
    O, C, KH, KW = w.shape
    P = cols.shape[1]
    K = cols.shape[2]
    conv2d_im2col(x, cols, KH, KW, sh, sw, ph, pw)
    # (N*P, K) @ (K, O): w.reshape(O, K).T is an F-ordered view, read by BLAS as transposed.
    matmul_rows(cols.reshape(N * P, K), w.reshape(O, K).T, mat.reshape(N * P, O))
    _mat_to_nchw_bias(mat, b, y)


@njit(cache=True)
def conv2d_forward_nobias(x, w, cols, mat, y, sh, sw, ph, pw):
    """y = conv2d(x, w) without a bias.  Writes cols (kept for backward), mat (scratch) and y."""
    N = x.shape[0]
    O, C, KH, KW = w.shape
    P = cols.shape[1]
    K = cols.shape[2]
    conv2d_im2col(x, cols, KH, KW, sh, sw, ph, pw)
    matmul_rows(cols.reshape(N * P, K), w.reshape(O, K).T, mat.reshape(N * P, O))
    _mat_to_nchw(mat, y)


@njit(cache=True)
def conv2d_backward_params(cols, dy, mat, dw, db, partial):
    """dw[o, c, kh, kw] = sum_{n, p} dy[n, o, p] cols[n, p, (c*KH + kh)*KW + kw];
    db[o] = sum_{n, p} dy[n, o, p].  Both written, not accumulated.

    cols are the forward's columns. Writes mat = dy in (pixel, channel) order, which
    conv2d_backward_input then reads.
    """
    N, O, OH, OW = dy.shape
    P = OH * OW
    K = cols.shape[2]
    _nchw_to_mat(dy, mat)
    _bias_grad(dy, db)
    # (O, N*P) @ (N*P, K), summed over blocks of rows by the threads (partial: their sums).
    matmul_tn(mat.reshape(N * P, O), cols.reshape(N * P, K), dw.reshape(O, K), partial)


@njit(cache=True)
def conv2d_backward_params_nobias(cols, dy, mat, dw, partial):
    """conv2d_backward_params for a convolution without a bias: writes mat and dw."""
    N, O, OH, OW = dy.shape
    P = OH * OW
    K = cols.shape[2]
    _nchw_to_mat(dy, mat)
    matmul_tn(mat.reshape(N * P, O), cols.reshape(N * P, K), dw.reshape(O, K), partial)


@njit(cache=True)
def conv2d_backward_input(mat, w, dcols, dx, sh, sw, ph, pw):
    """dx[n, c, h, w] = sum over (o, oh, ow, kh, kw) with h = oh*sh - ph + kh, w = ow*sw - pw + kw
    of dy[n, o, oh, ow] w[o, c, kh, kw].

    mat is dy in (pixel, channel) order, as conv2d_backward_params left it. Writes dcols
    (scratch; may be the forward's cols, which are no longer needed) and dx.
    """
    N = dx.shape[0]
    O, C, KH, KW = w.shape
    P = mat.shape[1]
    K = dcols.shape[2]
    # (N*P, O) @ (O, K)
    matmul_rows(mat.reshape(N * P, O), w.reshape(O, K), dcols.reshape(N * P, K))
    conv2d_col2im(dcols, dx, KH, KW, sh, sw, ph, pw)
