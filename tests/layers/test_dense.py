"""Dense: gradient checks, PyTorch parity (nn.Linear) and CPU-vs-CUDA agreement, with and without
bias, batch 1, one input feature, one output feature, and a layer wide enough that a small batch
is split over the output features on the CPU; then the kernels themselves: CUDA against the CPU
(the bias gradient bit for bit) and the CPU forward's two ways of splitting over threads."""

import numpy as np
import pytest
from cuda_helpers import CUDA_WARNINGS, close, dev, empty, randn, same
from harness import check_layer, grid

import fastnet as fn
import fastnet.kernels.cpu as kc
import fastnet.kernels.cuda as kg
from fastnet.kernels.workspace import allocate

pytestmark = CUDA_WARNINGS

# (batch, in features, out features, bias)
CASES = [(b, i, o, bias) for bias in (True, False) for i, o in [(5, 4), (1, 3), (7, 1), (3, 40)]
         for b in (1, 3)]
CUDA = [CASES.index(c) for c in [(3, 5, 4, True), (1, 7, 1, False)]]


@pytest.mark.parametrize("case, device, dtype", grid(CASES, CUDA, ids=lambda c: "b{}-in{}-out{}-{}".format(
    *c[:3], "bias" if c[3] else "nobias")))
def test_dense(case, device, dtype):
    batch, features, out, bias = case
    report = check_layer(lambda: fn.Dense(out, bias=bias), (features,), batch, device=device, dtype=dtype,
                         torch_net=lambda nn: [nn.Linear(features, out, bias=bias)])
    assert report["checked"] == (None if dtype == "float32" else 2 if bias else 1)
    assert list(report["model"].parameters()) == (["0.weight", "0.bias"] if bias else ["0.weight"])


# -- the kernels themselves (fastnet.kernels.cpu / .cuda) ------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_cuda_kernels_match_the_cpus(dtype):
    # Kernel against kernel where every GEMM tile is partial (7 x 9 x 5); the bias gradient bit for
    # bit, which test_dense's CPU-vs-CUDA agreement checks only within the dtype's tolerance.
    rng = np.random.default_rng(2)
    N, I, O = 7, 9, 5
    x, w, b, dy = randn(rng, (N, I), dtype), randn(rng, (O, I), dtype), randn(rng, O, dtype), randn(rng, (N, O), dtype)
    ws = allocate(np.empty, kc.dense_workspace_shapes(I, O), N, dtype)
    y = np.empty((N, O), dtype)
    kc.dense_forward(x, w, b, y, **ws.for_kernel(kc.dense_forward, N))
    yg = empty((N, O), dtype)
    kg.dense_forward(dev(x), dev(w), dev(b), yg)
    close(yg, y, dtype)
    kc.dense_forward(x, w, None, y, **ws.for_kernel(kc.dense_forward, N))
    kg.dense_forward(dev(x), dev(w), None, yg)
    close(yg, y, dtype)
    dx = np.empty((N, I), dtype)
    kc.dense_backward_input(dy, w, dx)
    dxg = empty((N, I), dtype)
    kg.dense_backward_input(dev(dy), dev(w), dxg)
    close(dxg, dx, dtype)
    dw = np.empty((O, I), dtype)
    kc.dense_backward_weight(x, dy, dw, **ws.for_kernel(kc.dense_backward_weight, N))
    dwg = empty((O, I), dtype)
    kg.dense_backward_weight(dev(x), dev(dy), dwg)
    close(dwg, dw, dtype)
    db = np.empty(O, dtype)
    kc.bias_backward(dy, db)
    dbg = empty(O, dtype)
    kg.bias_backward(dev(dy), dbg)
    same(dbg, db)                       # the same sum in the same order


@pytest.mark.parametrize("rows", [3, 300])
def test_dense_forward_split_by_rows_or_by_features_agrees_with_numpy(rows):
    # a small batch is split over the output features (3 rows), a large one over the rows (300)
    rng = np.random.default_rng(3)
    x, w, b = rng.normal(size=(rows, 50)), rng.normal(size=(40, 50)), rng.normal(size=40)
    y, product = np.full((rows, 40), np.nan), np.full((rows, 40), np.nan)
    kc.dense_forward(x, w, b, y, product=product)
    np.testing.assert_allclose(y, x @ w.T + b, rtol=1e-12, atol=1e-12)
    kc.dense_forward(x, w, None, y, product=product)
    np.testing.assert_allclose(y, x @ w.T, rtol=1e-12, atol=1e-12)
