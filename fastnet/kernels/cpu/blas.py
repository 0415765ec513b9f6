"""Matrix products from NumPy's own OpenBLAS, called from @njit code through its CBLAS interface.

Numba's np.dot calls the OpenBLAS bundled with SciPy; NumPy's wheels bundle a newer one
(scipy-openblas64 0.3.31 against SciPy 1.17's 0.3.30 here) that runs the products fastnet makes
faster, most of all the small ones, on one core, and so the convolution kernels too (see
bench/NOTES.md, blas).

Each call runs single-threaded: fastnet's threads split the work themselves (matmul.py), and two
pools of threads on the same cores made each spin on the cores the other needed (a convolution
ran several times slower; bench/NOTES.md, blas). OpenBLAS has one thread count for the whole
library (its "_local" setter sets it too), so matmul sets it to 1 where it is not, and the model's
entry points put back the count the program had when they return
(threads.restores_numpy_blas_threads): NumPy's own products elsewhere keep their threads.

The functions are reached by symbol name (llvmlite.binding.add_symbol, then a Numba
ExternalFunction), not by an address baked into the machine code, so kernels that call them stay
in Numba's on-disk cache (Numba does not recompile a cached caller when a callee in another file
changes: renaming a symbol here needs the __pycache__ folders cleared, or stale kernels would call a
name nothing answers to). Where NumPy's library is not found (a NumPy built on another BLAS),
AVAILABLE is False and matmul.py uses np.dot.
"""

import ctypes
import glob
import os

import llvmlite.binding as llvm
import numpy as np
from numba import njit, types

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112

# the wheels' library folders: numpy.libs (Linux, Windows) and numpy/.dylibs (macOS)
_FOLDERS = (os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs"),
            os.path.join(os.path.dirname(np.__file__), ".dylibs"))
_SYMBOLS = {"fastnet_sgemm": "scipy_cblas_sgemm64_", "fastnet_dgemm": "scipy_cblas_dgemm64_",
            "fastnet_blas_set_threads": "scipy_openblas_set_num_threads64_",
            "fastnet_blas_get_threads": "scipy_openblas_get_num_threads64_"}


def find_numpy_openblas():
    """The path of NumPy's bundled OpenBLAS if it has every function used here, else None."""
    for folder in _FOLDERS:
        for path in sorted(glob.glob(os.path.join(folder, "*scipy_openblas64_*"))):
            try:
                library = ctypes.CDLL(path)
            except OSError:
                continue
            if all(hasattr(library, name) for name in _SYMBOLS.values()):
                return os.path.realpath(path)
    return None


def _register(path):
    library = ctypes.CDLL(path)
    for ours, theirs in _SYMBOLS.items():
        llvm.add_symbol(ours, ctypes.cast(getattr(library, theirs), ctypes.c_void_p).value)
    library.scipy_openblas_get_num_threads64_.restype = ctypes.c_int
    library.scipy_openblas_set_num_threads64_.argtypes = [ctypes.c_int]
    return library


LIBRARY = find_numpy_openblas()
AVAILABLE = LIBRARY is not None
_library = _register(LIBRARY) if AVAILABLE else None


def get_threads():
    """NumPy's OpenBLAS thread count (None where it is not used)."""
    return _library.scipy_openblas_get_num_threads64_() if AVAILABLE else None


def set_threads(count):
    if AVAILABLE:
        _library.scipy_openblas_set_num_threads64_(count)

# cblas_?gemm(order, transa, transb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc), 64-bit integers;
# the pointers are passed as integers (the same registers on every 64-bit ABI)
_i64, _ptr, _int = types.int64, types.uintp, types.int32
_sgemm = types.ExternalFunction("fastnet_sgemm", types.void(
    _int, _int, _int, _i64, _i64, _i64, types.float32, _ptr, _i64, _ptr, _i64, types.float32, _ptr, _i64))
_dgemm = types.ExternalFunction("fastnet_dgemm", types.void(
    _int, _int, _int, _i64, _i64, _i64, types.float64, _ptr, _i64, _ptr, _i64, types.float64, _ptr, _i64))
_set_threads = types.ExternalFunction("fastnet_blas_set_threads", types.void(types.int32))
_get_threads = types.ExternalFunction("fastnet_blas_get_threads", types.int32())


@njit(cache=True)
def _layout(a):
    """How a row-major CBLAS call reads matrix a: (NO_TRANS, row stride) where its rows are
    contiguous, (TRANS, column stride) where its columns are (a transposed view)."""
    item = a.itemsize
    if a.shape[1] == 1 or a.strides[1] == item:
        return NO_TRANS, max(a.shape[1], a.strides[0] // item, 1)
    if a.shape[0] == 1 or a.strides[0] == item:
        return TRANS, max(a.shape[0], a.strides[1] // item, 1)
    raise ValueError("blas.matmul: a matrix needs one axis of unit stride")


@njit(cache=True)
def matmul(a, b, c):
    """c = a @ b, single-threaded (a CBLAS ?gemm call, alpha 1 and beta 0). a and b: any matrices
    with one unit-stride axis (row blocks, transposed views); c: rows contiguous."""
    M, K = a.shape
    N = b.shape[1]
    if M == 0 or N == 0:
        return
    if K == 0:                                  # an empty sum
        for m in range(M):
            for n in range(N):
                c[m, n] = 0
        return
    trans_a, lda = _layout(a)
    trans_b, ldb = _layout(b)
    if c.shape[1] != 1 and c.strides[1] != c.itemsize:
        raise ValueError("blas.matmul: the output's rows must be contiguous")
    ldc = max(N, c.strides[0] // c.itemsize, 1)
    if _get_threads() != 1:
        _set_threads(1)
    if c.itemsize == 4:
        _sgemm(ROW_MAJOR, trans_a, trans_b, M, N, K, np.float32(1.0), a.ctypes.data, lda,
               b.ctypes.data, ldb, np.float32(0.0), c.ctypes.data, ldc)
    else:
        _dgemm(ROW_MAJOR, trans_a, trans_b, M, N, K, 1.0, a.ctypes.data, lda,
               b.ctypes.data, ldb, 0.0, c.ctypes.data, ldc)
