"""A tiled shared-memory GEMM, the one matrix product of the CUDA namespace (dense and convolution).
(The CPU's products are kernels/cpu/matmul.py's matmul*, a plain c = a @ b; only CUDA has `gemm`.)

    c[z] = op(a[za]) @ op(b[zb])  (+ bias)  (+ c[z] when accumulating),   op = transpose or not

over a batch of matrices z = 0 .. c.shape[0] - 1 (blockIdx.z); an operand whose leading axis has
length 1 is the same matrix for every z (a weight shared by the images of a batch). Transposes
are flags, not views: a transposed device array would be a copy (DeviceNDArray.T launches a
transpose kernel and allocates).

Each block computes one TILE x TILE tile of c[z], one thread per element: it walks the reduction
axis a tile at a time, each thread loading one element of the a-tile and one of the b-tile into
shared memory, then every thread takes its row of the a-tile times its column of the b-tile.
So an element of a is read from global memory once per column tile of c (N/TILE times, not N),
an element of b once per row tile (M/TILE times). Elements past an edge load as 0, so any M, N, K
work, not only multiples of TILE. The sum runs in the data's dtype, k ascending (the GPU fuses
each multiply-add: rounding-level differences from BLAS); the bias is added after the sum, as
the CPU kernels add it after their BLAS call.
"""

from numba import cuda

TILE = 16
TILE_PAD = TILE + 1   # a tile's row length in shared memory (a constant: shapes must be literal)


@cuda.jit(cache=True)
def _gemm_kernel(a, b, c, bias, trans_a, trans_b, bias_on_rows, accumulate):
    # +1 column: a transposed store writes a column of the tile, and without the padding all of its
    # TILE elements would sit in one shared-memory bank.
    sa = cuda.shared.array((TILE, TILE_PAD), dtype=c.dtype)
    sb = cuda.shared.array((TILE, TILE_PAD), dtype=c.dtype)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    z = cuda.blockIdx.z
    row0 = cuda.blockIdx.y * TILE
    col0 = cuda.blockIdx.x * TILE
    M = c.shape[1]
    N = c.shape[2]
    K = a.shape[1] if trans_a else a.shape[2]
    za = z if a.shape[0] > 1 else 0
    zb = z if b.shape[0] > 1 else 0
    zero = c.dtype.type(0)   # typed: a bare 0 would make each load a float64 conversion
    acc = zero
    for k0 in range(0, K, TILE):
        # Threads adjacent in x read adjacent addresses (coalesced loads): a transposed operand is
        # read along its own rows and stored transposed into the tile.
        if trans_a:                                  # op(a)[i, k] = a[za, k, i]
            i = row0 + tx
            k = k0 + ty
            sa[tx, ty] = a[za, k, i] if i < M and k < K else zero
        else:                                        # op(a)[i, k] = a[za, i, k]
            i = row0 + ty
            k = k0 + tx
            sa[ty, tx] = a[za, i, k] if i < M and k < K else zero
        if trans_b:                                  # op(b)[k, j] = b[zb, j, k]
            j = col0 + ty
            k = k0 + tx
            sb[tx, ty] = b[zb, j, k] if j < N and k < K else zero
        else:                                        # op(b)[k, j] = b[zb, k, j]
            j = col0 + tx
            k = k0 + ty
            sb[ty, tx] = b[zb, k, j] if j < N and k < K else zero
        cuda.syncthreads()                           # the tiles are complete
        for kk in range(TILE):
            acc += sa[ty, kk] * sb[kk, tx]
        cuda.syncthreads()                           # everyone is done with them before the next load
    i = row0 + ty
    j = col0 + tx
    if i < M and j < N:
        if bias is not None:
            acc += bias[i] if bias_on_rows else bias[j]
        if accumulate:
            acc += c[z, i, j]
        c[z, i, j] = acc


# ---- host side ----


def gemm(a, b, c, bias=None, trans_a=False, trans_b=False, bias_on_rows=False, accumulate=False):
    """c[z] (+)= op(a[z]) @ op(b[z]) + bias, on 3-D device arrays (see the module's docstring).
    bias (optional) is indexed by the row of c (bias_on_rows) or by its column.
    Grid: (ceil(N / TILE), ceil(M / TILE), batch) blocks of TILE x TILE threads."""
    Z, M, N = c.shape
    if Z == 0 or M == 0 or N == 0:
        return
    grid = (-(-N // TILE), -(-M // TILE), Z)
    _gemm_kernel[grid, (TILE, TILE)](a, b, c, bias, bool(trans_a), bool(trans_b), bool(bias_on_rows),
                                     bool(accumulate))
