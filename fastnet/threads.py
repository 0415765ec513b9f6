"""How fastnet's two thread pools share the cores: set before Numba's and BLAS's libraries load.

A training step alternates between Numba's parallel loops (OpenMP threads) and BLAS GEMMs
(OpenBLAS's own threads). Both pools busy-wait after their work by default, so each spins on
the cores the other needs next: on a 2-core machine the `cnn` step ran 3x slower that way
than with either pool limited to one thread. Passive OpenMP waiting and a short OpenBLAS spin
(2^4 cycles before sleeping) let them hand the cores over; measured on `cnn` at batch 64 this
is faster than any single-pool setting (see the issue notes and bench/).

Only defaults: a variable the user has set is left alone. They take effect only if this runs
before scipy.linalg (OpenBLAS) and Numba's OpenMP layer are loaded, hence the import at the very
top of fastnet/__init__.py.
"""

import os

DEFAULTS = {
    "OMP_WAIT_POLICY": "PASSIVE",
    "OPENBLAS_THREAD_TIMEOUT": "4",
}


def set_default_environment():
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)


def describe():
    """The settings in force, for `fastnet info`."""
    return ", ".join(f"{name}={os.environ.get(name, '(unset)')}" for name in DEFAULTS)
