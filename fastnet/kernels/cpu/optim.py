"""Optimizer updates over flat parameter arrays (all of a model's parameters in one buffer),
with PyTorch's semantics. Scalars that depend on the step (bias corrections) are computed
by the caller in float64, as torch.optim does in Python.
"""

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def sgd_update(p, g, buf, lr, momentum, dampening, nesterov, weight_decay, first_step):
    """torch.optim.SGD: d = g + wd p; buf = d on the first step, else momentum buf + (1 - dampening) d;
    d = d + momentum buf if nesterov else buf; p -= lr d."""
    lr_ = p.dtype.type(lr)
    mom = p.dtype.type(momentum)
    damp = p.dtype.type(1.0 - dampening)
    wd = p.dtype.type(weight_decay)
    for i in prange(p.size):
        d = g[i]
        if weight_decay != 0.0:
            d = d + wd * p[i]
        if momentum != 0.0:
            if first_step:
                buf[i] = d
            else:
                buf[i] = mom * buf[i] + damp * d
            if nesterov:
                d = d + mom * buf[i]
            else:
                d = buf[i]
        p[i] -= lr_ * d


@njit(cache=True, parallel=True)
def adam_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled,
                bias_correction1, bias_correction2_sqrt):
    """torch.optim.Adam (decoupled=False: L2 added to the gradient) and AdamW
    (decoupled=True: p *= 1 - lr wd before the step)."""
    b1 = p.dtype.type(beta1)
    b2 = p.dtype.type(beta2)
    one = p.dtype.type(1)
    wd = p.dtype.type(weight_decay)
    step_size = p.dtype.type(lr / bias_correction1)
    bc2 = p.dtype.type(bias_correction2_sqrt)
    eps_ = p.dtype.type(eps)
    decay = p.dtype.type(1.0 - lr * weight_decay)
    for i in prange(p.size):
        d = g[i]
        if weight_decay != 0.0:
            if decoupled:
                p[i] *= decay
            else:
                d = d + wd * p[i]
        m[i] = b1 * m[i] + (one - b1) * d
        v[i] = b2 * v[i] + (one - b2) * d * d
        denom = np.sqrt(v[i]) / bc2 + eps_
        p[i] -= step_size * m[i] / denom
