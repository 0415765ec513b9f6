"""Optimizer updates on the GPU over flat parameter arrays, one thread per element, with the
arithmetic of kernels/cpu/optim.py (torch.optim's): the element update is
fastnet/kernels/elementwise.py's, shared with the CPU kernels; every scalar is converted to the
parameters' dtype on the host, as the CPU kernels convert theirs, and the step-dependent bias
corrections come from the caller in float64.

clip_grad_norm (torch.nn.utils.clip_grad_norm_ before the update) is one launch of one block: its
threads sum strided shares of the squares in float64, a tree reduction in shared memory
(launch.block_sum) gives every thread the norm, and each scales its share. One block uses one
multiprocessor, but needs no buffer for partial sums and no copy to the host (nothing allocated,
no synchronisation), and sums in the same order on every run.
"""

import math

import numpy as np
from numba import cuda, float64

from .. import elementwise
from .launch import WARP, block_sum, grid_1d

CLIP_THREADS = 1024     # the most threads of the clipping block: the size of its shared buffer

_sgd_step = cuda.jit(device=True, cache=True)(elementwise.sgd_step)
_adam_step = cuda.jit(device=True, cache=True)(elementwise.adam_step)


@cuda.jit(cache=True)
def _sgd_kernel(p, g, buf, lr, momentum, damp, nesterov, weight_decay, use_momentum, use_decay,
                first_step):
    i = cuda.grid(1)
    if i < p.size:
        _sgd_step(i, p, g, buf, lr, momentum, damp, weight_decay, use_momentum, use_decay, nesterov,
                  first_step)


@cuda.jit(cache=True)
def _adam_kernel(p, g, m, v, b1, b2, one, weight_decay, use_decay, decoupled, step_size, bc2, eps,
                 decay):
    i = cuda.grid(1)
    if i < p.size:
        _adam_step(i, p, g, m, v, b1, b2, one, weight_decay, use_decay, decoupled, step_size, bc2, eps,
                   decay)


@cuda.jit(cache=True)
def _clip_kernel(g, max_norm):
    buf = cuda.shared.array(CLIP_THREADS, float64)
    t = cuda.threadIdx.x
    T = cuda.blockDim.x
    s = np.float64(0.0)          # np.float64, not 0.0: the simulator then sums in float64 too
    for i in range(t, g.size, T):
        v = np.float64(g[i])
        s += v * v
    buf[t] = s
    total = block_sum(buf, t)
    coef = max_norm / (math.sqrt(total) + 1e-6)
    if not coef >= 1.0:
        c = g.dtype.type(coef)
        for i in range(t, g.size, T):
            g[i] *= c


# ---- host side ----


def sgd_update(p, g, buf, lr, momentum, dampening, nesterov, weight_decay, first_step):
    """torch.optim.SGD: d = g + wd p; buf = d on the first step, else momentum buf + (1 - dampening) d;
    d = d + momentum buf if nesterov else buf; p -= lr d. One thread per element."""
    t = p.dtype.type
    blocks, threads = grid_1d(p.size)
    _sgd_kernel[blocks, threads](p, g, buf, t(lr), t(momentum), t(1.0 - dampening), bool(nesterov),
                                 t(weight_decay), momentum != 0.0, weight_decay != 0.0,
                                 bool(first_step))


def adam_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled,
                bias_correction1, bias_correction2_sqrt):
    """torch.optim.Adam (decoupled=False) and AdamW (decoupled=True). One thread per element."""
    t = p.dtype.type
    blocks, threads = grid_1d(p.size)
    _adam_kernel[blocks, threads](p, g, m, v, t(beta1), t(beta2), t(1), t(weight_decay),
                                  weight_decay != 0.0, bool(decoupled), t(lr / bias_correction1),
                                  t(bias_correction2_sqrt), t(eps), t(1.0 - lr * weight_decay))


def clip_grad_norm(g, max_norm):
    """torch.nn.utils.clip_grad_norm_(params, max_norm) over the flat gradient g: g *= min(1,
    max_norm / (||g||_2 + 1e-6)), the squares summed in float64. One block (module docstring)."""
    threads = WARP
    while threads < g.size and threads < CLIP_THREADS:     # a power of two: block_sum's tree
        threads *= 2
    _clip_kernel[1, threads](g, float(max_norm))
