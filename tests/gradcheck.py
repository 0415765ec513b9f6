"""Central-difference gradient checks through the model API, in float64.

The loss is the model's own (train mode, so Dropout's mask and BatchNorm's batch statistics
are used exactly as in `gradients`); each parameter entry and input entry is nudged by
+-eps and (L(+) - L(-)) / 2eps is compared with the analytic gradient.
"""

import numpy as np


def numeric_gradient(loss_at, array, eps=1e-6):
    grad = np.zeros_like(array)
    flat, out = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + eps
        plus = loss_at()
        flat[i] = saved - eps
        minus = loss_at()
        flat[i] = saved
        out[i] = (plus - minus) / (2 * eps)
    return grad


def check_gradients(model, x, y, eps=1e-6, rtol=1e-5, atol=1e-7):
    """Assert every parameter gradient and the input gradient match central differences."""
    assert model.dtype == np.float64, "gradient checks run in float64"
    x = np.array(x, dtype=np.float64)
    _, grads = model.gradients(x, y, input_grad=True)
    loss_at = lambda: model.gradients(x, y)[0]  # noqa: E731
    checked = 0
    for name, param in model.parameters().items():
        expected = numeric_gradient(loss_at, param, eps)
        np.testing.assert_allclose(grads[name], expected, rtol=rtol, atol=atol, err_msg=name)
        checked += 1
    expected = numeric_gradient(loss_at, x, eps)
    np.testing.assert_allclose(grads["input"], expected, rtol=rtol, atol=atol, err_msg="input")
    return checked
