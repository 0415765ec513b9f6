"""BatchNorm1D and BatchNorm2D: gradient checks, PyTorch parity (batch statistics in training, the
running statistics with momentum and the unbiased variance, evaluation with them), CPU-vs-CUDA
agreement, and the layer's contract (names, initialisation, errors); then the kernels themselves:
one value per channel, and CUDA against the CPU with the saved statistics."""

import numpy as np
import pytest
from cuda_helpers import CUDA_WARNINGS, close, dev, empty, randn
from harness import PARITY_TOL, assert_close, build, check_layer, grid, varied

import fastnet as fn
import fastnet.kernels.cpu as kc
import fastnet.kernels.cuda as kg

pytestmark = CUDA_WARNINGS


@pytest.mark.parametrize("shape, batch", [((3, 4, 5), 2), ((2, 1, 1), 3), ((4, 3, 3), 1)])
def test_batchnorm2d(shape, batch):
    features = int(np.prod(shape))
    report = check_layer(lambda: [fn.BatchNorm2D(), fn.Flatten(), fn.Dense(3)], shape, batch,
                         torch_net=lambda nn: [nn.BatchNorm2d(shape[0]), nn.Flatten(), nn.Linear(features, 3)])
    assert report["checked"] == 4


@pytest.mark.parametrize("batch", [2, 5])
def test_batchnorm1d(batch):
    report = check_layer(lambda: [fn.Dense(4), fn.BatchNorm1D(), fn.Dense(2)], (3,), batch,
                         torch_net=lambda nn: [nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)])
    assert report["checked"] == 6


# (N, C, L): BatchNorm1D on (C, L) inputs, on (C,) where L is 1; the last three are the CUDA
# kernel tests' shapes, two of them on the simulator.
BN_SHAPES = [(4, 3, 5), (2, 2, 6), (5, 3, 1), (1, 2, 3), (2, 3, 12), (2, 2, 9), (5, 2, 1)]


def sample_shape(shape):
    return shape[1:] if shape[2] > 1 else shape[1:2]


@pytest.mark.parametrize("shape, device, dtype", grid(BN_SHAPES, cuda=(4, 6), ids=lambda s: "n{}c{}l{}".format(*s)))
def test_batchnorm1d_alone(shape, device, dtype):
    x = np.random.default_rng(20).normal(size=(shape[0], *sample_shape(shape))) * 2 + 3   # mean far from 0
    report = check_layer(fn.BatchNorm1D, sample_shape(shape), shape[0], x=x, device=device, dtype=dtype,
                         torch_net=lambda nn: [nn.BatchNorm1d(shape[1])])
    assert report["checked"] in (None, 2)


@pytest.mark.parametrize("device, dtype", [("cpu", "float32"), ("cpu", "float64"), ("cuda", "float64")])
def test_batchnorm2d_alone(device, dtype):
    x = np.random.default_rng(21).normal(size=(2, 2, 3, 2)) * 3 - 1
    check_layer(fn.BatchNorm2D, (2, 3, 2), 2, x=x, device=device, dtype=dtype,
                torch_net=lambda nn: [nn.BatchNorm2d(2)])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(4, 3, 2, 3), (5, 3)], ids=["2d", "1d"])
