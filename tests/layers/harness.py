"""The one helper every layer family's tests use: `check_layer(net, input_shape, batch, device=,
dtype=, ...)` compiles a small network around the layer on one device in one dtype and runs

  (a) in float64: the central-difference gradient check of the input gradient and of every
      parameter gradient (tests/gradcheck.py: entry by entry on the CPU, along random directions
      on CUDA);
  (b) where a torch module is given: PyTorch parity (train-mode outputs, loss, input and parameter
      gradients, the buffers after two training forwards, eval-mode outputs), the torch module
      given the same weights through its load_state_dict;
  (c) on device="cuda": agreement with the same network, seed and weights compiled for the CPU
      (within the dtype's tolerance, or bit for bit where the arithmetic is the same by design);

and (by default on the CPU) that asking for no input gradient leaves the parameter gradients as
they were: the backward takes other paths when it need not write the input gradient. Only
the public model API is used (compile, gradients, forward, state_dict, load_state_dict).

The loss is "mse" against random targets of the output's shape unless another is asked for. The
weights the model starts from are its own initialisation, except that arrays initialised to a
constant (BatchNorm's ones and zeros) get random offsets, so that nothing is an identity.
"""

import numpy as np
import pytest
from gradcheck import check_gradients

import fastnet as fn

DTYPES = ("float32", "float64")
DEVICES = ("cpu", "cuda")

# (b): against PyTorch, the same arithmetic in another order. (c): CPU against CUDA, likewise.
# Absolute tolerances are these times the largest magnitude of the reference (at least 1): sums
# that cancel to near 0 keep the rounding error of their large terms.
PARITY_TOL = {"float64": 1e-10, "float32": 2e-5}
AGREEMENT_TOL = {"float64": 1e-11, "float32": 1e-5}

def grid(cases, cuda=(), ids=None, dtypes=DTYPES):
    """pytest parameters (case, device, dtype): every case on the CPU, the cases whose index is in
    `cuda` (tiny shapes: the simulator runs every GPU thread in Python) on CUDA too, each in every
    dtype of `dtypes`."""
    params = []
    for i, case in enumerate(cases):
        name = ids(case) if callable(ids) else (ids[i] if ids else str(i))
        for device in DEVICES:
            if device == "cuda" and i not in cuda:
                continue
            for dtype in dtypes:
                params.append(pytest.param(case, device, dtype, id=f"{name}-{device}-{dtype}"))
    return params


def build(net, input_shape=None, batch=2, device="cpu", dtype="float64", loss="mse", seed=0,
          conv_algorithm="auto"):
    """net() -> a layer, a list of layers or a network (Sequential or Graph), compiled."""
    network = net()
    if isinstance(network, (list, tuple)):
        network = fn.Sequential(list(network))
    elif not isinstance(network, (fn.Sequential, fn.Graph)):
        network = fn.Sequential([network])
    return network.compile(input_shape, batch, loss=loss, device=device, dtype=dtype, seed=seed,
                           conv_algorithm=conv_algorithm)


def targets(model, rows, loss, seed=1):
    rng = np.random.default_rng(seed)
    if loss == "cross_entropy":
        return rng.integers(0, model.output_shape[0], rows)
    return rng.normal(size=(rows, *model.output_shape))


