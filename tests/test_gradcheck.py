"""Every layer and both losses: analytic gradients against central differences (float64)."""

import numpy as np
import pytest

import fastnet as fn
from gradcheck import check_gradients


def compile64(layers, input_shape, batch, loss="mse", seed=0):
    return fn.Sequential(layers).compile(input_shape, batch, loss=loss, dtype="float64", seed=seed)


def mse_data(model, n, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *model.input_shape))
    y = rng.normal(size=(n, *model.output_shape))
    return x, y


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("features, out", [(5, 4), (1, 3), (7, 1), (3, 40)])  # 40: split by features
@pytest.mark.parametrize("bias", [True, False])
def test_dense(batch, features, out, bias):
    model = compile64([fn.Dense(out, bias=bias)], (features,), batch)
    x, y = mse_data(model, batch)
    assert check_gradients(model, x, y) == (2 if bias else 1)


@pytest.mark.parametrize("rows", [3, 300])
def test_dense_forward_split_by_rows_or_by_features_agrees_with_numpy(rows):
    # a small batch is split over the output features (3 rows), a large one over the rows (300)
    from fastnet.kernels import cpu as k
    rng = np.random.default_rng(3)
    x, w, b = rng.normal(size=(rows, 50)), rng.normal(size=(40, 50)), rng.normal(size=40)
    y, scratch = np.full((rows, 40), np.nan), np.full((rows, 40), np.nan)
    k.dense_forward(x, w, b, y, scratch)
    np.testing.assert_allclose(y, x @ w.T + b, rtol=1e-12, atol=1e-12)
    k.dense_forward_nobias(x, w, y, scratch)
    np.testing.assert_allclose(y, x @ w.T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layer", [fn.ReLU(), fn.LeakyReLU(0.1), fn.LeakyReLU(0.5), fn.Sigmoid(),
                                   fn.Tanh(), fn.Softmax()], ids=repr)
@pytest.mark.parametrize("batch", [1, 4])
def test_activation(layer, batch):
    # A Dense in front gives the activation inputs of both signs and a parameter to check through it.
    model = compile64([fn.Dense(6), layer], (5,), batch)
    x, y = mse_data(model, batch)
    check_gradients(model, x, y)


def test_relu_kinks_are_avoided_and_gradient_is_zero_below():
    model = compile64([fn.ReLU()], (4,), 2)
    x = np.array([[-1.0, 2.0, -3.0, 0.5], [1.5, -0.2, 0.3, -4.0]])
    y = np.zeros_like(x)
    _, grads = model.gradients(x, y, input_grad=True)
    expected = np.where(x > 0, 2 * x / x.size, 0.0)
    np.testing.assert_allclose(grads["input"], expected, rtol=1e-12)
    check_gradients(model, x, y)


@pytest.mark.parametrize("shape", [(2, 3, 4), (1, 1, 5), (6,)])
def test_flatten(shape):
    model = compile64([fn.Flatten(), fn.Dense(3)], shape, 2)
    x, y = mse_data(model, 2)
    check_gradients(model, x, y)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.7])
def test_dropout(p):
    model = compile64([fn.Dense(8), fn.Dropout(p), fn.Dense(3)], (5,), 4)
    x, y = mse_data(model, 4)
    check_gradients(model, x, y)


def test_dropout_mask_changes_with_the_step_and_scales_kept_values():
    model = compile64([fn.Dropout(0.4)], (1000,), 2)
    x = np.ones((2, 1000))
    first = model.forward(x, train=True)
    again = model.forward(x, train=True)
    np.testing.assert_array_equal(first, again)          # same step, same mask
    assert set(np.unique(first)) <= {0.0, 1 / 0.6}
    kept = np.count_nonzero(first) / first.size
    assert 0.55 < kept < 0.65
    model.train_step(x, np.zeros((2, 1000)))
    assert not np.array_equal(model.forward(x, train=True), first)
    np.testing.assert_array_equal(model.forward(x, train=False), x)  # identity in eval


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("pool", [
    lambda: fn.MaxPool2D(2), lambda: fn.MaxPool2D((3, 2), stride=(2, 1), padding=1),
    lambda: fn.MaxPool2D(3, stride=3), lambda: fn.AvgPool2D(2), lambda: fn.AvgPool2D((2, 3), stride=1, padding=1),
    lambda: fn.AvgPool2D((5, 6)), lambda: fn.GlobalAvgPool2D()], ids=["max2", "max3x2s21p1", "max3s3",
                                                                     "avg2", "avg2x3p1", "avg_full", "global"])
def test_pooling(pool, batch):
    model = compile64([pool(), fn.Flatten(), fn.Dense(2)], (2, 5, 6), batch)
    rng = np.random.default_rng(3)
    # Distinct, well separated values: no ties for max pooling, so differences are well defined.
    x = rng.permutation(batch * 2 * 5 * 6).reshape(batch, 2, 5, 6) * 0.1
    y = rng.normal(size=(batch, 2))
    check_gradients(model, x, y, eps=1e-5)


@pytest.mark.parametrize("shape, batch", [((3, 4, 5), 2), ((2, 1, 1), 3), ((4, 3, 3), 1)])
def test_batchnorm2d(shape, batch):
    model = compile64([fn.BatchNorm2D(), fn.Flatten(), fn.Dense(3)], shape, batch)
    x, y = mse_data(model, batch)
    check_gradients(model, x, y)


@pytest.mark.parametrize("batch", [2, 5])
def test_batchnorm1d(batch):
    model = compile64([fn.Dense(4), fn.BatchNorm1D(), fn.Dense(2)], (3,), batch)
    x, y = mse_data(model, batch)
    check_gradients(model, x, y)


@pytest.mark.parametrize("batch, classes", [(1, 2), (4, 3), (6, 10)])
def test_cross_entropy(batch, classes):
    model = compile64([fn.Dense(classes)], (4,), batch, loss="cross_entropy")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(batch, 4)) * 3
    y = rng.integers(0, classes, batch)
    check_gradients(model, x, y)


@pytest.mark.parametrize("shape", [(3,), (2, 2, 2)])
def test_mse(shape):
    model = compile64([fn.Tanh()], shape, 3)
    x, y = mse_data(model, 3)
    check_gradients(model, x, y)


def test_deep_mlp_with_every_activation():
    model = compile64([fn.Flatten(), fn.Dense(7), fn.ReLU(), fn.Dense(6), fn.Tanh(), fn.Dense(5),
                       fn.Sigmoid(), fn.Dense(5), fn.LeakyReLU(0.2), fn.Dense(3)], (2, 2, 2), 3,
                      loss="cross_entropy")
    x = np.random.default_rng(0).normal(size=(3, 2, 2, 2))
    assert check_gradients(model, x, np.array([0, 2, 1])) == 10


def test_a_wrong_gradient_is_caught():
    """The checker itself must fail on a wrong backward, or it proves nothing."""
    class BrokenTanh(fn.Tanh):
        def backward(self, k, slot, xs, y, dy, dxs):
            k.copy_forward(dy.reshape(-1), dxs[0].reshape(-1))   # identity: wrong

    model = compile64([fn.Dense(3), BrokenTanh()], (2,), 2)
    x, y = mse_data(model, 2)
    with pytest.raises(AssertionError):
        check_gradients(model, x, y)
