"""Optimizer updates over flat parameter arrays (all of a model's parameters in one buffer),
with PyTorch's semantics. Scalars that depend on the step (bias corrections) are computed
by the caller in float64, as torch.optim does in Python; the element update itself is
fastnet/kernels/elementwise.py's, shared with the CUDA kernels, with every scalar converted to the
parameters' dtype here. clip_grad_norm scales the flat gradient (every parameter's) before an
update, as torch.nn.utils.clip_grad_norm_ before optimizer.step().
"""

import math

import numpy as np
from numba import njit, prange

from .. import elementwise

_sgd_step = njit(cache=True, inline="always")(elementwise.sgd_step)
_adam_step = njit(cache=True, inline="always")(elementwise.adam_step)


@njit(cache=True, parallel=True)
def sgd_update(p, g, buf, lr, momentum, dampening, nesterov, weight_decay, first_step):
    """torch.optim.SGD: d = g + wd p; buf = d on the first step, else momentum buf + (1 - dampening) d;
    d = d + momentum buf if nesterov else buf; p -= lr d."""
    lr_ = p.dtype.type(lr)
    mom = p.dtype.type(momentum)
    damp = p.dtype.type(1.0 - dampening)
    wd = p.dtype.type(weight_decay)
    use_momentum = momentum != 0.0
    use_decay = weight_decay != 0.0
    for i in prange(p.size):
        _sgd_step(i, p, g, buf, lr_, mom, damp, wd, use_momentum, use_decay, nesterov, first_step)


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
    use_decay = weight_decay != 0.0
    for i in prange(p.size):
        _adam_step(i, p, g, m, v, b1, b2, one, wd, use_decay, decoupled, step_size, bc2, eps_, decay)


@njit(cache=True, parallel=True, fastmath={"reassoc"})
def clip_grad_norm(g, max_norm):
    """torch.nn.utils.clip_grad_norm_(params, max_norm) over the flat gradient g: total_norm =
    ||g||_2 (the squares summed in float64), coef = max_norm / (total_norm + 1e-6), and g *= coef
    where coef < 1 (torch multiplies by min(coef, 1): by 1 changes nothing; a NaN norm makes coef
    NaN, as torch's). One reduction over the one buffer, then one pass where it scales.
    fastmath's reassoc alone (no assumption about NaN or inf): the sum may be reordered into
    vector lanes, which a float64 sum in strict order (one add at a time) would not be."""
    total = 0.0
    for i in prange(g.size):
        v = np.float64(g[i])
        total += v * v
    coef = max_norm / (math.sqrt(total) + 1e-6)
    if not coef >= 1.0:
        c = g.dtype.type(coef)
        for i in prange(g.size):
            g[i] *= c
