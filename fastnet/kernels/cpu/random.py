"""Counter-based random numbers: splitmix64 (fastnet/kernels/elementwise.py, shared with the CUDA
kernels) compiled for the CPU, inlined into each kernel that draws from it."""

from numba import njit

from .. import elementwise

splitmix64 = njit(cache=True, inline="always")(elementwise.splitmix64)
