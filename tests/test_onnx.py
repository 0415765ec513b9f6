"""ONNX export (fastnet/onnx.py): ONNX Runtime's outputs equal Model.predict for the zoo models and
for graphs that use every layer type, with trained BatchNorm statistics; `fastnet export`; errors."""

import os
import subprocess
import sys

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

import fastnet as fn  # noqa: E402


def run_onnx(path, x):
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert session.get_inputs()[0].shape[0] == "batch"
    return session.run(["logits"], {"input": x})[0]


def assert_same_as_predict(model, path, input_shape, batches=(1, 7)):
    model.export_onnx(path)
    rng = np.random.default_rng(1)
    for n in batches:
        x = rng.random((n, *input_shape), dtype=np.float32)
        ours = model.predict(x)
        theirs = run_onnx(path, x)
        assert theirs.shape == ours.shape
        np.testing.assert_allclose(theirs, ours, atol=1e-5, rtol=1e-5)


def fit_a_little(model, input_shape, classes):
    """One epoch on random data, so BatchNorm's running statistics are not 0 and 1."""
    rng = np.random.default_rng(0)
    x = rng.random((64, *input_shape), dtype=np.float32) * 2
    y = rng.integers(0, classes, 64)
    model.fit(x, y, epochs=1, verbose=0)


@pytest.mark.parametrize("name", ["mlp", "lenet5", "cnn", "resnet8"])
def test_zoo_models_match_predict_at_batch_1_and_7(name, tmp_path):
    model = getattr(fn.models, name)().compile(input_shape=(1, 28, 28), batch_size=16,
                                                optimizer=fn.SGD(lr=0.05))
    if name == "resnet8":
        fit_a_little(model, (1, 28, 28), 10)
        stats = {k: v for k, v in model.state_dict().items() if "running" in k}
        assert stats and all(not np.allclose(v, 0) and not np.allclose(v, 1) for v in stats.values())
    assert_same_as_predict(model, tmp_path / f"{name}.onnx", (1, 28, 28))
    proto = onnx.load(tmp_path / f"{name}.onnx")
    assert proto.opset_import[0].version == 17
    ops = [node.op_type for node in proto.graph.node]
    if name in ("lenet5", "cnn"):   # the ReLUs fused into the convs are their own nodes
        fused = sum(slot.relu for slot in model.plan.slots)
        assert fused == 2 and ops.count("Relu") == sum(type(s.layer) is fn.ReLU for s in model.plan.slots)


def every_layer_graph():
    x = fn.Input((4, 6, 6))
    a, b, unused = fn.Slice([1, 2, 1])(x)
    a = fn.ReLU()(fn.Conv2D(3, 3, padding=1)(a))                        # fused
    b = fn.BatchNorm2D()(fn.Conv2D(3, 3, padding=1, bias=False)(b))
    b = fn.LeakyReLU(0.2)(b)
    h = fn.Add()(a, b, fn.Tanh()(a))                                    # three inputs: chained
    h = fn.Concat(axis=1)(h, fn.Sigmoid()(b))
    h = fn.AvgPool2D(3, stride=2, padding=1)(h)                         # count_include_pad
    g = fn.MaxPool2D(2, padding=1)(h)
    h = fn.Concat()(fn.Flatten()(h), fn.GlobalAvgPool2D()(g))
    h = fn.Dropout(0.3)(h)
    h = fn.BatchNorm1D()(fn.Dense(12)(h))
    h = fn.Dense(5)(fn.ReLU()(h))
    return fn.Graph(inputs=x, outputs=fn.Softmax()(h))


