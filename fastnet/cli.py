"""Command line: `fastnet info` (more commands come with the training issue)."""

import argparse
import os
import platform
import sys


def info():
    """Versions, threads, cache, BLAS and CUDA: what decides how fast fastnet runs here."""
    import llvmlite
    import numba
    import numpy as np
    import scipy

    import fastnet
    from fastnet.kernels.cpu import relu_forward

    relu_forward(np.zeros(4, np.float32), np.zeros(4, np.float32))  # a parallel kernel, so the threading layer is chosen
    rows = [
        ("fastnet", fastnet.__version__),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("numpy", np.__version__),
        ("scipy", scipy.__version__),
        ("numba", numba.__version__),
        ("llvmlite", llvmlite.__version__),
        ("cpu cores", str(os.cpu_count())),
        ("numba threads", f"{numba.get_num_threads()} (NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS})"),
        ("threading layer", numba.threading_layer()),
        ("thread waiting", fastnet.threads.describe()),
        ("numba cache dir", numba.config.CACHE_DIR or "__pycache__ beside each kernel module"),
        ("blas", _blas()),
        ("cuda", _cuda()),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def _blas():
    """The BLAS Numba calls is SciPy's (scipy.linalg.cython_blas)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threadpool_info = None
    if threadpool_info is not None:
        found = [f"{d['internal_api']} {d.get('version') or ''} ({d['num_threads']} threads, "
                 f"{os.path.basename(d['filepath'])})" for d in threadpool_info() if d["user_api"] == "blas"]
        if found:
            return "; ".join(found)
    import scipy
    config = scipy.show_config(mode="dicts")
    blas = config.get("Build Dependencies", {}).get("blas", {})
    return f"{blas.get('name', 'unknown')} {blas.get('version', '')} (scipy)".strip()


def _cuda():
    try:
        from numba import cuda
        if not cuda.is_available():
            return "not available (no CUDA driver or GPU found)"
        device = cuda.get_current_device()
        return f"available: {device.name.decode() if isinstance(device.name, bytes) else device.name}"
    except Exception as err:  # any failure to probe means CUDA is not usable here
        return f"not available ({type(err).__name__}: {err})"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastnet", description="JIT-compiled CNN/MLP training engine")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="versions, threads, cache dir, BLAS, CUDA")
    args = parser.parse_args(argv)
    if args.command == "info":
        info()
    return 0


if __name__ == "__main__":
    sys.exit(main())
