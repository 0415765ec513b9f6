"""Normalize: y = (x - mean) / std, one value or one per channel (axis 1), as torchvision's
Normalize. Gradient checks, PyTorch parity (the same arithmetic written in torch) and CPU-vs-CUDA
agreement; the spec, checkpoint and ONNX round trips; bad arguments."""

import numpy as np
import pytest
from cuda_helpers import CUDA_WARNINGS
from gradcheck import check_gradients
from harness import build, check_layer, grid

import fastnet as fn

pytestmark = CUDA_WARNINGS


def torch_normalize(nn, mean, std, channels_shape):
    """torchvision's Normalize written out: (x - mean) / std with mean, std broadcast over axis 1."""
    import torch

    class Normalize(nn.Module):
        def __init__(self):
            super().__init__()
            self.mean, self.std = (torch.tensor(np.atleast_1d(v), dtype=torch.float64).reshape(
                channels_shape if np.size(v) > 1 else (1,)) for v in (mean, std))

        def forward(self, x):
            return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    return Normalize()


# (mean, std, per-sample input shape, broadcast shape for torch)
CASES = [
    (0.5, 2.0, (3,), (1,)),                                 # one value for a flat input
    ([0.1, -0.2, 0.3], [0.5, 2.0, 4.0], (3,), (1, 3)),      # one per feature
    ([0.4, -1.0], [0.25, 3.0], (2, 3, 2), (1, 2, 1, 1)),    # one per channel of an image
    ([0.4, -1.0], 0.5, (2, 2, 3), (1, 2, 1, 1)),            # per-channel mean, one std
]
IDS = ["scalar-flat", "per-feature", "per-channel-image", "mixed"]


@pytest.mark.parametrize("case, device, dtype", grid(CASES, cuda=range(4), ids=IDS))
def test_normalize_alone(case, device, dtype):
    # Alone: the input gradient is dy / std (checked by central differences in float64).
    mean, std, shape, bshape = case
    check_layer(lambda: fn.Normalize(mean, std), shape, 2, device=device, dtype=dtype,
                torch_net=lambda nn: [torch_normalize(nn, mean, std, bshape)])


@pytest.mark.parametrize("case, device, dtype", grid(CASES[2:3], cuda=[0], ids=IDS[2:3]))
def test_normalize_first_then_a_convolution(case, device, dtype):
    # As `fastnet train` builds it: Normalize first, a layer with parameters after it.
    mean, std, shape, bshape = case
    report = check_layer(lambda: [fn.Normalize(mean, std), fn.Conv2D(3, 2), fn.Flatten(), fn.Dense(2)],
                         shape, 3, device=device, dtype=dtype,
                         torch_net=lambda nn: [torch_normalize(nn, mean, std, bshape), nn.Conv2d(2, 3, 2),
                                               nn.Flatten(), nn.Linear(3 * 1 * 2, 2)])
    assert report["checked"] == (4 if dtype == "float64" else None)


def test_normalize_between_layers_backpropagates_dy_over_std():
    # Between two Dense layers its backward is on the training path: the first Dense's gradients
    # flow through it.
    report = check_layer(lambda: [fn.Dense(4), fn.Normalize([1.0, -2.0, 0.5, 3.0], [0.5, 2.0, 1.5, 4.0]),
                                  fn.Dense(2)], (3,), 2,
                         torch_net=lambda nn: [nn.Linear(3, 4),
                                               torch_normalize(nn, [1.0, -2.0, 0.5, 3.0], [0.5, 2.0, 1.5, 4.0],
                                                               (1, 4)), nn.Linear(4, 2)])
    assert report["checked"] == 4


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_a_wrong_normalize_gradient_is_caught(device):
    """The gradient check must see a backward that forgets the 1 / std."""
    class Broken(fn.Normalize):
        def backward(self, k, slot, xs, y, dy, dxs):
            k.copy_forward(dy.reshape(-1), dxs[0].reshape(-1))

    model = build(lambda: Broken(0.0, 3.0), (3,), 2, device=device)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        check_gradients(model, x, y, directions=1 if device == "cuda" else None)


def test_float32_is_normalised_in_float32():
    model = fn.Sequential([fn.Normalize(0.1, 0.3)]).compile((4,), 2, loss="mse")
    x = np.random.default_rng(0).random((2, 4), dtype=np.float32)
    expected = (x - np.float32(0.1)) / np.float32(0.3)
    np.testing.assert_array_equal(model.predict(x), expected)


