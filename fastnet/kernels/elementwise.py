"""The per-element (per-row, per-window) math both devices compute, written once as plain Python.

Nothing here is compiled or imports a compiler: each device compiles these functions into its own
kernels, the CPU with `njit(inline="always")` (kernels/cpu/*.py), CUDA with `cuda.jit(device=True)`
(kernels/cuda/*.py), so the two run the same steps in the same order. Only what both targets (and
Numba's CUDA simulator, which runs them as Python) type the same way is used: the `math` module's
functions (Numba compiles np.exp and math.exp, np.sqrt and math.sqrt to the same code), NumPy
scalar types, array indexing. Scalars arrive already converted to the data's dtype where the
arithmetic must be done in it.
"""

import math

import numpy as np

# ---- counter-based random numbers (dropout masks, augmentation)


def splitmix64(seed, index):
    """64 well-mixed bits for (seed, index) (the splitmix64 finaliser); arithmetic wraps mod 2**64.
    A pure function of its arguments, so random choices depend on neither the thread count nor any
    generator state, and replay exactly after a resume."""
    z = np.uint64(seed) + np.uint64(index) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


# ---- softmax


def softmax_row(x, n, y):
    """y[n] = softmax(x[n]) with the row maximum m subtracted for stability, in the data's dtype;
    returns log(sum_j exp(x[n, j])) = m + log(sum_j exp(x[n, j] - m)), the row's log-sum-exp."""
    m = x[n, 0]
    for j in range(1, x.shape[1]):
        m = max(m, x[n, j])
    total = x.dtype.type(0)
    for j in range(x.shape[1]):
        e = math.exp(x[n, j] - m)
        y[n, j] = e
        total += e
    for j in range(x.shape[1]):
        y[n, j] /= total
    return m + math.log(total)


# ---- optimizer updates (torch.optim's), element i of the flat parameter array


def sgd_step(i, p, g, buf, lr, momentum, damp, weight_decay, use_momentum, use_decay, nesterov,
             first_step):
    """torch.optim.SGD on element i: d = g + wd p; buf = d on the first step, else
    momentum buf + (1 - dampening) d; d = d + momentum buf if nesterov else buf; p -= lr d.
    lr, momentum, damp (= 1 - dampening) and weight_decay in the parameters' dtype."""
    d = g[i]
    if use_decay:
        d = d + weight_decay * p[i]
    if use_momentum:
        if first_step:
            buf[i] = d
        else:
            buf[i] = momentum * buf[i] + damp * d
        if nesterov:
            d = d + momentum * buf[i]
        else:
            d = buf[i]
    p[i] -= lr * d


def adam_step(i, p, g, m, v, b1, b2, one, weight_decay, use_decay, decoupled, step_size, bc2, eps,
              decay):
    """torch.optim.Adam (decoupled False: L2 added to the gradient) and AdamW (decoupled True:
    p *= decay = 1 - lr wd before the step) on element i. Every scalar in the parameters' dtype:
    step_size = lr / bias_correction1, bc2 = sqrt(bias_correction2)."""
    d = g[i]
    if use_decay:
        if decoupled:
            p[i] *= decay
        else:
            d = d + weight_decay * p[i]
    m[i] = b1 * m[i] + (one - b1) * d
    v[i] = b2 * v[i] + (one - b2) * d * d
    denom = math.sqrt(v[i]) / bc2 + eps
    p[i] -= step_size * m[i] / denom


# ---- pooling windows


def window_bounds(o, stride, padding, kernel, size):
    """(start, end) of the real cells read by output position o along one axis: the window
    o*stride - padding ... + kernel - 1, clipped to 0 .. size - 1 (outside is padding)."""
    start = o * stride - padding
    return max(start, 0), min(start + kernel, size)


def windows_covering(i, stride, padding, kernel, count):
    """(first, end) of the output positions whose window holds input cell i along one axis:
    o*stride - padding <= i <= o*stride - padding + kernel - 1, i.e.
    ceil((i + padding - kernel + 1) / stride) <= o <= floor((i + padding) / stride), within 0 .. count - 1."""
    return max(0, (i + padding - kernel + stride) // stride), min(count, (i + padding) // stride + 1)
