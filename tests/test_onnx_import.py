"""ONNX import (fastnet/onnx_import.py): torch exports imported, compiled and checked against torch
number by number (outputs, one SGD step, BatchNorm's running statistics), fastnet's own exports
round-tripped, hand-built graphs for what torch does not write (MatMul + Add, Gemm transB=0,
asymmetric pads) checked against ONNX Runtime, and the errors."""

import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import fastnet as fn  # noqa: E402

nn = torch.nn
helper, numpy_helper, TensorProto = onnx.helper, onnx.numpy_helper, onnx.TensorProto
COMPILE = dict(conv_algorithm="im2col", optimizer=fn.SGD(lr=0.1))   # no algorithm timing: a short test


def export(module, input_shape, path, **options):
    """torch.onnx.export as a user calls it: opset 17, a dynamic batch axis, in evaluation mode."""
    module.eval()
    with warnings.catch_warnings():      # the TorchScript exporter's deprecation notices
        warnings.simplefilter("ignore")
        torch.onnx.export(module, torch.zeros(2, *input_shape), str(path), opset_version=17, dynamo=False,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, **options)
    return path


def torch_state(module):
    return {k: v.detach().numpy() for k, v in module.state_dict().items() if "num_batches" not in k}


def warm_up_batchnorm(module, input_shape):
    """A few training forwards and random affine parameters, so nothing in BatchNorm is 0 or 1."""
    gen = torch.Generator().manual_seed(1)
    module.train()
    with torch.no_grad():
        for _ in range(3):
            module(torch.rand(8, *input_shape, generator=gen) * 3 - 0.5)
        for sub in module.modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                sub.weight.uniform_(0.5, 1.5, generator=gen)
                sub.bias.uniform_(-0.5, 0.5, generator=gen)


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 8, 3)
        self.fc1 = nn.Linear(8 * 2 * 2, 16)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x):
        h = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        h = nn.functional.avg_pool2d(torch.relu(self.conv2(h)), 2)
        h = h.view(h.size(0), -1)       # Shape -> Gather -> Unsqueeze -> Concat -> Reshape
        return self.fc2(torch.relu(self.fc1(h)))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8, momentum=0.3)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = torch.relu(h + self.bn2(self.conv2(h)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1))


class SplitConcat(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(2, 6, 1)
        self.left = nn.Conv2d(2, 4, 3, padding=1)
        self.head = nn.Linear(8 * 3 * 3, 3)

    def forward(self, x):
        a, b = torch.split(self.stem(x), [2, 4], dim=1)
        h = torch.cat([torch.tanh(self.left(a)), torch.sigmoid(b)], dim=1)
        h = nn.functional.max_pool2d(nn.functional.leaky_relu(h, 0.2), 2)
        return self.head(nn.Flatten()(h))


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 8),
                         nn.Tanh(), nn.Linear(8, 3))


CASES = {   # name: (module factory, input shape, export options, network type from_onnx returns)
    "mlp": (mlp, (3, 2, 2), {}, fn.Sequential),
    "lenet": (LeNet, (1, 12, 12), {}, fn.Sequential),
    # without constant folding torch keeps BatchNormalization (folding merges it into the Conv)
    "residual": (Residual, (3, 6, 6), {"do_constant_folding": False}, fn.Graph),
    "split_concat": (SplitConcat, (2, 6, 6), {}, fn.Graph),
}


def imported(name, tmp_path, dtype="float32"):
    factory, shape, options, _ = CASES[name]
    torch.manual_seed(0)
    module = factory()
    if name == "residual":
        warm_up_batchnorm(module, shape)
    net = fn.from_onnx(export(module, shape, tmp_path / f"{name}.onnx", **options))
    return module, net, net.compile(batch_size=8, dtype=dtype, **COMPILE)


