"""RNN, LSTM, GRU: float64 gradient checks through time (T = 1 and several steps, the whole
sequence or the last step, batch 1, stacked layers), PyTorch parity against torch.nn.RNN/LSTM/GRU
given the same weights (outputs, every gradient) in float32 and float64, a batch large enough that
the CPU kernels split it over two threads, CPU-vs-CUDA agreement on the simulator, three optimizer
steps against torch's, truncated backpropagation through time against torch with the state
detached, spec and checkpoint round trips, and the errors a user gets for bad arguments."""

import numpy as np
import pytest
from cuda_helpers import CUDA_WARNINGS
from harness import assert_close, check_layer, grid

import fastnet as fn
from fastnet.errors import ShapeError

pytestmark = CUDA_WARNINGS

CELLS = {"lstm": (fn.LSTM, "LSTM", {}), "gru": (fn.GRU, "GRU", {}),
         "rnn_tanh": (fn.RNN, "RNN", {"nonlinearity": "tanh"}), "rnn_relu": (fn.RNN, "RNN", {"nonlinearity": "relu"})}


def torch_cell(nn, cell, features, hidden, sequences):
    """The torch module of `cell` (one layer, batch first) returning the whole output sequence or
    its last step, as the fastnet layer does. A subclass keeps torch's parameter names."""
    _, torch_name, kwargs = CELLS[cell]

    class Cell(getattr(nn, torch_name)):
        def forward(self, x):
            out = super().forward(x)[0]
            return out if sequences else out[:, -1]

    return Cell(features, hidden, batch_first=True, **kwargs)


def ours(cell, hidden, sequences, **kw):
    cls, _, kwargs = CELLS[cell]
    return cls(hidden, return_sequences=sequences, **kwargs, **kw)


# (cell, batch, steps, features, hidden, return_sequences)
CASES = [(cell, *shape) for cell in CELLS
         for shape in [(1, 1, 2, 3, False), (2, 4, 3, 2, True), (3, 3, 1, 4, False)]]
CUDA = [CASES.index(c) for c in [("lstm", 2, 4, 3, 2, True), ("gru", 2, 4, 3, 2, True),
                                 ("rnn_tanh", 3, 3, 1, 4, False)]]


@pytest.mark.parametrize("case, device, dtype", grid(CASES, CUDA, ids=lambda c: "{}-b{}-t{}-f{}-h{}-{}".format(
    *c[:5], "seq" if c[5] else "last")))
def test_recurrent(case, device, dtype):
    cell, batch, steps, features, hidden, sequences = case
    report = check_layer(lambda: ours(cell, hidden, sequences), (steps, features), batch, device=device,
                         dtype=dtype, torch_net=lambda nn: [torch_cell(nn, cell, features, hidden, sequences)])
    model = report["model"]
    assert report["checked"] == (None if dtype == "float32" else 4)
    assert list(model.parameters()) == ["0.weight_ih_l0", "0.weight_hh_l0", "0.bias_ih_l0", "0.bias_hh_l0"]
    assert model.output_shape == ((steps, hidden) if sequences else (hidden,))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("first, second", [("lstm", "lstm"), ("gru", "rnn_tanh"), ("rnn_relu", "lstm")])
def test_stacked(first, second, dtype):
    # Two layers (the first's sequence read by the second), then Dense on the last step.
    report = check_layer(lambda: [ours(first, 3, True), ours(second, 4, False), fn.Dense(2)], (5, 2), 2,
                         dtype=dtype, loss="cross_entropy",
                         torch_net=lambda nn: [torch_cell(nn, first, 2, 3, True),
                                               torch_cell(nn, second, 3, 4, False), nn.Linear(4, 2)])
    assert report["checked"] == (None if dtype == "float32" else 10)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_a_batch_split_over_threads(cell, dtype):
    # 40 rows: two blocks of rows on two threads (kernels/cpu/recurrent.py), and the weight
    # gradients summed over both; parity only (an entry-by-entry gradient check is long here).
    check_layer(lambda: ours(cell, 6, True), (3, 5), 40, dtype=dtype, gradcheck=False,
                torch_net=lambda nn: [torch_cell(nn, cell, 5, 6, True)])


