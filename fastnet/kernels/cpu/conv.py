"""2-D convolution over NCHW images (PyTorch's conv2d: cross-correlation, no dilation, no groups).

Shapes (PyTorch's layouts):
    x (N, C, H, W)   w (O, C, KH, KW)   b (O,)   y (N, O, OH, OW)
    OH = (H + 2*ph - KH) // sh + 1,   OW = (W + 2*pw - KW) // sw + 1   (kernels/shapes.py)
    P = OH * OW (output pixels per image),   K = C * KH * KW (one column's length)

    y[n, o, oh, ow] = b[o] + sum_{c, kh, kw} w[o, c, kh, kw] * x[n, c, oh*sh - ph + kh, ow*sw - pw + kw]

with x read as 0 outside the image (zero padding).

Lowering, one image at a time: the image is copied inside a zero border (padded, (C, H+2ph, W+2pw)),
and im2col writes its (K, P) column matrix
    cols[(c*KH + kh)*KW + kw, oh*OW + ow] = padded[c, oh*sh + kh, ow*sw + kw]
row by row, each row OH runs along ow with no bounds to test (faster than testing them, see
bench/NOTES.md, conv), and then
    forward          y[n] (O, P) = w (O, K) @ cols (K, P), + b    -- already NCHW, no layout pass
    backward params  dw.T (K, O) += cols (K, P) @ dy[n].T (P, O)  -- cols recomputed, not stored
    backward input   dcols (K, P) = w.T (K, O) @ dy[n] (O, P);  dx[n] = col2im(dcols)
Each thread owns a contiguous block of images and a (K, P) scratch matrix that stays in its cache
from im2col through the products to col2im; each product one single-threaded BLAS call (blas.py,
matmul.py). Where the weight gradient is small (a first layer on one channel: O * K <=
matmul.SMALL_C) its product is a plain loop instead (matmul.matmul_nt_small), which beats BLAS
there. Per image rather than one product over the whole batch (the (N*P, K) columns of every image,
then a layout pass to NCHW): faster on the zoo's convolutions, most of all a first one on one
channel, and no batch-sized column buffer (bench/NOTES.md, conv).

col2im adds into the thread's padded image and copies its inside to dx[n]: a thread writes the
images it owns only, so no two threads add into one element. The weight gradient is summed per
thread into partial[t] (each image's product lands in product[t] first: BLAS overwrites), then the
threads' sums are added into dw. The product is taken transposed, (K, O) = cols @ dy[n].T, the
orientation OpenBLAS runs faster on the zoo's shapes than dy[n] @ cols.T (O, K), and summed in
that layout, transposed once into dw at the end (a transposing add per image cost more; both in
bench/NOTES.md, conv).

Workspaces (conv2d_workspace_shapes), all (T, ...) with T = matmul.BLOCKS threads, no batch axis:
cols (T, K, P), padded (T, C, H+2ph, W+2pw), partial and product (T, K, O). Nothing here allocates.
"""

from numba import njit, prange

from ..shapes import conv2d_output_hw
from ..workspace import WorkspaceSpec
from .matmul import BLOCKS, SMALL_C, matmul, matmul_nt_small


def conv2d_workspace_shapes(C, H, W, O, KH, KW, sh, sw, ph, pw):
    """name -> WorkspaceSpec of the workspaces the kernels take, no batch axis (one slice per
    thread): cols and padded (forward and backward), partial and product (backward)."""
    OH, OW = conv2d_output_hw(H, W, KH, KW, sh, sw, ph, pw)
    K = C * KH * KW
    shapes = {"cols": (BLOCKS, K, OH * OW), "padded": (BLOCKS, C, H + 2 * ph, W + 2 * pw),
              "partial": (BLOCKS, K, O), "product": (BLOCKS, K, O)}
    return {name: WorkspaceSpec(shape, per_sample=False) for name, shape in shapes.items()}


@njit(cache=True)
def pad_image(x, n, padded, ph, pw):
    """padded[c] = x[n, c] inside a border of ph rows and pw columns of zeros: padded (C, H+2ph, W+2pw)."""
    padded[...] = padded.dtype.type(0)
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    for c in range(C):
        for h in range(H):
            for w in range(W):
                padded[c, h + ph, w + pw] = x[n, c, h, w]


@njit(cache=True)
def _im2col_image(padded, cols, KH, KW, sh, sw):
    """cols[(c*KH + kh)*KW + kw, oh*OW + ow] = padded[c, oh*sh + kh, ow*sw + kw]: each row a copy
    with no bounds to test, which is why the image is padded first (see bench/NOTES.md, conv)."""
    C = padded.shape[0]
    OW = (padded.shape[2] - KW) // sw + 1
    OH = cols.shape[1] // OW
    for c in range(C):
        for kh in range(KH):
            for kw in range(KW):
                row = cols[(c * KH + kh) * KW + kw]
                for oh in range(OH):
                    src = padded[c, oh * sh + kh]
                    base = oh * OW
                    if sw == 1:                 # a unit stride the compiler vectorises (bench/NOTES.md, conv)
                        for ow in range(OW):
                            row[base + ow] = src[ow + kw]
                    else:
                        for ow in range(OW):
                            row[base + ow] = src[ow * sw + kw]


