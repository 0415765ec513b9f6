"""Embedding: the weight gradient against central differences (float64; token ids have no
gradient: the model reports zeros), CPU-vs-CUDA agreement, PyTorch parity with nn.Embedding
(outputs, the weight gradient with tokens repeated within and across samples, padding_idx, three
optimizer steps), the input checks (token ids out of range or not integers refused before anything
runs), a small network that learns, spec and checkpoint round trips; then the kernels themselves:
CUDA against the CPU bit for bit, and the guard on tokens the model never checked."""

import numpy as np
import pytest
from cuda_helpers import CUDA_WARNINGS, dev, empty, same
from gradcheck import numeric_gradient, numpy_loss
from harness import check_layer, grid

import fastnet as fn
import fastnet.kernels.cpu as kc
import fastnet.kernels.cuda as kg

pytestmark = CUDA_WARNINGS


def tokens(shape, vocab, seed=0):
    """Token ids with repeats: drawn from the first half of the table (and its last row)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, max(1, vocab // 2), shape)
    x.reshape(-1)[-1] = vocab - 1
    return x


# (batch, per-sample token shape, num_embeddings, embedding_dim, padding_idx)
CASES = [(3, (5,), 7, 4, None), (1, (1,), 3, 2, None), (2, (2, 3), 6, 20, None), (4, (3,), 5, 3, 0),
         (2, (4,), 9, 33, -1)]
CUDA = [0, 3]


@pytest.mark.parametrize("case, device, dtype", grid(CASES, CUDA, ids=lambda c: "b{}-S{}-V{}-D{}-pad{}".format(
    c[0], "x".join(map(str, c[1])), *c[2:])))
def test_embedding(case, device, dtype):
    batch, shape, vocab, dim, padding = case
    x = tokens((batch, *shape), vocab, seed=batch)
    if padding is not None:
        x.reshape(-1)[0] = padding % vocab
    # the harness's input gradient check does not apply (tokens move by whole ids): off here,
    # and the weight's below
    report = check_layer(lambda: fn.Embedding(vocab, dim, padding_idx=padding), shape, batch, device=device,
                         dtype=dtype, x=x, gradcheck=False)
    model, seen = report["model"], report["observed"]
    assert model.output_shape == (*shape, dim)
    assert list(model.parameters()) == ["0.weight"]
    np.testing.assert_array_equal(seen["gradient of input"], 0)
    if padding is not None:
        np.testing.assert_array_equal(seen["gradient of 0.weight"][padding % vocab], 0)
    if dtype == "float64" and device == "cpu":
        y = np.random.default_rng(5).normal(size=(batch, *shape, dim))
        loss, grads = model.gradients(x, y)
        weight = model.parameters()["0.weight"]
        numeric = numeric_gradient(lambda: numpy_loss("mse", model.forward(x, train=True), y), weight)
        if padding is not None:
            numeric[padding % vocab] = 0        # torch's padding_idx: that row is not trained
        np.testing.assert_allclose(grads["0.weight"], numeric, rtol=1e-6, atol=1e-9)
        assert np.abs(numeric).max() > 0


def test_initialisation_is_standard_normal_with_the_padding_row_zero():
    model = fn.Sequential([fn.Embedding(400, 50, padding_idx=3)]).compile((2,), 1, loss="mse", seed=1)
    weight = model.state_dict()["0.weight"]
    np.testing.assert_array_equal(weight[3], 0)
    rest = np.delete(weight, 3, axis=0)
    assert abs(rest.mean()) < 0.02 and abs(rest.std() - 1) < 0.02


def test_bad_arguments_are_refused():
    for args in [(0, 3), (3, 0), (2.5, 3), (True, 3)]:
        with pytest.raises(fn.ShapeError):
            fn.Embedding(*args)
    for padding in (5, -6, 1.0):
        with pytest.raises(fn.ShapeError, match="padding_idx"):
            fn.Embedding(5, 2, padding_idx=padding)
    assert fn.Embedding(5, 2, padding_idx=-1).padding_idx == 4      # as torch keeps it


def test_a_float32_model_refuses_a_table_its_inputs_cannot_address_exactly():
    with pytest.raises(fn.ShapeError, match="float64"):
        fn.Sequential([fn.Embedding(2**24 + 1, 1)]).compile((1,), 1, loss="mse", dtype="float32")


# -- PyTorch parity ---------------------------------------------------------------------------

torch_pairs = dict(sgd=(lambda: fn.SGD(lr=0.1, momentum=0.9),
                        lambda torch, params: torch.optim.SGD(params, lr=0.1, momentum=0.9)),
                   adam=(lambda: fn.Adam(lr=0.05),
                         lambda torch, params: torch.optim.Adam(params, lr=0.05)))


@pytest.mark.parametrize("padding", [None, 2])
@pytest.mark.parametrize("opt", list(torch_pairs))
def test_embedding_flatten_dense_matches_torch(opt, padding):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    vocab, dim, T, batch = 8, 5, 6, 4
    ours, theirs = torch_pairs[opt]
    model = fn.Sequential([fn.Embedding(vocab, dim, padding_idx=padding), fn.Flatten(), fn.Dense(3)]).compile(
        (T,), batch, loss="cross_entropy", optimizer=ours(), dtype="float64", seed=3)
    net = nn.Sequential(nn.Embedding(vocab, dim, padding_idx=padding), nn.Flatten(), nn.Linear(T * dim, 3)).double()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    opt_t = theirs(torch, net.parameters())
    rng = np.random.default_rng(4)
    for step in range(3):
        x = rng.integers(0, vocab, (batch, T))
        x[:, 1] = x[:, 0]                       # repeated within a sample
        x[1] = x[0]                             # and across samples
        y = rng.integers(0, 3, batch)
        _, grads = model.gradients(x, y)
        out = net(torch.from_numpy(x))
        loss = torch.nn.functional.cross_entropy(out, torch.from_numpy(y))
        opt_t.zero_grad()
        loss.backward()
        np.testing.assert_allclose(model.predict(x), out.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(grads["0.weight"], net[0].weight.grad.numpy(), rtol=1e-12, atol=1e-14,
                                   err_msg=f"step {step}")
        ours_loss = model.train_step(x, y)
        opt_t.step()
        assert ours_loss == pytest.approx(loss.item(), rel=1e-12)
        for name, value in net.state_dict().items():
            np.testing.assert_allclose(model.state_dict()[name], value.numpy(), rtol=1e-10, atol=1e-12,
                                       err_msg=f"{name} after step {step + 1}")


# -- the input checks ---------------------------------------------------------------------------

@pytest.mark.parametrize("bad, match", [(-1, "in \\[0, 6\\)"), (6, "in \\[0, 6\\)"), (2.5, "not integers"),
                                        (np.nan, "not integers|non-finite"), (np.inf, "not integers|non-finite")])
def test_token_ids_out_of_range_or_not_integers_are_refused_before_anything_runs(bad, match):
    model = fn.Sequential([fn.Embedding(6, 2), fn.Flatten(), fn.Dense(2)]).compile(
        (3,), 2, loss="cross_entropy", optimizer=fn.SGD(lr=0.1))
    before = model.state_dict()
    x = np.array([[0, 1, 2], [3, 4, 5], [1, 1, 1]], np.float64)
    x[1, 2] = bad
    y = np.array([0, 1, 0])
    calls = [lambda: model.fit(x, y, epochs=1, verbose=0), lambda: model.train_step(x[:2], y[:2]),
             lambda: model.evaluate(x, y), lambda: model.predict(x), lambda: model.gradients(x[:2], y[:2]),
             lambda: model.fit(x[[0, 2]], y[[0, 2]], validation_data=(x, y), verbose=0)]
    for call in calls:
        with pytest.raises(fn.DataError, match=match) as info:
            call()
        # (NaN and inf: the model's own check for non-finite values may come first)
        assert "flat index 5" in str(info.value) or "non-finite" in str(info.value)
        for name, value in model.state_dict().items():
            np.testing.assert_array_equal(value, before[name], err_msg=name)
    assert model.step == 0
    if np.isfinite(bad) and bad == int(bad):       # an integer array, the same check
        with pytest.raises(fn.DataError, match=match):
            model.predict(x.astype(np.int64))


def test_integer_arrays_train_and_predict_as_float_ones():
    x = tokens((4, 3), 6)
    results = []
    for data in (x, x.astype(np.int32), x.astype(np.float32)):
        model = fn.Sequential([fn.Embedding(6, 2), fn.Flatten(), fn.Dense(2)]).compile(
            (3,), 4, loss="cross_entropy", optimizer=fn.SGD(lr=0.1), seed=2)
        model.train_step(data, [0, 1, 1, 0])
        results.append(model.predict(data))
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


# -- training, specs, checkpoints ---------------------------------------------------------------

def test_embedding_flatten_dense_learns_which_token_comes_first():
    # the label is the class of the first of 4 tokens (token id mod 3): the network must learn
    # the first position's embedding rows; chance is 1/3
    rng = np.random.default_rng(0)
    x = rng.integers(0, 12, (600, 4))
    y = x[:, 0] % 3
    model = fn.Sequential([fn.Embedding(12, 4), fn.Flatten(), fn.Dense(3)]).compile(
        (4,), 32, loss="cross_entropy", optimizer=fn.Adam(lr=0.05), seed=0)
    start = model.evaluate(x, y)
    history = model.fit(x, y, epochs=4, verbose=0)
    end = model.evaluate(x, y)
    assert history["loss"][-1] < history["loss"][0]
    assert end["accuracy"] > 0.95 > start["accuracy"] + 0.3, (start, end)


def test_spec_and_checkpoint_round_trip(tmp_path):
    network = fn.Sequential([fn.Embedding(9, 3, padding_idx=1, name="embed"), fn.Flatten(), fn.Dense(2)])
    spec = network.to_spec()
    assert spec["layers"][0] == {"type": "embedding", "num_embeddings": 9, "embedding_dim": 3, "padding_idx": 1,
                                 "name": "embed"}
    rebuilt = fn.from_spec(spec)
    assert rebuilt.to_spec() == spec
    assert fn.layers.Layer.types["embedding"] is fn.Embedding
    assert fn.Embedding(4, 2).config() == {"num_embeddings": 4, "embedding_dim": 2}
    (tmp_path / "net.toml").write_text('input_shape = [5]\n[[layers]]\ntype = "embedding"\nnum_embeddings = 9\n'
                                       'embedding_dim = 3\n[[layers]]\ntype = "flatten"\n')
    from_file = fn.from_spec(tmp_path / "net.toml").compile(batch_size=2, loss="mse")
    assert from_file.output_shape == (15,) and from_file.state_dict()["0.weight"].shape == (9, 3)
    model = network.compile((5,), 4, loss="cross_entropy", optimizer=fn.Adam(lr=0.01, clip_norm=0.5), seed=1)
    assert list(model.state_dict()) == ["embed.weight", "2.weight", "2.bias"]
    x, y = tokens((4, 5), 9), np.array([0, 1, 1, 0])
    model.train_step(x, y)
    model.save(tmp_path / "m.safetensors")
    loaded = fn.load(tmp_path / "m.safetensors")
    assert loaded.optimizer.clip_norm == 0.5
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.train_step(x, y) == model.train_step(x, y)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value, err_msg=name)
    with pytest.raises(fn.DataError):
        loaded.predict(x + 9)


# -- the kernels themselves ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_embedding_cuda_kernels_match_the_cpus_bit_for_bit(dtype):
    rng = np.random.default_rng(7)
    V, D, M = 5, 19, 12
    weight = rng.standard_normal((V, D)).astype(dtype)
    t = rng.integers(0, V, M).astype(dtype)
    t[[2, 5, 9]] = [-1, V, np.nan]              # never reached through a model: zero rows, no gradient
    dy = rng.standard_normal((M, D)).astype(dtype)
    y = np.full((M, D), np.nan, dtype)
    kc.embedding_forward(t, weight, y)
    expected = np.where(np.isin(np.arange(M), [2, 5, 9])[:, None], 0, weight[np.nan_to_num(t).astype(int) % V])
    np.testing.assert_array_equal(y, expected)
    yg = empty((M, D), dtype)
    kg.embedding_forward(dev(t), dev(weight), yg)
    same(yg, y)
    for padding in (-1, int(t[0])):
        dw = np.full((V, D), np.nan, dtype)
        kc.embedding_backward(t, dy, padding, dw)
        reference = np.zeros((V, D))
        for i in range(M):
            if i not in (2, 5, 9) and int(t[i]) != padding:
                reference[int(t[i])] += dy[i]
        np.testing.assert_allclose(dw, reference, rtol=1e-6, atol=1e-6)
        dwg = empty((V, D), dtype)
        kg.embedding_backward(dev(t), dev(dy), padding, dwg)
        same(dwg, dw)                            # the same sums in the same order


def test_onnx_export_gathers_what_predict_gives(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = fn.Sequential([fn.Embedding(11, 4, padding_idx=0), fn.Flatten(), fn.Dense(3)]).compile(
        (6,), 8, loss="cross_entropy", optimizer=fn.Adam(lr=0.05), seed=4)
    x = tokens((16, 6), 11)
    model.fit(x, np.arange(16) % 3, epochs=1, verbose=0)
    model.export_onnx(tmp_path / "embedding.onnx")
    session = ort.InferenceSession(str(tmp_path / "embedding.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 7):
        theirs = session.run(["logits"], {"input": x[:n].astype(np.float32)})[0]
        np.testing.assert_allclose(theirs, model.predict(x[:n]), rtol=1e-5, atol=1e-5)


def test_onnx_import_of_fastnets_export_and_of_torchs(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    torch = pytest.importorskip("torch")
    import warnings
    model = fn.Sequential([fn.Embedding(11, 4), fn.Flatten(), fn.Dense(3)]).compile(
        (6,), 8, loss="cross_entropy", seed=4)
    x = tokens((16, 6), 11)
    back = fn.from_onnx(model.export_onnx(tmp_path / "ours.onnx")).compile(batch_size=8, loss="cross_entropy")
    assert isinstance(back.network.layers[0], fn.Embedding)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[name], value, err_msg=name)
    np.testing.assert_array_equal(back.predict(x), model.predict(x))
    # torch exports nn.Embedding as a Gather of its int64 input
    net = torch.nn.Sequential(torch.nn.Embedding(11, 4), torch.nn.Flatten(), torch.nn.Linear(24, 3)).eval()
    with warnings.catch_warnings():      # the TorchScript exporter's deprecation notices
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(2, 6, dtype=torch.int64), str(tmp_path / "torch.onnx"),
                          opset_version=17, dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    imported = fn.from_onnx(tmp_path / "torch.onnx").compile(batch_size=8, loss="cross_entropy")
    assert list(imported.state_dict()) == list(net.state_dict())
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(imported.predict(x), expected, rtol=1e-5, atol=1e-5)
