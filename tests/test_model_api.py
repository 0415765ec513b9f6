"""The compiled model's contract: shapes checked at compile, inputs checked before anything runs,
no allocation in a training step, state dicts, chunked forward, divergence."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnet as fn


def small_mlp(batch=8, **kw):
    kw.setdefault("optimizer", fn.SGD(lr=0.1, momentum=0.9))
    return fn.Sequential([fn.Flatten(), fn.Dense(16), fn.ReLU(), fn.Dense(4)]).compile((2, 3, 3), batch, **kw)


def data(n, seed=0, classes=4):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2, 3, 3)).astype(np.float32), rng.integers(0, classes, n)


# -- compile ------------------------------------------------------------------------------

def test_shape_error_names_the_layer_and_both_shapes():
    net = fn.Sequential([fn.Dense(10), fn.ReLU(), fn.Dense(3, name="head")])
    with pytest.raises(fn.ShapeError, match=r"layer 0 \(Dense\).*Flatten.*\(1, 28, 28\)"):
        net.compile((1, 28, 28), 4)
    with pytest.raises(fn.ShapeError, match=r"MaxPool2D.*does not fit.*2x2"):
        fn.Sequential([fn.MaxPool2D(3)]).compile((1, 2, 2), 4)


def test_compile_rejects_bad_arguments():
    net = fn.Sequential([fn.Dense(3)])
    with pytest.raises(fn.ShapeError, match="batch_size"):
        net.compile((4,), 0)
    with pytest.raises(fn.ShapeError, match="input_shape"):
        net.compile((4, 0), 2)
    with pytest.raises(ValueError, match="unknown loss"):
        net.compile((4,), 2, loss="hinge")
    with pytest.raises(fn.ShapeError, match="cross_entropy"):
        fn.Sequential([fn.Dense(1)]).compile((4,), 2, loss="cross_entropy")
    with pytest.raises(fn.FastnetError, match="unknown device"):
        net.compile((4,), 2, device="tpu")
    with pytest.raises(fn.ShapeError, match="appears twice"):
        layer = fn.Dense(4)
        fn.Sequential([layer, fn.ReLU(), layer]).compile((4,), 2)
    with pytest.raises(fn.ShapeError, match="unique"):
        fn.Sequential([fn.Dense(4, name="a"), fn.Dense(4, name="a")]).compile((4,), 2)


def test_parameter_names_follow_torch_sequential_and_name_overrides():
    model = fn.Sequential([fn.Flatten(), fn.Dense(5, name="hidden"), fn.ReLU(), fn.Dense(2, bias=False)]
                          ).compile((3,), 2)
    assert list(model.parameters()) == ["hidden.weight", "hidden.bias", "3.weight"]
    assert model.parameters()["hidden.weight"].shape == (5, 3)


def test_same_seed_same_initialisation_and_pytorch_bounds():
    a, b, c = small_mlp(seed=3), small_mlp(seed=3), small_mlp(seed=4)
    for name, value in a.parameters().items():
        np.testing.assert_array_equal(value, b.parameters()[name])
    assert not np.array_equal(a.parameters()["1.weight"], c.parameters()["1.weight"])
    w = a.parameters()["1.weight"]
    bound = 1 / np.sqrt(18)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound


def test_one_network_compiles_into_independent_models():
    net = fn.Sequential([fn.Dense(3)])
    a, b = net.compile((2,), 2, seed=0), net.compile((2,), 2, seed=0)
    a.train_step(np.ones((2, 2)), np.array([0, 1]))
    assert not np.array_equal(a.parameters()["0.weight"], b.parameters()["0.weight"])


# -- the step allocates nothing ------------------------------------------------------------

CHAIN = """
    model = fn.Sequential([fn.Conv2D(4, 3, padding=1), fn.BatchNorm2D(), fn.ReLU(), fn.MaxPool2D(2),
                           fn.Conv2D(6, 3, bias=False), fn.Flatten(), fn.Dense(64), fn.ReLU(),
                           fn.Dropout(0.2), fn.Dense(32), fn.Tanh(), fn.Dense(10)]
                          ).compile((1, 8, 8), 128, optimizer=fn.Adam())
"""
GRAPH = """
    x = fn.Input((1, 8, 8))
    h = fn.ReLU()(fn.BatchNorm2D()(fn.Conv2D(4, 3, padding=1)(x)))
    h = fn.ReLU()(fn.Add()(fn.Conv2D(4, 3, padding=1)(h), h, fn.Conv2D(4, 1)(x)))
    a, b = fn.Slice([1, 3])(h)
    h = fn.Concat()(fn.Conv2D(2, 1)(b), a, x)
    model = fn.Graph(x, fn.Dense(10)(fn.Flatten()(fn.MaxPool2D(2)(h)))).compile(
        batch_size=128, optimizer=fn.Adam())
