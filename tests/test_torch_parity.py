"""Whole networks against PyTorch, number by number: forward outputs, losses, every parameter
gradient and the input gradient, optimizer steps, BatchNorm running statistics, a smaller last
batch, and state dicts in both directions.

Each network is written twice, side by side: a fastnet layer and the torch.nn module it stands
for, so parameter names ("{index}.weight") line up with torch.nn.Sequential's. fastnet's
initial weights are copied into the torch network through state_dict (BatchNorm's affine
parameters and running statistics are randomised first, so that nothing is an identity).
float64 models are held to ~1e-10, float32 ones to ~1e-5.
"""

import numpy as np
import pytest

import fastnet as fn

torch = pytest.importorskip("torch")

nn = torch.nn
F = torch.nn.functional

TORCH_DTYPE = {"float64": torch.float64, "float32": torch.float32}
TOL = {"float64": dict(rtol=1e-10, atol=1e-12), "float32": dict(rtol=1e-5, atol=1e-6)}
LOSS_REL = {"float64": 1e-12, "float32": 1e-6}


# -- the networks, written twice ------------------------------------------------------------

def mlp():
    return (2, 3, 3), [
        (fn.Flatten(), nn.Flatten()),
        (fn.Dense(16), nn.Linear(18, 16)),
        (fn.ReLU(), nn.ReLU()),
        (fn.Dense(12), nn.Linear(16, 12)),
        (fn.LeakyReLU(0.2), nn.LeakyReLU(0.2)),
        (fn.Dense(10, bias=False), nn.Linear(12, 10, bias=False)),
        (fn.Tanh(), nn.Tanh()),
        (fn.Dense(8), nn.Linear(10, 8)),
        (fn.Sigmoid(), nn.Sigmoid()),
        (fn.Dense(4), nn.Linear(8, 4)),
    ]


def mlp_bn():
    # No bias before BatchNorm: its gradient is zero in exact arithmetic, so it would be rounding
    # noise in both libraries, and Adam would amplify that noise into different steps.
    return (2, 3, 3), [
        (fn.Flatten(), nn.Flatten()),
        (fn.Dense(12, bias=False), nn.Linear(18, 12, bias=False)),
        (fn.BatchNorm1D(momentum=0.2), nn.BatchNorm1d(12, momentum=0.2)),
        (fn.ReLU(), nn.ReLU()),
        (fn.Dense(8), nn.Linear(12, 8)),
        (fn.Tanh(), nn.Tanh()),
        (fn.Dense(4), nn.Linear(8, 4)),
    ]


def bn1d_sequence():
    # BatchNorm1D on (channels, length) inputs: statistics over batch and length.
    return (3, 5), [
        (fn.BatchNorm1D(eps=1e-3), nn.BatchNorm1d(3, eps=1e-3)),
        (fn.LeakyReLU(0.3), nn.LeakyReLU(0.3)),
        (fn.Flatten(), nn.Flatten()),
        (fn.Dense(4), nn.Linear(15, 4)),
    ]


def pools():
    return (3, 6, 6), [
        (fn.BatchNorm2D(eps=1e-3, momentum=0.3), nn.BatchNorm2d(3, eps=1e-3, momentum=0.3)),
        (fn.LeakyReLU(0.1), nn.LeakyReLU(0.1)),
        (fn.MaxPool2D(2), nn.MaxPool2d(2)),                                  # (3, 3, 3)
        (fn.AvgPool2D(3, stride=1, padding=1), nn.AvgPool2d(3, stride=1, padding=1)),  # (3, 3, 3)
        (fn.Tanh(), nn.Tanh()),
        (fn.Flatten(), nn.Flatten()),
        (fn.Dense(5), nn.Linear(27, 5)),
    ]


def global_pool():
    # Non-square windows, padded max pooling (padding is -inf), then the global average.
    return (4, 5, 5), [
        (fn.MaxPool2D((3, 2), stride=(2, 1), padding=(1, 1)),
         nn.MaxPool2d((3, 2), stride=(2, 1), padding=(1, 1))),               # (4, 3, 6)
        (fn.AvgPool2D(2), nn.AvgPool2d(2)),                                  # (4, 1, 3)
        (fn.GlobalAvgPool2D(), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())),  # (4,)
        (fn.Dense(3), nn.Linear(4, 3)),
    ]


