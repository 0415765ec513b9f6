"""pytest-benchmark micro-benchmarks of the hot CPU kernels at the shapes of cnn() and lenet5().

Never collected by a plain `pytest` (testpaths is tests/, and this file's name does not match
test_*.py; addopts skips benchmarks anyway). Run it by naming it, with --benchmark-only (which
overrides the --benchmark-skip in addopts):

    python -m pytest bench/micro.py --benchmark-only --benchmark-columns=median,iqr,ops

Batch 64, float32, Numba's default threads. Each case runs the kernel on buffers allocated here,
the workspaces from the ops' workspace_shapes, as the compiled model's plan would hand them over.
What the figures decided is written down in bench/NOTES.md.
"""

import numpy as np
import pytest

import fastnet  # noqa: F401  (one pool of threads: fastnet/threads.py)
from fastnet.kernels import cpu as k
from fastnet.kernels.shapes import conv2d_output_hw
from fastnet.kernels.workspace import allocate

N = 64
# name: (C, H, W, O, kernel, stride, padding)
CONVS = {
    "cnn.conv1": (1, 28, 28, 32, 3, 1, 1),
    "cnn.conv2": (32, 14, 14, 64, 3, 1, 1),
    "lenet5.conv1": (1, 28, 28, 6, 5, 1, 2),
    "lenet5.conv2": (6, 14, 14, 16, 5, 1, 0),
}
# name: (C, H, W) into a 2x2 max/avg pool
POOLS = {"cnn.pool1": (32, 28, 28), "cnn.pool2": (64, 14, 14), "lenet5.pool1": (6, 28, 28)}


def conv_buffers(C, H, W, O, kernel, stride, padding):
    rng = np.random.default_rng(0)
    OH, OW = conv2d_output_hw(H, W, kernel, kernel, stride, stride, padding, padding)
    shapes = k.conv2d_workspace_shapes(C, H, W, O, kernel, kernel, stride, stride, padding, padding)
    return dict(
        x=rng.random((N, C, H, W), dtype=np.float32),
        w=rng.random((O, C, kernel, kernel), dtype=np.float32),
        b=rng.random(O, dtype=np.float32),
        y=np.zeros((N, O, OH, OW), np.float32),
        dy=rng.random((N, O, OH, OW), dtype=np.float32),
        dw=np.zeros((O, C, kernel, kernel), np.float32),
        db=np.zeros(O, np.float32),
        dx=np.zeros((N, C, H, W), np.float32),
        geometry=(stride, stride, padding, padding),
        workspaces=allocate(np.zeros, shapes, N, np.float32),
    )


@pytest.mark.parametrize("name", CONVS)
def test_conv2d_forward(benchmark, name):
    a = conv_buffers(*CONVS[name])
    benchmark(k.conv2d_forward, a["x"], a["w"], a["b"], a["y"], *a["geometry"], False,
              **a["workspaces"].for_kernel(k.conv2d_forward, N))


@pytest.mark.parametrize("name", CONVS)
def test_conv2d_backward(benchmark, name):
    a = conv_buffers(*CONVS[name])
    benchmark(k.conv2d_backward, a["x"], a["w"], a["y"], a["dy"], a["dw"], a["db"], a["dx"], *a["geometry"],
              False, **a["workspaces"].for_kernel(k.conv2d_backward, N))


@pytest.mark.parametrize("name", POOLS)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool2d_forward_backward(benchmark, name, kind):
    C, H, W = POOLS[name]
    rng = np.random.default_rng(0)
    x = rng.random((N, C, H, W), dtype=np.float32)
    y = np.zeros((N, C, H // 2, W // 2), np.float32)
    dx = np.zeros_like(x)
    if kind == "max":
        argmax = np.zeros(y.shape, np.int32)

        def step():
            k.maxpool2d_forward(x, y, 2, 2, 2, 2, 0, 0, argmax)
            k.maxpool2d_backward(y, dx, 2, 2, 2, 2, 0, 0, argmax)
    else:
        def step():
            k.avgpool2d_forward(x, y, 2, 2, 2, 2, 0, 0)
            k.avgpool2d_backward(y, dx, 2, 2, 2, 2, 0, 0)
    benchmark(step)


@pytest.mark.parametrize("shape", [(784, 256), (3136, 128)], ids=["mlp.fc1", "cnn.fc1"])
def test_dense_forward_backward(benchmark, shape):
    features, out = shape
    rng = np.random.default_rng(0)
    x = rng.random((N, features), dtype=np.float32)
    w = rng.random((out, features), dtype=np.float32)
    b = rng.random(out, dtype=np.float32)
    y, dy = np.zeros((N, out), np.float32), rng.random((N, out), dtype=np.float32)
    dw, db, dx = np.zeros_like(w), np.zeros_like(b), np.zeros_like(x)
    ws = allocate(np.zeros, k.dense_workspace_shapes(features, out), N, np.float32)

    def step():
        k.dense_forward(x, w, b, y, **ws.for_kernel(k.dense_forward, N))
        k.dense_backward_weight(x, dy, dw, **ws.for_kernel(k.dense_backward_weight, N))
        k.bias_backward(dy, db)
        k.dense_backward_input(dy, w, dx)
    benchmark(step)


@pytest.mark.parametrize("batch", [64, 256])
def test_softmax_cross_entropy_forward_backward(benchmark, batch):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(batch, 10)).astype(np.float32)
    labels = rng.integers(0, 10, batch)
    probs, dlogits = np.zeros_like(logits), np.zeros_like(logits)

    def step():
        k.cross_entropy_forward(logits, labels, probs)
        k.cross_entropy_backward(labels, 1.0 / batch, dlogits, probs)
    benchmark(step)


# The flat parameter arrays of the zoo models: the optimizer updates them in one kernel call.
PARAMETER_COUNTS = {"mlp": 235_146, "cnn": 421_642}


@pytest.mark.parametrize("name", PARAMETER_COUNTS)
@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adam"])
def test_optimizer_update(benchmark, name, optimizer):
    rng = np.random.default_rng(0)
    p, g = (rng.normal(size=PARAMETER_COUNTS[name]).astype(np.float32) for _ in range(2))
    m, v = np.zeros_like(p), np.zeros_like(p)
    if optimizer == "sgd_momentum":
        benchmark(k.sgd_update, p, g, m, 0.01, 0.9, 0.0, False, 0.0, False)
    else:
        benchmark(k.adam_update, p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0.0, False, 0.1, 0.03)
