"""Matrix products spread over Numba's threads, each block one single-threaded BLAS call.

fastnet keeps one pool of threads, Numba's: BLAS runs single-threaded (fastnet/threads.py), and a
large product is cut into blocks of rows that Numba's threads compute side by side. Two pools
taking turns on the same cores (Numba's parallel loops, then BLAS's own threads) made each spin
on the cores the other needed next.
"""

import numba
import numpy as np
from numba import njit, prange

MIN_ROWS = 16   # rows per block; fewer and the per-call overhead outweighs the second core
# One block per thread. A constant, not numba.get_num_threads(): that call would keep every caller
# out of Numba's cache. With fewer threads at run time (numba.set_num_threads) a thread does
# several blocks, which is correct, just a little slower.
BLOCKS = numba.config.NUMBA_NUM_THREADS


@njit(cache=True)
def matmul(a, b, c):
    """c = a @ b, one BLAS call (single-threaded: fastnet/threads.py)."""
    np.dot(a, b, c)


# Products with a small operand run faster as the plain loops below than through OpenBLAS, whose
# per-call packing outweighs so little work: matmul_small where a has at most SMALL_A entries,
# matmul_nt_small where c has at most SMALL_C. Measured in the convolution kernels (2 threads, per
# image): lenet5's first convolution, (6 x 25) @ (25 x 784), forward 6.2 vs 8.6 us and weight
# gradient 7.4 vs 9.4 us; cnn's first, (32 x 9) @ (9 x 784), forward 7.2 vs 6.2 us (BLAS wins)
# but weight gradient 12.3 vs 15.5 us; at (16 x 150) @ (150 x 100) BLAS wins both.
SMALL_A = 200
SMALL_C = 300


@njit(cache=True)
def matmul_small(a, b, c):
    """c = a @ b for a small a (M, K) and long rows of b (K, N): row m of c is the sum over k of
    a[m, k] * b[k], a loop along N the compiler vectorises. a may be a transposed view."""
    M, K = a.shape
    zero = c.dtype.type(0)
    for m in range(M):
        row = c[m]
        for n in range(row.shape[0]):
            row[n] = zero
        for k in range(K):
            scale = a[m, k]
            source = b[k]
            for n in range(row.shape[0]):
                row[n] += scale * source[n]


@njit(cache=True, fastmath={"reassoc", "contract"})
def matmul_nt_small(a, b, c):
    """c = a @ b.T for a (M, L) and b (N, L) with long rows and a small c (M, N): each entry a dot
    product along L. Reassociation lets the compiler split each sum into vector lanes (without it,
    a sum must be added in order, one element at a time: 20x slower)."""
    M, N = c.shape
    for m in range(M):
        left = a[m]
        for n in range(N):
            right = b[n]
            acc = c.dtype.type(0)
            for i in range(left.shape[0]):
                acc += left[i] * right[i]
            c[m, n] = acc


@njit(cache=True, parallel=True)
def matmul_rows(a, b, c):
    """c = a @ b, rows of a and c cut into one block per thread (a and c C-contiguous)."""
    rows = a.shape[0]
    blocks = max(1, min(BLOCKS, rows // MIN_ROWS))
    for t in prange(blocks):
        r0 = rows * t // blocks
        r1 = rows * (t + 1) // blocks
        matmul(a[r0:r1], b, c[r0:r1])


def partial_sums_shape(out_shape):
    """Shape of the `partial` workspace matmul_tn needs for an output of out_shape."""
    return (BLOCKS - 1, *out_shape)


@njit(cache=True, parallel=True)
def matmul_tn(a, b, c, partial):
    """c = a.T @ b, a sum over the rows of a and b, cut into one block per thread: block 0 writes c,
    block t writes partial[t - 1] (shape (BLOCKS - 1, *c.shape)); then c += the partials."""
    rows = a.shape[0]
    blocks = max(1, min(partial.shape[0] + 1, rows // MIN_ROWS))
    for t in prange(blocks):
        r0 = rows * t // blocks
        r1 = rows * (t + 1) // blocks
        if t == 0:
            matmul(a[r0:r1].T, b[r0:r1], c)
        else:
            matmul(a[r0:r1].T, b[r0:r1], partial[t - 1])
    if blocks > 1:
        for i in prange(c.shape[0]):
            for t in range(blocks - 1):
                for j in range(c.shape[1]):
                    c[i, j] += partial[t, i, j]
