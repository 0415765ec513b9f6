"""Counter-based random numbers on the device: splitmix64 (fastnet/kernels/elementwise.py, the
CPU kernels' too) compiled as a CUDA device function, so a kernel's random choices (dropout masks,
crops, flips) equal the CPU's bit for bit."""

import numpy as np
from numba import cuda

from .. import elementwise

MASK64 = (1 << 64) - 1

splitmix64 = cuda.jit(device=True, cache=True)(elementwise.splitmix64)

# ---- host side ----


def seed_u64(seed):
    """A seed as the kernels take it: np.uint64, wrapped as the CPU kernels' np.uint64(seed) wraps."""
    return np.uint64(int(seed) & MASK64)
