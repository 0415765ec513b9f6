"""The optimizers' update kernels (fastnet.kernels.cuda against fastnet.kernels.cpu): SGD (momentum,
dampening, Nesterov, weight decay) and Adam (L2 or decoupled weight decay), three steps each from
zero state, on the same gradients. Optimizers are not layers: through a model they are checked
against torch.optim in tests/test_torch_parity.py and on CUDA in tests/test_cuda_model.py.
"""

import numpy as np
import pytest
from cuda_helpers import CUDA_WARNINGS, close, dev, randn

import fastnet.kernels.cpu as kc
import fastnet.kernels.cuda as kg

pytestmark = CUDA_WARNINGS


@pytest.mark.parametrize("momentum,dampening,nesterov,weight_decay",
                         [(0.0, 0.0, False, 0.0), (0.9, 0.0, False, 0.0), (0.9, 0.0, True, 1e-2),
                          (0.8, 0.3, False, 5e-3)])
def test_sgd_three_steps(momentum, dampening, nesterov, weight_decay):
    rng = np.random.default_rng(15)
    dtype = np.float32
    p, buf = randn(rng, 40, dtype), np.zeros(40, dtype)
    pg, bufg = dev(p), dev(buf)
    for step in range(3):
        g = randn(rng, 40, dtype)
        kc.sgd_update(p, g, buf, 0.1, momentum, dampening, nesterov, weight_decay, step == 0)
        kg.sgd_update(pg, dev(g), bufg, 0.1, momentum, dampening, nesterov, weight_decay, step == 0)
        close(pg, p, dtype)
        close(bufg, buf, dtype)


@pytest.mark.parametrize("dtype,weight_decay,decoupled", [(np.float32, 0.0, False), (np.float32, 1e-2, False),
                                                          (np.float32, 1e-2, True), (np.float64, 1e-2, True)])
def test_adam_three_steps(dtype, weight_decay, decoupled):
    rng = np.random.default_rng(16)
    lr, beta1, beta2, eps = 1e-2, 0.9, 0.999, 1e-8
    p, m, v = randn(rng, 40, dtype), np.zeros(40, dtype), np.zeros(40, dtype)
    pg, mg, vg = dev(p), dev(m), dev(v)
    for step in range(1, 4):
        g = randn(rng, 40, dtype)
        bc1, bc2 = 1 - beta1 ** step, (1 - beta2 ** step) ** 0.5
        kc.adam_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, decoupled, bc1, bc2)
        kg.adam_update(pg, dev(g), mg, vg, lr, beta1, beta2, eps, weight_decay, decoupled, bc1, bc2)
        close(pg, p, dtype)
        close(mg, m, dtype)
        close(vg, v, dtype)
