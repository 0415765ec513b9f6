"""The examples run as a user would run them (on a slice of Fashion-MNIST, to stay quick)."""

import os
import subprocess
import sys

import pytest

import fastnet as fn

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def run_example(name, *args, cwd):
    out = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *args], capture_output=True,
                         text=True, cwd=cwd, timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def fashion_installed():
    try:
        fn.datasets.load("fashion-mnist")
    except fn.DataError:
        if os.environ.get("FASTNET_REQUIRE_DATA") == "1":
            raise
        pytest.skip("Fashion-MNIST is not installed")


def test_train_save_and_predict(tmp_path, fashion_installed):
    out = run_example("train_mlp.py", "--epochs", "1", "--limit", "3000", "--save", "m.safetensors", cwd=tmp_path)
    assert "saved m.safetensors" in out and (tmp_path / "m.safetensors").exists()
    lines = run_example("predict_from_checkpoint.py", "m.safetensors", cwd=tmp_path).splitlines()
    assert len(lines) == 8 and all(line.startswith("true ") for line in lines)


def test_train_from_a_spec(tmp_path, fashion_installed):
    out = run_example("train_cnn_spec.py", "--limit", "1000", cwd=tmp_path)
    assert "test: {'loss'" in out


def test_load_torch_weights(tmp_path):
    pytest.importorskip("torch")
    out = run_example("load_torch_weights.py", cwd=tmp_path)
    difference = float(out.rsplit(":", 1)[1])
    assert difference < 1e-5
