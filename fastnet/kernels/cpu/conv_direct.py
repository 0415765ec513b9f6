"""2-D convolution as a register-blocked direct convolution: conv.py's math (PyTorch's conv2d, no
dilation, no groups), a second algorithm for it. Shapes and semantics exactly conv.py's:
    x (N, C, H, W)   w (O, C, KH, KW)   b (O,)   y (N, O, OH, OW),   P = OH*OW,   K = C*KH*KW
    y[n, o, oh, ow] = b[o] + sum_{c, kh, kw} w[o, c, kh, kw] * x[n, c, oh*sh - ph + kh, ow*sw - pw + kw]

Every pass is a sum of products that simd.py's tile computes, a LANES-channel x R-column block of
accumulators in vector registers:
    out[r, v] = sum_l A[l, v] * B[off[l] + col[r]]
A a table of LANES-wide rows (weights, or dy, blocked by LANES channels), B an image, off and col
tables of offsets into it (an indirection, as in XNNPACK), so one tile serves
    forward          A = w packed (O/LANES, K, LANES), B = the padded image x[n], l = tap (c, kh, kw),
                     r = output pixel:      y[n, o, p] = sum_k w[o, k] * padded[woff[k] + poff[p]]
    backward weights A = dy[n] packed (O/LANES, P, LANES), B = the padded image, l = output pixel,
                     r = tap:               dw[o, k] += sum_p dy[n, o, p] * padded[poff[p] + woff[k]]
    backward input   A = w transposed (C/LANES, O*KH*KW, LANES), B = dy[n] inside a zero border, l =
                     (o, kh, kw), r = input pixel (below)
LANES = 16 (R = 6), or 8 (R = 12) where the vector axis has 8 or fewer channels; the last block's
lanes past the channel count compute values nobody stores. The pixels (taps) of a tile are any R
consecutive entries of a table, so a tile runs across rows and only the last tile of an image is
short: its table is padded to a multiple of R by repeating its last entry (computed, not stored).

Backward input, any stride: dx[n, c, h, w] = sum w[o, c, kh, kw] dy[n, o, (h+ph-kh)/sh, (w+pw-kw)/sw]
over the (o, kh, kw) where both divisions are exact (and in range). The input pixels split into
sh*sw phases (h0, w0) = (h mod sh, w mod sw); within one, h = h0 + sh*i, the taps that contribute are
the same for every pixel, kh with (h0 + ph - kh) mod sh == 0, and read dy row i + dh, dh = (h0 + ph
- kh) / sh: a stride-1 correlation of dy with those taps. So each phase is a tile sum over its own
(o, kh, kw) list, with no product by an inserted zero (stride 1: one phase, every tap, the usual
full correlation with flipped weights). dy is copied into q[o, i + mh, j + mw] inside a zero border
of mh = ceil((KH - 1 - ph) / sh) rows (mw columns), so every read lies inside q and a read outside
dy reads 0. Every dx pixel lies in one phase: written once (a phase with no taps writes zeros).

Threads over blocks of images (as conv.py): each thread its padded image, tile output, and in the
backward its dy copies and a partial weight gradient, summed into dw at the end. The packed
weights and the offset tables are shared, made before the threads start. Workspaces
(conv2d_direct_workspace_shapes); none has a batch axis; T = matmul.BLOCKS:
    direct_padded (T, C, H+2ph, W+2pw)   direct_tile (T, 96)         per thread, both passes
    direct_wpack (O/L, K, L)  direct_woff (K padded) int64  direct_poff (P padded) int64   shared
    direct_dyt (T, O/L, P, L)  direct_partial (T, O/L, K, L)  direct_q (T, O, QH, QW)    per thread
    direct_wflip (C/L', O*KH*KW, L')  direct_qoff (O*KH*KW) int64  direct_phases (sh*sw, 4) int64
    direct_qpix, direct_dpix (H*W + sh*sw*R') int64                                   shared
    direct_cols (T, P/16 or 0, K, 16)  direct_taps (K) int64  direct_wrows (O padded to 6) int64:
    the forward's pixel tiles, used where K <= PIXEL_TILE_K (else direct_cols has no rows)
"""

import numpy as np
from numba import njit, prange

from ..shapes import conv2d_output_hw
from ..workspace import WorkspaceSpec
from .conv import channel_sum, relu_mask_in_place
from .matmul import BLOCKS
from .simd import TILE, tile_8x12, tile_16x6

