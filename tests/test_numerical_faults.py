"""Numerical faults (issue 16): a non-finite loss, or non-finite gradients with a finite loss (a
layer that overflows), stop training with a DivergenceError carrying the facts (epoch, step, the
last finite loss) before any update, the parameters and optimizer state those of the last finite
step; `fastnet train` keeps its last good checkpoint and names it in its one-line message."""

import os
import subprocess
import sys

import numpy as np
import pytest
from cuda_helpers import CUDA_WARNINGS, dev
from test_cli import write_dataset

import fastnet as fn
import fastnet.kernels.cpu as kc
from fastnet import checkpoint, cli
from fastnet.model import Model


def overflowing(optimizer=None):
    """A float32 Dense-ReLU-Dense whose loss is finite but whose first layer's weight gradient is
    not: tiny first weights and large inputs keep the hidden values small (1e-9) and the logits
    finite (1e22), while dW1 = (W2^T dlogits) x^T is 1e30 * 1e10, past float32's 3.4e38."""
    model = fn.Sequential([fn.Dense(8), fn.ReLU(), fn.Dense(4)]).compile(
        (16,), 4, optimizer=optimizer or fn.Adam(lr=1e-3), seed=0)
    rng = np.random.default_rng(0)
    x = np.full((4, 16), 1e10, np.float32)
    y = rng.integers(0, 4, 4)
    return model, x, y


def make_overflow(model):
    rng = np.random.default_rng(1)
    state = model.state_dict()
    state["0.weight"] = np.full((8, 16), 1e-20, np.float32)
    state["2.weight"] = (rng.choice([-1.0, 1.0], (4, 8)) * 1e30).astype(np.float32)
    model.load_state_dict(state)


def test_count_nonfinite_counts_nan_and_both_infinities():
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal(10_001).astype(dtype)
        assert kc.count_nonfinite(x) == 0
        x[rng.choice(x.size, 37, replace=False)] = rng.choice([np.nan, np.inf, -np.inf], 37)
        assert kc.count_nonfinite(x) == np.count_nonzero(~np.isfinite(x)) == 37
        x[:] = np.finfo(dtype).max     # the largest finite value is finite
        assert kc.count_nonfinite(x) == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@CUDA_WARNINGS[0]
@CUDA_WARNINGS[1]
def test_count_nonfinite_on_cuda_agrees_with_the_cpu(dtype):
    import fastnet.kernels.cuda as kg
    rng = np.random.default_rng(2)
    for size, bad in ((1, 1), (300, 0), (777, 5)):
        x = rng.standard_normal(size).astype(dtype)
        x[rng.choice(size, bad, replace=False)] = rng.choice([np.nan, np.inf, -np.inf], bad)
        assert kg.count_nonfinite(dev(x)) == kc.count_nonfinite(x) == bad


def test_non_finite_gradients_with_a_finite_loss_are_refused_before_the_update():
    model, x, y = overflowing()
    model.train_step(np.ones((4, 16), np.float32), y)       # one good step: Adam has state
    make_overflow(model)
    loss, grads = model.gradients(x, y)
    assert np.isfinite(loss) and not np.all(np.isfinite(grads["0.weight"]))    # the premise
    before = {name: a.copy() for name, a in model.state_dict().items()}
    state = {name: a.copy() for name, a in model.opt_state.items()}
    with pytest.raises(fn.DivergenceError, match="gradients became non-finite") as caught:
        model.train_step(x, y)
    err = caught.value
    assert err.step == 2 and model.step == 1 and err.epoch is None
    assert np.isfinite(err.loss) and err.bad_gradients == np.count_nonzero(~np.isfinite(grads["0.weight"]))
    assert np.isfinite(err.last_loss) and f"{err.last_loss:.6g}" in str(err)
    for name, array in model.state_dict().items():
        assert array.tobytes() == before[name].tobytes(), name
    for name, array in model.opt_state.items():
        assert array.tobytes() == state[name].tobytes(), name


