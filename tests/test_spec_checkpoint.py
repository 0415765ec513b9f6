"""Network spec files and safetensors checkpoints: round trips, resuming, and every bad file."""

import os

import numpy as np
import pytest

import fastnet as fn

SPEC_TOML = """
input_shape = [2, 9, 8]

[[layers]]
type = "conv2d"
out_channels = 4
kernel_size = [3, 2]
padding = 1
name = "conv1"

[[layers]]
type = "BatchNorm2D"

[[layers]]
type = "leaky_relu"
negative_slope = 0.2

[[layers]]
type = "maxpool2d"
kernel_size = 2

[[layers]]
type = "flatten"

[[layers]]
type = "dropout"
p = 0.25

[[layers]]
type = "dense"
out_features = 3
"""


def every_layer_network():
    return fn.Sequential([
        fn.Conv2D(3, (2, 3), stride=(1, 2), padding=(1, 0), bias=False, name="c"), fn.BatchNorm2D(eps=1e-3),
        fn.ReLU(), fn.AvgPool2D(2, stride=1), fn.MaxPool2D((2, 1)), fn.Sigmoid(), fn.Flatten(),
        fn.Dense(5), fn.BatchNorm1D(momentum=0.2), fn.Tanh(), fn.Dropout(0.1), fn.LeakyReLU(0.3),
        fn.Dense(4), fn.Softmax()], input_shape=(2, 7, 9))


def test_a_spec_file_builds_the_network(tmp_path):
    path = tmp_path / "net.toml"
    path.write_text(SPEC_TOML)
    net = fn.from_spec(path)
    assert net.input_shape == (2, 9, 8)
    assert [type(layer).__name__ for layer in net.layers] == [
        "Conv2D", "BatchNorm2D", "LeakyReLU", "MaxPool2D", "Flatten", "Dropout", "Dense"]
    model = net.compile(batch_size=4)
    assert list(model.parameters()) == ["conv1.weight", "conv1.bias", "1.weight", "1.bias",
                                        "6.weight", "6.bias"]
    assert model.parameters()["conv1.weight"].shape == (4, 2, 3, 2)


class Scale(fn.Layer):
    """A user's own layer, defined outside fastnet: y = factor * x."""

    def __init__(self, factor=2.0, name=None):
        super().__init__(name)
        self.factor = float(factor)

    def output_shape(self, input_shapes):
        return tuple(input_shapes[0])

    def forward(self, k, slot, xs, y, train):
        y[...] = self.factor * xs[0]

    def backward(self, k, slot, xs, y, dy, dxs):
        if dxs[0] is not None:
            dxs[0][...] = self.factor * dy


