"""The benchmark command runs (on the CPU, and its CUDA path on the simulator), its NumPy peer
computes the same network as fastnet (otherwise the comparison would mean nothing), and its FLOP
counts, GPU peak and layer profile say what they should. (The JAX peer is optional and not installed
in CI: tested here is that the table leaves it out and says so; its losses were checked against the
torch twin's by hand.)"""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

import fastnet as fn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench import compare, numpy_net, profile_layers  # noqa: E402


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
        for peer in ("numpy", "torch", "jax"):
            if peer in row:
                assert row[f"vs_{peer}"] == pytest.approx(row["fastnet"] / row[peer])
    assert "| mlp | 8 | train |" in (tmp_path / "RESULTS.md").read_text()


def _run_bench(args, prelude="", env=None):
    """python -m bench with these arguments, after `prelude` (Python) in the same process."""
    script = f"{prelude}\nfrom bench.compare import main\nmain({args!r})"
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                         timeout=600, env=dict(os.environ, PYTHONPATH=ROOT, **(env or {})))
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_without_jax_the_table_leaves_it_out_and_says_so(tmp_path):
    # sys.modules["jax"] = None makes `import jax` fail, whether or not jax is installed
    stdout = _run_bench(["--models", "tiny", "--batches", "4", "--rounds", "1", "--steps", "2", "--no-numpy",
                         "--no-first-step", "--json", str(tmp_path / "r.json"), "--results", str(tmp_path / "R.md")],
                        prelude="import sys; sys.modules['jax'] = None")
    report = json.loads((tmp_path / "r.json").read_text())
    assert [n for n in report["notices"] if n.startswith("jax: not installed")]
    assert all("jax" not in row for row in report["throughput"])
    results = (tmp_path / "R.md").read_text()
    assert "Note: jax: not installed" in results and "jax img/s" not in results
    assert "note: jax: not installed" in stdout
    # the tiny model's convolution: the algorithm compile chose, in the JSON and the table
    (row, *_) = report["throughput"]
    assert set(row["algorithms"].values()) <= set(fn.algorithms.NAMES) and row["algorithms"]
    assert "Convolution algorithms compile chose" in results


def test_the_cuda_benchmark_runs_on_the_simulator(tmp_path):
    _run_bench(["--device", "cuda", "--models", "tiny", "--batches", "2", "--rounds", "1", "--steps", "1",
                "--no-first-step", "--json", str(tmp_path / "r.json"), "--results", str(tmp_path / "R.md")],
               env={"NUMBA_ENABLE_CUDASIM": "1"})
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["device"] == "cuda" and report["machine"]["gpu"]["peak_tflops"] is None   # the simulator's
    rows = {row["mode"]: row for row in report["throughput"]}
    assert set(rows) == {"train", "inference"}
    for row in rows.values():
        assert row["device"] == "cuda" and row["batch"] == 2
        assert row["fastnet"] > 0 and row["gemm_tflops"] > 0 and row["gflop_per_image"] > 0
        assert "numpy" not in row and "jax" not in row and "sgemm_gflops" not in row
    results = (tmp_path / "R.md").read_text()
    assert "| TFLOP/s | GEMM TFLOP/s | peak TFLOP/s |" in results and "| tiny | 2 | train |" in results
    if "torch" in rows["train"]:        # a torch with CUDA beside the simulator
        assert rows["train"]["vs_torch"] == pytest.approx(rows["train"]["fastnet"] / rows["train"]["torch"])
    else:                               # the table says so instead of a ratio
        assert any("no CUDA" in n for n in report["notices"]) and "| absent | no ratio |" in results


def test_the_gpu_peak_is_sms_times_lanes_times_two_times_the_clock():
    h200 = SimpleNamespace(compute_capability=(9, 0), name=b"NVIDIA H200", MULTIPROCESSOR_COUNT=132,
                           CLOCK_RATE=1_980_000)       # kHz, as numba.cuda reports it
    peak = compare.gpu_peak(h200)
    assert peak["peak_tflops"] == pytest.approx(132 * 128 * 2 * 1.98e9 / 1e12)   # 66.9, NVIDIA's figure
    assert peak["name"] == "NVIDIA H200" and peak["fp32_lanes_per_sm"] == 128
    assert compare.gpu_peak(SimpleNamespace(**{**vars(h200), "compute_capability": (99, 0)}))["peak_tflops"] is None
    assert compare.gpu_peak(SimpleNamespace(compute_capability=(5, 2)))["peak_tflops"] is None   # simulator


