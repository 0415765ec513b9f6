"""Central-difference gradient checks through the model API, in float64, on any device.

Each parameter entry and input entry is nudged by +-eps and (L(+) - L(-)) / 2eps is compared with
the analytic gradient of `model.gradients`. L is the loss of the model's train-mode outputs
(`model.forward(x, train=True)`: Dropout's mask of the current step and BatchNorm's batch
statistics, exactly as in `gradients`), computed here in NumPy (MSE: mean over elements;
cross-entropy: mean over the batch), and checked against the model's own loss at x first, so a
wrong loss forward still fails. Forward-only evaluations keep the check cheap on the CUDA
simulator, where a loss reduction or a backward pass costs far more than a small forward.

On a CUDA model the parameters are device arrays: each nudge is written to the device. There,
`directions=k` replaces the entry-by-entry differences by k central differences per array along
random directions, compared with the analytic gradient's projection: two forwards per direction
however large the array, where the simulator runs every GPU thread in Python.
"""

import numpy as np


def numeric_gradient(loss_at, array, eps=1e-6, sync=None):
    """(L(+eps) - L(-eps)) / 2eps for every entry of `array` (a NumPy array nudged in place).
    `sync()` runs after every write (it copies a host copy back to the device)."""
    grad = np.zeros_like(array)
    flat, out = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + eps
        if sync:
            sync()
        plus = loss_at()
        flat[i] = saved - eps
        if sync:
            sync()
        minus = loss_at()
        flat[i] = saved
        if sync:
            sync()
        out[i] = (plus - minus) / (2 * eps)
    return grad


def numpy_loss(name, out, y):
    """The model's loss in float64 NumPy: "mse" (mean over elements), "cross_entropy" (mean over
    the batch of logsumexp(logits) - logit[label])."""
    out = np.asarray(out, np.float64)
    if name == "mse":
        return float(np.mean((out - y) ** 2))
    if name == "cross_entropy":
        top = out.max(axis=1, keepdims=True)
        logsumexp = np.log(np.exp(out - top).sum(axis=1)) + top[:, 0]
        return float(np.mean(logsumexp - out[np.arange(len(out)), np.asarray(y, np.int64)]))
    raise ValueError(f"no NumPy loss for {name!r}")


def directional_check(loss_at, array, analytic, eps, rtol, atol, directions, rng, name, sync=None):
    """For each of `directions` random directions d (standard normal entries): the central
    difference (L(a + eps d) - L(a - eps d)) / 2eps against analytic . d. Two evaluations per
    direction check every entry of the array at once (a wrong entry moves the projection)."""
    flat, analytic = array.reshape(-1), np.asarray(analytic, np.float64).reshape(-1)
    saved = flat.copy()
    for _ in range(directions):
        d = rng.standard_normal(flat.size)
        values = []
        for sign in (1, -1):
            flat[:] = saved + sign * eps * d
            if sync:
                sync()
            values.append(loss_at())
        flat[:] = saved
        if sync:
            sync()
        numeric = (values[0] - values[1]) / (2 * eps)
        # the projection sums flat.size terms: its tolerance scales with their magnitudes
        scale = float(np.abs(analytic * d).sum())
        np.testing.assert_allclose(analytic @ d, numeric, rtol=rtol, atol=atol * max(1.0, scale),
                                   err_msg=f"{name} along a random direction")


def check_gradients(model, x, y, eps=1e-6, rtol=1e-5, atol=1e-7, directions=None, analytic=None):
    """Assert every parameter gradient and the input gradient match central differences; returns
    how many parameters were checked. Entry by entry, or along `directions` random directions
    per array when given (far fewer forwards: for the CUDA simulator). `analytic`: the
    (loss, gradients) of model.gradients(x, y, input_grad=True) when already computed."""
    assert model.dtype == np.float64, "gradient checks run in float64"
    x = np.array(x, dtype=np.float64)
    y = np.asarray(y)
    loss, grads = analytic if analytic is not None else model.gradients(x, y, input_grad=True)
    loss_at = lambda: numpy_loss(model.loss_fn.name, model.forward(x, train=True), y)
    np.testing.assert_allclose(loss, loss_at(), rtol=1e-10, atol=1e-14, err_msg="the model's loss")
    rng = np.random.default_rng(0)
    arrays = []
    for name, param in model.parameters().items():
        if isinstance(param, np.ndarray):
            arrays.append((name, param, None))
        else:                                   # a device array: nudge a host copy, write it back
            host = param.copy_to_host()
            arrays.append((name, host, lambda param=param, host=host: param.copy_to_device(host)))
    arrays.append(("input", x, None))
    for name, array, sync in arrays:
        if directions:
            directional_check(loss_at, array, grads[name], eps, rtol, atol, directions, rng, name, sync)
        else:
            expected = numeric_gradient(loss_at, array, eps, sync=sync)
            np.testing.assert_allclose(grads[name], expected, rtol=rtol, atol=atol, err_msg=name)
    return len(arrays) - 1
