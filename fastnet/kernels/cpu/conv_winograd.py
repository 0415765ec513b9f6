"""2-D convolution by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray 2015), for 3x3
kernels at stride 1 (any padding): the same math as conv.py, with 16 multiplications per 2x2
output tile and input channel instead of 36.

Each 2x2 output tile reads a 4x4 input tile d (tiles overlap by 2). With
    B^T = [[1, 0,-1, 0],      G = [[ 1,   0,   0 ],      A^T = [[1, 1, 1, 0],
           [0, 1, 1, 0],           [1/2, 1/2, 1/2],             [0, 1,-1,-1]]
           [0,-1, 1, 0],           [1/2,-1/2, 1/2],
           [0, 1, 0,-1]]           [ 0,   0,   1 ]]
the filter of (o, c) becomes U = G g G^T, the tile of channel c becomes V = B^T d B (both 4x4),
and the output tile is
    Y = A^T M A,   M[xi] = sum_c U[xi, o, c] V[xi, c, tile]   for each of the 16 positions xi,
so the sum over channels is 16 matrix products, M[xi] (tiles, O) = V[xi] (tiles, C) @ U[xi] (C, O),
one BLAS call each over the tiles of a chunk of images.

Backward is the exact adjoint of that computation (so a float64 gradient check holds to rounding):
    dM = A dY A^T per tile (dY the 2x2 output gradient, 0 past the image's edge),
    dU[xi] (C, O) = V[xi].T @ dM[xi]        summed over tiles, then dw = G^T dU G per (o, c),
    dV[xi] (tiles, C) = dM[xi] @ U[xi].T    then dd = B dV B^T, added back into the (padded) image
                                             at the tile's place, the border dropped: dx.
V is recomputed from x in backward (as the columns are in conv.py), not stored from the forward.

The tile transforms run on vectors of WIDTH = 8 channels (vector.py: LLVM left them scalar in
every layout tried), so the channels are the innermost axis of everything they touch, rounded up
to Cp = C and Op = O rounded up to a multiple of WIDTH: whole vectors, no remainder loop. Each
image is copied into the thread's channel-last scratch (TH x TW the tiles, the output rounded up to
even: a last partial tile reads zeros and writes only what is inside the output)
    padded[t, 0] (2TH + 2, 2TW + 2, Cp): the image inside its zero border, zeros in channels past C,
with its channels gathered from NCHW x (vector.gather); the border and the extra channels are
zeroed once per call, not per image. V and M are (16, rows, Cp) and (16, rows, Op); the products
read and write their [:tiles, :C] and [:tiles, :O] views (BLAS takes the longer rows as the
leading dimension). The output transform stores each output pixel's lanes into NCHW y
(vector.scatter, only the pixels inside the output); backward gathers dy's lanes the same way,
adds each tile's B dV B^T into a second channel-last image padded[t, 1] (zeroed per image) and
scatters its inside to NCHW dx. Each thread owns a contiguous block of images, taken in chunks of
up to `chunk_images` images so that one chunk's V and M stay near the core's cache.

Workspaces (conv2d_winograd_workspace_shapes), no batch axis: u (16, C, O) the transformed filters
(one for all threads); per thread (leading axis T = matmul.BLOCKS): padded (2, 2TH+2, 2TW+2, Cp),
v (16, rows, Cp), m (16, rows, Op) with rows >= chunk images * TH * TW, and for backward partial
and product (16, C, O), the thread's dU sum and one chunk's product. rows is chosen so that a
plane of v (and of m) is an odd multiple of 256 bytes in float32 past a multiple of 4 KiB
(_rows): the transforms' 16 streams, one per plane, then fall into 16 different cache sets (planes
a multiple of 4 KiB apart made the transforms several times slower: bench/NOTES.md, conv_winograd).
"""

from numba import njit, prange

from ..shapes import conv2d_output_hw
from ..workspace import WorkspaceSpec
from .conv import channel_sum, relu_mask_in_place
from .matmul import BLOCKS, matmul
from .vector import WIDTH, gather, load, maximum, scatter, splat, store

TILE_ROWS_PER_CHUNK = 256   # tiles in one chunk of images, about: V and M of cnn's second conv ~1 MB


def conv2d_winograd_applies(C, H, W, O, KH, KW, sh, sw, ph, pw):
    """Winograd F(2x2, 3x3) computes this convolution: a 3x3 kernel at stride 1."""
    return KH == 3 and KW == 3 and sh == 1 and sw == 1


