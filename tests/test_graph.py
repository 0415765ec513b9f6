"""Networks beyond a chain (fastnet.Graph): gradient checks with fan-out, Add, Concat and Slice;
the compile-time errors; names; gradient buffers shared between tensors; specs and checkpoints."""

import numpy as np
import pytest
from gradcheck import check_gradients

import fastnet as fn


def data(shape, n=3, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)), rng.integers(0, classes, n)


def compiled(output, x, batch=3, **kw):
    return fn.Graph(inputs=x, outputs=output).compile(batch_size=batch, dtype="float64", **kw)


# -- gradient checks ----------------------------------------------------------------------------

def test_gradcheck_fan_out_and_add_of_three_inputs():
    # The input is read by four layers and the Tanh output by two: their gradients must sum.
    x = fn.Input((2, 4, 4))
    a = fn.Conv2D(3, 3, padding=1)(x)
    b = fn.Conv2D(3, 1)(x)
    r = fn.Tanh()(x)
    c = fn.Conv2D(3, 1)(r)
    s = fn.Add()(a, b, c)
    t = fn.Add()(fn.Conv2D(2, 1)(s), r, x)
    out = fn.Dense(3)(fn.Flatten()(t))
    model = compiled(out, x)
    assert check_gradients(model, *data((2, 4, 4))) == 10  # every parameter and the input


def test_gradcheck_concat_of_unequal_channel_counts():
    x = fn.Input((3, 4, 4))
    a = fn.Conv2D(2, 3, padding=1)(x)
    b = fn.Conv2D(5, 1)(x)
    cat = fn.Concat(axis=1)(a, fn.Sigmoid()(b), x)          # 2 + 5 + 3 channels
    out = fn.Dense(3)(fn.Flatten()(fn.Conv2D(2, 1)(cat)))
    model = compiled(out, x)
    assert model.plan.nodes[-3].shape == (2, 4, 4) and cat.shape == (10, 4, 4)
    check_gradients(model, *data((3, 4, 4)))


def test_gradcheck_concat_along_another_axis_and_of_flat_features():
    x = fn.Input((2, 3, 4))
    rows = fn.Concat(axis=2)(x, fn.Conv2D(2, (2, 1))(x))      # heights 3 + 2
    assert rows.shape == (2, 5, 4)
    flat = fn.Concat()(fn.Dense(4)(fn.Flatten()(rows)), fn.Flatten()(x))
    out = fn.Dense(3)(fn.Tanh()(flat))
    check_gradients(compiled(out, x), *data((2, 3, 4)))


def test_gradcheck_slice_with_every_section_read_and_one_section_unused():
    x = fn.Input((5, 3, 3))
    first, second, third = fn.Slice([1, 3, 1])(x)
    h = fn.Conv2D(2, 1)(second)
    both = fn.Concat()(h, first)                 # `third` is never read: its gradient is zero
    out = fn.Dense(3)(fn.Flatten()(both))
    model = compiled(out, x)
    check_gradients(model, *data((5, 3, 3)))
    _, grads = model.gradients(*data((5, 3, 3)), input_grad=True)
    assert np.all(grads["input"][:, 4] == 0) and np.any(grads["input"][:, :4] != 0)


def test_gradcheck_one_tensor_read_twice_by_one_layer():
    x = fn.Input((6,))
    h = fn.Dense(4)(x)
    doubled = fn.Add()(h, h)
    cat = fn.Concat()(doubled, doubled, fn.ReLU()(h))
    out = fn.Dense(3)(cat)
    check_gradients(compiled(out, x), *data((6,)))


def test_gradcheck_residual_blocks_with_batchnorm():
    x = fn.Input((2, 6, 6))
    h = fn.Conv2D(4, 3, padding=1, bias=False)(x)
    h = fn.ReLU()(fn.BatchNorm2D()(h))
    for _ in range(2):
        branch = fn.BatchNorm2D()(fn.Conv2D(4, 3, padding=1, bias=False)(h))
        h = fn.ReLU()(fn.Add()(branch, h))
    out = fn.Dense(3)(fn.GlobalAvgPool2D()(h))
    check_gradients(compiled(out, x, batch=4), *data((2, 6, 6), n=4))


