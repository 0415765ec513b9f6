"""A whole model on device="cuda" against the same model on the CPU: forward, loss, every gradient,
optimizer steps, fit with augmentation and a smaller last batch, evaluate, predict, state dicts and
checkpoints. Without a GPU this runs on Numba's CUDA simulator (tests/conftest.py), which runs every
GPU thread in Python: the shapes are tiny so that each launch is a block or two.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import GPU
from cuda_helpers import CUDA_WARNINGS

import fastnet as fn

pytestmark = CUDA_WARNINGS

RTOL, ATOL = 1e-5, 1e-6   # float32: the GPU sums in another order


def residual_net():
    """Most layer families in a few layers: conv (with bias and without), BatchNorm, pooling, a
    residual Add, Slice and Concat, Dropout, Dense; the input is read by three layers."""
    x = fn.Input((2, 4, 4))
    h = fn.ReLU()(fn.BatchNorm2D()(fn.Conv2D(3, 3, padding=1, bias=False)(x)))
    h = fn.Add()(h, fn.Conv2D(3, 1)(x))
    a, b = fn.Slice([1, 2])(h)
    h = fn.Concat()(fn.Tanh()(b), a, x)
    h = fn.MaxPool2D(2)(fn.LeakyReLU(0.1)(h))
    out = fn.Dense(3)(fn.Dropout(0.25)(fn.Flatten()(h)))
    return fn.Graph(x, out)


def chain_net():
    return fn.Sequential([fn.Conv2D(2, 3, stride=2, padding=1), fn.Sigmoid(), fn.AvgPool2D(2),
                          fn.GlobalAvgPool2D(), fn.Dense(3), fn.Softmax()])


def pair(network_fn, input_shape=None, **kw):
    cpu = network_fn().compile(input_shape, seed=4, device="cpu", **kw)
    gpu = network_fn().compile(input_shape, seed=4, device="cuda", **kw)
    return cpu, gpu


def assert_close(ours, theirs, what):
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL, err_msg=what)


def test_a_graph_model_on_cuda_matches_the_cpu_step_by_step():
    cpu, gpu = pair(residual_net, batch_size=2, optimizer=fn.SGD(lr=0.1, momentum=0.9, weight_decay=1e-3))
    assert type(gpu.plan.flat_params).__name__ != "ndarray", "the GPU model's parameters are not on the device"
    for name, value in cpu.state_dict().items():
        np.testing.assert_array_equal(gpu.state_dict()[name], value, err_msg=f"initial {name}")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 2, 4, 4)).astype(np.float32), np.array([0, 2])
    loss_cpu, grads_cpu = cpu.gradients(x, y, input_grad=True)
    loss_gpu, grads_gpu = gpu.gradients(x, y, input_grad=True)
    assert loss_gpu == pytest.approx(loss_cpu, rel=1e-6)
    assert list(grads_gpu) == list(grads_cpu)
    for name, grad in grads_cpu.items():
        assert np.any(grad != 0), f"{name}: an all-zero gradient checks nothing"
        assert_close(grads_gpu[name], grad, f"gradient of {name}")
    for step in range(3):
        batch = rng.normal(size=(2, 2, 4, 4)).astype(np.float32), rng.integers(0, 3, 2)
        assert gpu.train_step(*batch) == pytest.approx(cpu.train_step(*batch), rel=1e-5), f"step {step + 1}"
    for name, value in cpu.state_dict().items():
        assert_close(gpu.state_dict()[name], value, f"{name} after 3 steps")
    assert_close(gpu.predict(x), cpu.predict(x), "eval-mode outputs")
    ours, theirs = gpu.evaluate(x, y), cpu.evaluate(x, y)
    assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
    assert ours["accuracy"] == theirs["accuracy"]


def test_fit_on_cuda_with_augmentation_and_a_smaller_last_batch_then_save_and_load(tmp_path):
    """A chain with the remaining layer families, mse and Adam; fit assembles batches on the host
    and sends them up."""
    cpu, gpu = pair(chain_net, (1, 6, 6), batch_size=2, loss="mse", optimizer=fn.Adam(lr=0.01))
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(3, 1, 6, 6)).astype(np.float32), rng.random((3, 3)).astype(np.float32)
    loss_cpu, grads_cpu = cpu.gradients(x[:2], y[:2], input_grad=True)
    loss_gpu, grads_gpu = gpu.gradients(x[:2], y[:2], input_grad=True)
    assert loss_gpu == pytest.approx(loss_cpu, rel=1e-6)
    for name, grad in grads_cpu.items():
        assert_close(grads_gpu[name], grad, f"gradient of {name}")
    augment = fn.data.Augment(pad=1, flip=True, seed=3)
    history_cpu = cpu.fit(x, y, epochs=1, verbose=0, augment=augment)     # batches of 2 and 1
    history_gpu = gpu.fit(x, y, epochs=1, verbose=0, augment=augment)
    assert history_gpu["loss"][0] == pytest.approx(history_cpu["loss"][0], rel=1e-5)
    for name, value in cpu.state_dict().items():
        assert_close(gpu.state_dict()[name], value, f"{name} after fit")
    gpu.save(tmp_path / "gpu.safetensors")
    on_cpu = fn.load(tmp_path / "gpu.safetensors", device="cpu")
    for name, value in gpu.state_dict().items():
        np.testing.assert_array_equal(on_cpu.state_dict()[name], value, err_msg=name)
    back_on_gpu = fn.load(tmp_path / "gpu.safetensors")
    assert back_on_gpu.device == "cuda" and back_on_gpu.step == gpu.step == 2
    np.testing.assert_array_equal(back_on_gpu.predict(x), gpu.predict(x))


@pytest.mark.skipif(GPU, reason="checks the error on a machine without a GPU; this one has one")
def test_cuda_without_a_gpu_is_a_clear_error():
    code = ("import fastnet as fn\n"
            "try:\n"
            "    fn.models.mlp().compile((1, 28, 28), 8, device='cuda')\n"
            "except fn.FastnetError as err:\n"
            "    print(err)\n")
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "device='cuda'" in out.stdout and "use device='cpu'" in out.stdout