def cnn():
    return (2, 7, 7), [
        (fn.Conv2D(4, 3, padding=1, bias=False), nn.Conv2d(2, 4, 3, padding=1, bias=False)),  # (4, 7, 7)
        (fn.BatchNorm2D(), nn.BatchNorm2d(4)),
        (fn.ReLU(), nn.ReLU()),
        (fn.MaxPool2D(2), nn.MaxPool2d(2)),                                  # (4, 3, 3)
        (fn.Conv2D(6, (2, 3), stride=(1, 2)), nn.Conv2d(4, 6, (2, 3), stride=(1, 2))),  # (6, 2, 1)
        (fn.Tanh(), nn.Tanh()),   # without it, BatchNorm1D below would cancel the conv's bias
        (fn.Flatten(), nn.Flatten()),
        (fn.Dense(8, bias=False), nn.Linear(12, 8, bias=False)),
        (fn.BatchNorm1D(eps=1e-3), nn.BatchNorm1d(8, eps=1e-3)),
        (fn.Sigmoid(), nn.Sigmoid()),
        (fn.Dense(3), nn.Linear(8, 3)),
    ]


def softmax_head():
    # Softmax as an inference head (trained here with mse/cross_entropy on its probabilities).
    return (6,), [
        (fn.Dense(5), nn.Linear(6, 5)),
        (fn.Softmax(), nn.Softmax(dim=1)),
    ]


NETS = [mlp, mlp_bn, bn1d_sequence, pools, global_pool, cnn, softmax_head]


# -- helpers --------------------------------------------------------------------------------

def build(net_fn, batch, dtype="float64", loss="cross_entropy", optimizer=None, seed=0):
    """The fastnet model (compiled) and the torch network with fastnet's weights."""
    input_shape, pairs = net_fn()
    model = fn.Sequential([ours for ours, _ in pairs]).compile(
        input_shape, batch, loss=loss, optimizer=optimizer, dtype=dtype, seed=seed)
    net = nn.Sequential(*[theirs for _, theirs in pairs]).to(TORCH_DTYPE[dtype])
    randomise_batchnorm(model, np.random.default_rng(seed + 100))
    copy_to_torch(model, net)
    return model, net


def randomise_batchnorm(model, rng):
    """BatchNorm's initial state (weight 1, bias 0, mean 0, var 1) hides mistakes; move it."""
    params, buffers = model.parameters(), model.buffers()
    for name in buffers:
        if name.endswith(".running_mean"):
            prefix = name[:-len(".running_mean")]
            c = buffers[name].shape[0]
            params[prefix + ".weight"][...] = rng.uniform(0.5, 1.5, c)
            params[prefix + ".bias"][...] = rng.normal(0, 0.3, c)
            buffers[prefix + ".running_mean"][...] = rng.normal(0, 0.3, c)
            buffers[prefix + ".running_var"][...] = rng.uniform(0.5, 2.0, c)


def copy_to_torch(model, net):
    ours = model.state_dict()
    theirs = net.state_dict()
    expected = [k for k in theirs if not k.endswith("num_batches_tracked")]
    assert list(ours) == expected, (
        f"fastnet state_dict keys {list(ours)} differ from torch's (num_batches_tracked aside) {expected}")
    result = net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.items()}, strict=False)
    assert not result.unexpected_keys, f"torch rejected fastnet keys {result.unexpected_keys}"
    assert all(k.endswith("num_batches_tracked") for k in result.missing_keys), (
        f"fastnet's state_dict lacks torch keys {result.missing_keys}")


def assert_state_matches(model, net, dtype, what):
    theirs = net.state_dict()
    ours = model.state_dict()
    for name, value in ours.items():
        np.testing.assert_allclose(value, theirs[name].numpy(), **TOL[dtype],
                                   err_msg=f"{what}: {name} differs from torch's")


def make_data(input_shape, out_shape, n, loss, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *input_shape)).astype(dtype)
    if loss == "cross_entropy":
        y = rng.integers(0, out_shape[0], n)
    else:
        y = rng.normal(size=(n, *out_shape)).astype(dtype)
    return x, y


def torch_loss(loss, out, y):
    if loss == "cross_entropy":
        return F.cross_entropy(out, torch.from_numpy(np.asarray(y, np.int64)))
    return F.mse_loss(out, torch.from_numpy(y))


