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

The image is padded once per image into the thread's scratch (C, 2*TH + 2, 2*TW + 2), TH x TW the
tiles (the output rounded up to even: a last partial tile reads zeros and writes only what is
inside the output). Each thread owns a contiguous block of images, taken in chunks of up to
`chunk_images` images so that one chunk's V and M stay near the core's cache.

Workspaces (conv2d_winograd_workspace_shapes), no batch axis: u (16, C, O) the transformed filters
(one for all threads); per thread (leading axis T = matmul.BLOCKS): padded (C, 2TH+2, 2TW+2),
v (16, tiles + 1, C), m (16, tiles + 1, O) with tiles = chunk images * TH * TW, and for backward
partial and product (16, C, O), the thread's dU sum and one chunk's product. The spare row of v and
m keeps their 16 planes off strides of a multiple of 4 KiB: at 64 channels and 128 tiles the
input transform's 16 store streams otherwise fell into the same cache sets and ran 4x slower.
"""

from numba import njit, prange

from ..shapes import conv2d_output_hw
from ..workspace import WorkspaceSpec
from .conv import pad_image, relu_mask_in_place
from .matmul import BLOCKS, matmul

TILE_ROWS_PER_CHUNK = 256   # tiles in one chunk of images, about: V and M of cnn's second conv ~1 MB


def conv2d_winograd_applies(C, H, W, O, KH, KW, sh, sw, ph, pw):
    """Winograd F(2x2, 3x3) computes this convolution: a 3x3 kernel at stride 1."""
    return KH == 3 and KW == 3 and sh == 1 and sw == 1


def _tiles(H, W, ph, pw):
    """(TH, TW): 2x2 output tiles down and across (the output size rounded up to even)."""
    OH, OW = conv2d_output_hw(H, W, 3, 3, 1, 1, ph, pw)
    return (OH + 1) // 2, (OW + 1) // 2


def conv2d_winograd_workspace_shapes(C, H, W, O, KH, KW, sh, sw, ph, pw):
    """name -> WorkspaceSpec, no batch axis: u (16, C, O); per thread padded, v, m, partial,
    product (see the module's docstring)."""
    TH, TW = _tiles(H, W, ph, pw)
    chunk_images = max(1, min(8, -(-TILE_ROWS_PER_CHUNK // (TH * TW))))
    rows = chunk_images * TH * TW + 1        # a spare row: see the module's docstring
    shapes = {"u": (16, C, O), "padded": (BLOCKS, C, 2 * TH + 2, 2 * TW + 2),
              "v": (BLOCKS, 16, rows, C), "m": (BLOCKS, 16, rows, O),
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
def _input_transform(padded, v, first, TH, TW):
    """v[xi, first + tile, c] = (B^T d B)[xi] for every tile of one padded image, d the tile's 4x4
    input: B^T down each of d's columns, then along the rows."""
    C = padded.shape[0]
    for i in range(TH):
        for j in range(TW):
            t = first + i * TW + j
            r, q = 2 * i, 2 * j
            for c in range(C):
                d = padded[c]
                c0 = _bt(d[r, q], d[r + 1, q], d[r + 2, q], d[r + 3, q])
                c1 = _bt(d[r, q + 1], d[r + 1, q + 1], d[r + 2, q + 1], d[r + 3, q + 1])
                c2 = _bt(d[r, q + 2], d[r + 1, q + 2], d[r + 2, q + 2], d[r + 3, q + 2])
                c3 = _bt(d[r, q + 3], d[r + 1, q + 3], d[r + 2, q + 3], d[r + 3, q + 3])
                for k in range(4):
                    row = _bt(c0[k], c1[k], c2[k], c3[k])
                    v[4 * k + 0, t, c] = row[0]
                    v[4 * k + 1, t, c] = row[1]
                    v[4 * k + 2, t, c] = row[2]
                    v[4 * k + 3, t, c] = row[3]


@njit(cache=True)
def _input_adjoint(dv, first, padded, TH, TW):
    """padded += B dV B^T at each tile's place (tiles overlap by 2, so their parts add): the adjoint
    of _input_transform into a zeroed padded image."""
    C = padded.shape[0]
    padded[...] = padded.dtype.type(0)
    for i in range(TH):
        for j in range(TW):
            t = first + i * TW + j
            r, q = 2 * i, 2 * j
            for c in range(C):
                d = padded[c]
                c0 = _b(dv[0, t, c], dv[4, t, c], dv[8, t, c], dv[12, t, c])
                c1 = _b(dv[1, t, c], dv[5, t, c], dv[9, t, c], dv[13, t, c])
                c2 = _b(dv[2, t, c], dv[6, t, c], dv[10, t, c], dv[14, t, c])
                c3 = _b(dv[3, t, c], dv[7, t, c], dv[11, t, c], dv[15, t, c])
                for k in range(4):
                    row = _b(c0[k], c1[k], c2[k], c3[k])
                    d[r + k, q] += row[0]
                    d[r + k, q + 1] += row[1]
                    d[r + k, q + 2] += row[2]
                    d[r + k, q + 3] += row[3]


@njit(cache=True)
def _output_transform(m, first, b, y, n, relu, TH, TW):
    """y[n, o] at each tile = A^T M A (+ b[o], then max(., 0) where relu), the parts of a last
    partial tile that fall outside the output dropped."""
    O, OH, OW = y.shape[1], y.shape[2], y.shape[3]
    zero = y.dtype.type(0)
    for i in range(TH):
        for j in range(TW):
            t = first + i * TW + j
            r, q = 2 * i, 2 * j
            for o in range(O):
                c0 = _at(m[0, t, o], m[4, t, o], m[8, t, o], m[12, t, o])
                c1 = _at(m[1, t, o], m[5, t, o], m[9, t, o], m[13, t, o])
                c2 = _at(m[2, t, o], m[6, t, o], m[10, t, o], m[14, t, o])
                c3 = _at(m[3, t, o], m[7, t, o], m[11, t, o], m[15, t, o])
                bias = zero if b is None else b[o]
                for k in range(2):
                    if r + k >= OH:
                        break
                    row = _at(c0[k], c1[k], c2[k], c3[k])
                    for l in range(2):
                        if q + l < OW:
                            value = row[l] + bias
                            if relu:
                                value = value if value > zero else zero
                            y[n, o, r + k, q + l] = value


@njit(cache=True)
def _output_adjoint(dy, n, dm, first, TH, TW):
    """dm[xi, first + tile, o] = (A dY A^T)[xi], dY the tile's 2x2 of dy[n, o] (0 outside the
    output): the adjoint of _output_transform's A^T M A."""
    O, OH, OW = dy.shape[1], dy.shape[2], dy.shape[3]
    zero = dy.dtype.type(0)
    for i in range(TH):
        for j in range(TW):
            t = first + i * TW + j
            r, q = 2 * i, 2 * j
            for o in range(O):
                g00 = dy[n, o, r, q]
                g01 = dy[n, o, r, q + 1] if q + 1 < OW else zero
                g10 = dy[n, o, r + 1, q] if r + 1 < OH else zero
                g11 = dy[n, o, r + 1, q + 1] if r + 1 < OH and q + 1 < OW else zero
                c0 = _a(g00, g10)         # A down each of dY's two columns
                c1 = _a(g01, g11)
                for k in range(4):
                    row = _a(c0[k], c1[k])
                    dm[4 * k + 0, t, o] = row[0]
                    dm[4 * k + 1, t, o] = row[1]
                    dm[4 * k + 2, t, o] = row[2]
                    dm[4 * k + 3, t, o] = row[3]


# -- the kernels ---------------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def conv2d_winograd_forward(x, w, b, y, sh, sw, ph, pw, relu, u, padded, v, m):
    """y = conv2d(x, w) + b (b None: no bias), then max(y, 0) where relu, as conv2d_forward; w 3x3,
    stride 1 (sh, sw are 1: taken for the common signature)."""
    N = x.shape[0]
    TH, TW = (y.shape[2] + 1) // 2, (y.shape[3] + 1) // 2
    per_image = TH * TW
    chunk = (v.shape[2] - 1) // per_image
    T = padded.shape[0]
    _filter_transform(w, u)
    for t in prange(T):
        start, stop = N * t // T, N * (t + 1) // T
        for n0 in range(start, stop, chunk):
            n1 = min(n0 + chunk, stop)
            tiles = (n1 - n0) * per_image
            for n in range(n0, n1):
                pad_image(x, n, padded[t], ph, pw)
                _input_transform(padded[t], v[t], (n - n0) * per_image, TH, TW)
            for xi in range(16):
                matmul(v[t, xi, :tiles], u[xi], m[t, xi, :tiles])
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
    chunk = (v.shape[2] - 1) // per_image
    T = padded.shape[0]
    _filter_transform(w, u)
    for t in prange(T):
        partial[t] = dw.dtype.type(0)
        start, stop = N * t // T, N * (t + 1) // T
        for n0 in range(start, stop, chunk):
            n1 = min(n0 + chunk, stop)
            tiles = (n1 - n0) * per_image
            for n in range(n0, n1):
                if relu:
                    relu_mask_in_place(y[n].reshape(O, OH * OW), dy[n].reshape(O, OH * OW))
                pad_image(x, n, padded[t], ph, pw)
                _input_transform(padded[t], v[t], (n - n0) * per_image, TH, TW)
                _output_adjoint(dy, n, m[t], (n - n0) * per_image, TH, TW)
            for xi in range(16):
                matmul(v[t, xi, :tiles].T, m[t, xi, :tiles], product[t, xi])
                for c in range(C):
                    for o in range(O):
                        partial[t, xi, c, o] += product[t, xi, c, o]
            if dx is not None:
                for xi in range(16):        # V is done with: dV takes its place
                    matmul(m[t, xi, :tiles], u[xi].T, v[t, xi, :tiles])
                for n in range(n0, n1):
                    _input_adjoint(v[t], (n - n0) * per_image, padded[t], TH, TW)
                    for c in range(C):
                        for h in range(dx.shape[2]):
                            for col in range(dx.shape[3]):
                                dx[n, c, h, col] = padded[t, c, h + ph, col + pw]
    _filter_adjoint(partial, dw)
    if db is not None:
        for o in prange(O):
            total = dy.dtype.type(0)
            for n in range(N):
                for oh in range(OH):
                    for ow in range(OW):
                        total += dy[n, o, oh, ow]
            db[o] = total
