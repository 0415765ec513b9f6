"""Matrix products c = a @ b (and a.T @ b, a @ b.T) for the CPU kernels: `matmul`, one
single-threaded BLAS call, and products spread over Numba's threads, each block one such call.
(The CUDA namespace's `gemm` is its own tiled kernel; the CPU has no function of that name.)

fastnet keeps one pool of threads, Numba's: each BLAS call runs single-threaded (blas.py, threads.py),
and a large product is cut into blocks of rows that Numba's threads compute side by side. Two pools
taking turns on the same cores (Numba's parallel loops, then BLAS's own threads) made each spin
on the cores the other needed next.
"""

import numba
import numpy as np
from numba import njit, prange

from . import blas

MIN_ROWS = 16   # rows per block; fewer and the per-call overhead outweighs the second core
# One block per thread. A constant, not numba.get_num_threads(): that call would keep every caller
# out of Numba's cache. With fewer threads at run time (numba.set_num_threads) a thread does
# several blocks, which is correct, just a little slower.
BLOCKS = numba.config.NUMBA_NUM_THREADS


@njit(cache=True)
def matmul_dot(a, b, c):
    """c = a @ b through Numba's np.dot: SciPy's OpenBLAS, limited to one thread (threads.py).
    a and b C- or F-contiguous, c C-contiguous."""
    np.dot(a, b, c)


# c = a @ b, one single-threaded BLAS call: NumPy's own OpenBLAS where it is found (faster on these
# products, see blas.py), else np.dot. Chosen at import; Numba compiles it into its callers.
matmul = blas.matmul if blas.AVAILABLE else matmul_dot


# Weight-gradient products c (M, N) = a @ b.T with at most SMALL_C entries in c and long rows in a and b
# (a first convolution on one channel: K = 9 or 25 rows, P = 784 columns) run faster as the plain
# loops of matmul_nt_small than through BLAS, whose per-call packing outweighs so little work
# (forward products of that size were as fast or faster through BLAS): see bench/NOTES.md, matmul.
SMALL_C = 300


@njit(cache=True, fastmath={"reassoc", "contract"})
def matmul_nt_small(a, b, c):
    """c = a @ b.T for a (M, L) and b (N, L) with long rows and a small c (M, N): each entry a dot
    product along L. Reassociation lets the compiler split each sum into vector lanes (without it,
    a sum must be added in order, one element at a time: much slower, see bench/NOTES.md, matmul)."""
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
    """Shape of the `partial` workspace matmul_tn needs for an output of out_shape: one sum per
    thread but the first (which writes c itself)."""
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