def test_layer_flops_count_a_direct_convolution_and_the_gradients_computed():
    model = fn.models.cnn().compile((1, 28, 28), 4)
    flops = compare.layer_flops(model, 4)
    assert sorted(flops) == [0, 3, 7, 9]                  # the two Conv2D and two Dense calls
    forward = 2 * 4 * 64 * 32 * 3 * 3 * 14 * 14           # 2*N*O*C*KH*KW*OH*OW
    assert flops[3] == (forward, 2 * forward)             # weight and input gradient
    assert flops[0] == (2 * 4 * 32 * 1 * 9 * 28 * 28,) * 2  # no input gradient for the first layer
    assert compare.flops_per_image(model, train=True) * 4 == sum(f + b for f, b in flops.values())


def test_compile_options_pass_the_algorithm_only_where_compile_takes_it():
    class Takes:
        def compile(self, input_shape=None, conv_algorithm="auto"):
            pass

    class Lacks:
        def compile(self, input_shape=None):
            pass
    assert profile_layers.compile_options(Takes(), "winograd") == {"conv_algorithm": "winograd"}
    assert profile_layers.compile_options(Lacks(), "winograd") == {}


def test_the_layer_profile_shows_each_gemm_layers_algorithm_and_rate():
    model, step, layers = profile_layers.profile("lenet5", 4, 1)
    figures = profile_layers.gemm_figures(model, 4, layers, peak=100.0)
    kinds = {index: type(slot.layer).__name__ for index, slot in enumerate(model.plan.slots)}
    assert sorted(figures) == [i for i, kind in kinds.items() if kind in ("Conv2D", "Dense")]
    for index, (algorithm, forward, backward, of_peak) in figures.items():
        assert algorithm in (("gemm",) if kinds[index] == "Dense" else ("im2col", "winograd", "direct"))
        assert forward > 0 and backward > 0 and of_peak > 0
    text = profile_layers.table("lenet5", 4, step, layers, figures, peak=100.0)
    assert "im2col" in text or "winograd" in text or "direct" in text
    assert "fwd GFLOP/s" in text and "SGEMM roofline 100 GFLOP/s" in text


def test_the_layer_profile_covers_every_layer_that_runs():
    _, step, layers = profile_layers.profile("mlp", 8, 2)
    labels = {(label, phase) for _, label, phase in layers}
    # mlp: Flatten, Dense, ReLU, Dense, ReLU, Dense; nothing needs Flatten's input gradient, so its
    # backward does not run
    assert {("1 Dense", "forward"), ("1 Dense", "backward"), ("5 Dense", "backward"),
            ("0 Flatten", "forward")} <= labels
    assert ("0 Flatten", "backward") not in labels
    assert 0 < sum(layers.values()) <= step      # the layers' time is spent inside the step
    text = profile_layers.table("mlp", 8, step, layers)
    assert "3 Dense" in text and "the rest" in text


def test_the_lstm_rows_benchmark_runs_against_its_torch_twin():
    # The sequence model has a torch twin (bench/torch_models.py: fastnet's weights load into it,
    # and it computes the same logits) and no NumPy or JAX peer; its LSTM's products count in the
    # GEMM FLOPs.
    torch = pytest.importorskip("torch")
    model, rows = compare.measure("lstm_rows", 4, 1, with_numpy=True, steps=1)
    assert [row["mode"] for row in rows] == ["train", "inference"]
    for row in rows:
        assert row["model"] == "lstm_rows" and row["torch"] > 0 and "numpy" not in row and "jax" not in row
    net = compare.torch_network("lstm_rows")
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()})
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.from_numpy(x)).numpy(), model.predict(x), rtol=1e-4, atol=1e-5)
    # per image: the LSTM's 28 steps of (28 + 128) x 512 and the Dense's 128 x 10, twice (multiply-adds)
    assert compare.flops_per_image(model) == 2 * (28 * (28 + 128) * 512 + 128 * 10)
