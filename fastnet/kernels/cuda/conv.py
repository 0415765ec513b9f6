"""2-D convolution on the GPU: im2col + the tiled GEMM, a chunk of G images per launch.

The same definitions as kernels/cpu/conv.py (PyTorch's conv2d, NCHW, weight (O, C, KH, KW)):
    P = OH * OW output pixels per image, K = C * KH * KW entries per column,
    cols[g, (c*KH + kh)*KW + kw, oh*OW + ow] = x[n0 + g, c, oh*sh - ph + kh, ow*sw - pw + kw]  (0 outside)

The batch is taken G images at a time (G = cols.shape[0], chosen by conv2d_workspace_shapes so
that the column buffer stays within a fixed budget whatever the batch size):
    forward          im2col;  y[n0 + g] (O, P) = W (O, K) @ cols[g] (K, P) + b    (batched GEMM, z = g)
    backward params  im2col;  partial[g] (K, O) (+)= cols[g] (K, P) @ dy[n0 + g].T (P, O)
                     then dW = sum_g partial[g], transposed   (one thread per weight: no atomics,
                     fixed order)
                     db[o] = sum over n, oh, ow of dy (one block per channel, a tree reduction in float64)
    backward input   cols[g] = W.T (K, O) @ dy[n0 + g] (O, P)  (the columns are done with: reused)
                     col2im: one thread per input pixel gathers the column entries read from it,
                     so no two threads write one element (no atomics, no races).
Workspaces (conv2d_workspace_shapes), no batch axis: cols (G, K, P) and partial (G, K, O), the
weight gradient's partial sums in the CPU's (K, O) layout (there one per thread, here one per
image of a chunk). Nothing here allocates.
"""

import numpy as np
from numba import cuda, float64

from ..shapes import conv2d_output_hw
from ..workspace import WorkspaceSpec
from .activation import relu_backward, relu_forward
from .gemm import gemm
from .launch import REDUCE_THREADS, block_sum, grid_1d, reduce_threads

COLS_ELEMENTS = 1 << 22      # the column chunk's budget: 16 MiB of float32
PARTIAL_ELEMENTS = 1 << 22   # the same for the per-image weight-gradient sums
MAX_CHUNK = 256              # images per chunk at most (grid z, and enough to fill a GPU)