def test_batchnorm_running_statistics_match_torch_over_several_batches(shape, dtype):
    torch = pytest.importorskip("torch")
    layer, module = ((fn.BatchNorm2D, torch.nn.BatchNorm2d) if len(shape) == 4 else
                     (fn.BatchNorm1D, torch.nn.BatchNorm1d))
    model = build(layer, shape[1:], shape[0], dtype=dtype)
    state = varied(model.state_dict())
    model.load_state_dict(state)
    bn = module(shape[1]).to(getattr(torch, dtype))
    bn.load_state_dict({k.split(".", 1)[1]: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    tol = PARITY_TOL[dtype]
    rng = np.random.default_rng(81)
    for step in range(4):                          # running statistics after several batches
        x = (rng.normal(size=shape) * (1 + step) + step).astype(dtype)
        y = rng.normal(size=shape).astype(dtype)
        _, grads = model.gradients(x, y, input_grad=True)
        xt = torch.tensor(x, requires_grad=True)
        torch.nn.functional.mse_loss(bn(xt), torch.tensor(y)).backward()
        assert_close(grads["input"], xt.grad.numpy(), tol, f"input gradient, step {step}")
        for name in ("weight", "bias"):
            assert_close(grads[f"0.{name}"], getattr(bn, name).grad.numpy(), tol, f"{name} gradient, step {step}")
            getattr(bn, name).grad = None
        for name in ("running_mean", "running_var"):
            assert_close(model.state_dict()[f"0.{name}"], getattr(bn, name).numpy(), tol, f"{name}, step {step}")
    x = rng.normal(size=shape).astype(dtype)
    with torch.no_grad():
        assert_close(model.predict(x), bn.eval()(torch.tensor(x)).numpy(), tol, "eval outputs")


def _conv_bn_block():
    """conv -> BN -> ReLU -> conv (with bias) -> BN, plus a conv -> BN shortcut, added, then ReLU:
    a residual block whose three batch norms fold in evaluation, the first with its ReLU."""
    x = fn.Input((3, 7, 6))
    h = fn.ReLU(name="relu1")(fn.BatchNorm2D(name="bn1")(fn.Conv2D(4, 3, padding=1, bias=False, name="conv1")(x)))
    h = fn.BatchNorm2D(name="bn2")(fn.Conv2D(4, 3, padding=1, name="conv2")(h))
    shortcut = fn.BatchNorm2D(name="bn3")(fn.Conv2D(4, 1, bias=False, name="conv3")(x))
    out = fn.ReLU(name="relu2")(fn.Add(name="add")(h, shortcut))
    return fn.Graph(inputs=x, outputs=fn.Dense(3, name="fc")(fn.Flatten(name="flat")(out)))


def _torch_block(torch):
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
            self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
            self.conv3, self.bn3 = nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4)
            self.fc = nn.Linear(4 * 7 * 6, 3)

        def forward(self, x):
            h = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return self.fc(torch.relu(h + self.bn3(self.conv3(x))).flatten(1))

    return Block()


@pytest.mark.parametrize("dtype, algorithm", [("float64", "im2col"), ("float64", "winograd"),
                                              ("float64", "direct"), ("float32", "auto")])
def test_batchnorm_folds_into_the_convolution_in_evaluation(dtype, algorithm):
    torch = pytest.importorskip("torch")
    model = _conv_bn_block().compile(batch_size=5, dtype=dtype, seed=1, conv_algorithm=algorithm,
                                     optimizer=fn.SGD(0.1, momentum=0.9))
    plan = model.plan
    assert [(bn.prefix, conv.prefix, folded.relu) for bn, conv, folded, _ in plan.eval_folds] == [
        ("bn1", "conv1", True), ("bn2", "conv2", False), ("bn3", "conv3", False)]
    assert plan.fused_from and "in evaluation, folded" in model.summary()
    # running statistics far from (0, 1), so that folding them is not a no-op
    state = varied(model.state_dict(), seed=4)
    rng = np.random.default_rng(5)
    for name in state:
        if name.endswith("running_var"):
            state[name] = rng.uniform(0.3, 3.0, state[name].shape).astype(dtype)
        elif name.endswith("running_mean"):
            state[name] = rng.normal(size=state[name].shape).astype(dtype)
    model.load_state_dict(state)
    net = _torch_block(torch).to(getattr(torch, dtype))
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()}, strict=False)
    net.eval()
    x = rng.normal(size=(7, 3, 7, 6)).astype(dtype)      # two batches, the second partial
    tol = PARITY_TOL[dtype]
    with torch.no_grad():
        assert_close(model.predict(x), net(torch.from_numpy(x)).numpy(), tol, "folded eval outputs")
    # training runs the layers unfolded (batch statistics): a step, then the folded weights follow
    y = rng.integers(0, 3, 5)
    model.train_step(x[:5], y)
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()}, strict=False)
    with torch.no_grad():
        assert_close(model.predict(x), net(torch.from_numpy(x)).numpy(), tol, "after a step")