"""


@pytest.mark.parametrize("network", [CHAIN, GRAPH], ids=["chain", "graph"])
def test_train_step_allocates_no_arrays(network):
    """NumPy allocations are traced by tracemalloc; Numba's are counted by its runtime stats,
    where each array argument costs one small record when unboxed. A kernel that allocated a
    buffer would add more records than the arrays it was handed."""
    script = textwrap.dedent("""
        import functools, tracemalloc, numpy as np, fastnet as fn
        from numba.core.runtime import rtsys
""") + textwrap.dedent(network) + textwrap.dedent("""
        x = np.random.rand(128, 1, 8, 8).astype(np.float32); y = np.arange(128) % 10
        model.train_step(x, y)
        arrays, real = [0], model.k
        class Counting:
            def __getattr__(self, name):
                kernel = getattr(real, name)
                @functools.wraps(kernel)     # layers read a kernel's workspace parameter names
                def call(*args, **workspaces):
                    arrays[0] += sum(isinstance(a, np.ndarray) for a in (*args, *workspaces.values()))
                    return kernel(*args, **workspaces)
                return call
        model.k = Counting()
        before = rtsys.get_allocation_stats().alloc
        tracemalloc.start()
        model.train_step(x, y)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        numba_allocs = rtsys.get_allocation_stats().alloc - before
        print(arrays[0], numba_allocs, peak)
    """)
    env = dict(os.environ, NUMBA_NRT_STATS="1")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    arrays, numba_allocs, peak = map(int, out.stdout.split())
    assert arrays > 20
    assert numba_allocs == arrays
    smallest_buffer = 128 * 10 * 4  # the logits: any batch-sized array would exceed it
    assert peak < smallest_buffer, f"a training step traced {peak} bytes of Python allocations"


# -- inputs are checked before anything runs -----------------------------------------------

def test_backward_skips_the_gradients_nothing_needs():
    # mlp: Flatten, Dense, ReLU, Dense, ReLU, Dense. Nothing needs the gradient of Flatten's output
    # (no parameters before it), so the first Dense computes no input gradient and Flatten's
    # backward is not run; asking for the input's gradient brings both back, and it is right.
    model = fn.models.mlp(hidden=(6, 5), input_shape=(1, 3, 3)).compile(batch_size=4, dtype="float64")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 1, 3, 3)), np.array([0, 3, 9, 2])
    calls, real = [], model.k

    class Recording:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(real, name)

    model.k = Recording()
    model.gradients(x, y)
    assert calls.count("dense_backward_input") == 2 and calls.count("copy_forward") == 1
    calls.clear()
    _, grads = model.gradients(x, y, input_grad=True)
    assert calls.count("dense_backward_input") == 3 and calls.count("copy_forward") == 2
    model.k = real
    eps, x2 = 1e-6, x.copy()
    x2[1, 0, 2, 1] += eps
    up = model.evaluate(x2, y)["loss"]
    x2[1, 0, 2, 1] -= 2 * eps
    down = model.evaluate(x2, y)["loss"]
    assert np.isclose(grads["input"][1, 0, 2, 1], (up - down) / (2 * eps), rtol=1e-5, atol=1e-9)


def test_fit_checks_inputs_before_any_step():
    model = small_mlp()
    before = model.state_dict()
    x, y = data(20)
    bad = [
        (x.reshape(20, -1), y, fn.ShapeError, r"expected shape \(N, 2, 3, 3\).*\(20, 18\)"),
        (x, y[:19], fn.ShapeError, r"\(20,\)"),
        (x, np.where(y == 0, 4, y), fn.DataError, r"labels must be in \[0, 3\]"),
        (x, np.where(y == 0, -1, y), fn.DataError, "out of range"),
        (x, y + 0.5, fn.DataError, "integers"),
        (np.where(x > 1, np.nan, x), y, fn.DataError, "non-finite"),
        (np.where(x > 1, np.inf, x), y, fn.DataError, "non-finite"),
    ]
    for bx, by, error, message in bad:
        with pytest.raises(error, match=message):
            model.fit(bx, by, verbose=0)
    with pytest.raises(fn.DataError, match="validation y"):
        model.fit(x, y, validation_data=(x, y + 10), verbose=0)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
    assert model.step == 0


def test_evaluate_predict_and_train_step_check_inputs():
    model = small_mlp()
    x, y = data(10)
    with pytest.raises(fn.DataError, match="non-finite"):
        model.predict(np.full((2, 2, 3, 3), np.nan))
    with pytest.raises(fn.DataError, match="labels"):
        model.evaluate(x, y + 4)
    with pytest.raises(fn.ShapeError, match="larger than the compiled batch size 8"):
        model.train_step(x, y)
    with pytest.raises(fn.ShapeError):
        model.train_step(x[:4], y[:3])


def test_predict_of_zero_rows_is_empty():
    model = small_mlp()
    out = model.predict(np.zeros((0, 2, 3, 3), np.float32))
    assert out.shape == (0, 4)


def test_float_labels_with_integral_values_are_accepted():
    model = small_mlp()
    x, y = data(8)
    assert model.train_step(x, y.astype(np.float64)) == pytest.approx(
        small_mlp().train_step(x, y), rel=1e-6)


def test_divergence_raises_naming_epoch_and_step_and_keeps_finite_parameters():
    model = small_mlp(optimizer=fn.SGD(lr=1e6))
    x, y = data(64)
    with pytest.raises(fn.DivergenceError, match=r"epoch 1, step \d+"):
        model.fit(x * 100, y, epochs=3, verbose=0)
    assert all(np.all(np.isfinite(p)) for p in model.parameters().values())


# -- batches, chunks and results -------------------------------------------------------------

def test_forward_chunks_through_the_compiled_batch():
    model = small_mlp(batch=4)
    x, _ = data(11)
    out = model.forward(x)
    one_by_one = np.concatenate([model.forward(x[i:i + 1]) for i in range(11)])
    np.testing.assert_allclose(out, one_by_one, rtol=1e-5, atol=1e-6)  # BLAS picks gemv for one row
    np.testing.assert_array_equal(model.predict(x), out)


def test_a_smaller_last_batch_matches_a_model_compiled_for_it():
    x, y = data(5)
    loss8, g8 = small_mlp(batch=8, dtype="float64").gradients(x, y)
    loss5, g5 = small_mlp(batch=5, dtype="float64").gradients(x, y)
    assert loss8 == pytest.approx(loss5, rel=1e-12)
    for name in g5:
        np.testing.assert_allclose(g8[name], g5[name], rtol=1e-12)


def test_fit_learns_a_separable_problem_and_reports_history():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 256)
    x = rng.normal(size=(256, 2, 3, 3)).astype(np.float32) * 0.3
    x[np.arange(256), y % 2, 0, y // 2] += 2.0      # each label lights its own pixel
    model = small_mlp(batch=32, optimizer=fn.Adam(lr=0.01))
    history = model.fit(x, y, epochs=5, validation_data=(x[:64], y[:64]), verbose=0)
    assert history.epoch == [1, 2, 3, 4, 5]
    assert history["loss"][-1] < history["loss"][0]
    assert history["accuracy"][-1] > 0.9
    assert history["val_accuracy"][-1] > 0.9 and history["images_per_sec"][-1] > 0
    result = model.evaluate(x, y)
    assert set(result) == {"loss", "accuracy"} and result["accuracy"] > 0.9


def test_evaluate_matches_forward_and_numpy_cross_entropy():
    model = small_mlp(dtype="float64")
    x, y = data(13)
    logits = model.forward(x)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected = -log_probs[np.arange(13), y].mean()
    result = model.evaluate(x, y)
    assert result["loss"] == pytest.approx(expected, rel=1e-12)
    assert result["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y))


def test_mse_model_evaluates_without_accuracy():
    model = fn.Sequential([fn.Dense(2)]).compile((3,), 4, loss="mse")
    result = model.evaluate(np.ones((5, 3)), np.zeros((5, 2)))
    assert result["accuracy"] is None and result["loss"] > 0
    with pytest.raises(fn.ShapeError, match="mse expects targets"):
        model.evaluate(np.ones((5, 3)), np.zeros(5))


# -- state dicts -----------------------------------------------------------------------------

def test_state_dict_round_trip_and_copies():
    a, b = small_mlp(seed=1), small_mlp(seed=2)
    state = a.state_dict()
    state["1.weight"][...] = 0                         # a copy: the model is untouched
    assert np.any(a.parameters()["1.weight"] != 0)
    b.load_state_dict(a.state_dict())
    x, _ = data(6)
    np.testing.assert_array_equal(a.forward(x), b.forward(x))


def test_load_state_dict_rejects_mismatches_and_changes_nothing():
    model = small_mlp()
    before = model.state_dict()
    good = model.state_dict()
    cases = [
        ({k: v for k, v in good.items() if k != "1.bias"}, "missing: 1.bias"),
        ({**good, "9.weight": np.zeros(3)}, "unexpected: 9.weight"),
        ({**good, "3.weight": np.zeros((4, 15))}, r"3.weight: shape \(4, 15\), the model has \(4, 16\)"),
        ({**good, "3.bias": np.full(4, np.nan)}, "3.bias: not finite"),
    ]
    for state, message in cases:
        with pytest.raises(fn.CheckpointError, match=message):
            model.load_state_dict(state)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
    model.load_state_dict({**good, "1.num_batches_tracked": np.array(3)})   # ignored, as torch's


def test_batchnorm_buffers_are_in_the_state_dict():
    model = fn.Sequential([fn.BatchNorm1D(name="bn"), fn.Dense(2)]).compile((3,), 4)
    assert list(model.state_dict()) == ["bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                                        "1.weight", "1.bias"]
    np.testing.assert_array_equal(model.state_dict()["bn.running_var"], np.ones(3))
