"""Counter-based random numbers: a pure function of (seed, index), so a kernel's random choices do
not depend on the thread count or on any generator state, and replay exactly after a resume."""

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def splitmix64(seed, index):
    """64 well-mixed bits for (seed, index) (the splitmix64 finaliser)."""
    z = np.uint64(seed) + np.uint64(index) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))