def _tiles(H, W, ph, pw):
    """(TH, TW): 2x2 output tiles down and across (the output size rounded up to even)."""
    OH, OW = conv2d_output_hw(H, W, 3, 3, 1, 1, ph, pw)
    return (OH + 1) // 2, (OW + 1) // 2


def _round_up(n):
    """n rounded up to whole vectors."""
    return -(-n // WIDTH) * WIDTH


def _rows(tiles, channels):
    """The fewest rows >= tiles with rows * channels * 4 bytes an odd multiple of 256 past a
    multiple of 4096 (see the module's docstring); where channels * 4 is itself a multiple of 512
    (channels a multiple of 128), the least power of two there can be: an odd rows."""
    twos = (channels * 4 & -(channels * 4)).bit_length() - 1       # channels * 4 = 2^twos * odd
    step = 1 << max(0, 8 - twos)
    rows = max(tiles, 1)
    while rows % step != 0 or (rows // step) % 2 == 0:
        rows += 1
    return rows


def conv2d_winograd_workspace_shapes(C, H, W, O, KH, KW, sh, sw, ph, pw):
    """name -> WorkspaceSpec, no batch axis: u (16, C, O); per thread padded, v, m, partial,
    product (see the module's docstring)."""
    TH, TW = _tiles(H, W, ph, pw)
    Cp, Op = _round_up(C), _round_up(O)
    tiles = max(1, min(8, -(-TILE_ROWS_PER_CHUNK // (TH * TW)))) * TH * TW
    shapes = {"u": (16, C, O), "padded": (BLOCKS, 2, 2 * TH + 2, 2 * TW + 2, Cp),
              "v": (BLOCKS, 16, _rows(tiles, Cp), Cp), "m": (BLOCKS, 16, _rows(tiles, Op), Op),
              "partial": (BLOCKS, 16, C, O), "product": (BLOCKS, 16, C, O)}
    return {name: WorkspaceSpec(shape, per_sample=False) for name, shape in shapes.items()}


# -- the 1-D pieces of the transforms: each matrix applied to one row or column of a tile ----------

@njit(cache=True, inline="always")
def _bt(a0, a1, a2, a3):
    """B^T a"""
    return (a0 - a2, a1 + a2, a2 - a1, a1 - a3)


@njit(cache=True, inline="always")
def _b(a0, a1, a2, a3):
    """B a: the adjoint of _bt"""
    return (a0, a1 - a2 + a3, a1 + a2 - a0, -a3)


@njit(cache=True, inline="always")
def _g(a0, a1, a2, half):
    """G a"""
    return (a0, (a0 + a1 + a2) * half, (a0 - a1 + a2) * half, a2)


@njit(cache=True, inline="always")
def _gt(a0, a1, a2, a3, half):
    """G^T a: the adjoint of _g"""
    s = (a1 + a2) * half
    return (a0 + s, (a1 - a2) * half, s + a3)


@njit(cache=True, inline="always")
def _at(a0, a1, a2, a3):
    """A^T a"""
    return (a0 + a1 + a2, a1 - a2 - a3)


@njit(cache=True, inline="always")
def _a(a0, a1):
    """A a: the adjoint of _at"""
    return (a0, a0 + a1, a0 - a1, -a1)


# -- the transforms of whole tensors -------------------------------------------------------------

@njit(cache=True)
def _filter_transform(w, u):
    """u[xi, c, o] = (G w[o, c] G^T)[xi]: G down each column of the 3x3 filter, then along the rows."""
    O, C = w.shape[0], w.shape[1]
    half = w.dtype.type(0.5)
    for o in range(O):
        for c in range(C):
            g = w[o, c]
            c0 = _g(g[0, 0], g[1, 0], g[2, 0], half)
            c1 = _g(g[0, 1], g[1, 1], g[2, 1], half)
            c2 = _g(g[0, 2], g[1, 2], g[2, 2], half)
            for i in range(4):
                row = _g(c0[i], c1[i], c2[i], half)
                for j in range(4):
                    u[4 * i + j, c, o] = row[j]


@njit(cache=True)
def _filter_adjoint(partial, dw):
    """dw[o, c] = G^T dU G with dU[xi] = sum over threads t of partial[t, xi, c, o]: the adjoint of
    _filter_transform (G^T down each column of dU, then along the rows)."""
    O, C = dw.shape[0], dw.shape[1]
    half = dw.dtype.type(0.5)
    for o in range(O):
        for c in range(C):
            c0 = _gt(_thread_sum(partial, 0, c, o), _thread_sum(partial, 4, c, o),
                     _thread_sum(partial, 8, c, o), _thread_sum(partial, 12, c, o), half)
            c1 = _gt(_thread_sum(partial, 1, c, o), _thread_sum(partial, 5, c, o),
                     _thread_sum(partial, 9, c, o), _thread_sum(partial, 13, c, o), half)
            c2 = _gt(_thread_sum(partial, 2, c, o), _thread_sum(partial, 6, c, o),
                     _thread_sum(partial, 10, c, o), _thread_sum(partial, 14, c, o), half)
            c3 = _gt(_thread_sum(partial, 3, c, o), _thread_sum(partial, 7, c, o),
                     _thread_sum(partial, 11, c, o), _thread_sum(partial, 15, c, o), half)
            for i in range(3):
                row = _gt(c0[i], c1[i], c2[i], c3[i], half)
                for j in range(3):
                    dw[o, c, i, j] = row[j]


@njit(cache=True, inline="always")
def _thread_sum(partial, xi, c, o):
    total = partial[0, xi, c, o]
    for t in range(1, partial.shape[0]):
        total += partial[t, xi, c, o]
    return total


@njit(cache=True)
def _pad_image(x, n, padded, ph, pw):
    """padded[h + ph, w + pw, c] = x[n, c, h, w] for the channels c < Cp (0 past C): NCHW to the
    channel-last scratch, whose border the caller has zeroed."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    for h in range(H):
        for w in range(W):
            for c in range(0, padded.shape[2], WIDTH):
                store(padded, (h + ph, w + pw, c), gather(x, (n, c, h, w), C - c))


@njit(cache=True, inline="always")
def _store_row(v, xi, t, c, row):
    """v[xi + l, t, c:c + WIDTH] = row[l] for l < 4: one row of a transformed 4x4 tile."""
    store(v, (xi, t, c), row[0])
    store(v, (xi + 1, t, c), row[1])
    store(v, (xi + 2, t, c), row[2])
    store(v, (xi + 3, t, c), row[3])


@njit(cache=True)
def _input_transform(padded, v, first, TH, TW):
    """v[xi, first + tile, c] = (B^T d B)[xi] for every tile of one padded image, d the tile's 4x4
    input: B^T down each of d's columns, then along the rows; WIDTH channels at a time."""
    for i in range(TH):
        for j in range(TW):
            t = first + i * TW + j
            r, q = 2 * i, 2 * j
            for c in range(0, padded.shape[2], WIDTH):
                c0 = _bt(load(padded, (r, q, c)), load(padded, (r + 1, q, c)),
                         load(padded, (r + 2, q, c)), load(padded, (r + 3, q, c)))
                c1 = _bt(load(padded, (r, q + 1, c)), load(padded, (r + 1, q + 1, c)),
                         load(padded, (r + 2, q + 1, c)), load(padded, (r + 3, q + 1, c)))
                c2 = _bt(load(padded, (r, q + 2, c)), load(padded, (r + 1, q + 2, c)),
                         load(padded, (r + 2, q + 2, c)), load(padded, (r + 3, q + 2, c)))
                c3 = _bt(load(padded, (r, q + 3, c)), load(padded, (r + 1, q + 3, c)),
                         load(padded, (r + 2, q + 3, c)), load(padded, (r + 3, q + 3, c)))
                _store_row(v, 0, t, c, _bt(c0[0], c1[0], c2[0], c3[0]))
                _store_row(v, 4, t, c, _bt(c0[1], c1[1], c2[1], c3[1]))
                _store_row(v, 8, t, c, _bt(c0[2], c1[2], c2[2], c3[2]))
                _store_row(v, 12, t, c, _bt(c0[3], c1[3], c2[3], c3[3]))


@njit(cache=True, inline="always")
def _add_row(grad, r, q, c, row):
    """grad[r, q + l, c:c + WIDTH] += row[l] for l < 4."""
    store(grad, (r, q, c), load(grad, (r, q, c)) + row[0])
    store(grad, (r, q + 1, c), load(grad, (r, q + 1, c)) + row[1])
    store(grad, (r, q + 2, c), load(grad, (r, q + 2, c)) + row[2])
    store(grad, (r, q + 3, c), load(grad, (r, q + 3, c)) + row[3])


@njit(cache=True)
def _input_adjoint(dv, first, grad, TH, TW):
    """grad = the sum of B dV B^T at each tile's place (tiles overlap by 2, so their parts add):
    the adjoint of _input_transform, into grad (2TH + 2, 2TW + 2, Cp), zeroed first."""
    grad[...] = grad.dtype.type(0)
    for i in range(TH):
        for j in range(TW):
            t = first + i * TW + j
            r, q = 2 * i, 2 * j
            for c in range(0, grad.shape[2], WIDTH):
                c0 = _b(load(dv, (0, t, c)), load(dv, (4, t, c)), load(dv, (8, t, c)), load(dv, (12, t, c)))
                c1 = _b(load(dv, (1, t, c)), load(dv, (5, t, c)), load(dv, (9, t, c)), load(dv, (13, t, c)))
                c2 = _b(load(dv, (2, t, c)), load(dv, (6, t, c)), load(dv, (10, t, c)), load(dv, (14, t, c)))
                c3 = _b(load(dv, (3, t, c)), load(dv, (7, t, c)), load(dv, (11, t, c)), load(dv, (15, t, c)))
                _add_row(grad, r, q, c, _b(c0[0], c1[0], c2[0], c3[0]))
                _add_row(grad, r + 1, q, c, _b(c0[1], c1[1], c2[1], c3[1]))
                _add_row(grad, r + 2, q, c, _b(c0[2], c1[2], c2[2], c3[2]))
                _add_row(grad, r + 3, q, c, _b(c0[3], c1[3], c2[3], c3[3]))


@njit(cache=True)
def _unpad_image(grad, dx, n, ph, pw):
    """dx[n, c, h, w] = grad[h + ph, w + pw, c]: the inside of the channel-last gradient to NCHW."""
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    for h in range(H):
        for w in range(W):
            for c in range(0, grad.shape[2], WIDTH):
                scatter(dx, (n, c, h, w), load(grad, (h + ph, w + pw, c)), C - c)


@njit(cache=True)
def _output_transform(m, first, b, y, n, relu, TH, TW):
    """y[n, o] at each tile = A^T M A (+ b[o], then max(., 0) where relu), the parts of a last
    partial tile that fall outside the output dropped; WIDTH channels at a time."""
    O, OH, OW = y.shape[1], y.shape[2], y.shape[3]
    zero = splat(y.dtype.type(0))
    for o in range(0, m.shape[2], WIDTH):
        bias = zero if b is None else gather(b.reshape(1, O), (0, o), O - o)
        for i in range(TH):
            for j in range(TW):
                t = first + i * TW + j
                r, q = 2 * i, 2 * j
                c0 = _at(load(m, (0, t, o)), load(m, (4, t, o)), load(m, (8, t, o)), load(m, (12, t, o)))
                c1 = _at(load(m, (1, t, o)), load(m, (5, t, o)), load(m, (9, t, o)), load(m, (13, t, o)))
                c2 = _at(load(m, (2, t, o)), load(m, (6, t, o)), load(m, (10, t, o)), load(m, (14, t, o)))
                c3 = _at(load(m, (3, t, o)), load(m, (7, t, o)), load(m, (11, t, o)), load(m, (15, t, o)))
                for k in range(2):
                    if r + k >= OH:
                        break
                    row = _at(c0[k], c1[k], c2[k], c3[k])
                    for l in range(2):
                        if q + l < OW:
                            value = row[l] + bias
                            if relu:
                                value = maximum(value, zero)
                            scatter(y, (n, o, r + k, q + l), value, O - o)


@njit(cache=True)
def _output_adjoint(dy, n, dm, first, TH, TW):
    """dm[xi, first + tile, o] = (A dY A^T)[xi], dY the tile's 2x2 of dy[n, o] (0 outside the
    output, and in the channels past O): the adjoint of _output_transform's A^T M A."""
    O, OH, OW = dy.shape[1], dy.shape[2], dy.shape[3]
    zero = splat(dy.dtype.type(0))
    for i in range(TH):
        for j in range(TW):
            t = first + i * TW + j
            r, q = 2 * i, 2 * j
            for o in range(0, dm.shape[2], WIDTH):
                g00 = gather(dy, (n, o, r, q), O - o)
                g01 = gather(dy, (n, o, r, q + 1), O - o) if q + 1 < OW else zero
                g10 = gather(dy, (n, o, r + 1, q), O - o) if r + 1 < OH else zero
                g11 = gather(dy, (n, o, r + 1, q + 1), O - o) if r + 1 < OH and q + 1 < OW else zero
                c0 = _a(g00, g10)         # A down each of dY's two columns
                c1 = _a(g01, g11)
                _store_row(dm, 0, t, o, _a(c0[0], c1[0]))
                _store_row(dm, 4, t, o, _a(c0[1], c1[1]))
                _store_row(dm, 8, t, o, _a(c0[2], c1[2]))
                _store_row(dm, 12, t, o, _a(c0[3], c1[3]))


# -- the kernels ---------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def conv2d_winograd_forward(x, w, b, y, sh, sw, ph, pw, relu, u, padded, v, m):
    """y = conv2d(x, w) + b (b None: no bias), then max(y, 0) where relu, as conv2d_forward; w 3x3,
    stride 1 (sh, sw are 1: taken for the common signature)."""
    N, C, O = x.shape[0], x.shape[1], y.shape[1]
    TH, TW = (y.shape[2] + 1) // 2, (y.shape[3] + 1) // 2
    per_image = TH * TW
    chunk = min(v.shape[2], m.shape[2]) // per_image
    T = padded.shape[0]
    _filter_transform(w, u)
    for t in prange(T):
        padded[t, 0] = padded.dtype.type(0)      # the border and the channels past C, once
        start, stop = N * t // T, N * (t + 1) // T
        for n0 in range(start, stop, chunk):
            n1 = min(n0 + chunk, stop)
            tiles = (n1 - n0) * per_image
            for n in range(n0, n1):
                _pad_image(x, n, padded[t, 0], ph, pw)
                _input_transform(padded[t, 0], v[t], (n - n0) * per_image, TH, TW)
            for xi in range(16):
                matmul(v[t, xi, :tiles, :C], u[xi], m[t, xi, :tiles, :O])
            for n in range(n0, n1):
                _output_transform(m[t], (n - n0) * per_image, b, y, n, relu, TH, TW)


@njit(cache=True, parallel=True)
def conv2d_winograd_backward(x, w, y, dy, dw, db, dx, sh, sw, ph, pw, relu, u, padded, v, m,
                             partial, product):
    """dw, db, dx as conv2d_backward (written; db None: no bias; dx None: not wanted; where relu, dy
    masked in place first by y > 0), through the adjoint of conv2d_winograd_forward."""
    N = x.shape[0]
    O = w.shape[0]
    C = w.shape[1]
    OH, OW = dy.shape[2], dy.shape[3]
    TH, TW = (OH + 1) // 2, (OW + 1) // 2
    per_image = TH * TW
    chunk = min(v.shape[2], m.shape[2]) // per_image
    T = padded.shape[0]
    _filter_transform(w, u)
    for t in prange(T):
        partial[t] = dw.dtype.type(0)
        padded[t, 0] = padded.dtype.type(0)      # the border and the channels past C, once
        start, stop = N * t // T, N * (t + 1) // T
        for n0 in range(start, stop, chunk):
            n1 = min(n0 + chunk, stop)
            tiles = (n1 - n0) * per_image
            for n in range(n0, n1):
                if relu:
                    relu_mask_in_place(y[n].reshape(O, OH * OW), dy[n].reshape(O, OH * OW))
                _pad_image(x, n, padded[t, 0], ph, pw)
                _input_transform(padded[t, 0], v[t], (n - n0) * per_image, TH, TW)
                _output_adjoint(dy, n, m[t], (n - n0) * per_image, TH, TW)
            for xi in range(16):
                matmul(v[t, xi, :tiles, :C].T, m[t, xi, :tiles, :O], product[t, xi])
                for c in range(C):
                    for o in range(O):
                        partial[t, xi, c, o] += product[t, xi, c, o]
            if dx is not None:
                for xi in range(16):        # V is done with: dV takes its place
                    matmul(m[t, xi, :tiles, :O], u[xi].T, v[t, xi, :tiles, :C])
                for n in range(n0, n1):
                    _input_adjoint(v[t], (n - n0) * per_image, padded[t, 1], TH, TW)
                    _unpad_image(padded[t, 1], dx, n, ph, pw)
    _filter_adjoint(partial, dw)
    if db is not None:
        for o in prange(O):
            db[o] = channel_sum(dy, o)
