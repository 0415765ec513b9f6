"""One pool of threads: after `import fastnet`, the BLAS that Numba calls runs single-threaded,
whatever was imported before (torch brings its own OpenMP runtime)."""

import subprocess
import sys

import pytest

CHECK = """
{prelude}
import fastnet, scipy.linalg.cython_blas
from threadpoolctl import threadpool_info
import os
# SciPy's library sits in site-packages/scipy.libs; NumPy's (also named libscipy_openblas) in numpy.libs.
scipys = [d for d in threadpool_info()
          if d["user_api"] == "blas" and "scipy" in os.path.dirname(d["filepath"]).split("site-packages")[-1]]
print(len(scipys), *[d["num_threads"] for d in scipys])
print(fastnet.threads.describe())
"""


@pytest.mark.parametrize("prelude", ["", "import numpy; numpy.dot(numpy.ones((64, 64)), numpy.ones((64, 64)))",
                                     "import torch"])
def test_scipys_blas_is_limited_to_one_thread(prelude):
    if prelude == "import torch":
        pytest.importorskip("torch")
    out = subprocess.run([sys.executable, "-c", CHECK.format(prelude=prelude)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    counts, described = out.stdout.splitlines()
    found, *threads = map(int, counts.split())
    assert found >= 1, "threadpoolctl found no BLAS library inside scipy"
    assert threads == [1] * found, f"SciPy's BLAS runs {threads} threads"
    assert "-> 1 thread" in described
