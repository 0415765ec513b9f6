"""The command line: `fastnet info` and `fastnet train` on a small IDX data set written here."""

import os
import subprocess
import sys

import numpy as np

from fastnet.datasets import save_idx


def run_fastnet(*args, env=None):
    return subprocess.run([sys.executable, "-m", "fastnet", *args], capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})), timeout=600)


def test_info_reports_versions_threads_and_blas():
    out = run_fastnet("info")
    assert out.returncode == 0, out.stderr
    for field in ("fastnet", "numba", "numba threads", "threading layer", "blas", "cuda"):
        assert f"\n{field} " in "\n" + out.stdout, f"`fastnet info` lacks {field!r}:\n{out.stdout}"


def write_dataset(folder, n_train=256, n_test=128, gzip_labels=True):
    """Four IDX files where each class is a bright square at its own place: learnable in an epoch."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 4, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, 12, 12)).astype(np.uint8)
        for i, label in enumerate(labels):
            r, c = divmod(int(label), 2)
            images[i, 6 * r:6 * r + 6, 6 * c:6 * c + 6] += 200
        save_idx(folder / f"{split}-images-idx3-ubyte", images)
        save_idx(folder / f"{split}-labels-idx1-ubyte{'.gz' if gzip_labels else ''}", labels)


def test_train_on_a_folder_of_idx_files(tmp_path):
    write_dataset(tmp_path)
    out = run_fastnet("train", "--model", "mlp", "--dataset", str(tmp_path), "--epochs", "2",
                      "--batch-size", "32", "--lr", "0.01")
    assert out.returncode == 0, out.stderr
    assert "epoch 2/2" in out.stderr
    accuracy = float(out.stdout.split("test accuracy")[1].split()[0])
    assert accuracy > 0.9, out.stdout


def test_train_reports_a_missing_data_set_clearly(tmp_path):
    out = run_fastnet("train", "--dataset", "kmnist", env={"FASTNET_DATA": str(tmp_path), "HOME": str(tmp_path)})
    assert out.returncode == 2
    assert "data set 'kmnist' not found" in out.stderr and str(tmp_path) in out.stderr
    assert "Traceback" not in out.stderr
