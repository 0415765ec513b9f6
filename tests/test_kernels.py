"""The kernel namespaces as a whole: fastnet.kernels.cpu and fastnet.kernels.cuda export the same
kernels with the same arguments and one workspace contract (each op's <op>_workspace_shapes, the
workspaces passed by those names), the CPU path never imports numba.cuda, and the CUDA package's
own pieces that no layer family owns: the tiled GEMM under its dense and conv kernels, and the
device buffers of memory.py. Each kernel against its CPU twin is in the test file of the layer
family that uses it (tests/layers/test_<family>.py), the optimizers' in tests/test_optim.py.
"""

import inspect
import os
import subprocess
import sys

import numpy as np
from cuda_helpers import CUDA_WARNINGS, close, dev, empty, randn, same

import fastnet.kernels.cpu as kc
import fastnet.kernels.cuda as kg
from fastnet.kernels.cuda.gemm import gemm
from fastnet.kernels.workspace import WorkspaceSpec, allocate, parameter_names

pytestmark = CUDA_WARNINGS


# -- the two namespaces ---------------------------------------------------------------------------

def _public_functions(module):
    return {name: obj for name, obj in vars(module).items()
            if not name.startswith("_") and callable(obj) and not inspect.ismodule(obj)}


# Arguments for every op's <op>_workspace_shapes (the same on both devices).
CONV_ARGS = (3, 28, 28, 16, 3, 3, 1, 1, 1, 1)      # a 3x3 stride-1 convolution: every algorithm applies
WORKSPACE_ARGS = {"conv2d": CONV_ARGS, "conv2d_winograd": CONV_ARGS, "conv2d_direct": CONV_ARGS, "dense": (9, 5),
                  "maxpool2d": (3, 5, 5, 2, 2, 2, 2, 0, 0), "batchnorm": (4,), "dropout": ((3, 4),),
                  "cross_entropy": (10,)}
WORKSPACE_ARGS.update({cell: (5, 3, 4) for cell in ("lstm", "gru", "rnn")})   # steps, features, hidden
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


def _algorithm_kernels(namespace):
    """The kernels of the convolution algorithms other than im2col that namespace has."""
    others = [name for name in namespace.conv2d_algorithms(*CONV_ARGS) if name != "im2col"]
    return {f"conv2d_{name}_{part}" for name in others for part in ("forward", "backward", "workspace_shapes")}


def test_namespace_has_every_cpu_kernel_with_the_same_arguments():
    # The same kernels on both devices, but for a convolution algorithm one device has and the other
    # has not (kernels/*/conv_algorithms): each lists what it has, and has every kernel of those.
    cpu = _public_functions(kc)
    gpu = _public_functions(kg)
    cpu_only = _algorithm_kernels(kc) - _algorithm_kernels(kg)
    assert cpu_only <= set(cpu) and _algorithm_kernels(kg) <= set(gpu)
    taken = {}
    for name in sorted(cpu_only):       # the same arguments as im2col's kernel, then its own workspaces
        kernel = cpu.pop(name)
        if not name.endswith(SUFFIX):
            args, workspaces = _split(kc, name, kernel)
            im2col = "conv2d_" + name.rsplit("_", 1)[1]
            assert args == _split(kc, im2col, cpu[im2col])[0], name
            taken.setdefault(("cpu", _op(name)), set()).update(workspaces)
    assert set(cpu) == set(gpu), f"CPU only: {sorted(set(cpu) - set(gpu))}, CUDA only: {sorted(set(gpu) - set(cpu))}"
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
            if hasattr(namespace, op + SUFFIX):
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


# -- the CUDA GEMM -------------------------------------------------------------------------------

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


# -- device buffers (fastnet/kernels/cuda/memory.py) ------------------------------------------------

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