def test_spec_toml_and_checkpoint_round_trip(tmp_path):
    net = fn.Sequential([fn.Normalize([0.5, 0.25], [2.0, 4.0]), fn.Conv2D(2, 3, padding=1), fn.Flatten(),
                         fn.Dense(3)])
    spec = fn.to_spec(net)
    assert spec["layers"][0] == {"type": "normalize", "mean": [0.5, 0.25], "std": [2.0, 4.0]}
    toml = tmp_path / "net.toml"
    toml.write_text('input_shape = [2, 4, 4]\n[[layers]]\ntype = "normalize"\nmean = [0.5, 0.25]\n'
                    'std = [2.0, 4.0]\n[[layers]]\ntype = "conv2d"\nout_channels = 2\nkernel_size = 3\n'
                    'padding = 1\n[[layers]]\ntype = "flatten"\n[[layers]]\ntype = "dense"\nout_features = 3\n')
    assert fn.to_spec(fn.from_spec(toml))["layers"] == spec["layers"]
    model = net.compile((2, 4, 4), 4)
    assert list(model.state_dict()) == ["1.weight", "1.bias", "3.weight", "3.bias"]   # no buffers
    x = np.random.default_rng(0).random((5, 2, 4, 4), dtype=np.float32) * 255
    model.save(tmp_path / "model.safetensors")
    loaded = fn.load(tmp_path / "model.safetensors")
    assert isinstance(loaded.network.layers[0], fn.Normalize)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_onnx_export_is_sub_and_div(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    for mean, std, shape in (([0.5, 0.25], [2.0, 4.0], (2, 4, 4)), (0.3, 0.7, (2, 4, 4)), ([0.1, 0.2, 0.3], 2.0, (3,))):
        layers = [fn.Normalize(mean, std)] + ([fn.Conv2D(2, 3)] if len(shape) == 3 else []) + [fn.Flatten(),
                                                                                                fn.Dense(3)]
        model = fn.Sequential(layers).compile(shape, 4)
        path = model.export_onnx(tmp_path / "model.onnx")
        ops = [node.op_type for node in onnx.load(path).graph.node]
        assert ops[:2] == ["Sub", "Div"], ops
        x = np.random.default_rng(0).random((3, *shape), dtype=np.float32)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(session.run(["logits"], {"input": x})[0], model.predict(x),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"mean": 0.0, "std": 0.0}, "std must be finite and > 0"),
    ({"mean": 0.0, "std": [1.0, -1.0]}, "std must be finite and > 0"),
    ({"mean": float("nan"), "std": 1.0}, "mean must be finite"),
    ({"mean": "0.5", "std": 1.0}, "mean must be a number or a non-empty sequence"),
    ({"mean": [], "std": 1.0}, "mean must be a number or a non-empty sequence"),
])
def test_bad_arguments_are_shape_errors(kwargs, message):
    with pytest.raises(fn.ShapeError, match=message):
        fn.Normalize(**kwargs)


def test_a_channel_count_that_does_not_match_is_a_shape_error():
    with pytest.raises(fn.ShapeError, match=r"mean has 3 values, the input \(2, 4, 4\) has 2 channels"):
        fn.Sequential([fn.Normalize([0.1, 0.2, 0.3], 1.0)]).compile((2, 4, 4), 2)


def test_normalize_in_front_changes_nothing_else():
    """The same seed gives the rest of the network the same initialisation (Normalize draws no
    seed), and training on raw images with Normalize first is bit for bit training on images
    standardised beforehand, as `fastnet train` did before the layer existed."""
    rng = np.random.default_rng(0)
    x = rng.random((64, 1, 12, 12), dtype=np.float32)
    y = rng.integers(0, 4, 64)
    mean, std = float(x.mean()), float(x.std())
    bare = fn.models.lenet5(classes=4).compile((1, 12, 12), 16, optimizer=fn.Adam(lr=1e-3), seed=3)
    front = fn.Sequential([fn.Normalize(mean, std), *fn.models.lenet5(classes=4).layers]).compile(
        (1, 12, 12), 16, optimizer=fn.Adam(lr=1e-3), seed=3, conv_algorithm=bare.algorithms and {
            str(int(k) + 1): v for k, v in bare.algorithms.items()})
    for a, b in zip(bare.state_dict().values(), front.state_dict().values()):
        np.testing.assert_array_equal(a, b)
    bare.fit((x - np.float32(mean)) / np.float32(std), y, epochs=2, verbose=0)
    front.fit(x, y, epochs=2, verbose=0)
    for a, b in zip(bare.state_dict().values(), front.state_dict().values()):
        np.testing.assert_array_equal(a, b)