# -- optimizer steps --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_three_adam_steps_match_torch(cell, dtype):
    torch = pytest.importorskip("torch")
    model = fn.Sequential([ours(cell, 5, False), fn.Dense(3)]).compile(
        (4, 3), 6, loss="cross_entropy", optimizer=fn.Adam(lr=0.01), dtype=dtype, seed=1)
    net = torch.nn.Sequential(torch_cell(torch.nn, cell, 3, 5, False), torch.nn.Linear(5, 3))
    net = net.to(getattr(torch, dtype))
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()})
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    rng = np.random.default_rng(5)
    before = model.state_dict()
    for step in range(3):
        x = rng.normal(size=(6, 4, 3)).astype(dtype)
        y = rng.integers(0, 3, 6)
        loss = model.train_step(x, y)
        opt.zero_grad()
        theirs = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
        theirs.backward()
        opt.step()
        assert loss == pytest.approx(theirs.item(), rel=1e-5 if dtype == "float32" else 1e-10), f"step {step}"
    tol = 1e-5 if dtype == "float32" else 1e-10
    for name, value in net.state_dict().items():
        assert_close(model.state_dict()[name], value.numpy(), tol, f"{name} after 3 steps")
        assert np.max(np.abs(model.state_dict()[name] - before[name])) > 1e-4, f"{name} did not move"


# -- truncated backpropagation through time -------------------------------------------------------

def torch_truncated(torch, module, cell, x, truncate, sequences):
    """module (torch_cell's) run one step at a time, the state detached before every step s with
    (T - s) a multiple of `truncate` (the layers' docstring): the output as the fastnet layer's."""
    T = x.shape[1]
    state, outs = None, []
    for s in range(T):
        if state is not None and (T - s) % truncate == 0:
            state = tuple(a.detach() for a in state) if isinstance(state, tuple) else state.detach()
        out, state = getattr(torch.nn, CELLS[cell][1]).forward(module, x[:, s:s + 1], state)
        outs.append(out)
    out = torch.cat(outs, 1)
    return out if sequences else out[:, -1]


@pytest.mark.parametrize("sequences", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_truncated_bptt_matches_torch_with_the_state_detached(cell, sequences):
    torch = pytest.importorskip("torch")
    T, truncate = 5, 2
    model = fn.Sequential([ours(cell, 3, sequences, truncate=truncate)]).compile(
        (T, 2), 3, loss="mse", dtype="float64")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, T, 2))
    y = rng.normal(size=(3, *model.output_shape))
    loss, grads = model.gradients(x, y, input_grad=True)

    module = torch_cell(torch.nn, cell, 2, 3, sequences).double()
    module.load_state_dict({k[2:]: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()})
    xt = torch.tensor(x, requires_grad=True)
    theirs = torch.nn.functional.mse_loss(torch_truncated(torch, module, cell, xt, truncate, sequences),
                                          torch.tensor(y))
    theirs.backward()
    assert loss == pytest.approx(theirs.item(), rel=1e-12)
    assert_close(grads["input"], xt.grad.numpy(), 1e-10, "input gradient")
    for name, param in module.named_parameters():
        assert_close(grads["0." + name], param.grad.numpy(), 1e-10, name)
    # and it is not the full backpropagation through time
    full = fn.Sequential([ours(cell, 3, sequences)]).compile((T, 2), 3, loss="mse", dtype="float64")
    full.load_state_dict(model.state_dict())
    assert np.abs(full.gradients(x, y, input_grad=True)[1]["input"] - grads["input"]).max() > 1e-6


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_truncation_at_least_the_sequence_is_the_full_bptt_and_one_step_reaches_one_input(cell):
    T = 4
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(2, T, 3)), rng.normal(size=(2, 5))
    grads = {}
    for truncate in (None, T, T + 3, 1):
        model = fn.Sequential([ours(cell, 5, False, truncate=truncate)]).compile((T, 3), 2, loss="mse",
                                                                                  dtype="float64", seed=2)
        grads[truncate] = model.gradients(x, y, input_grad=True)[1]
    for truncate in (T, T + 3):
        for name, value in grads[None].items():
            np.testing.assert_array_equal(grads[truncate][name], value, err_msg=f"truncate={truncate}: {name}")
    # truncate=1 and only the last step's output: the gradient reaches the last input alone; it is
    # the full one's there (the last step's own derivative), and the weights' gradients are those
    # of the last step with its incoming state held constant, which differ from the full ones.
    one = grads[1]
    assert np.all(one["input"][:, :T - 1] == 0)
    np.testing.assert_allclose(one["input"][:, T - 1], grads[None]["input"][:, T - 1], rtol=1e-12, atol=1e-14)
    assert np.abs(one["0.weight_ih_l0"] - grads[None]["0.weight_ih_l0"]).max() > 1e-6


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_relu"])
def test_truncated_bptt_on_cuda_agrees_with_the_cpu(cell):
    check_layer(lambda: ours(cell, 2, True, truncate=2), (3, 2), 2, device="cuda", gradcheck=False)


