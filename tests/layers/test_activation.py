"""ReLU, LeakyReLU, Sigmoid, Tanh and Softmax: gradient checks, PyTorch parity and CPU-vs-CUDA
agreement, at ordinary values and at the edges (0, large magnitudes, large logits); a deep MLP
with every activation; and a wrong backward, which the gradient check must catch."""

import numpy as np
import pytest
from cuda_helpers import CUDA_WARNINGS
from gradcheck import check_gradients
from harness import build, check_layer, grid

import fastnet as fn

pytestmark = CUDA_WARNINGS

# (fastnet layer, torch module, id)
ACTIVATIONS = [
    (fn.ReLU, lambda nn: nn.ReLU(), "ReLU()"),
    (lambda: fn.LeakyReLU(0.1), lambda nn: nn.LeakyReLU(0.1), "LeakyReLU(0.1)"),
    (lambda: fn.LeakyReLU(0.5), lambda nn: nn.LeakyReLU(0.5), "LeakyReLU(0.5)"),
    (fn.Sigmoid, lambda nn: nn.Sigmoid(), "Sigmoid()"),
    (fn.Tanh, lambda nn: nn.Tanh(), "Tanh()"),
    (fn.Softmax, lambda nn: nn.Softmax(dim=1), "Softmax()"),
]
IDS = [a[2] for a in ACTIVATIONS]


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=IDS)
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_activation(activation, batch, dtype):
    # A Dense in front gives the activation inputs of both signs and a parameter to check through it.
    layer, module, _ = activation
    report = check_layer(lambda: [fn.Dense(6), layer()], (5,), batch, dtype=dtype,
                         torch_net=lambda nn: [nn.Linear(5, 6), module(nn)])
    assert report["checked"] == (2 if dtype == "float64" else None)


@pytest.mark.parametrize("activation, device, dtype", grid(ACTIVATIONS, cuda=range(6), ids=IDS))
def test_activation_alone(activation, device, dtype):
    layer, module, _ = activation
    x = np.random.default_rng(10).normal(size=(2, 7)) * 3
    check_layer(layer, (7,), 2, x=x, device=device, dtype=dtype, torch_net=lambda nn: [module(nn)])


@pytest.mark.parametrize("activation, device, dtype", grid(ACTIVATIONS, cuda=range(6), ids=IDS))
def test_activation_at_the_edges(activation, device, dtype):
    # 0 (ReLU's derivative there is 0, as torch's), +-40 (both of sigmoid's branches saturate),
    # large logits (softmax subtracts the maximum); no gradient check at a kink.
    layer, module, _ = activation
    x = np.random.default_rng(11).normal(size=(3, 7)) * 4
    x[0, :3] = (0.0, 40.0, -40.0)
    x[1] += 500
    check_layer(layer, (7,), 3, x=x, device=device, dtype=dtype, gradcheck=False,
                torch_net=lambda nn: [module(nn)])


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_relu_kinks_are_avoided_and_gradient_is_zero_below(device):
    model = build(fn.ReLU, (4,), 2, device=device)
    x = np.array([[-1.0, 2.0, -3.0, 0.5], [1.5, -0.2, 0.3, -4.0]])
    y = np.zeros_like(x)
    _, grads = model.gradients(x, y, input_grad=True)
    expected = np.where(x > 0, 2 * x / x.size, 0.0)
    np.testing.assert_allclose(grads["input"], expected, rtol=1e-12)
    check_gradients(model, x, y, directions=1 if device == "cuda" else None)


def test_deep_mlp_with_every_activation():
    layers = lambda: [fn.Flatten(), fn.Dense(7), fn.ReLU(), fn.Dense(6), fn.Tanh(), fn.Dense(5),
                      fn.Sigmoid(), fn.Dense(5), fn.LeakyReLU(0.2), fn.Dense(3)]
    torch_layers = lambda nn: [nn.Flatten(), nn.Linear(8, 7), nn.ReLU(), nn.Linear(7, 6), nn.Tanh(),
                               nn.Linear(6, 5), nn.Sigmoid(), nn.Linear(5, 5), nn.LeakyReLU(0.2), nn.Linear(5, 3)]
    x = np.random.default_rng(0).normal(size=(3, 2, 2, 2))
    report = check_layer(layers, (2, 2, 2), 3, x=x, y=np.array([0, 2, 1]), loss="cross_entropy",
                         torch_net=torch_layers)
    assert report["checked"] == 10


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_a_wrong_gradient_is_caught(device):
    """The checker itself must fail on a wrong backward, or it proves nothing."""
    class BrokenTanh(fn.Tanh):
        def backward(self, k, slot, xs, y, dy, dxs):
            k.copy_forward(dy.reshape(-1), dxs[0].reshape(-1))   # identity: wrong

    model = build(lambda: [fn.Dense(3), BrokenTanh()], (2,), 2, device=device)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(2, 2)), rng.normal(size=(2, 3))
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        check_gradients(model, x, y, directions=1 if device == "cuda" else None)