def test_graph_with_every_layer_type_and_trained_batchnorm(tmp_path):
    model = every_layer_graph().compile(batch_size=16, optimizer=fn.SGD(lr=0.05))
    fit_a_little(model, (4, 6, 6), 5)
    for name, value in model.state_dict().items():
        if "running" in name:
            assert not np.allclose(value, 0) and not np.allclose(value, 1), name
    assert_same_as_predict(model, tmp_path / "graph.onnx", (4, 6, 6))
    ops = {node.op_type for node in onnx.load(tmp_path / "graph.onnx").graph.node}
    assert {"Split", "Concat", "Add", "AveragePool", "MaxPool", "GlobalAveragePool", "LeakyRelu",
            "Sigmoid", "Tanh", "BatchNormalization", "Gemm", "Softmax", "Relu", "Flatten"} <= ops
    assert "Dropout" not in ops


def test_batchnorm1d_on_channels_and_length_and_dropout_as_the_output(tmp_path):
    model = fn.Sequential([fn.BatchNorm1D(), fn.Flatten(), fn.Dense(3, bias=False), fn.Dropout(0.5)]
                          ).compile(input_shape=(3, 5), batch_size=8, loss="mse")
    rng = np.random.default_rng(2)
    model.fit(rng.random((16, 3, 5), dtype=np.float32) + 1, rng.random((16, 3), dtype=np.float32),
              epochs=1, verbose=0)
    assert_same_as_predict(model, tmp_path / "bn1d.onnx", (3, 5))


def test_unknown_layer_type_is_a_fastnet_error_naming_it(tmp_path):
    class Doubler(fn.ReLU):        # a user's own layer: not mapped, even as a ReLU subclass
        def forward(self, k, slot, xs, y, train):
            y[...] = 2 * xs[0]

    model = fn.Sequential([fn.Flatten(), Doubler(name="doubler"), fn.Dense(2)]).compile(
        input_shape=(2, 2), batch_size=2)
    with pytest.raises(fn.FastnetError, match="doubler.*Doubler"):
        model.export_onnx(tmp_path / "x.onnx")
    assert not os.path.exists(tmp_path / "x.onnx")
    with pytest.raises(fn.FastnetError, match="opset"):
        fn.models.mlp().compile(input_shape=(1, 4, 4), batch_size=2).export_onnx(tmp_path / "y.onnx", opset=9)


