"""Launch sizes, the block reduction, and the cached one-element result buffers the CUDA kernels share.

Launch sizes are computed from the number of work items: one thread per item, blocks a whole
number of warps, and no bigger than the work (a 10-element launch gets one warp, not 256 threads).
"""

import numpy as np
from numba import cuda

WARP = 32
THREADS = 256           # most threads per block of the one-thread-per-item kernels
REDUCE_THREADS = 256    # most threads per block of a reduction: the size of its shared buffer


@cuda.jit(device=True, cache=True)
def block_sum(buf, t):
    """Sum buf[0 : blockDim.x] (blockDim.x a power of two) in shared memory; every thread gets the
    total. Each thread must have written its own buf[t] before the call."""
    cuda.syncthreads()
    s = cuda.blockDim.x // 2
    while s > 0:                  # pairwise tree: the active half adds the other half
        if t < s:
            buf[t] += buf[t + s]
        cuda.syncthreads()
        s //= 2
    total = buf[0]
    cuda.syncthreads()            # everyone has read buf[0] before anyone writes buf again
    return total


# ---- host side ----


def grid_1d(n, cap=THREADS):
    """(blocks, threads_per_block) for n items, one thread each; at least one block, so that an
    empty launch is still a valid one (its threads find nothing to do)."""
    threads = max(WARP, min(cap, -(-n // WARP) * WARP))
    return max(1, -(-n // threads)), threads


def reduce_threads(n):
    """Threads of a block that reduces n values: a power of two (the tree halves it each step),
    between one warp and REDUCE_THREADS."""
    threads = WARP
    while threads < n and threads < REDUCE_THREADS:
        threads *= 2
    return threads


_results = {}


def result_buffers(dtype):
    """(device, host) one-element arrays of dtype, made on first use and then reused: a reduction
    writes its total into the device one, and the host one receives it, so no call allocates."""
    key = np.dtype(dtype)
    if key not in _results:
        _results[key] = (cuda.device_array(1, dtype=key), np.zeros(1, dtype=key))
    return _results[key]


def fetch(buffers):
    """The scalar in a result buffer pair, copied to the host (a synchronising copy)."""
    device, host = buffers
    device.copy_to_host(host)
    return host[0]