def test_every_layer_class_registers_itself_for_spec_files_a_users_own_too(tmp_path):
    assert fn.Layer.types["conv2d"] is fn.Conv2D and fn.Layer.types["scale"] is Scale
    assert not any(name.startswith("_") for name in fn.Layer.types)     # _Pool2D and the like
    net = fn.Sequential([fn.Flatten(), Scale(3.0), fn.Dense(2)], input_shape=(1, 2, 2))
    spec = fn.to_spec(net)
    assert spec["layers"][1] == {"type": "scale", "factor": 3.0}
    model = net.compile(batch_size=2, seed=0)
    model.save(tmp_path / "m.safetensors")
    loaded = fn.load(tmp_path / "m.safetensors")
    x = np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2)
    assert isinstance(loaded.network.layers[1], Scale) and loaded.network.layers[1].factor == 3.0
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_to_spec_and_back_gives_the_same_network_for_every_layer_type():
    net = every_layer_network()
    spec = fn.to_spec(net)
    assert fn.to_spec(fn.from_spec(spec)) == spec
    a = net.compile(batch_size=3, loss="mse", seed=1)
    b = fn.from_spec(spec).compile(batch_size=3, loss="mse", seed=1)
    for (name, x), (other, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert name == other
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("spec, message", [
    ({"layers": [{"type": "conv3d", "out_channels": 2}]}, "unknown type 'conv3d'"),
    ({"layers": [{"type": "dense"}]}, "layer 0 \\(dense\\).*out_features"),
    ({"layers": [{"type": "dense", "out_features": 2, "colour": "red"}]}, "colour"),
    ({"layers": [{"type": "conv2d", "out_channels": 2, "kernel_size": 0}]}, "kernel_size must be >= 1"),
    ({"layers": [{"out_features": 2}]}, "needs a type"),
    ({"layers": []}, "non-empty list"),
    ({"input_shape": [1, -28], "layers": [{"type": "relu"}]}, "input_shape"),
])
def test_bad_specs_are_spec_errors(spec, message):
    with pytest.raises(fn.SpecError, match=message):
        fn.from_spec(spec)


def test_unreadable_spec_files_are_spec_errors(tmp_path):
    with pytest.raises(fn.SpecError, match="cannot read"):
        fn.from_spec(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[[layers]\ntype = ")
    with pytest.raises(fn.SpecError, match="not valid TOML"):
        fn.from_spec(broken)


# -- checkpoints ------------------------------------------------------------------------------

def data(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2, 9, 8)).astype(np.float32), rng.integers(0, 3, n)


def trained_model(optimizer=None, epochs=1):
    model = fn.from_spec(_spec_dict()).compile(batch_size=8, optimizer=optimizer or fn.Adam(lr=0.01), seed=2)
    x, y = data(20)
    model.fit(x, y, epochs=epochs, verbose=0)
    return model


def _spec_dict():
    import tomllib
    return tomllib.loads(SPEC_TOML)


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        np.testing.assert_array_equal(sa[name], sb[name], err_msg=name)


@pytest.mark.parametrize("optimizer", [fn.Adam(lr=0.01), fn.SGD(lr=0.05, momentum=0.9, nesterov=True),
                                       fn.AdamW(lr=0.01, weight_decay=0.1)], ids=repr)
def test_save_and_load_restore_everything_needed_to_continue(tmp_path, optimizer):
    model = trained_model(optimizer)
    path = tmp_path / "model.safetensors"
    model.save(path)
    loaded = fn.load(path)
    assert_same_state(model, loaded)
    assert (loaded.step, loaded.epoch) == (model.step, model.epoch) == (3, 1)
    assert repr(loaded.optimizer) == repr(model.optimizer)
    for name, buffer in model.opt_state.items():
        np.testing.assert_array_equal(loaded.opt_state[name], buffer)
    x, y = data(8, seed=5)
    assert [model.train_step(x, y) for _ in range(2)] == [loaded.train_step(x, y) for _ in range(2)]
    assert_same_state(model, loaded)


def test_two_epochs_straight_equal_one_epoch_saved_loaded_and_one_more(tmp_path):
    x, y = data(20)
    straight = fn.from_spec(_spec_dict()).compile(batch_size=8, optimizer=fn.Adam(lr=0.01), seed=2)
    straight.fit(x, y, epochs=2, verbose=0)
    first = fn.from_spec(_spec_dict()).compile(batch_size=8, optimizer=fn.Adam(lr=0.01), seed=2)
    first.fit(x, y, epochs=1, verbose=0)       # shuffling and dropout masks must carry over
    first.save(tmp_path / "epoch1.safetensors")
    resumed = fn.load(tmp_path / "epoch1.safetensors")
    resumed.fit(x, y, epochs=1, verbose=0)
    assert_same_state(straight, resumed)


def test_a_checkpoint_loads_into_pytorch():
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file
    model = fn.Sequential([fn.Flatten(), fn.Dense(5), fn.ReLU(), fn.Dense(3)]).compile((2, 3), 4, seed=0)
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.safetensors")
        model.save(path)
        tensors = load_file(path)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    net.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("optimizer.")})
    x = np.random.default_rng(0).normal(size=(4, 2, 3)).astype(np.float32)
    np.testing.assert_allclose(net(torch.from_numpy(x)).detach().numpy(), model.forward(x), rtol=1e-5, atol=1e-6)


def test_bad_checkpoint_files_are_checkpoint_errors(tmp_path):
    model = trained_model()
    good = tmp_path / "good.safetensors"
    model.save(good)
    data_bytes = good.read_bytes()

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data_bytes[:len(data_bytes) // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    for path in (truncated, garbage, empty):
        with pytest.raises(fn.CheckpointError, match="truncated or corrupt"):
            fn.load(path)
    with pytest.raises(fn.CheckpointError, match="no such checkpoint"):
        fn.load(tmp_path / "absent.safetensors")

    from safetensors.numpy import save_file
    plain = tmp_path / "plain.safetensors"
    save_file({"0.weight": np.zeros((2, 2), np.float32)}, str(plain))
    with pytest.raises(fn.CheckpointError, match="not a fastnet checkpoint"):
        fn.load(plain)

    # A checkpoint whose weights do not fit its own spec (edited by hand, or a bug).
    from safetensors import safe_open
    with safe_open(str(good), framework="numpy") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tensors["6.weight"] = tensors["6.weight"][:, :5].copy()
    mismatched = tmp_path / "mismatched.safetensors"
    save_file(tensors, str(mismatched), metadata=metadata)
    with pytest.raises(fn.CheckpointError, match="6.weight: shape"):
        fn.load(mismatched)
    broken_meta = dict(metadata, spec="{not json")
    save_file(tensors, str(mismatched), metadata=broken_meta)
    with pytest.raises(fn.CheckpointError, match="metadata"):
        fn.load(mismatched)


def test_a_failed_save_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    model = trained_model()
    path = tmp_path / "model.safetensors"
    model.save(path)
    before = path.read_bytes()
    x, y = data(8, seed=9)
    model.train_step(x, y)

    def crash(*args):
        raise OSError("power cut")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(fn.CheckpointError, match="power cut") as caught:
        model.save(path)
    assert isinstance(caught.value.__cause__, OSError)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.safetensors"]
    assert fn.load(path).step == 3