def torch_gradients(net, loss, x, y):
    """Train-mode forward and backward in torch: (loss, {name: grad}, input grad, output)."""
    net.train()
    net.zero_grad()
    xt = torch.from_numpy(x.copy()).requires_grad_()
    out = net(xt)
    value = torch_loss(loss, out, y)
    value.backward()
    grads = {name: p.grad.numpy().copy() for name, p in net.named_parameters()}
    return value.item(), grads, xt.grad.numpy().copy(), out.detach().numpy()


def torch_eval(net, x):
    net.eval()
    with torch.no_grad():
        return net(torch.from_numpy(x.copy())).numpy()


def assert_gradients_match(model, net, loss, x, y, dtype, what):
    ours_loss, ours = model.gradients(x, y, input_grad=True)
    theirs_loss, theirs, theirs_input, _ = torch_gradients(net, loss, x, y)
    assert ours_loss == pytest.approx(theirs_loss, rel=LOSS_REL[dtype]), (
        f"{what}: {loss} loss {ours_loss} != torch's {theirs_loss}")
    assert set(ours) == set(theirs) | {"input"}, (
        f"{what}: gradient names {sorted(ours)} != torch's parameters {sorted(theirs)} + input")
    for name, grad in theirs.items():
        assert np.any(grad != 0), f"{what}: torch's gradient of {name} is all zero, a useless check"
        np.testing.assert_allclose(ours[name], grad, **TOL[dtype],
                                   err_msg=f"{what}: gradient of {name} differs from torch's")
    np.testing.assert_allclose(ours["input"], theirs_input, **TOL[dtype],
                               err_msg=f"{what}: input gradient differs from torch's")


# -- 1. forward, loss, gradients ------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("net_fn", NETS, ids=lambda f: f.__name__)
def test_forward_loss_and_gradients_match_torch(net_fn, loss, dtype):
    batch = 6
    model, net = build(net_fn, batch, dtype=dtype, loss=loss)
    x, y = make_data(model.input_shape, model.output_shape, batch, loss, dtype, seed=1)
    what = f"{net_fn.__name__}/{loss}/{dtype}"

    np.testing.assert_allclose(model.forward(x), torch_eval(net, x), **TOL[dtype],
                               err_msg=f"{what}: eval-mode forward differs from torch's")
    np.testing.assert_allclose(model.predict(x), torch_eval(net, x), **TOL[dtype],
                               err_msg=f"{what}: predict() differs from torch's eval forward")

    assert_gradients_match(model, net, loss, x, y, dtype, what)
    # gradients() is a train-mode forward: BatchNorm's running statistics moved in both.
    assert_state_matches(model, net, dtype, f"{what}, after gradients()")

    net.train()
    with torch.no_grad():
        theirs = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.forward(x, train=True), theirs, **TOL[dtype],
                               err_msg=f"{what}: train-mode forward differs from torch's")
    assert_state_matches(model, net, dtype, f"{what}, after forward(train=True)")


def test_evaluate_matches_torch_loss_and_accuracy():
    model, net = build(mlp_bn, 8)
    x, y = make_data(model.input_shape, model.output_shape, 13, "cross_entropy", "float64", seed=2)
    out = torch_eval(net, x)
    result = model.evaluate(x, y)
    expected = F.cross_entropy(torch.from_numpy(out), torch.from_numpy(y)).item()
    assert result["loss"] == pytest.approx(expected, rel=1e-12), "evaluate() loss differs from torch's"
    assert result["accuracy"] == np.mean(out.argmax(1) == y), (
        "evaluate() accuracy differs from the argmax of torch's logits")


# -- 2. optimizer steps ---------------------------------------------------------------------

