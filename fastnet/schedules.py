"""Learning-rate schedules, per optimizer step, with linear warm-up: `lr = schedule(step)`.

    model.fit(x, y, epochs=3, schedule=fn.schedules.Cosine(lr=1e-3, total_steps=3 * steps_per_epoch))

`step` counts the optimizer steps already taken (0 for the first), so a resumed model carries on
where its schedule was. Warm-up ramps linearly from lr / warmup_steps to lr over the first
warmup_steps steps (torch's LinearLR with start_factor 1/warmup_steps, stepped every iteration).
"""

import math


class Schedule:
    def __init__(self, lr, warmup_steps=0):
        if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
            raise ValueError(f"{type(self).__name__}: lr must be a positive number, got {lr!r}")
        if int(warmup_steps) != warmup_steps or warmup_steps < 0:
            raise ValueError(f"{type(self).__name__}: warmup_steps must be an integer >= 0, got {warmup_steps!r}")
        self.lr = float(lr)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        return self.after_warmup(step - self.warmup_steps)

    def after_warmup(self, step):
        return self.lr

    def config(self):
        return {"type": type(self).__name__, **vars(self)}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Constant(Schedule):
    """lr throughout (after any warm-up)."""


class StepDecay(Schedule):
    """lr * gamma ** (steps // step_size), as torch's StepLR stepped every iteration."""

    def __init__(self, lr, step_size, gamma=0.1, warmup_steps=0):
        super().__init__(lr, warmup_steps)
        if int(step_size) != step_size or step_size < 1:
            raise ValueError(f"StepDecay: step_size must be a positive integer, got {step_size!r}")
        self.step_size, self.gamma = int(step_size), float(gamma)

    def after_warmup(self, step):
        return self.lr * self.gamma ** (step // self.step_size)


class Cosine(Schedule):
    """Cosine annealing from lr to min_lr over total_steps (warm-up included), then min_lr."""

    def __init__(self, lr, total_steps, min_lr=0.0, warmup_steps=0):
        super().__init__(lr, warmup_steps)
        if int(total_steps) != total_steps or total_steps <= warmup_steps:
            raise ValueError(f"Cosine: total_steps must be an integer > warmup_steps, got {total_steps!r}")
        self.total_steps, self.min_lr = int(total_steps), float(min_lr)

    def after_warmup(self, step):
        span = self.total_steps - self.warmup_steps
        t = min(step, span) / span
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


SCHEDULES = {cls.__name__: cls for cls in (Constant, StepDecay, Cosine)}


def from_config(config):
    """The schedule a `config()` dict describes (None for None)."""
    if config is None:
        return None
    args = dict(config)
    return SCHEDULES[args.pop("type")](**args)
