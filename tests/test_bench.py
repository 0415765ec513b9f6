"""The benchmark command runs, and its NumPy peer computes the same network as fastnet (otherwise
the comparison would mean nothing)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnet as fn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench import numpy_net  # noqa: E402


@pytest.mark.parametrize("name", ["mlp", "lenet5", "cnn"])
def test_the_numpy_peer_matches_fastnet_step_for_step(name):
    model = getattr(fn.models, name)().compile((1, 28, 28), 8, optimizer=fn.SGD(lr=0.05, momentum=0.9),
                                               dtype="float64", seed=1)
    net = numpy_net.Net(model, lr=0.05, momentum=0.9)
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 1, 28, 28)), rng.integers(0, 10, 8)
    np.testing.assert_allclose(net.predict(x), model.forward(x), rtol=1e-10, atol=1e-12)
    for _ in range(3):
        assert net.train_step(x, y) == pytest.approx(model.train_step(x, y), rel=1e-10)
    ours = [p for layer in net.layers for p, _ in layer.params()]
    for (key, value), mine in zip(model.state_dict().items(), ours):
        np.testing.assert_allclose(mine, value, rtol=1e-9, atol=1e-12, err_msg=key)


def test_fastnet_bench_writes_its_table_and_json(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fastnet", "bench", "--models", "mlp", "--batches", "8",
                          "--rounds", "1", "--no-first-step", "--json", str(tmp_path / "r.json"),
                          "--results", str(tmp_path / "RESULTS.md")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    rows = {row["mode"]: row for row in report["throughput"]}
    assert set(rows) == {"train", "inference"}
    for row in rows.values():
        assert row["fastnet"] > 0 and row["numpy"] > 0 and row["sgemm_gflops"] > 0
        assert row["vs_numpy"] == pytest.approx(row["fastnet"] / row["numpy"])
    assert "| mlp | 8 | train |" in (tmp_path / "RESULTS.md").read_text()


def test_the_layer_profile_covers_every_layer_that_runs():
    from bench import profile_layers
    step, layers = profile_layers.profile("mlp", 8, 2)
    labels = {(label, phase) for _, label, phase in layers}
    # mlp: Flatten, Dense, ReLU, Dense, ReLU, Dense; nothing needs Flatten's input gradient, so its
    # backward does not run
    assert {("1 Dense", "forward"), ("1 Dense", "backward"), ("5 Dense", "backward"),
            ("0 Flatten", "forward")} <= labels
    assert ("0 Flatten", "backward") not in labels
    assert 0 < sum(layers.values()) <= step      # the layers' time is spent inside the step
    text = profile_layers.table("mlp", 8, step, layers)
    assert "3 Dense" in text and "the rest" in text