def test_resnet8_gradients_match_central_differences_on_a_few_entries():
    """The full model is too large for a check of every entry: sample some of each gradient."""
    model = fn.models.resnet8(widths=(2, 3, 4), input_shape=(1, 8, 8)).compile(
        batch_size=3, dtype="float64")
    x, y = data((1, 8, 8), n=3, classes=10)
    _, grads = model.gradients(x, y, input_grad=True)
    rng = np.random.default_rng(1)
    arrays = dict(model.parameters(), input=x)
    for name, array in arrays.items():
        flat = array.reshape(-1)
        for i in rng.choice(flat.size, size=min(3, flat.size), replace=False):
            saved = flat[i]
            flat[i] = saved + 1e-6
            plus = model.gradients(x, y)[0]
            flat[i] = saved - 1e-6
            minus = model.gradients(x, y)[0]
            flat[i] = saved
            np.testing.assert_allclose(grads[name].reshape(-1)[i], (plus - minus) / 2e-6,
                                       rtol=1e-4, atol=1e-8, err_msg=f"{name}[{i}]")


# -- a chain is the same network either way -------------------------------------------------

def test_a_chain_built_as_a_graph_equals_the_sequential():
    layers = lambda: [fn.Conv2D(3, 3), fn.ReLU(), fn.MaxPool2D(2), fn.Flatten(), fn.Dense(4)]  # noqa: E731
    seq = fn.Sequential(layers()).compile((2, 6, 6), batch_size=4, seed=5, dtype="float64",
                                          optimizer=fn.SGD(0.1, momentum=0.9))
    x = fn.Input((2, 6, 6))
    h = x
    for layer in layers():
        h = layer(h)
    graph = compiled(h, x, batch=4, seed=5, optimizer=fn.SGD(0.1, momentum=0.9))
    assert list(graph.parameters()) == ["conv2d_1.weight", "conv2d_1.bias", "dense_1.weight", "dense_1.bias"]
    xs, ys = data((2, 6, 6), n=4, classes=4)
    for _ in range(3):
        assert graph.train_step(xs, ys) == seq.train_step(xs, ys)
    for ours, theirs in zip(graph.parameters().values(), seq.parameters().values()):
        np.testing.assert_array_equal(ours, theirs)


# -- names --------------------------------------------------------------------------------------

def test_default_names_count_per_type_and_skip_names_taken():
    x = fn.Input((4,))
    h = fn.Dense(4, name="dense_1")(x)
    h = fn.Dense(4)(h)
    h = fn.Add()(fn.Dense(4)(h), h)
    graph = fn.Graph(x, h)
    assert [layer.name for layer in graph.layers] == ["dense_1", "dense_2", "dense_3", "add_1"]


def test_bad_names_are_refused():
    with pytest.raises(fn.ShapeError, match="name"):
        fn.Dense(3, name="a:b")
    with pytest.raises(fn.ShapeError, match="name"):
        fn.Input((3,), name="")
    x = fn.Input((4,))
    out = fn.Add()(fn.Dense(2, name="same")(x), fn.Dense(2, name="same")(x))
    with pytest.raises(fn.ShapeError, match="unique.*same"):
        compiled(out, x)


# -- compile-time errors --------------------------------------------------------------------

