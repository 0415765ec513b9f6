"""Kernel namespaces, one per device (cpu/, cuda/), with the same function names and arguments
but for the workspaces each device's kernels take by name (workspace.py). The math both devices
share sits beside them, written once: output sizes (shapes.py) and the per-element pieces each
device compiles (elementwise.py). cpu/ and cuda/ never import each other."""

import importlib

from ..errors import FastnetError

DEVICES = ("cpu", "cuda")


def namespace(device):
    """The kernel module for `device`; CUDA modules are imported only when asked for."""
    if device not in DEVICES:
        raise FastnetError(f"unknown device {device!r}: expected one of {', '.join(DEVICES)}")
    if device == "cuda":
        check_cuda()
    return importlib.import_module(f"{__name__}.{device}")


def check_cuda():
    """A clear FastnetError unless numba.cuda can run kernels here (a GPU, or the simulator)."""
    try:
        from numba import cuda
    except ImportError as err:
        raise FastnetError(f"device='cuda' needs Numba's CUDA target ({err}); install it with "
                           f"pip install 'fastnet[cuda]'") from None
    if not cuda.is_available():
        raise FastnetError("device='cuda' but no CUDA GPU is usable here (numba.cuda.is_available() "
                           "is False: no GPU, no driver, or no CUDA toolkit); use device='cpu'")
