"""Finiteness of a whole buffer on the GPU, as kernels/cpu/finite.py: one block counts, each thread
taking every T-th element, a tree reduction in shared memory adds the threads' counts, and the one
number is copied back (into the result buffer made once, launch.result_buffers)."""

import math

import numpy as np
from numba import cuda, int64

from .launch import REDUCE_THREADS, block_sum, fetch, reduce_threads, result_buffers


@cuda.jit(cache=True)
def _count_nonfinite_kernel(x, out):
    buf = cuda.shared.array(REDUCE_THREADS, int64)
    t = cuda.threadIdx.x
    count = 0
    for i in range(t, x.shape[0], cuda.blockDim.x):
        if not math.isfinite(x[i]):
            count += 1
    buf[t] = count
    total = block_sum(buf, t)
    if t == 0:
        out[0] = total


# ---- host side ----


def count_nonfinite(x):
    """How many elements of the flat device array x are NaN, +inf or -inf (an int)."""
    result = result_buffers(np.int64)
    _count_nonfinite_kernel[1, reduce_threads(x.shape[0])](x, result[0])
    return int(fetch(result))
