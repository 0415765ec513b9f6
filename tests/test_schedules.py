"""Learning-rate schedules: PyTorch's numbers where it defines them, warm-up, use in fit."""

import math

import numpy as np
import pytest

import fastnet as fn
from fastnet import schedules


def torch_lrs(make_scheduler, steps, lr=0.1):
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = make_scheduler(torch, opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return lrs


def test_step_decay_matches_torch_steplr():
    expected = torch_lrs(lambda t, o: t.optim.lr_scheduler.StepLR(o, step_size=4, gamma=0.3), 13)
    schedule = schedules.StepDecay(0.1, step_size=4, gamma=0.3)
    np.testing.assert_allclose([schedule(s) for s in range(13)], expected, rtol=1e-12)


def test_cosine_matches_torch_cosine_annealing():
    expected = torch_lrs(lambda t, o: t.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.01), 10)
    schedule = schedules.Cosine(0.1, total_steps=10, min_lr=0.01)
    np.testing.assert_allclose([schedule(s) for s in range(10)], expected, rtol=1e-10)
    assert schedule(10) == schedule(50) == pytest.approx(0.01)


def test_warmup_ramps_linearly_then_hands_over():
    schedule = schedules.Cosine(1.0, total_steps=12, warmup_steps=4)
    assert [schedule(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert schedule(4) == 1.0 and schedule(8) == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert schedules.Constant(0.2, warmup_steps=2)(0) == 0.1


@pytest.mark.parametrize("make", [lambda: schedules.Cosine(0.1, total_steps=3, warmup_steps=3),
                                  lambda: schedules.StepDecay(0.1, step_size=0),
                                  lambda: schedules.Constant(-1.0),
                                  lambda: schedules.Constant(0.1, warmup_steps=1.5)])
def test_bad_schedules_are_refused(make):
    with pytest.raises(ValueError):
        make()


def test_fit_sets_the_learning_rate_before_every_step():
    model = fn.Sequential([fn.Dense(2)]).compile((3,), 4, optimizer=fn.SGD(lr=1.0), seed=0)
    seen = []
    original = model.optimizer.update

    def spy(*args):
        seen.append(model.optimizer.lr)
        return original(*args)
    model.optimizer.update = spy
    x, y = np.ones((10, 3), np.float32), np.arange(10) % 2
    schedule = schedules.StepDecay(0.5, step_size=2, gamma=0.1)
    model.fit(x, y, epochs=2, verbose=0, schedule=schedule)    # 3 steps per epoch
    np.testing.assert_allclose(seen, [schedule(s) for s in range(6)])
    assert model.schedule is schedule
