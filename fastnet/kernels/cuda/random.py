"""Counter-based random numbers on the device: the same splitmix64 as kernels/cpu/random.py, so a
kernel's random choices (dropout masks, crops, flips) equal the CPU's bit for bit."""

import numpy as np
from numba import cuda

MASK64 = (1 << 64) - 1


def seed_u64(seed):
    """A seed as the kernels take it: np.uint64, wrapped as the CPU kernels' np.uint64(seed) wraps."""
    return np.uint64(int(seed) & MASK64)


@cuda.jit(device=True, cache=True)
def splitmix64(seed, index):
    """64 well-mixed bits for (seed, index) (the splitmix64 finaliser); arithmetic wraps mod 2**64."""
    z = np.uint64(seed) + np.uint64(index) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))