# -- networks as data, errors ---------------------------------------------------------------------

def test_spec_and_checkpoint_round_trips(tmp_path):
    net = fn.Sequential([fn.LSTM(4, return_sequences=True, truncate=3), fn.GRU(3, return_sequences=True),
                         fn.RNN(2, nonlinearity="relu"), fn.Dense(2)], input_shape=(5, 3))
    spec = fn.to_spec(net)
    assert [layer["type"] for layer in spec["layers"]] == ["lstm", "gru", "rnn", "dense"]
    again = fn.from_spec(spec)
    assert [layer.config() for layer in again.layers] == [layer.config() for layer in net.layers]
    model = net.compile(batch_size=4, optimizer=fn.Adam(lr=0.01))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 5, 3)).astype("float32"), rng.integers(0, 2, 4)
    model.train_step(x, y)
    model.save(tmp_path / "m.safetensors")
    loaded = fn.load(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.train_step(x, y) == model.train_step(x, y)
    text = model.summary()
    for kind in ("LSTM", "GRU", "RNN"):
        assert kind in text


@pytest.mark.parametrize("make, message", [
    (lambda: fn.LSTM(0), "hidden_size must be a positive integer"),
    (lambda: fn.GRU(2.5), "hidden_size must be a positive integer"),
    (lambda: fn.LSTM("a"), "hidden_size must be a positive integer"),
    (lambda: fn.GRU(None), "hidden_size must be a positive integer"),
    (lambda: fn.RNN(float("inf")), "hidden_size must be a positive integer"),
    (lambda: fn.LSTM(True), "hidden_size must be a positive integer"),
    (lambda: fn.LSTM(3, truncate=0), "truncate must be a positive number of steps"),
    (lambda: fn.LSTM(3, truncate="x"), "truncate must be a positive number of steps"),
    (lambda: fn.RNN(3, nonlinearity="sigmoid"), "nonlinearity must be 'tanh' or 'relu'"),
])
def test_bad_arguments(make, message):
    with pytest.raises(ShapeError, match=message):
        make()


def test_an_image_input_is_refused_at_compile():
    with pytest.raises(ShapeError, match=r"expects a \(steps, features\) sequence per sample"):
        fn.Sequential([fn.LSTM(3)]).compile((1, 28, 28), 2)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_embedding_then_lstm_matches_torch(dtype):
    # Token ids -> Embedding -> LSTM -> Dense: a text classifier's shape, the LSTM taking the
    # embedding's (steps, dim) rows; no input gradient (integer ids), so no gradient check of it.
    torch = pytest.importorskip("torch")
    model = fn.Sequential([fn.Embedding(11, 4), fn.LSTM(5), fn.Dense(3)]).compile(
        (6,), 4, loss="cross_entropy", optimizer=fn.SGD(lr=0.1), dtype=dtype, seed=3)
    net = torch.nn.Sequential(torch.nn.Embedding(11, 4), torch_cell(torch.nn, "lstm", 4, 5, False),
                              torch.nn.Linear(5, 3)).to(getattr(torch, dtype))
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()})
    rng = np.random.default_rng(6)
    ids, y = rng.integers(0, 11, (4, 6)), rng.integers(0, 3, 4)
    loss, grads = model.gradients(ids.astype(dtype), y)
    theirs = torch.nn.functional.cross_entropy(net(torch.from_numpy(ids)), torch.from_numpy(y))
    theirs.backward()
    tol = 2e-5 if dtype == "float32" else 1e-10
    assert loss == pytest.approx(theirs.item(), rel=tol)
    for name, param in net.named_parameters():
        assert_close(grads[name], param.grad.numpy(), tol, name)
