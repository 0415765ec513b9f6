"""One pool of threads: Numba's. The BLAS that Numba's np.dot calls (SciPy's OpenBLAS) runs
single-threaded; the kernels' own products use NumPy's OpenBLAS where it is found, set to one
thread while they run and given back its count by the model's entry points (kernels/cpu/blas.py,
restores_numpy_blas_threads below), and np.dot where it is not.

A training step alternates between Numba's parallel loops and BLAS products. With both pools
multi-threaded, each busy-waits after its work on the cores the other needs next: on a 2-core
machine the `cnn` step ran 3x slower than with one pool, and how much slower depended on which
library loaded OpenMP first (importing torch before fastnet made it far worse). So fastnet limits
SciPy's OpenBLAS to one thread and splits the large products over Numba's threads itself
(kernels/cpu/matmul.py). NumPy's own BLAS, which fastnet does not use, is left alone.
"""

import functools
import os

from .kernels.cpu import blas

_limited = []


def restores_numpy_blas_threads(method):
    """For the model's entry points: the kernels set NumPy's OpenBLAS to one thread while they
    run (kernels/cpu/blas.py); the count the program had is put back when the method returns."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        before = blas.get_threads()
        try:
            return method(*args, **kwargs)
        finally:
            if blas.get_threads() != before:
                blas.set_threads(before)
    return wrapper


def use_single_threaded_blas():
    """Limit the OpenBLAS behind scipy.linalg.cython_blas (what Numba's np.dot calls) to 1 thread."""
    if _limited:
        return
    import scipy
    import scipy.linalg.cython_blas  # noqa: F401  (loads the library, so threadpoolctl sees it)
    from threadpoolctl import ThreadpoolController

    scipy_dir = os.path.dirname(os.path.dirname(scipy.__file__))
    controller = ThreadpoolController()
    for lib in controller.lib_controllers:
        if lib.user_api == "blas" and _is_scipys(lib.filepath, scipy_dir):
            lib.set_num_threads(1)
            _limited.append(lib)


def _is_scipys(path, site):
    # scipy's wheels put the library in site-packages/scipy.libs (or scipy/.libs on some builds).
    path = os.path.realpath(path)
    return (path.startswith(os.path.join(site, "scipy.libs"))
            or path.startswith(os.path.join(site, "scipy") + os.sep))


def describe():
    """The BLAS libraries fastnet limited, for `fastnet info`."""
    if not _limited:
        return "not limited (SciPy's BLAS was not found by threadpoolctl)"
    return "; ".join(f"{os.path.basename(lib.filepath)} -> {lib.num_threads} thread" for lib in _limited)