def test_add_and_concat_shape_mismatches_name_the_nodes():
    x = fn.Input((3, 8, 8))
    a = fn.Conv2D(4, 3, padding=1, name="wide")(x)
    b = fn.Conv2D(5, 3, padding=1, name="wider")(x)
    with pytest.raises(fn.ShapeError, match=r"sum.*one shape.*wide \(4, 8, 8\).*wider \(5, 8, 8\)"):
        fn.Add(name="sum")(a, b)
    c = fn.Conv2D(4, 3, name="smaller")(x)
    with pytest.raises(fn.ShapeError, match=r"join.*every axis but 1.*wide \(4, 8, 8\).*smaller \(4, 6, 6\)"):
        fn.Concat(name="join")(a, c)
    with pytest.raises(fn.ShapeError, match="axis 4 does not exist"):
        fn.Concat(axis=4)(a, a)
    with pytest.raises(fn.ShapeError, match=r"sections \[1, 2\] add up to 3.*4"):
        fn.Slice([1, 2])(a)


def test_unused_inputs_and_unreachable_outputs_are_refused():
    x, other = fn.Input((4,), name="x"), fn.Input((4,), name="other")
    from_other = fn.Dense(2)(other)
    with pytest.raises(fn.ShapeError, match="input x is unused"):
        fn.Graph(inputs=x, outputs=from_other)
    mixed = fn.Add()(fn.Dense(2)(x), from_other)
    with pytest.raises(fn.ShapeError, match="reads the input other.*unreachable"):
        fn.Graph(inputs=x, outputs=mixed)
    with pytest.raises(fn.ShapeError, match="no layers"):
        fn.Graph(inputs=x, outputs=x)
    with pytest.raises(fn.ShapeError, match="one input and one output"):
        fn.Graph(inputs=[x, other], outputs=mixed)
    with pytest.raises(fn.ShapeError, match="must be fastnet.Input"):
        fn.Graph(inputs=from_other, outputs=fn.Dense(2)(from_other))


def test_misused_layers_are_refused():
    x = fn.Input((4,))
    shared = fn.Dense(4)
    twice = shared(shared(x))
    with pytest.raises(fn.ShapeError, match="appears twice"):
        fn.Graph(x, twice)
    with pytest.raises(fn.ShapeError, match="takes 1 input"):
        fn.Dense(3)(x, x)
    with pytest.raises(TypeError, match="graph nodes"):
        fn.Dense(3)(np.zeros(4))
    with pytest.raises(fn.ShapeError, match="outputs: use it in a fastnet.Graph"):
        fn.Sequential([fn.Slice([2, 2])])
    with pytest.raises(fn.ShapeError, match="Input has shape"):
        fn.Graph(x, fn.Dense(2)(x)).compile((5,), batch_size=2)


# -- shared gradient buffers --------------------------------------------------------------------

def test_gradient_buffers_are_shared_and_the_saving_reported():
    model = fn.models.resnet8().compile(batch_size=16)
    memory = model.plan.memory
    assert memory["gradients"] < memory["gradients_unshared"] / 3
    assert "gradients" in model.summary() and "unshared" in model.summary()
    # No two tensors whose gradients are live at once share memory: checked where it matters,
    # by every gradient check above; here, that each tensor's gradient is a view of one block.
    assert all(g.base is not None for g in model.plan.grads)


# -- specs and checkpoints ------------------------------------------------------------------

def small_graph():
    x = fn.Input((3, 6, 6), name="image")
    h = fn.ReLU()(fn.BatchNorm2D()(fn.Conv2D(4, 3, padding=1, name="conv1")(x)))
    a, b = fn.Slice([1, 3], name="split")(h)
    cat = fn.Concat()(fn.Conv2D(2, 1)(b), a, fn.Add()(h, fn.Conv2D(4, 1)(x)))
    return fn.Graph(inputs=x, outputs=fn.Dense(5, name="fc")(fn.Flatten()(fn.MaxPool2D(2)(cat))))


def test_graph_spec_round_trip_gives_the_same_network():
    graph = small_graph()
    spec = fn.to_spec(graph)
    assert spec["input"] == "image" and spec["output"] == "fc"
    assert {"type": "add", "name": "add_1", "inputs": ["relu_1", "conv2d_2"]} in spec["layers"]
    rebuilt = fn.from_spec(spec)
    assert isinstance(rebuilt, fn.Graph) and fn.to_spec(rebuilt) == spec
    x, _ = data((3, 6, 6), n=4)
    a, b = graph.compile(batch_size=4, seed=2), rebuilt.compile(batch_size=4, seed=2)
    np.testing.assert_array_equal(a.predict(x), b.predict(x))


