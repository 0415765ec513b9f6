"""Optimizers with torch.optim's semantics. An optimizer object is configuration; compiling a
model gives it state buffers shaped like the model's flat parameter array. The update kernels
live in kernels/<device>/optim.py and run once per step over all parameters at once.
"""

import math

from .errors import SpecError


class Optimizer:
    state_names = ()

    def state(self, k, flat_params):
        """Fresh state buffers (zeros, on the device of kernel namespace k) for a flat parameter array."""
        return {name: k.zeros(flat_params.shape, flat_params.dtype) for name in self.state_names}

    def state_size(self, count):
        """How many numbers of state the optimizer keeps for `count` parameters (SGD with momentum:
        one per parameter, Adam and AdamW: two; compile's memory budget counts them)."""
        return len(self.state_names) * count

    clip_norm = None

    def _clip_norm(self, clip_norm):
        """Check and keep clip_norm: None (no clipping) or a finite number > 0."""
        if clip_norm is not None and not (isinstance(clip_norm, (int, float)) and not isinstance(clip_norm, bool)
                                          and math.isfinite(clip_norm) and clip_norm > 0):
            raise SpecError(f"{type(self).__name__}: clip_norm must be None (no clipping) or a finite "
                            f"number > 0, got {clip_norm!r}")
        self.clip_norm = None if clip_norm is None else float(clip_norm)

    def _clip(self, k, grads):
        """Scale the flat gradient to a global norm of at most clip_norm (where set)."""
        if self.clip_norm is not None:
            k.clip_grad_norm(grads, self.clip_norm)

    def _check(self, **values):
        for key, value in values.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise SpecError(f"{type(self).__name__}: {key} must be a finite number >= 0, got {value!r}")

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """torch.optim.SGD(lr, momentum, dampening, nesterov, weight_decay); clip_norm: see above."""

    def __init__(self, lr, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0, clip_norm=None):
        self._check(lr=lr, momentum=momentum, weight_decay=weight_decay, dampening=dampening)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise SpecError("SGD: nesterov momentum requires a momentum and zero dampening")
        self.lr, self.momentum, self.nesterov = lr, momentum, bool(nesterov)
        self.weight_decay, self.dampening = weight_decay, dampening
        self._clip_norm(clip_norm)

    @property
    def state_names(self):
        return ("momentum_buffer",) if self.momentum else ()

    def update(self, k, params, grads, state, step):
        """One step; `step` counts from 1."""
        self._clip(k, grads)
        buf = state.get("momentum_buffer", params[:0])
        k.sgd_update(params, grads, buf, float(self.lr), float(self.momentum), float(self.dampening),
                     self.nesterov, float(self.weight_decay), step == 1)


class Adam(Optimizer):
    """torch.optim.Adam: weight_decay is an L2 term added to the gradient; clip_norm: see above."""

    decoupled = False
    state_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, clip_norm=None):
        self._check(lr=lr, eps=eps, weight_decay=weight_decay)
        if not all(0.0 <= b < 1.0 for b in betas) or len(betas) != 2:
            raise SpecError(f"{type(self).__name__}: betas must be two numbers in [0, 1), got {betas!r}")
        self.lr, self.betas, self.eps, self.weight_decay = lr, tuple(betas), eps, weight_decay
        self._clip_norm(clip_norm)

    def update(self, k, params, grads, state, step):
        self._clip(k, grads)
        beta1, beta2 = self.betas
        k.adam_update(params, grads, state["exp_avg"], state["exp_avg_sq"], float(self.lr), beta1, beta2,
                      float(self.eps), float(self.weight_decay), self.decoupled,
                      1.0 - beta1 ** step, math.sqrt(1.0 - beta2 ** step))


class AdamW(Adam):
    """torch.optim.AdamW: decoupled weight decay, p *= 1 - lr * weight_decay before the Adam step."""

    decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, clip_norm=None):
        super().__init__(lr, betas, eps, weight_decay, clip_norm)
