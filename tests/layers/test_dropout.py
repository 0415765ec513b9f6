"""Dropout: gradient checks through the mask of the step, the mask itself (kept fraction, scaling,
a new mask each step, identity in evaluation), and CPU and CUDA drawing the same mask bit for bit
(a counter-based generator: the same seed, step and element give the same draw on every device)."""

import numpy as np
import pytest
from harness import CUDA_WARNINGS, build, check_layer, grid

import fastnet as fn

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
