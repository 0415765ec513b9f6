"""Conv2D: float64 gradient checks over many geometries, PyTorch parity, compile-time shape errors."""

import numpy as np
import pytest

import fastnet as fn
from gradcheck import check_gradients

# (in_shape, out_channels, kernel_size, stride, padding)
GEOMETRIES = [
    ((1, 5, 5), 2, 3, 1, 0),
    ((2, 6, 5), 3, 3, 1, 1),             # non-square image, "same" padding
    ((3, 7, 7), 2, 3, 2, 1),             # stride 2
    ((2, 8, 7), 2, (3, 2), (3, 1), 2),   # stride 3, non-square kernel, padding 2
    ((2, 5, 6), 3, (2, 3), 2, (1, 0)),   # padding only along the height
    ((2, 4, 5), 3, (4, 5), 1, 0),        # kernel = image: one output pixel
    ((3, 4, 4), 2, 5, 1, 2),             # kernel larger than the image, padded
    ((12, 3, 3), 9, 1, 1, 0),            # 1x1 with many channels
    ((2, 6, 6), 2, 3, 3, 0),             # windows that tile the image exactly
    ((8, 5, 4), 6, 3, 1, 1),             # O*K = 432 > gemm.SMALL_C: the weight gradient through BLAS
    ((3, 5, 5), 8, 3, 1, 1),             # O*K = 216: the weight gradient a loop, the input's BLAS
    ((4, 7, 7), 12, 3, 2, 1),            # BLAS products, stride 2
]


def geometry_id(g):
    return "in{}-o{}-k{}-s{}-p{}".format(*g).replace(" ", "")


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=geometry_id)
@pytest.mark.parametrize("batch", [1, 3])
def test_conv2d_gradients(geometry, batch):
    in_shape, out_channels, kernel, stride, padding = geometry
    model = fn.Sequential([fn.Conv2D(out_channels, kernel, stride, padding)]).compile(
        in_shape, batch, loss="mse", dtype="float64", seed=batch)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(batch, *in_shape))
    y = rng.normal(size=(batch, *model.output_shape))
    assert check_gradients(model, x, y) == 2


def test_conv2d_without_bias_in_a_network_with_a_smaller_last_batch():
    net = fn.Sequential([fn.Conv2D(3, 3, padding=1, bias=False), fn.Tanh(), fn.MaxPool2D(2),
                         fn.Conv2D(4, (2, 3), stride=(1, 2)), fn.Flatten(), fn.Dense(3)])
    model = net.compile((2, 6, 8), 4, loss="cross_entropy", dtype="float64")
    assert "0.bias" not in model.parameters()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 2, 6, 8))                 # 3 rows through a batch compiled for 4
    assert check_gradients(model, x, np.array([0, 2, 1])) == 5


def test_conv2d_shape_errors_name_the_layer():
    with pytest.raises(fn.ShapeError, match="conv_big.*5x5.*3x3"):
        fn.Sequential([fn.Conv2D(2, 5, name="conv_big")]).compile((1, 3, 3), 2)
    with pytest.raises(fn.ShapeError, match="Conv2D.*channels, height, width"):
        fn.Sequential([fn.Conv2D(2, 3)]).compile((9,), 2)
    for bad in [dict(kernel_size=0), dict(kernel_size=(3, 3, 3)), dict(stride=0), dict(padding=-1)]:
        with pytest.raises(fn.ShapeError):
            fn.Conv2D(2, **{"kernel_size": 3, **bad})
    with pytest.raises(fn.ShapeError, match="out_channels"):
        fn.Conv2D(0, 3)


def test_conv2d_initialisation_follows_pytorch_bounds():
    model = fn.Sequential([fn.Conv2D(8, 3)]).compile((4, 6, 6), 2, loss="mse", seed=0)
    bound = 1 / np.sqrt(4 * 3 * 3)
    for name in ("0.weight", "0.bias"):
        values = model.parameters()[name]
        assert np.abs(values).max() <= bound and np.abs(values).max() > 0.8 * bound, name


# -- PyTorch parity ---------------------------------------------------------------------------

