"""The optimizers' update kernels (fastnet.kernels.cuda against fastnet.kernels.cpu): SGD (momentum,
dampening, Nesterov, weight decay) and Adam (L2 or decoupled weight decay), three steps each from
zero state, on the same gradients. Optimizers are not layers: through a model they are checked
against torch.optim in tests/test_torch_parity.py and on CUDA in tests/test_cuda_model.py.
"""

import numpy as np
import pytest
from cuda_helpers import CUDA_WARNINGS, close, dev, randn

import fastnet as fn
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


# -- gradient clipping by global norm (clip_norm=) ------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("max_norm", [0.5, 1e3], ids=["clips", "leaves"])
def test_clip_grad_norm_matches_torch_and_the_cuda_kernel(max_norm, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(17)
    g = randn(rng, 3000, dtype)      # several threads' shares on the CPU, strided ones on CUDA
    expected = torch.from_numpy(g.copy())
    expected.grad = expected.clone()
    torch.nn.utils.clip_grad_norm_([expected], max_norm)
    ours = g.copy()
    kc.clip_grad_norm(ours, max_norm)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(ours, expected.grad.numpy(), rtol=tol, atol=0)
    if max_norm > 10:
        np.testing.assert_array_equal(ours, g)          # under the norm: untouched
    else:
        assert np.linalg.norm(ours.astype(np.float64)) == pytest.approx(max_norm, rel=1e-5)
    gg = dev(g)
    kg.clip_grad_norm(gg, max_norm)
    close(gg, ours, dtype)


def _pair(clip_norm, kind):
    import torch
    fn_net = fn.Sequential([fn.Dense(6), fn.Tanh(), fn.Dense(3)])
    torch_net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    if kind == "sgd":
        ours = fn.SGD(lr=0.2, momentum=0.9, weight_decay=1e-2, clip_norm=clip_norm)
        theirs = lambda params: torch.optim.SGD(params, lr=0.2, momentum=0.9, weight_decay=1e-2)
    elif kind == "adam":
        ours = fn.Adam(lr=0.05, weight_decay=1e-2, clip_norm=clip_norm)
        theirs = lambda params: torch.optim.Adam(params, lr=0.05, weight_decay=1e-2)
    else:
        ours = fn.AdamW(lr=0.05, clip_norm=clip_norm)
        theirs = lambda params: torch.optim.AdamW(params, lr=0.05)
    model = fn_net.compile((4,), 8, loss="cross_entropy", optimizer=ours, dtype="float64", seed=5)
    torch_net.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return model, torch_net, theirs(torch_net.parameters())


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("clip_norm", [0.05, 100.0], ids=["clips", "leaves"])
def test_clip_norm_steps_match_torch_clip_grad_norm_then_step(clip_norm, kind):
    torch = pytest.importorskip("torch")
    model, net, opt = _pair(clip_norm, kind)
    rng = np.random.default_rng(18)
    norms = []
    for step in range(4):
        x, y = rng.normal(size=(8, 4)) * 3, rng.integers(0, 3, 8)
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(net.parameters(), clip_norm)))
        opt.step()
        model.train_step(x, y)
        for name, value in net.state_dict().items():
            np.testing.assert_allclose(model.state_dict()[name], value.numpy(), rtol=1e-10, atol=1e-12,
                                       err_msg=f"{name} after step {step + 1}")
    # the case is what its name says: every step clipped, or none
    assert all(n > clip_norm for n in norms) if clip_norm < 1 else all(n < clip_norm for n in norms), norms


def test_clip_norm_must_be_none_or_a_finite_number_above_zero():
    for make in (lambda c: fn.SGD(lr=0.1, clip_norm=c), lambda c: fn.Adam(clip_norm=c),
                 lambda c: fn.AdamW(clip_norm=c)):
        assert make(None).clip_norm is None
        assert make(2).clip_norm == 2.0
        for bad in (0, -1.0, float("inf"), float("nan"), True, "1"):
            with pytest.raises(fn.SpecError, match="clip_norm"):   # a ValueError too
                make(bad)
    assert "clip_norm=0.5" in repr(fn.AdamW(clip_norm=0.5))


def test_adam_betas_outside_zero_one_are_a_spec_error():
    for betas in ((0.9, 1.0), (-0.1, 0.999), (0.9,)):
        with pytest.raises(fn.SpecError, match="betas"):
            fn.Adam(betas=betas)


def test_a_checkpoint_saved_with_clip_norm_resumes_with_it(tmp_path):
    pytest.importorskip("torch")
    model, _, _ = _pair(0.05, "adam")
    rng = np.random.default_rng(19)
    x, y = rng.normal(size=(8, 4)) * 3, rng.integers(0, 3, 8)
    model.train_step(x, y)
    model.save(tmp_path / "clipped.safetensors")
    loaded = fn.load(tmp_path / "clipped.safetensors")
    assert loaded.optimizer.clip_norm == 0.05
    for _ in range(2):          # the same steps: clipped alike
        assert loaded.train_step(x, y) == model.train_step(x, y)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value, err_msg=name)


def test_the_command_line_takes_clip_norm():
    from fastnet import cli, run
    settings = dict(run.DEFAULTS, clip_norm=0.25)
    for name in ("sgd", "adam", "adamw"):
        assert run.build_optimizer(dict(settings, optimizer=name)).clip_norm == 0.25
    assert run.build_optimizer(run.DEFAULTS).clip_norm is None
    for bad in ("0", "-1", "inf", "x"):
        with pytest.raises(SystemExit) as info:
            cli.main(["train", "--clip-norm", bad])
        assert info.value.code == 2