@cuda.jit(cache=True)
def _im2col_kernel(x, n0, count, cols, KH, KW, sh, sw, ph, pw, OW):
    """cols[g] for the images n0 .. n0 + count - 1: one thread per column entry."""
    K = cols.shape[1]
    P = cols.shape[2]
    idx = cuda.grid(1)
    if idx < count * K * P:
        p = idx % P                       # adjacent threads write adjacent pixels (coalesced)
        k = (idx // P) % K
        g = idx // (P * K)
        kw = k % KW
        kh = (k // KW) % KH
        c = k // (KW * KH)
        oh = p // OW
        ow = p - oh * OW
        h = oh * sh - ph + kh
        w = ow * sw - pw + kw
        if 0 <= h < x.shape[2] and 0 <= w < x.shape[3]:
            cols[g, k, p] = x[n0 + g, c, h, w]
        else:
            cols[g, k, p] = 0             # zero padding


@cuda.jit(cache=True)
def _col2im_kernel(dcols, n0, count, dx, KH, KW, sh, sw, ph, pw, OH, OW):
    """dx[n0 + g, c, h, w] = sum of the column entries that im2col read from (h, w): one thread per
    input pixel, gathering; (kh, kw) ascending, the order in which the CPU kernel adds them."""
    C = dx.shape[1]
    H = dx.shape[2]
    W = dx.shape[3]
    idx = cuda.grid(1)
    if idx < count * C * H * W:
        w = idx % W
        h = (idx // W) % H
        c = (idx // (W * H)) % C
        g = idx // (W * H * C)
        acc = dx.dtype.type(0)
        for kh in range(KH):
            th = h + ph - kh              # = oh * sh for the window row oh that reads h, if any
            if th < 0 or th % sh != 0 or th // sh >= OH:
                continue
            oh = th // sh
            for kw in range(KW):
                tw = w + pw - kw
                if tw < 0 or tw % sw != 0 or tw // sw >= OW:
                    continue
                acc += dcols[g, (c * KH + kh) * KW + kw, oh * OW + tw // sw]
        dx[n0 + g, c, h, w] = acc


@cuda.jit(cache=True)
def _sum_partials_kernel(partial, count, dw2):
    """dw2[o, k] = sum_{g < count} partial[g, k, o], g ascending: one thread per weight, adjacent
    threads adjacent o (the reads of partial coalesced; each thread writes once)."""
    O = dw2.shape[0]
    K = dw2.shape[1]
    idx = cuda.grid(1)
    if idx < O * K:
        k = idx // O
        o = idx - k * O
        acc = partial[0, k, o]
        for g in range(1, count):
            acc += partial[g, k, o]
        dw2[o, k] = acc


@cuda.jit(cache=True)
def _bias_grad_kernel(dy3, db):
    """db[o] = sum over n, p of dy3[n, o, p]: block o; its threads take strided shares of the
    N * P values and a tree reduction in shared memory adds their float64 sums."""
    buf = cuda.shared.array(REDUCE_THREADS, float64)
    o = cuda.blockIdx.x
    t = cuda.threadIdx.x
    P = dy3.shape[2]
    s = np.float64(0.0)
    for i in range(t, dy3.shape[0] * P, cuda.blockDim.x):
        s += dy3[i // P, o, i % P]
    buf[t] = s
    total = block_sum(buf, t)
    if t == 0:
        db[o] = total


# ---- host side ----


def conv2d_algorithms(C, H, W, O, KH, KW, sh, sw, ph, pw):
    """The algorithms that compute this convolution on CUDA: im2col + the tiled GEMM only (the
    CPU's Winograd kernels have no CUDA twin yet)."""
    return ("im2col",)


def conv2d_workspace_shapes(C, H, W, O, KH, KW, sh, sw, ph, pw):
    """name -> WorkspaceSpec, no batch axis: cols (G, K, P) (forward and backward) and partial
    (G, K, O) (backward) for chunks of G images, G as large as the budgets allow (at most
    MAX_CHUNK)."""
    OH, OW = conv2d_output_hw(H, W, KH, KW, sh, sw, ph, pw)
    K = C * KH * KW
    P = max(1, OH * OW)
    G = max(1, min(MAX_CHUNK, COLS_ELEMENTS // (K * P), PARTIAL_ELEMENTS // (O * K)))
    return {"cols": WorkspaceSpec((G, K, P), per_sample=False),
            "partial": WorkspaceSpec((G, K, O), per_sample=False)}


def _im2col(x, n0, count, cols, KH, KW, sh, sw, ph, pw, OW):
    blocks, threads = grid_1d(count * cols.shape[1] * cols.shape[2])
    _im2col_kernel[blocks, threads](x, n0, count, cols, KH, KW, sh, sw, ph, pw, OW)


def conv2d_forward(x, w, b, y, sh, sw, ph, pw, relu, cols):
    """y = conv2d(x, w) + b (b may be None: no bias), then y = max(y, 0) where relu. cols: the
    (G, K, P) chunk workspace.
    Per chunk: im2col, one thread per column entry; the GEMM, grid (P/16, O/16, images)."""
    N = x.shape[0]
    O, C, KH, KW = w.shape
    K = C * KH * KW
    OH, OW = y.shape[2], y.shape[3]
    P = OH * OW
    G = cols.shape[0]
    w3 = w.reshape(1, O, K)
    for n0 in range(0, N, G):
        count = min(G, N - n0)
        _im2col(x, n0, count, cols, KH, KW, sh, sw, ph, pw, OW)
        gemm(w3, cols[:count], y[n0:n0 + count].reshape(count, O, P), bias=b, bias_on_rows=True)
    if relu:                             # a fused ReLU: one pass here (the CPU applies it per image)
        relu_forward(y.reshape(y.size), y.reshape(y.size))


def conv2d_backward(x, w, y, dy, dw, db, dx, sh, sw, ph, pw, relu, cols, partial):
    """dw, db (None: no bias) and dx (None: not wanted) of y = conv2d(x, w) + b, all written, not
    accumulated (the CPU kernel's contract); where relu, dy is first masked in place by y > 0 (one
    pass here). cols as the forward's; partial: the (G, K, O) per-image weight-gradient sums."""
    if relu:
        relu_backward(y.reshape(y.size), dy.reshape(dy.size), dy.reshape(dy.size))
    N = x.shape[0]
    O, C, KH, KW = w.shape
    K = C * KH * KW
    OH, OW = dy.shape[2], dy.shape[3]
    P = OH * OW
    G = cols.shape[0]
    w3 = w.reshape(1, O, K)
    dy3 = dy.reshape(N, O, P)
    for n0 in range(0, N, G):
        count = min(G, N - n0)
        _im2col(x, n0, count, cols, KH, KW, sh, sw, ph, pw, OW)
        # partial[g] holds image g's product on the first chunk, and adds image n0 + g's after.
        gemm(cols[:count], dy3[n0:n0 + count], partial[:count], trans_b=True, accumulate=n0 > 0)
        if dx is not None:
            gemm(w3, dy3[n0:n0 + count], cols[:count], trans_a=True)
            blocks, threads = grid_1d(count * C * dx.shape[2] * dx.shape[3])
            _col2im_kernel[blocks, threads](cols, n0, count, dx, KH, KW, sh, sw, ph, pw, OH, OW)
    blocks, threads = grid_1d(O * K)
    _sum_partials_kernel[blocks, threads](partial, min(G, N), dw.reshape(O, K))
    if db is not None:
        _bias_grad_kernel[O, reduce_threads(N * P)](dy3, db)