def test_cli_export_round_trip(tmp_path):
    model = fn.models.lenet5().compile(input_shape=(1, 28, 28), batch_size=4)
    model.save(tmp_path / "model.safetensors")
    out = subprocess.run([sys.executable, "-m", "fastnet", "export", str(tmp_path / "model.safetensors"),
                          str(tmp_path / "model.onnx")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    x = np.random.default_rng(3).random((7, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(run_onnx(tmp_path / "model.onnx", x), model.predict(x), atol=1e-5, rtol=1e-5)
    bad = subprocess.run([sys.executable, "-m", "fastnet", "export", str(tmp_path / "missing.safetensors"),
                          str(tmp_path / "m.onnx")], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "fastnet: error:" in bad.stderr and "Traceback" not in bad.stderr


def test_import_fastnet_does_not_import_onnx():
    code = ("import sys, fastnet; fastnet.models.mlp(); "
            "sys.exit(1 if 'onnx' in sys.modules or 'onnxruntime' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_without_onnx_installed_export_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules['onnx'] = None\n"       # as if onnx were not installed
            "import fastnet\n"
            "model = fastnet.models.mlp(hidden=(4,)).compile(input_shape=(1, 4, 4), batch_size=2)\n"
            "try:\n"
            f"    model.export_onnx({str(tmp_path / 'm.onnx')!r})\n"
            "except fastnet.FastnetError as err:\n"
            "    print(err)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "pip install 'fastnet[onnx]'" in out.stdout, out.stderr


@pytest.mark.parametrize("sequences", [False, True])
def test_recurrent_layers_match_predict(sequences, tmp_path):
    # LSTM, GRU (PyTorch's b_hn placement: linear_before_reset) and both RNNs, stacked, the gate
    # blocks reordered to ONNX's; the last layer's whole sequence or its last step.
    net = fn.Sequential([fn.Reshape((-1, 6)), fn.LSTM(5, return_sequences=True), fn.GRU(4, return_sequences=True),
                         fn.RNN(3, nonlinearity="relu", return_sequences=True),
                         fn.RNN(4, return_sequences=sequences)])
    model = net.compile((1, 4, 6), 8, loss="mse")
    assert_same_as_predict(model, tmp_path / "rnn.onnx", (1, 4, 6))
    ops = [node.op_type for node in onnx.load(tmp_path / "rnn.onnx").graph.node]
    assert [op for op in ops if op in ("LSTM", "GRU", "RNN")] == ["LSTM", "GRU", "RNN", "RNN"]


# -- recurrent layers: ONNX's sequence-first RNN / LSTM / GRU ops, gate blocks reordered ------------
CELLS = {"rnn_tanh": lambda h, rs: fn.RNN(h, return_sequences=rs),
         "rnn_relu": lambda h, rs: fn.RNN(h, nonlinearity="relu", return_sequences=rs),
         "lstm": lambda h, rs: fn.LSTM(h, return_sequences=rs),
         "gru": lambda h, rs: fn.GRU(h, return_sequences=rs)}
STEPS, FEATURES = 4, 3          # all sizes distinct (batch 5, hidden 6 and 2): a swapped axis shows


def stacked_recurrent(cell, last_sequences, dtype="float32"):
    """Two layers of one cell type, the first giving its sequence to the second, with random weights
    (not the init: large enough that the gates saturate unevenly and a misplaced block shows)."""
    model = fn.Sequential([CELLS[cell](6, True), CELLS[cell](2, last_sequences)]).compile(
        input_shape=(STEPS, FEATURES), batch_size=5, loss="mse", dtype=dtype)
    rng = np.random.default_rng(4)
    model.load_state_dict({name: rng.standard_normal(value.shape) * 0.7
                           for name, value in model.state_dict().items()})
    return model


@pytest.mark.parametrize("last_sequences", [True, False], ids=["sequences", "last_step"])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_recurrent_layers_stacked_match_onnxruntime(cell, last_sequences, tmp_path):
    model = stacked_recurrent(cell, last_sequences)
    assert_same_as_predict(model, tmp_path / f"{cell}.onnx", (STEPS, FEATURES), batches=(1, 5))
    ops = [node.op_type for node in onnx.load(tmp_path / f"{cell}.onnx").graph.node]
    assert ops.count(cell.split("_")[0].upper()) == 2
    expected = (5, STEPS, 2) if last_sequences else (5, 2)
    assert model.predict(np.zeros((5, STEPS, FEATURES), np.float32)).shape == expected


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
def test_recurrent_float64_export_matches_the_onnx_reference_evaluator(cell, tmp_path):
    """float64 exports are valid ONNX, but ONNX Runtime's CPU RNN/LSTM/GRU take float32 only: the
    onnx package's reference implementation checks them, to float64 rounding (it has no Relu RNN)."""
    from onnx.reference import ReferenceEvaluator

    model = stacked_recurrent(cell, last_sequences=True, dtype="float64")
    model.export_onnx(tmp_path / "m.onnx")
    x = np.random.default_rng(5).standard_normal((3, STEPS, FEATURES))
    theirs = ReferenceEvaluator(os.fspath(tmp_path / "m.onnx")).run(["logits"], {"input": x})[0]
    assert theirs.dtype == np.float64
    np.testing.assert_allclose(theirs, model.predict(x), atol=1e-12, rtol=1e-12)


def test_lstm_rows_exports_with_its_reshape(tmp_path):
    model = fn.models.lstm_rows().compile(input_shape=(1, 28, 28), batch_size=8)
    rng = np.random.default_rng(6)
    model.load_state_dict({name: rng.standard_normal(value.shape) * 0.3
                           for name, value in model.state_dict().items()})
    assert_same_as_predict(model, tmp_path / "lstm_rows.onnx", (1, 28, 28))
    ops = [node.op_type for node in onnx.load(tmp_path / "lstm_rows.onnx").graph.node]
    assert ops[0] == "Reshape" and "LSTM" in ops and ops[-1] == "Gemm"