@pytest.mark.parametrize("name", list(CASES))
def test_torch_export_imports_with_torch_weights_names_and_outputs(name, tmp_path):
    module, net, model = imported(name, tmp_path)
    assert isinstance(net, CASES[name][3])
    expected = torch_state(module)
    ours = model.state_dict()
    assert list(ours) == list(expected)          # torch's names: layers are named after their weights
    for key, value in expected.items():
        np.testing.assert_array_equal(ours[key], value, err_msg=key)
    x = np.random.default_rng(2).random((11, *CASES[name][1]), dtype=np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(model.predict(x), module.eval()(torch.from_numpy(x)).numpy(),
                                   atol=1e-5, rtol=1e-5)
    model.save(tmp_path / "model.safetensors")       # an imported network's spec is a plain one
    np.testing.assert_array_equal(fn.load(tmp_path / "model.safetensors").predict(x), model.predict(x))


@pytest.mark.parametrize("name", list(CASES))
def test_one_sgd_step_equals_torchs_and_fine_tuning_lowers_the_loss(name, tmp_path):
    module, net, model = imported(name, tmp_path)
    rng = np.random.default_rng(3)
    x = rng.random((8, *CASES[name][1]), dtype=np.float32) * 2
    y = rng.integers(0, model.output_shape[0], 8)
    module.train()          # batch statistics in BatchNorm, as fastnet's train_step
    for sub in module.modules():
        if isinstance(sub, nn.Dropout):
            sub.p = 0.0     # the export left it out (an inference graph): so must torch's step
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(module(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    optimizer.step()
    first = model.train_step(x, y)
    assert first == pytest.approx(loss.item(), rel=1e-5)
    ours = model.state_dict()
    for key, value in torch_state(module).items():     # parameters and running statistics
        np.testing.assert_allclose(ours[key], value, atol=1e-5, rtol=1e-5, err_msg=key)
    losses = [model.train_step(x, y) for _ in range(4)]
    assert losses[-1] < first


def test_float64_compile_matches_torch_in_double(tmp_path):
    module, net, model = imported("lenet", tmp_path, dtype="float64")
    x = np.random.default_rng(4).random((5, 1, 12, 12))
    with torch.no_grad():
        expected = module.double()(torch.from_numpy(x)).numpy()
    assert model.state_dict()["conv1.weight"].dtype == np.float64
    np.testing.assert_allclose(model.predict(x), expected, atol=1e-12, rtol=1e-10)


def test_batchnorm_folded_into_conv_by_torchs_export_still_predicts_the_same(tmp_path):
    torch.manual_seed(0)
    module = Residual()
    warm_up_batchnorm(module, (3, 6, 6))
    net = fn.from_onnx(export(module, (3, 6, 6), tmp_path / "folded.onnx"))
    assert not any(isinstance(layer, fn.BatchNorm2D) for layer in net.layers)   # folded by torch
    model = net.compile(batch_size=4, **COMPILE)
    x = np.random.default_rng(5).random((4, 3, 6, 6), dtype=np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(model.predict(x), module.eval()(torch.from_numpy(x)).numpy(), atol=1e-5)


def every_layer_graph():
    x = fn.Input((4, 6, 6))
    a, b, c = fn.Slice([1, 2, 1])(x)
    a = fn.ReLU()(fn.Conv2D(3, 3, padding=1)(a))
    b = fn.LeakyReLU(0.2)(fn.BatchNorm2D(momentum=0.2)(fn.Conv2D(3, 3, padding=1, bias=False)(b)))
    h = fn.Add()(a, b, fn.Tanh()(a))
    h = fn.Concat(axis=1)(h, fn.Sigmoid()(b), c)
    h = fn.AvgPool2D(3, stride=2, padding=1)(h)
    g = fn.MaxPool2D(2, padding=1)(h)
    h = fn.Concat()(fn.Flatten()(h), fn.GlobalAvgPool2D()(g))
    h = fn.BatchNorm1D(eps=1e-3)(fn.Dense(12)(fn.Dropout(0.3)(h)))
    return fn.Graph(inputs=x, outputs=fn.Softmax()(fn.Dense(5)(fn.ReLU()(h))))


@pytest.mark.parametrize("network, shape", [(fn.models.lenet5, (1, 28, 28)), (every_layer_graph, (4, 6, 6))])
def test_fastnet_export_round_trip(network, shape, tmp_path):
    model = network().compile(input_shape=shape, batch_size=16, **COMPILE)
    rng = np.random.default_rng(6)
    x = rng.random((32, *shape), dtype=np.float32) * 2
    model.fit(x, rng.integers(0, model.output_shape[0], 32), epochs=1, verbose=0)   # BatchNorm's statistics
    back = fn.from_onnx(model.export_onnx(tmp_path / "model.onnx")).compile(batch_size=16, **COMPILE)
    expected = model.state_dict()
    assert list(back.state_dict()) == list(expected)      # the exporter's names are the layers' names
    for key, value in back.state_dict().items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)
    bns = [layer for layer in back.network.layers if isinstance(layer, (fn.BatchNorm1D, fn.BatchNorm2D))]
    assert [(bn.eps, bn.momentum) for bn in bns] == ([(1e-5, 0.1), (1e-3, 0.1)] if bns else [])
    np.testing.assert_allclose(back.predict(x), model.predict(x), atol=1e-5, rtol=1e-5)


def save(graph, path, opset=17):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, str(path))
    return path


def run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def value(name, *shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", *shape])


def const(name, array):
    return numpy_helper.from_array(np.asarray(array, np.float32), name)


def test_matmul_add_and_gemm_without_transb_become_dense_layers(tmp_path):
    rng = np.random.default_rng(7)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["m"], name="mm"),
         helper.make_node("Add", ["m", "b1"], ["h"], name="bias"),
         helper.make_node("Relu", ["h"], ["r"], name="relu"),
         helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="gemm", transB=0, alpha=0.5, beta=2.0)],
        "dense", [value("x", 6)], [value("y", 4)],
        initializer=[const("w1", rng.normal(size=(6, 5))), const("b1", rng.normal(size=5)),
                     const("w2", rng.normal(size=(5, 4))), const("b2", rng.normal(size=(1, 4)))])
    path = save(graph, tmp_path / "dense.onnx")
    net = fn.from_onnx(path)
    assert [type(layer) for layer in net.layers] == [fn.Dense, fn.ReLU, fn.Dense]
    x = rng.random((3, 6), dtype=np.float32)
    np.testing.assert_allclose(net.compile(batch_size=4).predict(x), run_onnx(path, x), atol=1e-5, rtol=1e-5)