@njit(cache=True)
def _col2im_image(dcols, padded, dx, n, KH, KW, sh, sw, ph, pw):
    """dx[n] = the adjoint of pad_image then _im2col_image: each column entry added back to the
    padded pixel it came from, then the border dropped."""
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    OW = (padded.shape[2] - KW) // sw + 1
    OH = dcols.shape[1] // OW
    padded[...] = padded.dtype.type(0)
    for c in range(C):
        for kh in range(KH):
            for kw in range(KW):
                row = dcols[(c * KH + kh) * KW + kw]
                for oh in range(OH):
                    dst = padded[c, oh * sh + kh]
                    base = oh * OW
                    if sw == 1:
                        for ow in range(OW):
                            dst[ow + kw] += row[base + ow]
                    else:
                        for ow in range(OW):
                            dst[ow * sw + kw] += row[base + ow]
    for c in range(C):
        for h in range(H):
            for w in range(W):
                dx[n, c, h, w] = padded[c, h + ph, w + pw]


@njit(cache=True)
def relu_in_place(yn):
    """yn = yn if yn > 0 else 0, element-wise: relu_forward's expression (NaN becomes 0 in both)."""
    zero = yn.dtype.type(0)
    for o in range(yn.shape[0]):
        for p in range(yn.shape[1]):
            v = yn[o, p]
            yn[o, p] = v if v > zero else zero


@njit(cache=True)
def relu_mask_in_place(yn, dyn):
    """dyn = dyn if yn > 0 else 0: relu_backward's, with the mask read from the ReLU's output."""
    zero = dyn.dtype.type(0)
    for o in range(yn.shape[0]):
        for p in range(yn.shape[1]):
            if not yn[o, p] > zero:
                dyn[o, p] = zero


@njit(cache=True)
def channel_sum(dy, o):
    """sum_{n, oh, ow} dy[n, o, oh, ow]: output channel o's bias gradient (every algorithm's)."""
    total = dy.dtype.type(0)
    for n in range(dy.shape[0]):
        for oh in range(dy.shape[2]):
            for ow in range(dy.shape[3]):
                total += dy[n, o, oh, ow]
    return total


@njit(cache=True, parallel=True)
def conv2d_forward(x, w, b, y, sh, sw, ph, pw, relu, cols, padded):
    """y = conv2d(x, w) + b (b may be None: no bias), then y = max(y, 0) where relu (a ReLU fused
    into the convolution: applied while the image is in cache). cols, padded: per-thread scratch
    (T, K, P) and (T, C, H + 2ph, W + 2pw)."""
    N = x.shape[0]
    O, C, KH, KW = w.shape
    K = C * KH * KW
    P = y.shape[2] * y.shape[3]
    T = cols.shape[0]
    w2 = w.reshape(O, K)
    for t in prange(T):
        scratch = cols[t]
        for n in range(N * t // T, N * (t + 1) // T):
            pad_image(x, n, padded[t], ph, pw)
            _im2col_image(padded[t], scratch, KH, KW, sh, sw)
            yn = y[n].reshape(O, P)
            matmul(w2, scratch, yn)
            if b is not None:
                for o in range(O):
                    bo = b[o]
                    for p in range(P):
                        yn[o, p] += bo
            if relu:
                relu_in_place(yn)


@njit(cache=True, parallel=True)
def conv2d_backward(x, w, y, dy, dw, db, dx, sh, sw, ph, pw, relu, cols, padded, partial, product):
    """dw[o, c, kh, kw] = sum_{n, oh, ow} dy[n, o, oh, ow] x[n, c, oh*sh - ph + kh, ow*sw - pw + kw];
    db[o] = sum_{n, oh, ow} dy[n, o, oh, ow]  (db None: no bias);
    dx[n, c, h, w] = sum of dy[n, o, oh, ow] w[o, c, kh, kw] over the windows that read (h, w)
    (dx None: not wanted). All written, not accumulated. Where relu (the forward applied a ReLU to y),
    dy is first masked in place, dy = 0 where y <= 0: the gradient of the convolution's own output.
    cols, padded as the forward's; partial, product: per-thread (T, K, O) sums and products."""
    N = x.shape[0]
    O, C, KH, KW = w.shape
    K = C * KH * KW
    P = dy.shape[2] * dy.shape[3]
    T = cols.shape[0]
    w2 = w.reshape(O, K)
    small_dw = O * K <= SMALL_C         # the (K, O) weight gradient product small
    for t in prange(T):
        scratch = cols[t]
        partial[t] = dw.dtype.type(0)
        for n in range(N * t // T, N * (t + 1) // T):
            dyn = dy[n].reshape(O, P)
            if relu:
                relu_mask_in_place(y[n].reshape(O, P), dyn)
            pad_image(x, n, padded[t], ph, pw)
            _im2col_image(padded[t], scratch, KH, KW, sh, sw)
            if small_dw:
                matmul_nt_small(scratch, dyn, product[t])
            else:
                matmul(scratch, dyn.T, product[t])
            for k in range(K):
                for o in range(O):
                    partial[t, k, o] += product[t, k, o]    # (a += on arrays would allocate)
            if dx is not None:
                matmul(w2.T, dyn, scratch)          # the columns are done with: reuse as dcols
                _col2im_image(scratch, padded[t], dx, n, KH, KW, sh, sw, ph, pw)
    dw2 = dw.reshape(O, K)
    for o in prange(O):
        for k in range(K):
            acc = partial[0, k, o]
            for t in range(1, T):
                acc += partial[t, k, o]
            dw2[o, k] = acc
        if db is not None:
            db[o] = channel_sum(dy, o)
