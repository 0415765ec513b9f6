"""Every CUDA kernel (fastnet.kernels.cuda) against its CPU twin (fastnet.kernels.cpu) on the same
inputs, on tiny shapes: without a GPU they run on Numba's CUDA simulator, which executes every GPU
thread in Python.

The simulator has to be chosen before numba is first imported: tests/conftest.py sets
NUMBA_ENABLE_CUDASIM=1 where no GPU is usable.
"""

import inspect
import os
import subprocess
import sys

import numpy as np
import pytest
from numba import cuda

import fastnet.kernels.cpu as kc
import fastnet.kernels.cuda as kg
from fastnet.kernels.cuda.gemm import gemm
from fastnet.kernels.workspace import WorkspaceSpec, allocate, parameter_names

# The simulator's splitmix64 runs on NumPy uint64 scalars, whose wrap-around (intended) warns; on a
# GPU, numba-cuda warns that these tiny launches leave most of it idle.
pytestmark = [pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:Grid size")]

# Relative tolerance, and an absolute one relative to the largest magnitude of the result: sums
# that cancel to near 0 keep the rounding error of their large terms.
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


def empty(shape, dtype, fill=np.nan):
    """A device array filled with garbage (NaN), so an element a kernel forgets to write shows."""
    return cuda.to_device(np.full(shape, fill, dtype=dtype))


def close(gpu, cpu, dtype):
    cpu = np.asarray(cpu)
    scale = max(1.0, float(np.nanmax(np.abs(cpu)))) if cpu.size else 1.0
    np.testing.assert_allclose(gpu.copy_to_host(), cpu, rtol=TOL[dtype], atol=TOL[dtype] * scale)


def same(gpu, cpu):
    np.testing.assert_array_equal(gpu.copy_to_host(), cpu)


def randn(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------- the namespace


def _public_functions(module):
    return {name: obj for name, obj in vars(module).items()
            if not name.startswith("_") and callable(obj) and not inspect.ismodule(obj)}


# Arguments for every op's <op>_workspace_shapes (the same on both devices).
WORKSPACE_ARGS = {"conv2d": (3, 28, 28, 16, 3, 3, 1, 1, 1, 1), "dense": (9, 5),
                  "maxpool2d": (3, 5, 5, 2, 2, 2, 2, 0, 0), "batchnorm": (4,), "dropout": ((3, 4),),
                  "cross_entropy": (10,)}
SUFFIX = "_workspace_shapes"


def _op(kernel_name):
    """The op a kernel belongs to: dense_backward_weight -> dense."""
    for part in ("_forward", "_backward", "_update"):
        if part in kernel_name:
            return kernel_name[:kernel_name.index(part)]
    return kernel_name


def _declared(namespace, op):
    """The workspace names namespace declares for op (none where it has no <op>_workspace_shapes)."""
    shapes = getattr(namespace, op + SUFFIX, None)
    return set() if shapes is None else set(shapes(*WORKSPACE_ARGS[op]))


def _split(namespace, name, fn):
    """(arguments, workspace parameters) of kernel `name`: its workspaces are the trailing
    parameters named by its op's workspace_shapes on that device, and no other parameter has such a
    name."""
    params = list(parameter_names(fn))
    declared = _declared(namespace, _op(name))
    split = len(params)
    while split and params[split - 1] in declared:
        split -= 1
    args, workspaces = params[:split], params[split:]
    assert not declared & set(args), f"{namespace.__name__}.{name}: workspaces must come last: {params}"
    return args, workspaces


def test_namespace_has_every_cpu_kernel_with_the_same_arguments():
    cpu = _public_functions(kc)
    gpu = _public_functions(kg)
    assert set(cpu) == set(gpu), f"CPU only: {sorted(set(cpu) - set(gpu))}, CUDA only: {sorted(set(gpu) - set(cpu))}"
    taken = {}
    for name in cpu:
        if name.endswith(SUFFIX):
            assert list(parameter_names(cpu[name])) == list(parameter_names(gpu[name])), name
            assert _op(name[:-len(SUFFIX)]) in WORKSPACE_ARGS, f"{name}: add its arguments to WORKSPACE_ARGS"
            continue
        cpu_args, cpu_ws = _split(kc, name, cpu[name])
        gpu_args, gpu_ws = _split(kg, name, gpu[name])
        assert cpu_args == gpu_args, name           # the same arguments in the same order
        for device, ws in (("cpu", cpu_ws), ("cuda", gpu_ws)):
            taken.setdefault((device, _op(name)), set()).update(ws)
    # every workspace a device declares is taken by one of that op's kernels there: no placeholders
    for op in WORKSPACE_ARGS:
        for device, namespace in (("cpu", kc), ("cuda", kg)):
            assert _declared(namespace, op) == taken.get((device, op), set()), (device, op)


def test_workspace_shapes():
    shapes = kg.conv2d_workspace_shapes(3, 28, 28, 16, 3, 3, 1, 1, 1, 1)
    assert set(shapes) == {"cols", "partial"}       # the CPU's padded and product are its own
    assert set(kc.conv2d_workspace_shapes(3, 28, 28, 16, 3, 3, 1, 1, 1, 1)) == {"cols", "padded", "partial",
                                                                                "product"}
    assert all(isinstance(s, WorkspaceSpec) and not s.per_sample for s in shapes.values())
    G, K, P = shapes["cols"].shape
    assert (K, P) == (27, 784) and 1 <= G <= 256
    assert shapes["partial"].shape == (G, 27, 16)  # the CPU's (K, O) layout, one per image of a chunk
    big = kg.conv2d_workspace_shapes(256, 16, 16, 256, 3, 3, 1, 1, 1, 1)
    assert np.prod(big["cols"].shape) <= 1 << 22 or big["cols"].shape[0] == 1
    assert kg.dense_workspace_shapes(9, 5) == {}
    assert set(kc.dense_workspace_shapes(9, 5)) == {"product", "partial"}
    for k in (kc, kg):
        (argmax,) = k.maxpool2d_workspace_shapes(3, 5, 5, 3, 3, 2, 2, 1, 1).values()
        assert argmax.shape == (3, 3, 3) and argmax.dtype == np.int32 and argmax.per_sample
        ws = allocate(np.zeros, k.batchnorm_workspace_shapes(4), 8, np.float32)
        assert {name: a.shape for name, a in ws.items()} == {"save_mean": (4,), "save_invstd": (4,)}
        ws = allocate(np.zeros, k.dropout_workspace_shapes((3, 4)), 8, np.float32)
        assert ws["mask"].shape == (8, 3, 4) and ws.batch("mask", 5).shape == (5, 3, 4)


def test_cpu_path_never_imports_numba_cuda():
    code = ("import sys, fastnet, fastnet.kernels as k; k.namespace('cpu'); "
            "sys.exit(1 if 'numba.cuda' in sys.modules else 0)")
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_ENABLE_CUDASIM"}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


# ---------------------------------------------------------------- GEMM and dense


def test_gemm_tiles_transposes_bias_accumulate():
    rng = np.random.default_rng(1)
    dtype = np.float32
    M, K, N = 7, 9, 5                   # no multiple of the tile: every edge is partial
    a = randn(rng, (2, M, K), dtype)
    b = randn(rng, (1, K, N), dtype)    # one b for both z: broadcast
    c = empty((2, M, N), dtype)
    gemm(dev(a), dev(b), c)
    close(c, a @ b, dtype)
    bias = randn(rng, M, dtype)
    c0 = randn(rng, (2, M, N), dtype)
    c = dev(c0)
    gemm(dev(a.transpose(0, 2, 1)), dev(b.transpose(0, 2, 1)), c, bias=dev(bias), trans_a=True,
         trans_b=True, bias_on_rows=True, accumulate=True)
    close(c, c0 + (a @ b + bias[:, None]), dtype)
    # more than one tile of rows and of the reduction axis (17 = 16 + 1), column bias
    a = randn(rng, (1, 17, 17), dtype)
    b = randn(rng, (1, 17, 6), dtype)
    bias = randn(rng, 6, dtype)
    c = empty((1, 17, 6), dtype)
    gemm(dev(a), dev(b), c, bias=dev(bias))
    close(c, a @ b + bias, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense(dtype):
    rng = np.random.default_rng(2)
    N, I, O = 7, 9, 5
    x, w, b, dy = randn(rng, (N, I), dtype), randn(rng, (O, I), dtype), randn(rng, O, dtype), randn(rng, (N, O), dtype)
    ws = allocate(np.empty, kc.dense_workspace_shapes(I, O), N, dtype)
    y = np.empty((N, O), dtype)
    kc.dense_forward(x, w, b, y, **ws.for_kernel(kc.dense_forward, N))
    yg = empty((N, O), dtype)
    kg.dense_forward(dev(x), dev(w), dev(b), yg)
    close(yg, y, dtype)
    kc.dense_forward(x, w, None, y, **ws.for_kernel(kc.dense_forward, N))
    kg.dense_forward(dev(x), dev(w), None, yg)
    close(yg, y, dtype)
    dx = np.empty((N, I), dtype)
    kc.dense_backward_input(dy, w, dx)
    dxg = empty((N, I), dtype)
    kg.dense_backward_input(dev(dy), dev(w), dxg)
    close(dxg, dx, dtype)
    dw = np.empty((O, I), dtype)
    kc.dense_backward_weight(x, dy, dw, **ws.for_kernel(kc.dense_backward_weight, N))
    dwg = empty((O, I), dtype)
    kg.dense_backward_weight(dev(x), dev(dy), dwg)
    close(dwg, dw, dtype)
    db = np.empty(O, dtype)
    kc.bias_backward(dy, db)
    dbg = empty(O, dtype)
    kg.bias_backward(dev(dy), dbg)
    same(dbg, db)                       # the same sum in the same order


# ---------------------------------------------------------------- convolution


def _conv_case(rng, dtype, N, C, H, W, O, KH, KW, sh, sw, ph, pw, bias, want_dx, chunk=None, relu=False):
    OH, OW = (H + 2 * ph - KH) // sh + 1, (W + 2 * pw - KW) // sw + 1
    x, w = randn(rng, (N, C, H, W), dtype), randn(rng, (O, C, KH, KW), dtype)
    b = randn(rng, O, dtype) if bias else None
    dy = randn(rng, (N, O, OH, OW), dtype)
    geometry = (sh, sw, ph, pw)

    cpu_ws = allocate(np.empty, kc.conv2d_workspace_shapes(C, H, W, O, KH, KW, *geometry), N, dtype)
    y = np.empty((N, O, OH, OW), dtype)
    kc.conv2d_forward(x, w, b, y, *geometry, relu, cols=cpu_ws["cols"], padded=cpu_ws["padded"])
    dw, db = np.empty_like(w), (np.empty(O, dtype) if bias else None)
    dx = np.empty_like(x) if want_dx else None
    # (a fused ReLU masks dy in place: each device gets its own copy)
    kc.conv2d_backward(x, w, y, dy.copy(), dw, db, dx, *geometry, relu, **cpu_ws)

    shapes = {name: spec.shape for name, spec in kg.conv2d_workspace_shapes(C, H, W, O, KH, KW, *geometry).items()}
    if chunk is not None:               # fewer images per chunk than the batch: several chunks
        shapes["cols"] = (chunk, *shapes["cols"][1:])
        shapes["partial"] = (chunk, *shapes["partial"][1:])
    ws = {k: empty(s, dtype) for k, s in shapes.items()}
    yg = empty(y.shape, dtype)
    kg.conv2d_forward(dev(x), dev(w), dev(b) if bias else None, yg, *geometry, relu, cols=ws["cols"])
    close(yg, y, dtype)
    dwg = empty(w.shape, dtype)
    dbg = empty(O, dtype) if bias else None
    dxg = empty(x.shape, dtype) if want_dx else None
    kg.conv2d_backward(dev(x), dev(w), yg, dev(dy), dwg, dbg, dxg, *geometry, relu, **ws)
    close(dwg, dw, dtype)
    if bias:
        close(dbg, db, dtype)
    if want_dx:
        close(dxg, dx, dtype)


def test_conv_stride2_pad1_nonsquare():
    _conv_case(np.random.default_rng(3), np.float32, N=2, C=2, H=5, W=5, O=3, KH=3, KW=2,
               sh=2, sw=2, ph=1, pw=1, bias=True, want_dx=True)


def test_conv_no_bias_no_dx_rectangular_image():
    _conv_case(np.random.default_rng(4), np.float32, N=2, C=2, H=5, W=6, O=2, KH=2, KW=3,
               sh=1, sw=2, ph=0, pw=1, bias=False, want_dx=False)


def test_conv_several_chunks_float64():
    # 3 images in chunks of 2: the weight gradient adds the second chunk into the first's partials.
    _conv_case(np.random.default_rng(5), np.float64, N=3, C=2, H=4, W=4, O=3, KH=2, KW=2,
               sh=1, sw=1, ph=0, pw=0, bias=True, want_dx=True, chunk=2)


def test_conv_fused_relu():
    _conv_case(np.random.default_rng(6), np.float32, N=3, C=2, H=6, W=5, O=4, KH=3, KW=3,
               sh=1, sw=1, ph=1, pw=1, bias=True, want_dx=True, chunk=2, relu=True)


# ---------------------------------------------------------------- pooling


@pytest.mark.parametrize("geometry", [(2, 2, 2, 2, 0, 0), (3, 3, 2, 2, 1, 1)])
def test_maxpool(geometry):
    rng = np.random.default_rng(6)
    dtype = np.float32
    kh, kw, sh, sw, ph, pw = geometry
    N, C, H, W = 2, 3, 5, 5
    OH, OW = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    x = rng.integers(-3, 4, (N, C, H, W)).astype(dtype)   # small integers: ties, first maximum wins
    x[0, 0, 1, 1] = np.nan                                  # a NaN wins over any number
    y, argmax = np.empty((N, C, OH, OW), dtype), np.empty((N, C, OH, OW), np.int64)
    kc.maxpool2d_forward(x, y, *geometry, argmax)
    yg, ag = empty(y.shape, dtype), cuda.to_device(np.full(y.shape, -1, np.int64))
    kg.maxpool2d_forward(dev(x), yg, *geometry, ag)
    same(ag, argmax)
    same(yg, y)
    dy = randn(rng, y.shape, dtype)
    dx = np.empty_like(x)
    kc.maxpool2d_backward(dy, dx, *geometry, argmax)
    dxg = empty(x.shape, dtype)
    kg.maxpool2d_backward(dev(dy), dxg, *geometry, ag)
    close(dxg, dx, dtype)


@pytest.mark.parametrize("geometry", [(2, 2, 2, 2, 0, 0), (3, 3, 2, 2, 1, 1), (3, 2, 1, 2, 1, 0)])
def test_avgpool(geometry):
    rng = np.random.default_rng(7)
    dtype = np.float32
    kh, kw, sh, sw, ph, pw = geometry
    N, C, H, W = 2, 2, 5, 5
    OH, OW = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    x, dy = randn(rng, (N, C, H, W), dtype), randn(rng, (N, C, OH, OW), dtype)
    y = np.empty((N, C, OH, OW), dtype)
    kc.avgpool2d_forward(x, y, *geometry)
    yg = empty(y.shape, dtype)
    kg.avgpool2d_forward(dev(x), yg, *geometry)
    same(yg, y)
    dx = np.empty_like(x)
    kc.avgpool2d_backward(dy, dx, *geometry)
    dxg = empty(x.shape, dtype)
    kg.avgpool2d_backward(dev(dy), dxg, *geometry)
    same(dxg, dx)                       # the gather adds in the CPU's order


def test_global_avgpool():
    rng = np.random.default_rng(8)
    dtype = np.float32
    x, dy = randn(rng, (2, 3, 5, 4), dtype), randn(rng, (2, 3), dtype)
    y = np.empty((2, 3), dtype)
    kc.global_avgpool2d_forward(x, y)
    yg = empty(y.shape, dtype)
    kg.global_avgpool2d_forward(dev(x), yg)
    close(yg, y, dtype)
    dx = np.empty_like(x)
    kc.global_avgpool2d_backward(dy, dx)
    dxg = empty(x.shape, dtype)
    kg.global_avgpool2d_backward(dev(dy), dxg)
    same(dxg, dx)


# ---------------------------------------------------------------- batch normalisation


@pytest.mark.parametrize("dtype,shape", [(np.float32, (2, 3, 12)), (np.float64, (2, 2, 9)),
                                         (np.float32, (5, 2, 1))])
def test_batchnorm(dtype, shape):
    rng = np.random.default_rng(9)
    N, C, L = shape
    x = (randn(rng, shape, dtype) * 3 + 2).astype(dtype)
    dy = randn(rng, shape, dtype)
    weight, bias = randn(rng, C, dtype), randn(rng, C, dtype)
    rm0, rv0 = randn(rng, C, dtype), rng.uniform(0.5, 2, C).astype(dtype)
    eps, momentum = 1e-5, 0.1

    y, mean, invstd, rm, rv = np.empty(shape, dtype), np.empty(C, dtype), np.empty(C, dtype), rm0.copy(), rv0.copy()
    kc.batchnorm_forward_train(x, weight, bias, eps, momentum, y, rm, rv, mean, invstd)
    yg, meang, invstdg, rmg, rvg = empty(shape, dtype), empty(C, dtype), empty(C, dtype), dev(rm0), dev(rv0)
    kg.batchnorm_forward_train(dev(x), dev(weight), dev(bias), eps, momentum, yg, rmg, rvg, meang, invstdg)
    for gpu, cpu in ((yg, y), (meang, mean), (invstdg, invstd), (rmg, rm), (rvg, rv)):
        close(gpu, cpu, dtype)

    kc.batchnorm_forward_eval(x, weight, bias, rm, rv, eps, y)
    kg.batchnorm_forward_eval(dev(x), dev(weight), dev(bias), dev(rm), dev(rv), eps, yg)
    close(yg, y, dtype)

    dx, dweight, dbias = np.empty(shape, dtype), np.empty(C, dtype), np.empty(C, dtype)
    kc.batchnorm_backward(x, dy, weight, dx, dweight, dbias, mean, invstd)
    dxg, dweightg, dbiasg = empty(shape, dtype), empty(C, dtype), empty(C, dtype)
    kg.batchnorm_backward(dev(x), dev(dy), dev(weight), dxg, dweightg, dbiasg, dev(mean), dev(invstd))
    close(dweightg, dweight, dtype)
    close(dbiasg, dbias, dtype)
    close(dxg, dx, dtype)
    dweightg, dbiasg = empty(C, dtype), empty(C, dtype)
    kg.batchnorm_backward(dev(x), dev(dy), dev(weight), None, dweightg, dbiasg, dev(mean), dev(invstd))
    close(dweightg, dweight, dtype)
    close(dbiasg, dbias, dtype)


# ---------------------------------------------------------------- activations and dropout


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elementwise_activations(dtype):
    rng = np.random.default_rng(10)
    x = randn(rng, 50, dtype) * 4
    x[:3] = (0.0, 40.0, -40.0)                 # the derivative at 0; sigmoid's two branches
    dy = randn(rng, 50, dtype)
    cases = [
        (kc.relu_forward, kg.relu_forward, (), kc.relu_backward, kg.relu_backward, "x"),
        (kc.leaky_relu_forward, kg.leaky_relu_forward, (0.01,), kc.leaky_relu_backward,
         kg.leaky_relu_backward, "x"),
        (kc.sigmoid_forward, kg.sigmoid_forward, (), kc.sigmoid_backward, kg.sigmoid_backward, "y"),
        (kc.tanh_forward, kg.tanh_forward, (), kc.tanh_backward, kg.tanh_backward, "y"),
    ]
    for cpu_fwd, gpu_fwd, extra, cpu_bwd, gpu_bwd, reads in cases:
        y = np.empty_like(x)
        cpu_fwd(x, *extra, y)
        yg = empty(x.shape, dtype)
        gpu_fwd(dev(x), *extra, yg)
        close(yg, y, dtype)
        saved = x if reads == "x" else y
        dx = np.empty_like(x)
        cpu_bwd(saved, dy, *extra, dx)
        dxg = empty(x.shape, dtype)
        gpu_bwd(dev(saved), dev(dy), *extra, dxg)
        close(dxg, dx, dtype)
    yg = empty(x.shape, dtype)
    kg.copy_forward(dev(x), yg)
    same(yg, x)


def test_softmax():
    rng = np.random.default_rng(11)
    dtype = np.float32
    x, dy = randn(rng, (4, 7), dtype) * 5, randn(rng, (4, 7), dtype)
    x[0] += 500                                      # large logits: the maximum is subtracted
    y = np.empty_like(x)
    kc.softmax_forward(x, y)
    yg = empty(x.shape, dtype)
    kg.softmax_forward(dev(x), yg)
    close(yg, y, dtype)
    dx = np.empty_like(x)
    kc.softmax_backward(y, dy, dx)
    dxg = empty(x.shape, dtype)
    kg.softmax_backward(dev(y), dev(dy), dxg)
    close(dxg, dx, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_mask_is_the_cpus_bit_for_bit(dtype):
    rng = np.random.default_rng(12)
    x, dy = randn(rng, 64, dtype), randn(rng, 64, dtype)
    p, seed, offset = 0.3, 2**62 + 12345, 7 * 2**32 + 5   # slot seeds are < 2**62
    mask, y = np.empty_like(x), np.empty_like(x)
    kc.dropout_forward(x, p, seed, offset, y, mask)
    maskg, yg = empty(x.shape, dtype), empty(x.shape, dtype)
    kg.dropout_forward(dev(x), p, seed, offset, yg, maskg)
    same(maskg, mask)
    same(yg, y)
    assert 0 < np.count_nonzero(mask) < x.size
    dx = np.empty_like(x)
    kc.dropout_backward(dy, dx, mask)
    dxg = empty(x.shape, dtype)
    kg.dropout_backward(dev(dy), dxg, maskg)
    same(dxg, dx)


# ---------------------------------------------------------------- losses


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_and_count_correct(dtype):
    rng = np.random.default_rng(13)
    N, K = 6, 4
    logits = randn(rng, (N, K), dtype) * 3
    logits[1] = (1.0, 2.0, 2.0, 0.0)                 # a tie: the first maximum is the prediction
    logits[2, 0] = 200.0                             # large logits stay finite
    labels = rng.integers(0, K, N).astype(np.int64)
    labels[1] = 2
    probs = np.empty_like(logits)
    loss = kc.cross_entropy_forward(logits, labels, probs)
    probsg = empty(logits.shape, dtype)
    lossg = kg.cross_entropy_forward(dev(logits), dev(labels), probsg)
    assert isinstance(lossg, float)
    np.testing.assert_allclose(lossg, loss, rtol=TOL[dtype])
    close(probsg, probs, dtype)
    dlogits = np.empty_like(logits)
    kc.cross_entropy_backward(labels, 1.0 / N, dlogits, probs)
    dlogitsg = empty(logits.shape, dtype)
    kg.cross_entropy_backward(dev(labels), 1.0 / N, dlogitsg, probsg)
    close(dlogitsg, dlogits, dtype)
    correct = kg.count_correct(dev(logits), dev(labels))
    assert isinstance(correct, int) and correct == kc.count_correct(logits, labels)
    assert kg.count_correct(dev(logits), dev(np.argmax(logits, axis=1))) == N


def test_mse():
    rng = np.random.default_rng(14)
    dtype = np.float32
    pred, target = randn(rng, 37, dtype), randn(rng, 37, dtype)
    total = kc.mse_forward(pred, target)
    totalg = kg.mse_forward(dev(pred), dev(target))
    assert isinstance(totalg, float)
    np.testing.assert_allclose(totalg, total, rtol=1e-12)
    dpred = np.empty_like(pred)
    kc.mse_backward(pred, target, 1.0 / 37, dpred)
    dpredg = empty(pred.shape, dtype)
    kg.mse_backward(dev(pred), dev(target), 1.0 / 37, dpredg)
    close(dpredg, dpred, dtype)


# ---------------------------------------------------------------- optimizers and augmentation


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


# ---------------------------------------------------------------- graph kernels (Add, Concat, Slice)


def test_merge_kernels():
    rng = np.random.default_rng(18)
    dtype = np.float32
    a, b = randn(rng, 30, dtype), randn(rng, 30, dtype)
    y = np.empty_like(a)
    kc.add_forward(a, b, y)
    yg = empty(a.shape, dtype)
    kg.add_forward(dev(a), dev(b), yg)
    same(yg, y)
    kc.accumulate(y, b)
    kg.accumulate(yg, dev(b))
    same(yg, y)
    kc.fill(y, 0.25)
    kg.fill(yg, 0.25)
    same(yg, y)
    src = randn(rng, (2, 3, 4), dtype)
    dst0 = randn(rng, (2, 5, 4), dtype)
    for accumulate in (False, True):
        dst = dst0.copy()
        kc.copy_channels(src, 1, dst, 2, 2, accumulate)
        dstg = dev(dst0)
        kg.copy_channels(dev(src), 1, dstg, 2, 2, accumulate)
        same(dstg, dst)


# ---------------------------------------------------------------- buffers (memory.py)


def test_buffers():
    buffer = kg.zeros((3, 4), np.float32)
    same(buffer, np.zeros((3, 4), np.float32))
    stage = kg.staging(buffer)
    assert stage.shape == (3, 4) and stage.dtype == np.float32
    stage[...] = np.arange(12).reshape(3, 4)
    kg.copy_in(buffer[:2], stage[:2])                 # a smaller last batch: views of both
    same(buffer, np.vstack([np.arange(8).reshape(2, 4), np.zeros((1, 4))]))
    kg.copy_in(buffer, np.ones((3, 4), np.float64))  # cast to the buffer's dtype
    host = np.empty((5, 4), np.float32)
    kg.copy_out(host[1:4], buffer)
    np.testing.assert_array_equal(host[1:4], np.ones((3, 4)))
    wide = np.empty((3, 4), np.float64)
    kg.copy_out(wide, buffer)
    np.testing.assert_array_equal(wide, np.ones((3, 4)))
    copy = kg.to_host(buffer)
    assert isinstance(copy, np.ndarray) and copy.dtype == np.float32
    np.testing.assert_array_equal(copy, np.ones((3, 4)))