def conv_graph(pads, size, op="Conv"):
    rng = np.random.default_rng(8)
    args = ["x", "w"] if op == "Conv" else ["x"]
    node = helper.make_node(op, args, ["c"], name="the_conv", kernel_shape=[3, 3], strides=[2, 2], pads=pads)
    return helper.make_graph(
        [node, helper.make_node("Flatten", ["c"], ["y"], name="flat")], "conv",
        [value("x", 2, size, size)], [value("y", (3 if op == "Conv" else 2) * ((size - 2) // 2 + 1) ** 2)],
        initializer=[const("w", rng.normal(size=(3, 2, 3, 3)))] if op == "Conv" else [])


@pytest.mark.parametrize("op", ["Conv", "MaxPool"])
def test_asymmetric_pads_are_read_where_no_window_reaches_the_extra_padding(op, tmp_path):
    path = save(conv_graph([1, 1, 2, 2], 7, op), tmp_path / "asymmetric.onnx")   # 4x4 out either way
    x = np.random.default_rng(9).random((2, 2, 7, 7), dtype=np.float32) - 0.5
    model = fn.from_onnx(path).compile(batch_size=2, **COMPILE)
    np.testing.assert_allclose(model.predict(x), run_onnx(path, x), atol=1e-5, rtol=1e-5)
    with pytest.raises(fn.SpecError, match=f"ONNX {op} node the_conv: pads"):   # 6x6: one window more
        fn.from_onnx(save(conv_graph([1, 1, 2, 2], 6, op), tmp_path / "asymmetric6.onnx"))


class Gelu(nn.Module):
    def forward(self, x):
        return nn.functional.gelu(x)


class ViewMixingTheBatch(nn.Module):
    def forward(self, x):
        return x.view(-1, 4)       # samples split across rows: not a per-sample reshape


REFUSED = {   # name: (module, input shape, the error's op and node, why)
    "gelu": (nn.Sequential(nn.Flatten(), nn.Linear(8, 4), Gelu()), (2, 2, 2), r"ONNX Div node /2/Div",
             "op type Div has no fastnet layer"),
    "groups": (nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)), (4, 5, 5), r"ONNX Conv node /0/Conv", "group=2"),
    "dilation": (nn.Sequential(nn.Conv2d(2, 2, 3, dilation=2)), (2, 7, 7), r"ONNX Conv node /0/Conv",
                 "dilations"),
    "ceil_mode": (nn.Sequential(nn.MaxPool2d(2, ceil_mode=True)), (1, 5, 5), r"ONNX MaxPool node /0/MaxPool",
                  "ceil_mode=1"),
    "avgpool_excluding_pad": (nn.Sequential(nn.AvgPool2d(3, 1, padding=1, count_include_pad=False)),
                              (1, 4, 4), r"ONNX AveragePool node /0/AveragePool", "count_include_pad=0"),
    "reshape": (ViewMixingTheBatch(), (2, 2, 2), r"ONNX Reshape node /Reshape", r"\(-1, 4\).*keeps the batch"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_what_fastnet_cannot_represent_is_a_spec_error_naming_op_and_node(name, tmp_path):
    module, shape, where, why = REFUSED[name]
    path = export(module, shape, tmp_path / f"{name}.onnx")
    with pytest.raises(fn.SpecError, match=f"{where}: .*{why}"):
        fn.from_onnx(path)


def test_a_corrupt_or_missing_file_is_a_spec_error(tmp_path):
    # SpecError, as for a spec file: the file describes the network, so every way it can fail to
    # describe one fastnet builds (unreadable, not ONNX, an op it lacks) is one exception type.
    good = export(mlp(), (3, 2, 2), tmp_path / "good.onnx").read_bytes()
    (tmp_path / "truncated.onnx").write_bytes(good[: len(good) // 2])
    (tmp_path / "noise.onnx").write_bytes(np.random.default_rng(10).bytes(2000))
    for name in ("truncated.onnx", "noise.onnx"):
        with pytest.raises(fn.SpecError, match="not a valid ONNX model"):
            fn.from_onnx(tmp_path / name)
    with pytest.raises(fn.SpecError, match="cannot read the ONNX file"):
        fn.from_onnx(tmp_path / "missing.onnx")


def test_without_onnx_installed_import_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules['onnx'] = None\n"       # as if onnx were not installed
            "import fastnet\n"
            "try:\n"
            f"    fastnet.from_onnx({str(tmp_path / 'm.onnx')!r})\n"
            "except fastnet.FastnetError as err:\n"
            "    print(err)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert "pip install 'fastnet[onnx]'" in out.stdout, out.stderr


# -- recurrent layers: torch's batch_first modules as it exports them, and fastnet's round trip -------
class Recurrent(nn.Module):
    """A batch_first torch recurrent module and a Linear, the last step read as a user writes it."""

    def __init__(self, cell, read, input_shape=(4, 3), **options):
        super().__init__()
        self.shape, self.read = input_shape, read
        self.rnn = getattr(nn, cell)(input_shape[-1], 5, batch_first=True, **options)
        self.fc = nn.Linear(5, 2)

    def forward(self, x):
        y, h = self.rnn(x.reshape(x.size(0), *self.shape))     # a no-op but for "rows" (an image)
        h = h[0] if isinstance(h, tuple) else h                 # LSTM's (h, c)
        return self.fc({"y[:, -1]": lambda: y[:, -1], "h[-1]": lambda: h[-1],
                        "h.squeeze(0)": lambda: h.squeeze(0)}[self.read]())


TORCH_RECURRENT = {   # name: (module, input shape, fastnet's layers)
    "lstm_last_step": (lambda: Recurrent("LSTM", "y[:, -1]"), (4, 3), ["LSTM", "Dense"]),
    "gru_hidden": (lambda: Recurrent("GRU", "h[-1]"), (4, 3), ["GRU", "Dense"]),
    "rnn_relu_hidden": (lambda: Recurrent("RNN", "h.squeeze(0)", nonlinearity="relu"), (4, 3), ["RNN", "Dense"]),
    "lstm_rows": (lambda: Recurrent("LSTM", "h[-1]", input_shape=(6, 5)), (1, 6, 5), ["Reshape", "LSTM", "Dense"]),
    "gru_two_layers": (lambda: Recurrent("GRU", "y[:, -1]", num_layers=2), (4, 3), ["GRU", "GRU", "Dense"]),
}


@pytest.mark.parametrize("name", list(TORCH_RECURRENT))
def test_torch_recurrent_export_imports_with_its_weights_and_outputs(name, tmp_path):
    factory, shape, layers = TORCH_RECURRENT[name]
    torch.manual_seed(0)
    module = factory()
    with torch.no_grad():             # random weights, not the init: a misplaced gate block shows
        for p in module.parameters():
            p.normal_(0, 0.7)
    net = fn.from_onnx(export(module, shape, tmp_path / f"{name}.onnx"))
    assert [type(layer).__name__ for layer in net.layers] == layers
    model = net.compile(batch_size=8, loss="mse")
    # torch's names for the recurrent weights are lost (ONNX has them reordered and stacked as
    # "onnx::LSTM_109"): the values, in order, are torch's
    ours, expected = model.state_dict(), torch_state(module)
    assert [v.shape for v in ours.values()] == [v.shape for v in expected.values()]
    for (key, value), theirs in zip(ours.items(), expected.values()):
        np.testing.assert_array_equal(value, theirs, err_msg=key)
    x = np.random.default_rng(2).standard_normal((11, *shape)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(model.predict(x), module.eval()(torch.from_numpy(x)).numpy(),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", [fn.RNN, fn.LSTM, fn.GRU])
def test_fastnet_recurrent_export_round_trip(cell, tmp_path):
    rs = dict(return_sequences=True)
    extra = dict(nonlinearity="relu") if cell is fn.RNN else {}
    model = fn.Sequential([fn.Reshape((4, 6)), cell(5, **rs, **extra), cell(3, **extra), fn.Dense(2)]).compile(
        input_shape=(24,), batch_size=4, loss="mse")
    rng = np.random.default_rng(7)
    model.load_state_dict({k: rng.standard_normal(v.shape) * 0.7 for k, v in model.state_dict().items()})
    net = fn.from_onnx(model.export_onnx(tmp_path / "model.onnx"))
    assert [layer.config() for layer in net.layers] == [layer.config() for layer in model.network.layers]
    back = net.compile(batch_size=4, loss="mse")
    assert list(back.state_dict()) == list(model.state_dict())
    for key, value in back.state_dict().items():
        np.testing.assert_array_equal(value, model.state_dict()[key], err_msg=key)
    x = rng.standard_normal((6, 24)).astype(np.float32)
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


def recurrent_graph(path, gru_attributes=None, initial_h=None, read="Y_h"):
    """A hand-built GRU graph in fastnet's export pattern, for what torch does not write."""
    rng = np.random.default_rng(8)
    inits = [const("W", rng.standard_normal((1, 6, 3))), const("R", rng.standard_normal((1, 6, 2))),
             numpy_helper.from_array(np.array([0], np.int64), "axes")]
    inputs = ["xt", "W", "R", "", ""]
    if initial_h is not None:
        inits.append(const("h0", initial_h))
        inputs.append("h0")
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
             helper.make_node("GRU", inputs, ["Y", "Y_h"], name="the_gru", hidden_size=2,
                              **(gru_attributes if gru_attributes is not None else {"linear_before_reset": 1})),
             helper.make_node("Squeeze", [read, "axes"], ["out"])]
    graph = helper.make_graph(nodes, "g", [value("x", 4, 3)], [value("out", 2)], initializer=inits)
    return save(graph, path)


def test_recurrent_ops_fastnet_cannot_represent_are_spec_errors(tmp_path):
    x = np.random.default_rng(9).standard_normal((3, 4, 3)).astype(np.float32)
    path = recurrent_graph(tmp_path / "zeros.onnx", initial_h=np.zeros((1, 3, 2)))   # zeros given: fine
    np.testing.assert_allclose(fn.from_onnx(path).compile(batch_size=3, loss="mse").predict(x),
                               run_onnx(path, x), atol=1e-5, rtol=1e-5)
    cases = [({"linear_before_reset": 0}, None, "Y_h", "linear_before_reset=0"),
             ({"linear_before_reset": 1, "direction": "bidirectional"}, None, "Y_h", "direction=bidirectional"),
             (None, np.ones((1, 3, 2)), "Y_h", "initial state h0"),
             (None, None, "Y", "Squeeze")]
    for attributes, h0, read, why in cases:
        path = recurrent_graph(tmp_path / "bad.onnx", attributes, h0, read)
        with pytest.raises(fn.SpecError, match=f"ONNX GRU node the_gru: .*{why}"):
            fn.from_onnx(path)