def test_batchnorm_layer_contract():
    model = build(lambda: fn.BatchNorm2D(name="bn1"), (3, 4, 5), 4)
    state = model.state_dict()
    assert list(state) == ["bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"]
    assert list(model.parameters()) == ["bn1.weight", "bn1.bias"]
    assert [v.shape for v in state.values()] == [(3,)] * 4
    assert (state["bn1.weight"] == 1).all() and (state["bn1.bias"] == 0).all()
    assert (state["bn1.running_mean"] == 0).all() and (state["bn1.running_var"] == 1).all()
    x = np.random.default_rng(110).normal(size=(2, 3, 4, 5)) + 1       # 2 rows through a batch of 4
    y = model.forward(x, train=True)
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    np.testing.assert_allclose(y, (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5),
                               rtol=1e-10, atol=1e-10)
    state = model.state_dict()
    np.testing.assert_allclose(state["bn1.running_mean"], 0.1 * mean)
    np.testing.assert_allclose(state["bn1.running_var"], 0.9 + 0.1 * var * 40 / 39)   # unbiased
    y = model.forward(x, train=False)                    # eval: running statistics, no update
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, state[name], err_msg=name)
    rm, rv = state["bn1.running_mean"][:, None, None], state["bn1.running_var"][:, None, None]
    np.testing.assert_allclose(y, (x - rm) / np.sqrt(rv + 1e-5), rtol=1e-10)
    with pytest.raises(fn.ShapeError, match="BatchNorm1D"):
        build(fn.BatchNorm2D, (6,))

    assert build(fn.BatchNorm1D, (6,)).output_shape == (6,)
    assert build(fn.BatchNorm1D, (6, 3)).output_shape == (6, 3)
    with pytest.raises(fn.ShapeError):
        build(fn.BatchNorm1D, (2, 3, 4))


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_batchnorm_with_one_value_per_channel(device):
    # Training on one value per channel is refused before any kernel runs (as PyTorch does); in
    # evaluation it is fine; a batch of 1 with a length > 1 trains.
    model = build(fn.BatchNorm1D, (6,), 4, device=device)
    x = np.random.default_rng(112).normal(size=(4, 6))
    y = model.forward(x, train=True)
    np.testing.assert_allclose(y, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5), rtol=1e-9, atol=1e-10)
    with pytest.raises(fn.ShapeError, match="more than 1 value per channel"):
        model.gradients(x[:1], x[:1])
    with pytest.raises(fn.ShapeError, match="more than 1 value per channel"):
        model.forward(x[:1], train=True)
    assert np.isfinite(model.forward(x[:1], train=False)).all()
    assert np.isfinite(model.state_dict()["0.running_var"]).all()

    model = build(fn.BatchNorm1D, (6, 3), 1, device=device)
    x = np.random.default_rng(113).normal(size=(1, 6, 3))
    np.testing.assert_allclose(model.forward(x, train=True),
                               (x - x.mean(2, keepdims=True)) / np.sqrt(x.var(2, keepdims=True) + 1e-5),
                               rtol=1e-9, atol=1e-10)


def test_batchnorm_argument_errors():
    with pytest.raises(fn.ShapeError):
        fn.BatchNorm2D(eps=0)
    with pytest.raises(fn.ShapeError):
        fn.BatchNorm1D(momentum=None)


# -- the kernels themselves (fastnet.kernels.cpu / .cuda) ------------------------------------------

def test_batchnorm_kernel_single_value_does_not_divide_by_zero():
    # One value per channel (M == 1): the layer refuses to train on it (see
    # test_batchnorm_with_one_value_per_channel); the kernel itself must still not divide by M - 1
    # in the unbiased running variance.
    x = np.array([[[2.0]]])                            # (1, 1, 1)
    rm, rv = np.zeros(1), np.ones(1)
    y, mean, inv = np.full_like(x, np.nan), np.full(1, np.nan), np.full(1, np.nan)
    kc.batchnorm_forward_train(x, np.ones(1), np.zeros(1), 1e-5, 0.1, y, rm, rv, mean, inv)
    assert np.isfinite(rv).all() and rv[0] == pytest.approx(0.9)
    assert y[0, 0, 0] == 0


