"""The command line: `fastnet info`, `fastnet train` (run folder, resume) and `fastnet eval`, on a
small IDX data set written here."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnet as fn
from fastnet.data import save_idx


def run_fastnet(*args, env=None):
    return subprocess.run([sys.executable, "-m", "fastnet", *args], capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})), timeout=600)


def test_info_reports_versions_threads_and_blas():
    out = run_fastnet("info")
    assert out.returncode == 0, out.stderr
    for field in ("fastnet", "numba", "numba threads", "threading layer", "blas", "matrix products", "conv algorithms",
                  "cuda"):
        assert f"\n{field} " in "\n" + out.stdout, f"`fastnet info` lacks {field!r}:\n{out.stdout}"


def write_dataset(folder, n_train=256, n_test=128, gzip_labels=True):
    """Four IDX files where each class is a faint square at its own place in noise: learnable,
    but not perfectly in an epoch or two."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 4, n).astype(np.uint8)
        images = rng.integers(0, 160, (n, 12, 12)).astype(np.uint8)
        for i, label in enumerate(labels):
            r, c = divmod(int(label), 2)
            images[i, 6 * r:6 * r + 6, 6 * c:6 * c + 6] += 40
        save_idx(folder / f"{split}-images-idx3-ubyte", images)
        save_idx(folder / f"{split}-labels-idx1-ubyte{'.gz' if gzip_labels else ''}", labels)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("idx")
    write_dataset(folder)
    return folder


TRAIN = ("train", "--model", "mlp", "--batch-size", "32", "--lr", "0.003", "--schedule", "cosine",
         "--seed", "3")


def test_train_writes_the_run_folder_and_eval_agrees(dataset, tmp_path):
    out = run_fastnet(*TRAIN, "--dataset", str(dataset), "--epochs", "2", "--val-split", "0.25",
                      "--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    assert sorted(os.listdir(tmp_path / "run")) == ["best.safetensors", "curves.png", "metrics.json",
                                                    "model.safetensors", "run.json", "train.log"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["epochs"]] == [1, 2]
    assert all(row["val_accuracy"] is not None for row in metrics["epochs"])
    assert 0.5 < metrics["test_accuracy"] < 1.0, metrics["test_accuracy"]
    assert metrics["epochs"][1]["lr"] < metrics["epochs"][0]["lr"]      # the cosine schedule ran
    assert "epoch 2/2" in (tmp_path / "run" / "train.log").read_text()
    assert (tmp_path / "run" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    evaluated = run_fastnet("eval", str(tmp_path / "run" / "model.safetensors"), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["accuracy"] == metrics["test_accuracy"]
    assert result["loss"] == pytest.approx(metrics["test_loss"], rel=1e-6)
    confusion = np.array(result["confusion_matrix"])
    assert confusion.sum() == 128 and np.trace(confusion) / 128 == result["accuracy"]


def test_resume_is_bit_identical_to_training_straight_through(dataset, tmp_path):
    # No schedule here: a schedule's length is fixed when the run starts (it is saved in the
    # checkpoint), so "1 epoch, then extend to 2" only equals "2 epochs" with a constant lr.
    common = ("train", "--model", "lenet", "--batch-size", "32", "--optimizer", "sgd", "--lr", "0.01",
              "--schedule", "none", "--val-split", "0.2", "--seed", "5", "--dataset", str(dataset))
    straight = run_fastnet(*common, "--epochs", "2", "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    first = run_fastnet(*common, "--epochs", "1", "--out", str(tmp_path / "resumed"))
    assert first.returncode == 0, first.stderr
    assert fn.load(tmp_path / "resumed" / "model.safetensors").epoch == 1
    resumed = run_fastnet("train", "--resume", str(tmp_path / "resumed"), "--epochs", "2")
    assert resumed.returncode == 0, resumed.stderr
    a = fn.load(tmp_path / "straight" / "model.safetensors")
    b = fn.load(tmp_path / "resumed" / "model.safetensors")
    assert (a.epoch, a.step) == (b.epoch, b.step) == (2, 14)
    for name, value in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[name], value, err_msg=name)
    resumed_rows = json.loads((tmp_path / "resumed" / "metrics.json").read_text())["epochs"]
    straight_rows = json.loads((tmp_path / "straight" / "metrics.json").read_text())["epochs"]
    assert [row["epoch"] for row in resumed_rows] == [1, 2]
    for mine, theirs in zip(resumed_rows, straight_rows):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert mine[key] == theirs[key], (mine["epoch"], key)
    resumed_metrics = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    straight_metrics = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert resumed_metrics["test_accuracy"] == straight_metrics["test_accuracy"]


def test_train_reports_a_missing_data_set_clearly_and_leaves_no_run_folder(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fastnet", "train", "--dataset", "kmnist"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env=dict(os.environ, FASTNET_DATA=str(tmp_path), HOME=str(tmp_path)))
    assert out.returncode == 2
    assert "data set 'kmnist' not found" in out.stderr and str(tmp_path) in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()


def test_eval_of_a_bad_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"not a checkpoint")
    out = run_fastnet("eval", str(bad))
    assert out.returncode == 2 and "truncated or corrupt" in out.stderr and "Traceback" not in out.stderr
