"""End to end on real Fashion-MNIST: the zoo networks reach their accuracy targets.

The data comes from Debian's dataset-fashion-mnist package (.ci/run installs it). Without it the
tests skip, except where FASTNET_REQUIRE_DATA=1 (CI), where a missing data set is a failure.
"""

import os

import numpy as np
import pytest

import fastnet as fn

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fashion():
    try:
        (x_train, y_train), (x_test, y_test) = fn.datasets.load("fashion-mnist")
    except fn.DataError as err:
        if os.environ.get("FASTNET_REQUIRE_DATA") == "1":
            raise
        pytest.skip(f"Fashion-MNIST is not installed: {err}")
    mean, std = x_train.mean(), x_train.std()
    return (x_train - mean) / std, y_train, (x_test - mean) / std, y_test


def test_the_data_is_the_real_fashion_mnist(fashion):
    x_train, y_train, x_test, y_test = fashion
    assert x_train.shape == (60000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28)
    np.testing.assert_array_equal(np.bincount(y_train), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(y_test), np.full(10, 1000))


def test_mlp_reaches_85_percent_in_two_epochs(fashion):
    x_train, y_train, x_test, y_test = fashion
    model = fn.models.mlp().compile((1, 28, 28), 64, optimizer=fn.Adam(lr=1e-3), seed=0)
    history = model.fit(x_train, y_train, epochs=2, verbose=0)
    assert history["loss"][1] < history["loss"][0]
    accuracy = model.evaluate(x_test, y_test)["accuracy"]
    assert accuracy >= 0.85, f"MLP test accuracy {accuracy:.4f} after 2 epochs"


def test_fastnet_train_defaults_reach_91_percent_and_eval_agrees(fashion, tmp_path):
    """The project's main job: `fastnet train` with no model arguments (cnn, Adam 2e-3, cosine,
    batch 64, 3 epochs), then `fastnet eval` of the checkpoint it wrote."""
    import json
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "fastnet", "train", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 3
    assert metrics["test_accuracy"] >= 0.91, f"fastnet train: test accuracy {metrics['test_accuracy']:.4f}"
    evaluated = subprocess.run([sys.executable, "-m", "fastnet", "eval",
                                str(tmp_path / "run" / "model.safetensors"), "--json"],
                               capture_output=True, text=True, timeout=600)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["accuracy"] == metrics["test_accuracy"]


# 5 epochs at batch 32 (Adam 2e-3, cosine: the defaults) gave 0.9225-0.9231 on one 2-core CI machine
# and 0.9198 on another (AVX-512 OpenBLAS kernels: the same seeded run, other rounding), too close
# to the goal; 6 epochs gave 0.9245 on the second. About 5.5 minutes uncontended.
RESNET8_RECIPE = ["--epochs", "6", "--batch-size", "32"]


def test_fastnet_train_resnet8_reaches_92_percent(fashion, tmp_path):
    """A graph network (residual blocks, BatchNorm, projection shortcuts) trained as a user would:
    `fastnet train --model resnet8`; its checkpoint loads as a Graph and predicts what was reported."""
    import json
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "fastnet", "train", "--model", "resnet8", *RESNET8_RECIPE,
                          "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.92, f"resnet8: test accuracy {metrics['test_accuracy']:.4f}"
    model = fn.load(tmp_path / "run" / "model.safetensors")
    assert isinstance(model.network, fn.Graph)
    _, (x_test, y_test) = fn.datasets.load("fashion-mnist")
    assert isinstance(model.network.layers[0], fn.Normalize)          # it takes raw images
    assert model.evaluate(x_test, y_test)["accuracy"] == metrics["test_accuracy"]


# `fastnet train --model lstm_rows` with the defaults (Adam 2e-3, cosine over the run, batch 64)
# but for the epochs. Measured here (December 2026): fastnet 0.8829 after 3 epochs, 0.8859 after 4,
# 0.8904 after 5; PyTorch with the same recipe (nn.LSTM(28, 128) + nn.Linear, its own
# initialisation, the same normalisation, batch, Adam and cosine schedule) 0.8800 after 3, 0.8858
# after 5 (its epochs 3 and 4 of the 5: 0.8797, 0.8838). The bar, 0.88, with 5 epochs for a
# margin of 0.01 (40 s on 2 cores, lightly loaded).
LSTM_ROWS_EPOCHS = 5
LSTM_ROWS_BAR = 0.88


def test_fastnet_train_lstm_rows_reaches_its_bar(fashion, tmp_path):
    """A recurrent network end to end: each image as 28 steps of 28 pixels through LSTM(128)."""
    import json
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "fastnet", "train", "--model", "lstm_rows",
                          "--epochs", str(LSTM_ROWS_EPOCHS), "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= LSTM_ROWS_BAR, f"lstm_rows: test accuracy {metrics['test_accuracy']:.4f}"
    model = fn.load(tmp_path / "run" / "model.safetensors")
    assert [type(layer).__name__ for layer in model.network.layers] == ["Normalize", "Reshape", "LSTM", "Dense"]
