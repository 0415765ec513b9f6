import os
import subprocess
import sys
import tempfile

# tests/gradcheck.py, tests/cuda_helpers.py and tests/layers/harness.py are helper modules shared
# by the test files.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "layers"))
sys.path.insert(0, os.path.dirname(__file__))


def _gpu_usable():
    """Whether numba.cuda would find a GPU, asked in a subprocess: importing numba.cuda here would
    fix "simulator or not" for the whole test session."""
    if not (os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")):
        return False
    probe = "import sys; from numba import cuda; sys.exit(0 if cuda.is_available() else 1)"
    try:
        return subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# Compile's measured algorithm choices (fastnet/algorithms.py) go to a folder of this session's own,
# not the user's cache: each test session measures afresh, and leaves the user's choices alone.
os.environ.setdefault("FASTNET_CACHE_DIR", tempfile.mkdtemp(prefix="fastnet-test-cache-"))

# The CUDA tests run on a GPU where there is one, and on Numba's CUDA simulator (every GPU thread
# run in Python: right answers, no speed) where there is none, as in CI. The choice must be made
# before numba is first imported.
GPU = bool(os.environ.get("NUMBA_ENABLE_CUDASIM") != "1" and _gpu_usable())
if not GPU:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
