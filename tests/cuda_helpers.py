"""Helpers shared by the tests that call kernels directly (fastnet.kernels.cuda against its CPU twin
fastnet.kernels.cpu, on tiny shapes), and the warnings every test that runs CUDA code ignores.

numba.cuda is imported here at module level: tests/conftest.py chooses a GPU or Numba's CUDA
simulator (NUMBA_ENABLE_CUDASIM=1) at collection start, before any test module imports this one.
"""

import numpy as np
import pytest
from numba import cuda

# The simulator's splitmix64 runs on NumPy uint64 scalars, whose wrap-around (intended) warns; on a
# GPU, numba-cuda warns that these tiny launches leave most of it idle.
CUDA_WARNINGS = [pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
                 pytest.mark.filterwarnings("ignore:Grid size")]

# Relative tolerance, and an absolute one relative to the largest magnitude of the result: sums
# that cancel to near 0 keep the rounding error of their large terms.
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def empty(shape, dtype, fill=np.nan):
    """A device array filled with garbage (NaN), so an element a kernel forgets to write shows."""
    return cuda.to_device(np.full(shape, fill, dtype=dtype))


def close(gpu, cpu, dtype):
    cpu = np.asarray(cpu)
    scale = max(1.0, float(np.nanmax(np.abs(cpu)))) if cpu.size else 1.0
    np.testing.assert_allclose(gpu.copy_to_host(), cpu, rtol=TOL[dtype], atol=TOL[dtype] * scale)


def same(gpu, cpu):
    np.testing.assert_array_equal(gpu.copy_to_host(), cpu)


def randn(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)
