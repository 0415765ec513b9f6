"""Dropout: gradient checks through the mask of the step, the mask itself (kept fraction, scaling,
a new mask each step, identity in evaluation), and CPU and CUDA drawing the same mask bit for bit
(a counter-based generator: the same seed, step and element give the same draw on every device);
then the kernels themselves: the mask at large counters, and the copy kernel."""

import numpy as np
import pytest
from cuda_helpers import CUDA_WARNINGS, dev, empty, randn, same
from harness import build, check_layer, grid

import fastnet as fn
import fastnet.kernels.cpu as kc
import fastnet.kernels.cuda as kg

pytestmark = CUDA_WARNINGS


@pytest.mark.parametrize("p", [0.0, 0.3, 0.7])
def test_dropout(p):
    report = check_layer(lambda: [fn.Dense(8), fn.Dropout(p), fn.Dense(3)], (5,), 4)
    assert report["checked"] == 4


@pytest.mark.parametrize("p, device, dtype", grid([0.3, 0.0], cuda=(0,), ids=str))
def test_dropout_alone_is_the_same_on_both_devices(p, device, dtype):
    # The mask (through the outputs and the input gradient) is the CPU's bit for bit.
    report = check_layer(lambda: fn.Dropout(p), (32,), 2, device=device, dtype=dtype, exact=True)
    out = report["observed"]["outputs (train)"]
    kept = np.count_nonzero(out)
    assert (0 < kept < out.size) if p else kept == out.size


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_dropout_mask_changes_with_the_step_and_scales_kept_values(device):
    features = 1000 if device == "cpu" else 200
    model = build(lambda: fn.Dropout(0.4), (features,), 2, device=device)
    x = np.ones((2, features))
    first = model.forward(x, train=True)
    again = model.forward(x, train=True)
    np.testing.assert_array_equal(first, again)          # same step, same mask
    assert set(np.unique(first)) <= {0.0, 1 / 0.6}
    kept = np.count_nonzero(first) / first.size
    assert 0.55 < kept < 0.65 if device == "cpu" else 0.45 < kept < 0.75
    model.train_step(x, np.zeros((2, features)))
    assert not np.array_equal(model.forward(x, train=True), first)
    np.testing.assert_array_equal(model.forward(x, train=False), x)  # identity in eval


# -- the kernels themselves (fastnet.kernels.cpu / .cuda) ------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_mask_is_the_cpus_bit_for_bit(dtype):
    # Kernel against kernel at a seed above any slot's and the counters of step 7 (bits above 32
    # set), where test_dropout_alone_is_the_same_on_both_devices compares the devices at step 0.
    rng = np.random.default_rng(12)
    x, dy = randn(rng, 64, dtype), randn(rng, 64, dtype)
    p, seed, offset = 0.3, 2**62 + 12345, 7 * 2**32 + 5   # slot seeds are < 2**62
    mask, y = np.empty_like(x), np.empty_like(x)
    kc.dropout_forward(x, p, seed, offset, y, mask)
    maskg, yg = empty(x.shape, dtype), empty(x.shape, dtype)
    kg.dropout_forward(dev(x), p, seed, offset, yg, maskg)
    same(maskg, mask)
    same(yg, y)
    assert 0 < np.count_nonzero(mask) < x.size
    dx = np.empty_like(x)
    kc.dropout_backward(dy, dx, mask)
    dxg = empty(x.shape, dtype)
    kg.dropout_backward(dev(dy), dxg, maskg)
    same(dxg, dx)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_copy_forward_cuda_is_an_exact_copy(dtype):
    # The copy kernel behind Dropout in evaluation and at p=0 (Flatten and Add use it too).
    x = randn(np.random.default_rng(10), 50, dtype) * 4
    yg = empty(x.shape, dtype)
    kg.copy_forward(dev(x), yg)
    same(yg, x)
