"""The losses, through models: cross-entropy (softmax fused in, mean over the batch) and MSE (mean
over elements): gradient checks, PyTorch parity, CPU-vs-CUDA agreement of the loss, its gradient
and the accuracy (ties: the first maximum is the prediction, as numpy.argmax); then the CUDA loss
kernels' return values."""

import numpy as np
import pytest
from cuda_helpers import CUDA_WARNINGS, close, dev, empty, randn
from harness import build, check_layer

import fastnet as fn
import fastnet.kernels.cpu as kc
import fastnet.kernels.cuda as kg

pytestmark = CUDA_WARNINGS


@pytest.mark.parametrize("batch, classes", [(1, 2), (4, 3), (6, 10)])
def test_cross_entropy(batch, classes):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(batch, 4)) * 3
    y = rng.integers(0, classes, batch)
    report = check_layer(lambda: fn.Dense(classes), (4,), batch, x=x, y=y, loss="cross_entropy",
                         torch_net=lambda nn: [nn.Linear(4, classes)])
    assert report["checked"] == 2


@pytest.mark.parametrize("shape", [(3,), (2, 2, 2)])
def test_mse(shape):
    check_layer(fn.Tanh, shape, 3, torch_net=lambda nn: [nn.Tanh()])


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cross_entropy_logits_with_ties_and_large_values(device, dtype):
    # The network is the identity (Flatten): its outputs are the logits given.
    rng = np.random.default_rng(13)
    logits = rng.normal(size=(6, 4)) * 3
    logits[1] = (1.0, 2.0, 2.0, 0.0)                 # a tie: the first maximum is the prediction
    logits[2, 0] = 200.0                             # large logits stay finite
    labels = rng.integers(0, 4, 6)
    labels[1] = 2
    report = check_layer(fn.Flatten, (4,), 6, x=logits, y=labels, loss="cross_entropy", device=device,
                         dtype=dtype, torch_net=lambda nn: [nn.Flatten()], rtol=1e-4)
    assert np.isfinite(report["observed"]["loss"])
    model = report["model"]
    result = model.evaluate(logits, labels)
    assert result["accuracy"] == np.mean(np.argmax(logits, axis=1) == labels)
    assert model.evaluate(logits, np.argmax(logits, axis=1))["accuracy"] == 1.0


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_mse_of_many_elements(device):
    model = build(fn.Flatten, (37,), 1, device=device, dtype="float32")
    assert model.evaluate(np.ones((1, 37)), np.zeros((1, 37)))["accuracy"] is None
    check_layer(fn.Flatten, (37,), 1, device=device, dtype="float32", torch_net=lambda nn: [nn.Flatten()])


# -- the kernels themselves (fastnet.kernels.cpu / .cuda) ------------------------------------------

def test_loss_kernels_on_cuda_return_python_numbers():
    # What the model adds up and reports: each loss a Python float, count_correct a Python int;
    # mse's sum the CPU's to 1e-12 in float32 (both add in float64), where a model's loss is
    # compared within the dtype's tolerance.
    rng = np.random.default_rng(14)
    dtype = np.float32
    pred, target = randn(rng, 37, dtype), randn(rng, 37, dtype)
    total = kc.mse_forward(pred, target)
    totalg = kg.mse_forward(dev(pred), dev(target))
    assert isinstance(totalg, float)
    np.testing.assert_allclose(totalg, total, rtol=1e-12)
    dpred = np.empty_like(pred)
    kc.mse_backward(pred, target, 1.0 / 37, dpred)
    dpredg = empty(pred.shape, dtype)
    kg.mse_backward(dev(pred), dev(target), 1.0 / 37, dpredg)
    close(dpredg, dpred, dtype)
    logits, labels = randn(rng, (6, 4), dtype) * 3, rng.integers(0, 4, 6).astype(np.int64)
    loss = kg.cross_entropy_forward(dev(logits), dev(labels), empty(logits.shape, dtype))
    assert isinstance(loss, float)
    np.testing.assert_allclose(loss, kc.cross_entropy_forward(logits, labels, np.empty_like(logits)), rtol=1e-5)
    correct = kg.count_correct(dev(logits), dev(labels))
    assert isinstance(correct, int) and correct == kc.count_correct(logits, labels)
