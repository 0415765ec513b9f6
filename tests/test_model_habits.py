"""Keras habits met with clear errors (issue 17): fit on a network that was not compiled, a
batch_size given to fit/evaluate/predict, a Softmax output trained with cross_entropy (softmax
twice: a warning saying so); and Model.predict_proba."""

import warnings

import numpy as np
import pytest

import fastnet as fn


def data(n=8, features=4, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)).astype(np.float32), rng.integers(0, classes, n)


@pytest.mark.parametrize("method", ["fit", "evaluate", "predict", "predict_proba", "save", "summary"])
def test_a_network_that_was_not_compiled_says_to_compile_it(method):
    net = fn.Sequential([fn.Dense(3)])
    with pytest.raises(AttributeError, match=rf"Sequential has no {method}\(\): compile the network into a "
                                             rf"model first, model = net.compile\(input_shape=.*model.{method}"):
        getattr(net, method)(*data())
    assert not hasattr(net, method)
    x = fn.Input((4,))
    with pytest.raises(AttributeError, match=r"Graph has no fit\(\): compile"):
        fn.Graph(x, fn.Dense(3)(x)).fit(*data())


def test_other_missing_attributes_are_plain_attribute_errors():
    with pytest.raises(AttributeError, match="'Sequential' object has no attribute 'fitt'"):
        getattr(fn.Sequential([fn.Dense(3)]), "fitt")  # noqa: B009


@pytest.mark.parametrize("method", ["fit", "evaluate", "predict", "predict_proba"])
def test_batch_size_at_fit_time_is_a_clear_type_error(method):
    model = fn.Sequential([fn.Dense(3)]).compile((4,), 8)
    x, y = data()
    args = (x,) if method.startswith("predict") else (x, y)
    with pytest.raises(TypeError, match=rf"{method}\(\) takes no batch_size: .*fixed when the network is "
                                        rf"compiled \(this one: 8\); compile again with batch_size=32"):
        getattr(model, method)(*args, batch_size=32)
    assert model.step == 0


def test_softmax_output_with_cross_entropy_warns_once_with_the_reason():
    model = fn.Sequential([fn.Dense(3), fn.Softmax()]).compile((4,), 8)
    x, y = data()
    with pytest.warns(UserWarning, match="ends in Softmax and the loss is cross_entropy.*softmax is applied "
                                         "twice") as caught:
        model.fit(x, y, epochs=1, verbose=0)
    assert caught[0].filename == __file__        # points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.train_step(x, y)                   # once per model
        model.predict(x)
        fresh = fn.Sequential([fn.Dense(3), fn.Softmax()]).compile((4,), 8, loss="mse")
        fresh.fit(x, np.eye(3)[y], epochs=1, verbose=0)      # another loss: fine
        fn.Sequential([fn.Dense(3)]).compile((4,), 8).fit(x, y, epochs=1, verbose=0)
    with pytest.warns(UserWarning, match="softmax is applied twice"):
        fn.Sequential([fn.Dense(3), fn.Softmax()]).compile((4,), 8).train_step(x, y)


def test_predict_proba_is_the_softmax_of_the_logits():
    model = fn.Sequential([fn.Dense(3)]).compile((4,), 4, dtype="float64")
    x, _ = data(n=9)
    x[0] *= 1000                                  # large logits: no overflow
    logits = model.predict(x)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    proba = model.predict_proba(x)
    assert proba.dtype == np.float64 and proba.shape == (9, 3)
    np.testing.assert_allclose(proba, shifted / shifted.sum(axis=1, keepdims=True), rtol=1e-12)
    assert np.all(np.isfinite(proba))
    with pytest.raises(fn.ShapeError):
        model.predict_proba(np.zeros((2, 5)))


def test_predict_proba_needs_logits_of_a_cross_entropy_model():
    x, y = data()
    with pytest.raises(fn.FastnetError, match="loss='cross_entropy'; this one's loss is 'mse'"):
        fn.Sequential([fn.Dense(3)]).compile((4,), 8, loss="mse").predict_proba(x)
    with pytest.raises(fn.FastnetError, match="already ends in Softmax"):
        fn.Sequential([fn.Dense(3), fn.Softmax()]).compile((4,), 8).predict_proba(x)
