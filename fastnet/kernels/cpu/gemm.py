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