def varied(state, seed=2):
    """The state with every constant array (BatchNorm's weight, bias and running statistics)
    offset by random amounts in [0.1, 0.5], which keeps a variance positive."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, value in state.items():
        if value.size and np.all(value == value.reshape(-1)[0]):
            value = value + rng.uniform(0.1, 0.5, value.shape).astype(value.dtype)
        out[name] = value
    return out


def observe(model, x, y):
    """What is compared between implementations, in a fixed order of calls: the loss and every
    gradient (input included) of one training forward and backward; the outputs of a second
    training forward; the parameters and buffers then (BatchNorm's running statistics after two
    updates); the outputs in evaluation mode."""
    seen = {}
    loss, grads = model.gradients(x, y, input_grad=True)
    seen["loss"] = np.float64(loss)
    for name, grad in grads.items():
        seen[f"gradient of {name}"] = grad
    seen["outputs (train)"] = model.forward(x, train=True)
    for name, value in model.state_dict().items():
        seen[f"state {name}"] = value
    seen["outputs (eval)"] = model.forward(x, train=False)
    return seen


def observe_torch(torch, module, x, y, loss, dtype):
    """observe() for a torch module in the same order of calls."""
    F = torch.nn.functional
    xt = torch.tensor(np.asarray(x, dtype), requires_grad=True)
    yt = torch.tensor(y) if loss == "cross_entropy" else torch.tensor(np.asarray(y, dtype))
    seen = {}
    module.train()
    out = module(xt)
    value = F.cross_entropy(out, yt) if loss == "cross_entropy" else F.mse_loss(out, yt)
    value.backward()
    seen["loss"] = np.float64(value.item())
    for name, param in module.named_parameters():
        seen[f"gradient of {name}"] = param.grad.numpy()
    seen["gradient of input"] = xt.grad.numpy()
    with torch.no_grad():
        seen["outputs (train)"] = module(xt).numpy()
        for name, tensor in module.state_dict().items():
            if not name.endswith("num_batches_tracked"):
                seen[f"state {name}"] = tensor.numpy()
        module.eval()
        seen["outputs (eval)"] = module(xt).numpy()
    return seen


def assert_close(ours, reference, tol, what):
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    finite = reference[np.isfinite(reference)]
    scale = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
    np.testing.assert_allclose(ours, reference, rtol=tol, atol=tol * scale, err_msg=what)


def compare(ours, reference, tol, against, exact=False):
    assert sorted(ours) == sorted(reference), f"{against}: different names"
    for key, value in reference.items():
        what = f"{key} (vs {against})"
        assert np.shape(ours[key]) == np.shape(value), what
        if exact and key != "loss":      # the loss is a reduction: summed in another order
            np.testing.assert_array_equal(ours[key], value, err_msg=what)
        else:
            assert_close(ours[key], value, tol, what)


def check_layer(net, input_shape=None, batch=2, *, device="cpu", dtype="float64", loss="mse",
                torch_net=None, x=None, y=None, rows=None, seed=0, gradcheck=True, directions=1,
                eps=1e-6, rtol=1e-5, atol=1e-7, exact=False, parity_tol=None, agreement_tol=None,
                without_input_grad=None, conv_algorithm="auto"):
    """Compile net() (a layer, a list of layers or a network) for `batch` on `device` in `dtype`
    and run the checks above on x (default: `rows` (= batch) standard-normal samples) and targets
    y (default: random, of the output's shape).

    torch_net(torch.nn) -> a module (or a list: nn.Sequential of them) whose state_dict names are
    the model's; where None, no parity check. gradcheck: run (a) (float64 only), along
    `directions` random directions per array on CUDA; eps/rtol/atol are its step and tolerances.
    exact: the CPU and CUDA agree bit for bit (all but the loss). without_input_grad: run that
    check (default: on the CPU only; a backward costs seconds on the simulator). conv_algorithm:
    compile's (a convolution algorithm to check on its own). Returns
    {"model", "checked": how many parameters were gradient-checked (None: not run), "observed":
    what observe() saw}."""
    if device == "cuda":
        pytest.importorskip("numba.cuda")
    model = build(net, input_shape, batch, device, dtype, loss, seed, conv_algorithm)
    initial = model.state_dict()
    state = varied(initial, seed)
    model.load_state_dict(state)
    rng = np.random.default_rng(seed + 10)
    x = rng.normal(size=(rows or batch, *model.input_shape)) if x is None else np.asarray(x)
    x = x.astype(dtype)
    y = targets(model, len(x), loss, seed + 11) if y is None else np.asarray(y)
    seen = observe(model, x, y)

    if without_input_grad or (without_input_grad is None and device == "cpu"):
        _, without = model.gradients(x, y)
        assert "input" not in without
        for name, grad in without.items():
            np.testing.assert_array_equal(grad, seen[f"gradient of {name}"],
                                          err_msg=f"{name} without the input gradient")

    if torch_net is not None:
        torch = pytest.importorskip("torch")
        module = torch_net(torch.nn)
        if isinstance(module, (list, tuple)):
            module = torch.nn.Sequential(*module)
        module = module.to(getattr(torch, dtype))      # before loading: a float32 module rounds
        missing, unexpected = module.load_state_dict(
            {name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in state.items()}, strict=False)
        assert not unexpected and all(n.endswith("num_batches_tracked") for n in missing), (missing, unexpected)
        compare(seen, observe_torch(torch, module, x, y, loss, dtype),
                parity_tol or PARITY_TOL[dtype], "torch")

    if device == "cuda":
        cpu = build(net, input_shape, batch, "cpu", dtype, loss, seed)
        for name, value in cpu.state_dict().items():      # the same seed, the same initialisation
            np.testing.assert_array_equal(initial[name], value, err_msg=f"initial {name} (vs cpu)")
        cpu.load_state_dict(state)
        compare(seen, observe(cpu, x, y), agreement_tol or AGREEMENT_TOL[dtype], "cpu", exact)

    checked = None
    if gradcheck and dtype == "float64":
        analytic = seen["loss"], {k[len("gradient of "):]: v for k, v in seen.items()
                                  if k.startswith("gradient of ")}
        checked = check_gradients(model, x, y, eps=eps, rtol=rtol, atol=atol, analytic=analytic,
                                  directions=directions if device == "cuda" else None)
    return {"model": model, "checked": checked, "observed": seen}
