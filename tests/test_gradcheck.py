"""The dense CPU kernel's two ways of splitting a forward product over threads, against NumPy.

The layer tests (gradient checks, PyTorch parity, CPU-vs-CUDA agreement) are in tests/layers/,
one file per layer family; the loss tests in tests/test_losses.py.
"""

import numpy as np
import pytest


@pytest.mark.parametrize("rows", [3, 300])
def test_dense_forward_split_by_rows_or_by_features_agrees_with_numpy(rows):
    # a small batch is split over the output features (3 rows), a large one over the rows (300)
    from fastnet.kernels import cpu as k
    rng = np.random.default_rng(3)
    x, w, b = rng.normal(size=(rows, 50)), rng.normal(size=(40, 50)), rng.normal(size=40)
    y, product = np.full((rows, 40), np.nan), np.full((rows, 40), np.nan)
    k.dense_forward(x, w, b, y, product=product)
    np.testing.assert_allclose(y, x @ w.T + b, rtol=1e-12, atol=1e-12)
    k.dense_forward(x, w, None, y, product=product)
    np.testing.assert_allclose(y, x @ w.T, rtol=1e-12, atol=1e-12)