OPTIMIZERS = {
    "sgd": (lambda: fn.SGD(lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    "sgd_weight_decay": (lambda: fn.SGD(lr=0.1, weight_decay=0.05),
                         lambda p: torch.optim.SGD(p, lr=0.1, weight_decay=0.05)),
    "sgd_momentum": (lambda: fn.SGD(lr=0.1, momentum=0.9),
                     lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
    "sgd_nesterov": (lambda: fn.SGD(lr=0.1, momentum=0.8, nesterov=True),
                     lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.8, nesterov=True)),
    "sgd_momentum_weight_decay": (lambda: fn.SGD(lr=0.1, momentum=0.9, weight_decay=0.01),
                                  lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01)),
    "sgd_dampening": (lambda: fn.SGD(lr=0.1, momentum=0.9, dampening=0.3),
                      lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.3)),
    "sgd_nesterov_weight_decay": (lambda: fn.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1),
                                  lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True,
                                                            weight_decay=0.1)),
    "adam": (lambda: fn.Adam(lr=0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
    "adam_options_weight_decay": (
        lambda: fn.Adam(lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.01),
        lambda p: torch.optim.Adam(p, lr=0.02, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.01)),
    # AdamW's default weight_decay (0.01) is torch's too: both sides use it.
    "adamw_default_decay": (lambda: fn.AdamW(lr=0.01), lambda p: torch.optim.AdamW(p, lr=0.01)),
    "adamw": (lambda: fn.AdamW(lr=0.02, betas=(0.85, 0.99), weight_decay=0.2),
              lambda p: torch.optim.AdamW(p, lr=0.02, betas=(0.85, 0.99), weight_decay=0.2)),
}


def run_steps(model, net, opt, batches, loss, dtype, what):
    for step, (x, y) in enumerate(batches, 1):
        ours = model.train_step(x, y)
        net.train()
        opt.zero_grad()
        theirs = torch_loss(loss, net(torch.from_numpy(x.copy())), y)
        theirs.backward()
        opt.step()
        assert ours == pytest.approx(theirs.item(), rel=LOSS_REL[dtype]), (
            f"{what}: train_step {step} returned loss {ours}, torch's is {theirs.item()}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_optimizer_steps_match_torch(name, dtype):
    ours_opt, theirs_opt = OPTIMIZERS[name]
    model, net = build(mlp_bn, 8, dtype=dtype, optimizer=ours_opt())
    opt = theirs_opt(net.parameters())
    before = model.state_dict()
    batches = [make_data(model.input_shape, model.output_shape, 8, "cross_entropy", dtype, seed=10 + i)
               for i in range(4)]
    run_steps(model, net, opt, batches, "cross_entropy", dtype, f"{name}/{dtype}")
    # A step of a float32 Adam on a tiny gradient is sensitive to rounding: 1e-5 relative is loose
    # enough for 4 steps and tight enough to catch a wrong formula (a step is ~lr = 1e-2).
    assert_state_matches(model, net, dtype, f"{name}/{dtype}: after 4 steps")
    moved = [k for k, v in model.parameters().items() if np.max(np.abs(v - before[k])) > 1e-4]
    assert len(moved) == len(model.parameters()), f"{name}: some parameters did not move: {moved}"


def test_mse_training_with_conv_matches_torch():
    model, net = build(cnn, 6, loss="mse", optimizer=fn.SGD(lr=0.2, momentum=0.5, nesterov=True))
    opt = torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.5, nesterov=True)
    batches = [make_data(model.input_shape, model.output_shape, 6, "mse", "float64", seed=20 + i)
               for i in range(3)]
    run_steps(model, net, opt, batches, "mse", "float64", "cnn/mse/nesterov")
    assert_state_matches(model, net, "float64", "cnn/mse/nesterov: after 3 steps")


# -- 3. BatchNorm running statistics --------------------------------------------------------

@pytest.mark.parametrize("net_fn", [cnn, pools, bn1d_sequence], ids=lambda f: f.__name__)
def test_batchnorm_running_statistics_and_eval_after_training_match_torch(net_fn):
    model, net = build(net_fn, 8, optimizer=fn.SGD(lr=0.1, momentum=0.9))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    torch_keys = [k for k in net.state_dict() if not k.endswith("num_batches_tracked")]
    assert list(model.state_dict()) == torch_keys, "state_dict keys (and order) differ from torch's"
    assert list(model.buffers()) == [k for k in torch_keys if "running" in k], (
        "buffers() are not exactly the BatchNorm running statistics torch keeps")
    start = {k: v.copy() for k, v in model.buffers().items()}
    for step in range(4):
        x, y = make_data(model.input_shape, model.output_shape, 8, "cross_entropy", "float64", seed=30 + step)
        run_steps(model, net, opt, [(x, y)], "cross_entropy", "float64", f"{net_fn.__name__} step {step + 1}")
        theirs = net.state_dict()
        for name, value in model.buffers().items():
            np.testing.assert_allclose(value, theirs[name].numpy(), rtol=1e-10, atol=1e-12,
                                       err_msg=f"{name} after step {step + 1} differs from torch's buffer")
    for name, value in model.buffers().items():
        assert np.max(np.abs(value - start[name])) > 1e-3, f"{name} did not move in 4 training steps"
    x, _ = make_data(model.input_shape, model.output_shape, 11, "cross_entropy", "float64", seed=40)
    np.testing.assert_allclose(model.forward(x), torch_eval(net, x), rtol=1e-10, atol=1e-12,
                               err_msg=f"{net_fn.__name__}: eval-mode output after training differs from torch's")


# -- 4. a smaller last batch ----------------------------------------------------------------

@pytest.mark.parametrize("net_fn, n", [(mlp_bn, 5), (cnn, 3), (pools, 2), (mlp, 1), (global_pool, 1)],
                         ids=lambda v: getattr(v, "__name__", str(v)))
def test_smaller_last_batch_gradients_match_torch(net_fn, n):
    model, net = build(net_fn, 8)
    # A full batch first, so that the buffers beyond row n hold stale numbers.
    x8, y8 = make_data(model.input_shape, model.output_shape, 8, "cross_entropy", "float64", seed=50)
    assert_gradients_match(model, net, "cross_entropy", x8, y8, "float64", f"{net_fn.__name__}, full batch")
    x, y = make_data(model.input_shape, model.output_shape, n, "cross_entropy", "float64", seed=51)
    assert_gradients_match(model, net, "cross_entropy", x, y, "float64", f"{net_fn.__name__}, batch of {n} of 8")


def test_smaller_last_batch_train_step_and_chunked_forward_match_torch():
    model, net = build(cnn, 8, optimizer=fn.Adam(lr=0.01))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    batches = [make_data(model.input_shape, model.output_shape, n, "cross_entropy", "float64", seed=60 + n)
               for n in (8, 3, 8, 5)]
    run_steps(model, net, opt, batches, "cross_entropy", "float64", "cnn, batches of 8, 3, 8, 5")
    assert_state_matches(model, net, "float64", "cnn after batches of 8, 3, 8, 5")
    x, _ = make_data(model.input_shape, model.output_shape, 19, "cross_entropy", "float64", seed=70)
    np.testing.assert_allclose(model.forward(x), torch_eval(net, x), rtol=1e-10, atol=1e-12,
                               err_msg="forward of 19 rows in chunks of 8 differs from torch's")


def test_fit_without_shuffle_matches_a_torch_loop():
    model, net = build(mlp_bn, 8, optimizer=fn.SGD(lr=0.1, momentum=0.9, weight_decay=1e-3))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    x, y = make_data(model.input_shape, model.output_shape, 19, "cross_entropy", "float64", seed=80)
    history = model.fit(x, y, epochs=2, shuffle=False, verbose=0)
    for epoch in range(2):
        total = 0.0
        for start in range(0, 19, 8):
            xb, yb = x[start:start + 8], y[start:start + 8]
            net.train()
            opt.zero_grad()
            loss = torch_loss("cross_entropy", net(torch.from_numpy(xb.copy())), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(xb)
        assert history["loss"][epoch] == pytest.approx(total / 19, rel=1e-12), (
            f"fit() epoch {epoch + 1} loss differs from the torch loop's sample-weighted mean")
    assert_state_matches(model, net, "float64", "after fit() of 2 epochs over batches of 8, 8, 3")


# -- 5. loading a torch state_dict ----------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("as_numpy", [True, False], ids=["numpy", "tensors"])
@pytest.mark.parametrize("net_fn", [cnn, mlp_bn, pools], ids=lambda f: f.__name__)
def test_load_torch_state_dict_then_outputs_match(net_fn, as_numpy, dtype):
    input_shape, pairs = net_fn()
    torch.manual_seed(0)
    net = nn.Sequential(*[theirs for _, theirs in pairs]).to(TORCH_DTYPE[dtype])
    # Move the running statistics and num_batches_tracked away from their initial values.
    rng = np.random.default_rng(90)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.from_numpy(rng.normal(1.0, 2.0, size=(8, *input_shape)).astype(dtype)))
    state = net.state_dict()
    assert any(k.endswith("num_batches_tracked") for k in state), "the torch net has no BatchNorm"
    if as_numpy:
        state = {k: v.numpy() for k, v in state.items()}
    model = fn.Sequential([ours for ours, _ in pairs]).compile(input_shape, 8, dtype=dtype, seed=1)
    model.load_state_dict(state)
    expected = {k: np.asarray(v) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    loaded = model.state_dict()
    assert list(loaded) == list(expected), "state_dict keys after loading differ from torch's"
    for name, value in loaded.items():
        np.testing.assert_array_equal(value, expected[name].astype(dtype),
                                      err_msg=f"{name} was not loaded exactly")
    x, y = make_data(input_shape, model.output_shape, 8, "cross_entropy", dtype, seed=91)
    np.testing.assert_allclose(model.forward(x), torch_eval(net, x), **TOL[dtype],
                               err_msg=f"{net_fn.__name__}/{dtype}: eval forward after loading torch's weights")
    assert_gradients_match(model, net, "cross_entropy", x, y, dtype,
                           f"{net_fn.__name__}/{dtype}: gradients after loading torch's weights")


# -- 6. graphs: residual connections, concatenation, slicing ---------------------------------

class TorchResidualConcat(nn.Module):
    """The torch twin of residual_concat(): attribute names are fastnet's layer names."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.proj = nn.Conv2d(3, 4, 1)
        self.branch = nn.Conv2d(3, 2, 1)
        self.fc = nn.Linear(6 * 3 * 3, 5)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        r = F.relu(self.conv2(h) + self.proj(x) + h)           # Add of three; h is read twice
        a, b = torch.split(r, [1, 3], dim=1)
        c = torch.cat([self.branch(b), a, x], dim=1)            # x is read three times
        return self.fc(torch.flatten(F.max_pool2d(c, 2), 1))


def residual_concat():
    x = fn.Input((3, 6, 6))
    h = fn.ReLU()(fn.BatchNorm2D(name="bn1")(fn.Conv2D(4, 3, padding=1, name="conv1")(x)))
    r = fn.ReLU()(fn.Add()(fn.Conv2D(4, 3, padding=1, bias=False, name="conv2")(h),
                           fn.Conv2D(4, 1, name="proj")(x), h))
    a, b = fn.Slice([1, 3])(r)
    c = fn.Concat()(fn.Conv2D(2, 1, name="branch")(b), a, x)
    return fn.Graph(inputs=x, outputs=fn.Dense(5, name="fc")(fn.Flatten()(fn.MaxPool2D(2)(c))))


def build_graph_pair(dtype, optimizer=None):
    model = residual_concat().compile(batch_size=8, dtype=dtype, optimizer=optimizer, seed=3)
    randomise_batchnorm(model, np.random.default_rng(7))
    net = TorchResidualConcat().to(TORCH_DTYPE[dtype])
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()},
                        strict=False)
    return model, net


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_residual_concat_graph_matches_torch(dtype):
    model, net = build_graph_pair(dtype, optimizer=fn.SGD(lr=0.1, momentum=0.9, weight_decay=1e-3))
    x, y = make_data((3, 6, 6), (5,), 8, "cross_entropy", dtype, seed=50)
    assert_gradients_match(model, net, "cross_entropy", x, y, dtype, f"residual_concat/{dtype}")
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    batches = [make_data((3, 6, 6), (5,), 8, "cross_entropy", dtype, seed=51 + i) for i in range(3)]
    run_steps(model, net, opt, batches, "cross_entropy", dtype, f"residual_concat/{dtype}")
    assert_state_matches(model, net, dtype, f"residual_concat/{dtype}: after 3 SGD steps")
    np.testing.assert_allclose(model.forward(x), torch_eval(net, x), **TOL[dtype],
                               err_msg="eval-mode forward after training")


def test_resnet8_loads_a_torch_state_dict_and_matches_it():
    torch.manual_seed(0)
    from bench.torch_models import ResNet8
    net = ResNet8(widths=(4, 6, 8)).double()
    rng = np.random.default_rng(60)
    with torch.no_grad():        # move the running statistics off their initial values
        for _ in range(2):
            net.train()(torch.from_numpy(rng.normal(size=(8, 1, 12, 12))))
    model = fn.models.resnet8(widths=(4, 6, 8), input_shape=(1, 12, 12)).compile(
        batch_size=8, dtype="float64", optimizer=fn.Adam(lr=0.01))
    model.load_state_dict(net.state_dict())
    x, y = make_data((1, 12, 12), (10,), 8, "cross_entropy", "float64", seed=61)
    np.testing.assert_allclose(model.forward(x), torch_eval(net, x), **TOL["float64"])
    assert_gradients_match(model, net, "cross_entropy", x, y, "float64", "resnet8")
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    run_steps(model, net, opt, [make_data((1, 12, 12), (10,), 8, "cross_entropy", "float64", seed=62 + i)
                                for i in range(3)], "cross_entropy", "float64", "resnet8")
    assert_state_matches(model, net, "float64", "resnet8: after 3 Adam steps")