@pytest.mark.parametrize("dtype,shape", [(np.float32, (2, 3, 12)), (np.float64, (2, 2, 9)),
                                         (np.float32, (5, 2, 1))])
def test_batchnorm_cuda_kernels_match_the_cpus(dtype, shape):
    # Kernel against kernel: the saved batch statistics (the save_mean/save_invstd workspaces) too,
    # and the backward without an input gradient on CUDA, which a layer test runs on the CPU only.
    rng = np.random.default_rng(9)
    N, C, L = shape
    x = (randn(rng, shape, dtype) * 3 + 2).astype(dtype)
    dy = randn(rng, shape, dtype)
    weight, bias = randn(rng, C, dtype), randn(rng, C, dtype)
    rm0, rv0 = randn(rng, C, dtype), rng.uniform(0.5, 2, C).astype(dtype)
    eps, momentum = 1e-5, 0.1

    y, mean, invstd, rm, rv = np.empty(shape, dtype), np.empty(C, dtype), np.empty(C, dtype), rm0.copy(), rv0.copy()
    kc.batchnorm_forward_train(x, weight, bias, eps, momentum, y, rm, rv, mean, invstd)
    yg, meang, invstdg, rmg, rvg = empty(shape, dtype), empty(C, dtype), empty(C, dtype), dev(rm0), dev(rv0)
    kg.batchnorm_forward_train(dev(x), dev(weight), dev(bias), eps, momentum, yg, rmg, rvg, meang, invstdg)
    for gpu, cpu in ((yg, y), (meang, mean), (invstdg, invstd), (rmg, rm), (rvg, rv)):
        close(gpu, cpu, dtype)

    kc.batchnorm_forward_eval(x, weight, bias, rm, rv, eps, y)
    kg.batchnorm_forward_eval(dev(x), dev(weight), dev(bias), dev(rm), dev(rv), eps, yg)
    close(yg, y, dtype)

    dx, dweight, dbias = np.empty(shape, dtype), np.empty(C, dtype), np.empty(C, dtype)
    kc.batchnorm_backward(x, dy, weight, dx, dweight, dbias, mean, invstd)
    dxg, dweightg, dbiasg = empty(shape, dtype), empty(C, dtype), empty(C, dtype)
    kg.batchnorm_backward(dev(x), dev(dy), dev(weight), dxg, dweightg, dbiasg, dev(mean), dev(invstd))
    close(dweightg, dweight, dtype)
    close(dbiasg, dbias, dtype)
    close(dxg, dx, dtype)
    dweightg, dbiasg = empty(C, dtype), empty(C, dtype)
    kg.batchnorm_backward(dev(x), dev(dy), dev(weight), None, dweightg, dbiasg, dev(mean), dev(invstd))
    close(dweightg, dweight, dtype)
    close(dbiasg, dbias, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_batchnorm_fold_kernels(dtype, bias):
    # The fold against its formula (float64), and CUDA's against the CPU's: a layer test folds only
    # on the CPU (the simulator runs a whole network slowly).
    rng = np.random.default_rng(10)
    O, K = 5, 7
    w, b = randn(rng, (O, K), dtype), (randn(rng, O, dtype) if bias else None)
    gamma, beta, mean = randn(rng, O, dtype), randn(rng, O, dtype), randn(rng, O, dtype)
    var = rng.uniform(0.2, 3, O).astype(dtype)
    fw, fb = np.empty_like(w), np.empty(O, dtype)
    kc.batchnorm_fold(w, b, gamma, beta, mean, var, 1e-5, fw, fb)
    scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + 1e-5)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(fw, w * scale[:, None], rtol=tol, atol=tol)
    np.testing.assert_allclose(fb, ((b if bias else 0) - mean) * scale + beta, rtol=tol, atol=tol)
    fwg, fbg = empty(w.shape, dtype), empty(O, dtype)
    kg.batchnorm_fold(dev(w), dev(b) if bias else None, dev(gamma), dev(beta), dev(mean), dev(var), 1e-5, fwg, fbg)
    close(fwg, fw, dtype)
    close(fbg, fb, dtype)