@pytest.mark.parametrize("geometry", GEOMETRIES[:5], ids=geometry_id)
@pytest.mark.parametrize("dtype, tol", [("float64", 1e-10), ("float32", 2e-5)])
def test_conv2d_matches_pytorch(geometry, dtype, tol):
    torch = pytest.importorskip("torch")
    in_shape, out_channels, kernel, stride, padding = geometry
    model = fn.Sequential([fn.Conv2D(out_channels, kernel, stride, padding)]).compile(
        in_shape, 4, loss="mse", dtype=dtype, seed=3)
    conv = torch.nn.Conv2d(in_shape[0], out_channels, kernel, stride, padding).to(getattr(torch, dtype))
    conv.load_state_dict({k.split(".", 1)[1]: torch.from_numpy(v)
                          for k, v in model.state_dict().items()})
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, *in_shape)).astype(dtype)
    y = rng.normal(size=(4, *model.output_shape)).astype(dtype)

    loss, grads = model.gradients(x, y, input_grad=True)
    xt = torch.from_numpy(x).requires_grad_()
    out = conv(xt)
    np.testing.assert_allclose(model.forward(x), out.detach().numpy(), rtol=tol, atol=tol)
    torch_loss = torch.nn.functional.mse_loss(out, torch.from_numpy(y))
    torch_loss.backward()
    assert loss == pytest.approx(torch_loss.item(), rel=tol)
    np.testing.assert_allclose(grads["input"], xt.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(grads["0.weight"], conv.weight.grad.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(grads["0.bias"], conv.bias.grad.numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("geometry", GEOMETRIES[1:4], ids=geometry_id)
def test_relu_fused_into_the_convolution_has_correct_gradients(geometry):
    in_shape, out_channels, kernel, stride, padding = geometry
    model = fn.Sequential([fn.Conv2D(out_channels, kernel, stride, padding), fn.ReLU()]).compile(
        in_shape, 2, loss="mse", dtype="float64", seed=3)
    assert model.plan.fused_from == {2: 1}          # the ReLU (tensor 2) is applied by the conv
    rng = np.random.default_rng(8)
    x = rng.normal(size=(2, *in_shape))
    assert check_gradients(model, x, rng.normal(size=(2, *model.output_shape))) == 2


def test_fused_relu_trains_exactly_as_an_unfused_one():
    # LeakyReLU(0) is the same function but is never fused: outputs, gradients and the parameters
    # after a few steps must be the same numbers.
    def network(activation):
        return fn.Sequential([fn.Conv2D(4, 3, padding=1), activation(), fn.MaxPool2D(2),
                              fn.Conv2D(5, 3), activation(), fn.Flatten(), fn.Dense(3)])

    fused, plain = (network(a).compile((2, 8, 8), 6, optimizer=fn.SGD(0.1, momentum=0.9), seed=1)
                    for a in (fn.ReLU, lambda: fn.LeakyReLU(0.0)))
    assert fused.plan.fused_from == {2: 1, 5: 4} and plain.plan.fused_from == {}
    plain.load_state_dict(fused.state_dict())
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(6, 2, 8, 8)).astype(np.float32), rng.integers(0, 3, 6)
    np.testing.assert_array_equal(fused.predict(x), plain.predict(x))
    for a, b in zip(fused.gradients(x, y)[1].values(), plain.gradients(x, y)[1].values()):
        np.testing.assert_array_equal(a, b)
    for _ in range(3):
        fused.train_step(x, y)
        plain.train_step(x, y)
    for name, value in fused.state_dict().items():
        np.testing.assert_array_equal(value, plain.state_dict()[name], err_msg=name)


def test_relu_is_not_fused_when_the_convolution_output_has_another_reader():
    x = fn.Input((2, 5, 5))
    c = fn.Conv2D(3, 3, padding=1)(x)
    h = fn.Add()(fn.ReLU()(c), c)                    # c is read by the ReLU and by the Add
    out = fn.Dense(2)(fn.Flatten()(fn.Conv2D(2, 3)(h)))
    model = fn.Graph(inputs=x, outputs=out).compile(batch_size=3, dtype="float64", seed=4)
    assert model.plan.fused_from == {}
    rng = np.random.default_rng(5)
    assert check_gradients(model, rng.normal(size=(3, 2, 5, 5)), np.array([0, 1, 1])) == 6