def test_a_graph_spec_file_in_any_order_with_defaults(tmp_path):
    path = tmp_path / "residual.toml"
    path.write_text("""
input_shape = [2, 5, 5]
output = "head"

[[layers]]
type = "dense"
name = "head"
out_features = 3
inputs = ["flatten_1"]

[[layers]]
type = "conv2d"
name = "branch"
out_channels = 2
kernel_size = 3
padding = 1
inputs = ["input"]

[[layers]]
type = "add"
name = "sum"
inputs = ["input", "branch"]

[[layers]]
type = "flatten"   # no inputs: reads the entry before it, "sum"
""")
    graph = fn.from_spec(path)
    assert [layer.name for layer in graph.layers] == ["branch", "sum", "flatten_1", "head"]
    check_gradients(graph.compile(batch_size=2, dtype="float64"), *data((2, 5, 5), n=2))


@pytest.mark.parametrize("layers, extra, message", [
    ([{"type": "dense", "name": "a", "out_features": 3, "inputs": ["b"]},
      {"type": "dense", "name": "b", "out_features": 4, "inputs": ["a"]}], {}, "cycle: a -> b -> a"),
    ([{"type": "dense", "name": "a", "out_features": 3, "inputs": ["nowhere"]}], {},
     "reads 'nowhere', which is neither"),
    ([{"type": "dense", "name": "a", "out_features": 3},
      {"type": "dense", "name": "b", "out_features": 4, "inputs": ["input"]}], {},
     "nothing reads the output of a"),
    ([{"type": "dense", "name": "a", "out_features": 3},
      {"type": "dense", "name": "b", "out_features": 4},
      {"type": "add", "inputs": ["a", "b"]}], {}, r"one shape.*a \(3,\).*b \(4,\)"),
    ([{"type": "dense", "name": "a", "out_features": 3}], {"output": "zz"}, "output 'zz'"),
    ([{"type": "dense", "name": "a", "out_features": 3},
      {"type": "dense", "name": "a", "out_features": 3, "inputs": ["a"]}], {}, "unique"),
    ([{"type": "slice", "name": "s", "sections": [2, 2]},
      {"type": "dense", "out_features": 3, "inputs": ["s"]}], {}, "reads 's', which is neither"),
    ([{"type": "slice", "name": "s", "sections": [2, 2]},
      {"type": "dense", "out_features": 3}], {}, "2 outputs"),
    ([{"type": "dense", "out_features": 3, "inputs": 7}], {}, "inputs must be"),
])
def test_bad_graph_specs_are_spec_errors(layers, extra, message):
    with pytest.raises(fn.SpecError, match=message):
        fn.from_spec({"input_shape": [4], "layers": layers, **extra})


def test_a_graph_model_saves_loads_and_resumes(tmp_path):
    x, y = data((3, 6, 6), n=20, classes=5)
    straight = small_graph().compile(batch_size=8, optimizer=fn.Adam(0.01), seed=1)
    straight.fit(x, y, epochs=2, verbose=0)
    first = small_graph().compile(batch_size=8, optimizer=fn.Adam(0.01), seed=1)
    first.fit(x, y, epochs=1, verbose=0)
    first.save(tmp_path / "graph.safetensors")
    resumed = fn.load(tmp_path / "graph.safetensors")
    assert isinstance(resumed.network, fn.Graph)
    assert list(resumed.state_dict()) == list(first.state_dict())
    np.testing.assert_array_equal(resumed.predict(x), first.predict(x))
    resumed.fit(x, y, epochs=2, initial_epoch=1, verbose=0)
    for name, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name], value, err_msg=name)