def test_a_diverging_fit_says_epoch_step_and_the_last_finite_loss():
    model = fn.Sequential([fn.Flatten(), fn.Dense(16), fn.ReLU(), fn.Dense(4)]).compile(
        (2, 3, 3), 8, optimizer=fn.SGD(lr=1e6), seed=0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2, 3, 3)).astype(np.float32) * 100
    y = rng.integers(0, 4, 64)
    losses = []

    class Record(fn.callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            losses.append(logs["loss"])

    with pytest.raises(fn.DivergenceError) as caught:
        model.fit(x, y, epochs=5, verbose=0, callbacks=[Record()])
    err = caught.value
    assert err.step == model.step + 1 == len(losses) + 1
    assert err.epoch == model.epoch + 1 and f"epoch {err.epoch}, step " in str(err)
    assert err.last_loss == (losses[-1] if losses else None)
    assert err.bad_gradients is not None or not np.isfinite(err.loss)
    assert all(np.all(np.isfinite(p)) for p in model.parameters().values())


def test_overflowing_gradients_in_fit_stop_at_the_first_step():
    model, x, y = overflowing(fn.SGD(lr=0.1))
    make_overflow(model)
    expected = r"gradients became non-finite .* at epoch 1, step 1 \(optimizer step 1\); no step had finished"
    with pytest.raises(fn.DivergenceError, match=expected) as caught:
        model.fit(np.repeat(x, 2, axis=0), np.repeat(y, 2), epochs=1, verbose=0)
    assert caught.value.epoch == 1 and caught.value.step == 1 and caught.value.last_loss is None
    assert model.step == 0


# -- the command line ------------------------------------------------------------------------------

# `fastnet train` whose loss is made NaN at one optimizer step (Model._forward_loss patched in the
# child): a divergence exactly where the test wants it.
DRIVER = """
import sys
from fastnet import cli
from fastnet.model import Model
at = int(sys.argv[1])
forward_loss = Model._forward_loss
def poisoned(self, n, train):
    loss = forward_loss(self, n, train)
    return float("nan") if train and self.step + 1 == at else loss
Model._forward_loss = poisoned
sys.exit(cli.main(sys.argv[2:]))
"""

TRAIN = ("train", "--model", "mlp", "--batch-size", "32", "--optimizer", "sgd", "--lr", "0.01",
         "--schedule", "none", "--seed", "1")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("idx")
    write_dataset(folder, n_train=128, n_test=32)     # 4 steps an epoch
    return folder


def test_cli_divergence_keeps_the_last_good_checkpoint_and_names_it(dataset, tmp_path):
    (tmp_path / "driver.py").write_text(DRIVER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, str(tmp_path / "driver.py"), "7", *TRAIN, "--dataset", str(dataset),
                          "--epochs", "3", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    path = str(tmp_path / "run" / "model.safetensors")
    assert lines[-1].startswith("fastnet: error: the training loss became nan at epoch 2, step 3 "), lines[-1]
    assert f"the last good checkpoint, {path} (1 epoch complete, optimizer step 4), is intact" in lines[-1]
    assert "Traceback" not in out.stderr
    # the checkpoint is the one an unbroken one-epoch run writes
    one = subprocess.run([sys.executable, "-m", "fastnet", *TRAIN, "--dataset", str(dataset), "--epochs", "1",
                          "--out", str(tmp_path / "one")], capture_output=True, text=True, timeout=600, env=env)
    assert one.returncode == 0, one.stderr
    kept, _ = checkpoint.read(path)
    expected, _ = checkpoint.read(tmp_path / "one" / "model.safetensors")
    assert sorted(kept) == sorted(expected)
    assert all(kept[name].tobytes() == expected[name].tobytes() for name in kept)
    assert fn.load(path).epoch == 1


def test_cli_divergence_before_any_checkpoint_says_there_is_none(dataset, tmp_path, monkeypatch, capsys):
    forward_loss = Model._forward_loss

    def poisoned(self, n, train):
        loss = forward_loss(self, n, train)
        return float("inf") if train and self.step == 1 else loss

    monkeypatch.setattr(Model, "_forward_loss", poisoned)
    folder = tmp_path / "run"
    assert cli.main([*TRAIN, "--dataset", str(dataset), "--epochs", "1", "--out", str(folder)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("fastnet: error: the training loss became inf at epoch 1, step 2 (optimizer step 2); "
                          "the last finite loss was ")
    assert err.endswith(f"no checkpoint was saved before it ({folder} holds none)")
    assert not (folder / "model.safetensors").exists()