# Where a convolution has this many taps K = C*KH*KW or fewer (a 3x3 first layer on one channel),
# a tile of 16 output channels x 6 pixels does little work per output entry and its 96 scalar
# stores into the NCHW output (one per entry) cost more than its multiply-adds: the forward then
# runs its tiles along pixels, 16 pixels x 6 output channels, after building a pixel-blocked column
# matrix; with more taps the column matrix costs more than it saves (bench/NOTES.md, conv_direct).
PIXEL_TILE_K = 9


def _lanes(channels):
    """LANES for a vector axis of `channels` channels: 8 (one vector) for 8 or fewer, else 16."""
    return 8 if channels <= 8 else 16


@njit(cache=True)
def _ceil(a, b):
    """ceil(a / b) for integers, b > 0."""
    return -(-a // b)


@njit(cache=True)
def _q_geometry(H, W, KH, KW, sh, sw, ph, pw):
    """(mh, mw, QH, QW): the zero border of dy's copy q and its size (see the module's docstring).
    Input pixel h reads dy rows up to (h + ph) // sh, so q needs (H - 1 + ph) // sh + 1 rows after
    its border; dy rows past those feed no input pixel."""
    mh, mw = max(0, _ceil(KH - 1 - ph, sh)), max(0, _ceil(KW - 1 - pw, sw))
    return mh, mw, (H - 1 + ph) // sh + 1 + mh, (W - 1 + pw) // sw + 1 + mw


def conv2d_direct_workspace_shapes(C, H, W, O, KH, KW, sh, sw, ph, pw):
    """name -> WorkspaceSpec of the workspaces both kernels take, none with a batch axis (see the
    module's docstring); the int64 ones are offset tables."""
    OH, OW = conv2d_output_hw(H, W, KH, KW, sh, sw, ph, pw)
    P, K, L = OH * OW, C * KH * KW, O * KH * KW
    lo, lc = _lanes(O), _lanes(C)
    ro, rc = TILE // lo, TILE // lc
    _, _, QH, QW = _q_geometry(H, W, KH, KW, sh, sw, ph, pw)
    floats = {"direct_padded": (BLOCKS, C, H + 2 * ph, W + 2 * pw), "direct_tile": (BLOCKS, TILE),
              "direct_wpack": (_ceil(O, lo), K, lo), "direct_dyt": (BLOCKS, _ceil(O, lo), P, lo),
              "direct_partial": (BLOCKS, _ceil(O, lo), K, lo), "direct_q": (BLOCKS, O, QH, QW),
              "direct_wflip": (_ceil(C, lc), L, lc)}
    ints = {"direct_woff": (_ceil(K, ro) * ro,), "direct_poff": (_ceil(P, ro) * ro,),
            "direct_qoff": (L,), "direct_phases": (sh * sw, 4),
            "direct_qpix": (H * W + sh * sw * rc,), "direct_dpix": (H * W + sh * sw * rc,)}
    # few taps: the forward's tiles run along pixels instead (see conv2d_direct_forward)
    pixel_tiles = K <= PIXEL_TILE_K
    floats["direct_cols"] = (BLOCKS, _ceil(P, 16) if pixel_tiles else 0, K, 16)
    ints["direct_taps"] = (K,)
    ints["direct_wrows"] = (_ceil(O, 6) * 6,)
    specs = {name: WorkspaceSpec(shape, per_sample=False) for name, shape in floats.items()}
    specs.update({name: WorkspaceSpec(shape, dtype=np.int64, per_sample=False) for name, shape in ints.items()})
    return specs


@njit(cache=True)
def _tile(lanes, a, a0, b, off, off0, n, col, col0, out):
    """simd.py's tile of `lanes` lanes: out[r*lanes + v] = sum_{l<n} a[a0 + l*lanes + v] *
    b[off[off0 + l] + col[col0 + r]], r < 96 // lanes."""
    if lanes == 16:
        tile_16x6(a, a0, b, off, off0, n, col, col0, out)
    else:
        tile_8x12(a, a0, b, off, off0, n, col, col0, out)


@njit(cache=True)
def _pad_to_tiles(table, count, r):
    """Repeat table[count - 1] up to the next multiple of r, so a last, short tile reads real
    offsets (count >= 1)."""
    for i in range(count, _ceil(count, r) * r):
        table[i] = table[count - 1]


@njit(cache=True)
def _forward_tables(C, Hp, Wp, KH, KW, OH, OW, sh, sw, woff, poff, r):
    """woff[(c*KH + kh)*KW + kw] = the offset of padded[c, kh, kw]; poff[oh*OW + ow] = the offset of
    padded[0, oh*sh, ow*sw]: padded[c, oh*sh + kh, ow*sw + kw] = padded.flat[woff[k] + poff[p]]."""
    for c in range(C):
        for kh in range(KH):
            for kw in range(KW):
                woff[(c * KH + kh) * KW + kw] = (c * Hp + kh) * Wp + kw
    for oh in range(OH):
        for ow in range(OW):
            poff[oh * OW + ow] = oh * sh * Wp + ow * sw
    _pad_to_tiles(woff, C * KH * KW, r)
    _pad_to_tiles(poff, OH * OW, r)


@njit(cache=True)
def _pack_weights(w, wpack):
    """wpack[o // L, k, o % L] = w[o, k] (k = (c*KH + kh)*KW + kw), L = wpack.shape[2]; lanes past O
    zero."""
    O = w.shape[0]
    w2 = w.reshape(O, -1)
    wpack[...] = 0
    L = wpack.shape[2]
    for o in range(O):
        for k in range(w2.shape[1]):
            wpack[o // L, k, o % L] = w2[o, k]


@njit(cache=True)
def _pad_image(x, n, padded, ph, pw):
    """padded[c] = x[n, c] inside a border of ph rows and pw columns of zeros (each entry written
    once: the border zeroed, not the whole image first)."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    zero = padded.dtype.type(0)
    for c in range(C):
        for h in range(padded.shape[1]):
            row = padded[c, h]
            if h < ph or h >= H + ph:
                row[:] = zero
                continue
            src = x[n, c, h - ph]
            for i in range(pw):
                row[i] = zero
                row[W + pw + i] = zero
            for i in range(W):
                row[pw + i] = src[i]


@njit(cache=True)
def _image(x, n, padded, ph, pw):
    """x[n] flat as the tables read it: x[n] itself where there is no padding (no copy), else
    x[n] copied inside its zero border into padded."""
    if ph == 0 and pw == 0:
        return x[n].reshape(-1)
    _pad_image(x, n, padded, ph, pw)
    return padded.reshape(-1)


@njit(cache=True, parallel=True)
def _forward_pixel_tiles(x, w, b, y, ph, pw, relu, direct_padded, direct_tile, direct_woff, direct_poff,
                         direct_cols, direct_taps, direct_wrows):
    """The forward with tiles along pixels (few taps, see PIXEL_TILE_K): per image the column
    matrix blocked by 16 pixels, cols[p // 16, k, p % 16] = padded[woff[k] + poff[p]] (the pixels
    past P repeat pixel P - 1), and y[n, o, p] = sum_k cols[p // 16, k, p % 16] * w[o, k], a tile
    of 16 pixels x 6 output channels with w itself as the broadcast table: taps[k] = k, wrows[r] =
    the offset of row o of w (the channels past O repeat O - 1). The woff, poff tables made."""
    N, C, H, W = x.shape
    O = w.shape[0]
    P, K = y.shape[2] * y.shape[3], direct_taps.shape[0]
    wflat = w.reshape(-1)
    for k in range(K):
        direct_taps[k] = k
    for o in range(direct_wrows.shape[0]):
        direct_wrows[o] = min(o, O - 1) * K
    T = direct_padded.shape[0]
    zero = y.dtype.type(0)
    for t in prange(T):
        out = direct_tile[t]
        cols = direct_cols[t]
        colflat = cols.reshape(-1)
        for n in range(N * t // T, N * (t + 1) // T):
            image = _image(x, n, direct_padded[t], ph, pw)
            for pb in range(cols.shape[0]):
                for k in range(K):
                    base = direct_woff[k]
                    for v in range(16):
                        cols[pb, k, v] = image[base + direct_poff[min(pb * 16 + v, P - 1)]]
            yn = y[n].reshape(O, P)
            for pb in range(cols.shape[0]):
                p0 = pb * 16
                for o0 in range(0, O, 6):
                    _tile(16, colflat, pb * K * 16, wflat, direct_taps, 0, K, direct_wrows, o0, out)
                    for o in range(o0, min(O, o0 + 6)):
                        bo = b[o] if b is not None else zero
                        for v in range(min(16, P - p0)):
                            value = out[(o - o0) * 16 + v] + bo
                            if relu:
                                value = value if value > zero else zero
                            yn[o, p0 + v] = value


@njit(cache=True, parallel=True)
def conv2d_direct_forward(x, w, b, y, sh, sw, ph, pw, relu, direct_padded, direct_tile, direct_wpack,
                          direct_woff, direct_poff, direct_cols, direct_taps, direct_wrows):
    """y = conv2d(x, w) + b (b None: no bias), then y = max(y, 0) where relu: conv.py's
    conv2d_forward, each block of LANES output channels x R output pixels one tile sum over the
    taps k = (c, kh, kw). Workspaces: see the module's docstring."""
    N, C, H, W = x.shape
    O, _, KH, KW = w.shape
    OH, OW = y.shape[2], y.shape[3]
    P, K = OH * OW, C * KH * KW
    lanes = direct_wpack.shape[2]
    r = TILE // lanes
    _pack_weights(w, direct_wpack)
    _forward_tables(C, H + 2 * ph, W + 2 * pw, KH, KW, OH, OW, sh, sw, direct_woff, direct_poff, r)
    wflat = direct_wpack.reshape(-1)
    T = direct_padded.shape[0]
    zero = y.dtype.type(0)
    if direct_cols.shape[1] > 0:
        _forward_pixel_tiles(x, w, b, y, ph, pw, relu, direct_padded, direct_tile, direct_woff, direct_poff,
                             direct_cols, direct_taps, direct_wrows)
        return
    for t in prange(T):
        out = direct_tile[t]
        for n in range(N * t // T, N * (t + 1) // T):
            image = _image(x, n, direct_padded[t], ph, pw)
            yn = y[n].reshape(O, P)
            for ob in range(direct_wpack.shape[0]):
                o0 = ob * lanes
                o1 = min(O, o0 + lanes)
                for p0 in range(0, P, r):
                    _tile(lanes, wflat, ob * K * lanes, image, direct_woff, 0, K, direct_poff, p0, out)
                    for i in range(min(r, P - p0)):
                        for o in range(o0, o1):
                            v = out[i * lanes + o - o0]
                            if b is not None:
                                v += b[o]
                            if relu:
                                v = v if v > zero else zero    # relu_forward's expression
                            yn[o, p0 + i] = v


@njit(cache=True)
def _backward_input_tables(w, H, W, sh, sw, ph, pw, wflip, qoff, phases, qpix, dpix):
    """For each phase f = h0*sw + w0 (see the module's docstring): its taps (o, kh, kw) in
    wflip[cb, l, c % L'] = w[o, c, kh, kw] and qoff[l] = the offset of q[o, dh + mh, dw + mw], for
    l in phases[f, 0] .. + phases[f, 1]; its input pixels (h0 + sh*i, w0 + sw*j) in qpix (the offset
    of q[0, i, j]) and dpix (h*W + w), entries phases[f, 2] .. + phases[f, 3], each phase's run
    padded to a multiple of R'."""
    O, C, KH, KW = w.shape
    mh, mw, QH, QW = _q_geometry(H, W, KH, KW, sh, sw, ph, pw)
    lanes = wflip.shape[2]
    r = TILE // lanes
    wflip[...] = 0
    l = 0
    p = 0
    for h0 in range(sh):
        for w0 in range(sw):
            f = h0 * sw + w0
            phases[f, 0] = l
            for o in range(O):
                for kh in range(KH):
                    if (h0 + ph - kh) % sh != 0:
                        continue
                    dh = (h0 + ph - kh) // sh
                    for kw in range(KW):
                        if (w0 + pw - kw) % sw != 0:
                            continue
                        dw = (w0 + pw - kw) // sw
                        for c in range(C):
                            wflip[c // lanes, l, c % lanes] = w[o, c, kh, kw]
                        qoff[l] = (o * QH + dh + mh) * QW + dw + mw
                        l += 1
            phases[f, 1] = l - phases[f, 0]
            phases[f, 2] = p
            hcount, wcount = _ceil(H - h0, sh), _ceil(W - w0, sw)
            for i in range(hcount):
                for j in range(wcount):
                    qpix[p] = i * QW + j
                    dpix[p] = (h0 + sh * i) * W + w0 + sw * j
                    p += 1
            phases[f, 3] = p - phases[f, 2]
            if phases[f, 3] > 0:
                _pad_to_tiles(qpix[phases[f, 2]:], phases[f, 3], r)
                p = phases[f, 2] + _ceil(phases[f, 3], r) * r


@njit(cache=True)
def _copy_into_border(dy, n, q, mh, mw):
    """q[o, mh + i, mw + j] = dy[n, o, i, j], 0 elsewhere (the dy rows and columns past q's end are
    left out: they feed no input pixel)."""
    zero = q.dtype.type(0)
    rows, cols = min(dy.shape[2], q.shape[1] - mh), min(dy.shape[3], q.shape[2] - mw)
    for o in range(q.shape[0]):
        for a in range(q.shape[1]):
            row = q[o, a]
            if a < mh or a >= mh + rows:
                row[:] = zero
                continue
            src = dy[n, o, a - mh]
            for j in range(mw):
                row[j] = zero
            for j in range(cols):
                row[mw + j] = src[j]
            for j in range(mw + cols, q.shape[2]):
                row[j] = zero


@njit(cache=True, parallel=True)
def conv2d_direct_backward(x, w, y, dy, dw, db, dx, sh, sw, ph, pw, relu, direct_padded, direct_tile,
                           direct_wpack, direct_woff, direct_poff, direct_dyt, direct_partial, direct_q,
                           direct_wflip, direct_qoff, direct_phases, direct_qpix, direct_dpix):
    """conv.py's conv2d_backward: dw, db (None: no bias) and dx (None: not wanted) written, not
    accumulated; where relu, dy first masked in place (dy = 0 where y <= 0). The weight gradient a
    tile sum over the output pixels per image (LANES output channels x R taps), summed per thread;
    the input gradient a tile sum per phase (LANES' input channels x R' input pixels). Workspaces:
    see the module's docstring."""
    N, C, H, W = x.shape
    O, _, KH, KW = w.shape
    OH, OW = dy.shape[2], dy.shape[3]
    P, K = OH * OW, C * KH * KW
    lanes = direct_dyt.shape[3]
    r = TILE // lanes
    _forward_tables(C, H + 2 * ph, W + 2 * pw, KH, KW, OH, OW, sh, sw, direct_woff, direct_poff, r)
    if dx is not None:
        _backward_input_tables(w, H, W, sh, sw, ph, pw, direct_wflip, direct_qoff, direct_phases,
                               direct_qpix, direct_dpix)
    mh, mw, QH, QW = _q_geometry(H, W, KH, KW, sh, sw, ph, pw)
    clanes = direct_wflip.shape[2]
    cr = TILE // clanes
    L = O * KH * KW
    wflat = direct_wflip.reshape(-1)
    T = direct_padded.shape[0]
    for t in prange(T):
        out = direct_tile[t]
        dyt = direct_dyt[t]
        partial = direct_partial[t]
        partial[...] = 0
        dyt[...] = 0                    # the lanes past O stay 0
        q = direct_q[t]
        for n in range(N * t // T, N * (t + 1) // T):
            dyn = dy[n].reshape(O, P)
            if relu:
                relu_mask_in_place(y[n].reshape(O, P), dyn)
            # weight gradient: dw[o, k] += sum_p dy[n, o, p] padded[poff[p] + woff[k]]
            image = _image(x, n, direct_padded[t], ph, pw)
            for o in range(O):
                for p in range(P):
                    dyt[o // lanes, p, o % lanes] = dyn[o, p]
            dytflat = dyt.reshape(-1)
            for ob in range(dyt.shape[0]):
                for k0 in range(0, K, r):
                    _tile(lanes, dytflat, ob * P * lanes, image, direct_poff, 0, P, direct_woff, k0, out)
                    for i in range(min(r, K - k0)):
                        for v in range(lanes):
                            partial[ob, k0 + i, v] += out[i * lanes + v]
            if dx is None:
                continue
            # input gradient: per phase, dx[n, c, pixel] = sum_l wflip[c, l] q[qoff[l] + qpix[pixel]]
            _copy_into_border(dy, n, q, mh, mw)
            qflat = q.reshape(-1)
            dxn = dx[n].reshape(C, H * W)
            for f in range(direct_phases.shape[0]):
                l0, count = direct_phases[f, 0], direct_phases[f, 1]
                p0, pixels = direct_phases[f, 2], direct_phases[f, 3]
                for cb in range(direct_wflip.shape[0]):
                    c0 = cb * clanes
                    c1 = min(C, c0 + clanes)
                    for i0 in range(0, pixels, cr):
                        _tile(clanes, wflat, (cb * L + l0) * clanes, qflat, direct_qoff, l0, count,
                              direct_qpix, p0 + i0, out)
                        for i in range(min(cr, pixels - i0)):
                            pixel = direct_dpix[p0 + i0 + i]
                            for c in range(c0, c1):
                                dxn[c, pixel] = out[i * clanes + c - c0]
    dw2 = dw.reshape(O, K)
    for o in prange(O):
        for k in range(K):
            acc = direct_partial[0, o // lanes, k, o % lanes]
            for t in range(1, T):
                acc += direct_partial[t, o // lanes, k, o % lanes]
            dw2[o, k] = acc
        if db is not None:
            db[o] = channel_sum(dy, o)
