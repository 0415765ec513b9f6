"""Pooling and batch-norm CPU kernels (and their layers) against plain-numpy references, PyTorch
(when installed) and float64 central differences.

Shapes are tiny on purpose: each dtype/layout signature compiles once in Numba.
"""

from types import SimpleNamespace

import numpy as np
import pytest
from gradcheck import numeric_gradient

from fastnet import kernels
from fastnet.errors import ShapeError
from fastnet.kernels.cpu import norm as knorm
from fastnet.kernels.cpu import pool as kpool
from fastnet.kernels.workspace import allocate
from fastnet.layers.base import Slot
from fastnet.layers.norm import BatchNorm1D, BatchNorm2D
from fastnet.layers.pool import AvgPool2D, GlobalAvgPool2D, MaxPool2D

DTYPES = [np.float64, np.float32]
TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-6)}

# (N, C, H, W, kh, kw, sh, sw, ph, pw)
POOL_CONFIGS = [
    (2, 3, 6, 5, 2, 2, 2, 2, 0, 0),    # classic 2x2/2, odd width (last column dropped)
    (2, 2, 7, 6, 2, 2, 2, 2, 0, 0),    # 2x2/2, odd height (last row dropped)
    (1, 2, 7, 6, 3, 2, 1, 1, 1, 1),    # batch 1, stride 1 (overlapping windows), padding 1, non-square kernel
    (2, 2, 8, 7, 3, 3, 3, 3, 1, 0),    # stride 3, padding on one axis only
    (1, 3, 5, 4, 5, 4, 1, 1, 0, 0),    # kernel equal to the image
    (2, 1, 5, 7, 2, 3, 2, 1, 1, 1),    # non-square stride and kernel, padding 1
    (3, 2, 4, 4, 3, 3, 2, 2, 1, 1),    # stride < kernel with padding
]


def out_hw(H, W, kh, kw, sh, sw, ph, pw):
    return (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1


def rand(shape, dtype, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def distinct(shape, dtype, seed):
    """Values with no ties and gaps of 0.1, so max pooling is differentiable everywhere."""
    size = int(np.prod(shape))
    perm = np.random.default_rng(seed).permutation(size)
    return ((perm - size / 2) * 0.1).reshape(shape).astype(dtype)


# ---------------------------------------------------------------- plain numpy references

def ref_maxpool(x, kh, kw, sh, sw, ph, pw):
    N, C, H, W = x.shape
    OH, OW = out_hw(H, W, kh, kw, sh, sw, ph, pw)
    y = np.empty((N, C, OH, OW), x.dtype)
    idx = np.empty((N, C, OH, OW), np.int64)
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    best, besti = -np.inf, None
                    for i in range(kh):
                        for j in range(kw):
                            h, w = oh * sh - ph + i, ow * sw - pw + j
                            if 0 <= h < H and 0 <= w < W:
                                if besti is None or x[n, c, h, w] > best:
                                    best, besti = x[n, c, h, w], h * W + w
                    y[n, c, oh, ow], idx[n, c, oh, ow] = best, besti
    return y, idx


def ref_maxpool_backward(dy, idx, x_shape):
    dx = np.zeros(x_shape, dy.dtype)
    N, C, H, W = x_shape
    for n, c, oh, ow in np.ndindex(*dy.shape):
        i = idx[n, c, oh, ow]
        dx[n, c, i // W, i % W] += dy[n, c, oh, ow]
    return dx


def ref_avgpool(x, kh, kw, sh, sw, ph, pw):
    N, C, H, W = x.shape
    OH, OW = out_hw(H, W, kh, kw, sh, sw, ph, pw)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    y = np.empty((N, C, OH, OW))
    for oh in range(OH):
        for ow in range(OW):
            y[:, :, oh, ow] = xp[:, :, oh * sh:oh * sh + kh, ow * sw:ow * sw + kw].sum(axis=(2, 3)) / (kh * kw)
    return y


def ref_avgpool_backward(dy, x_shape, kh, kw, sh, sw, ph, pw):
    N, C, H, W = x_shape
    dxp = np.zeros((N, C, H + 2 * ph, W + 2 * pw))
    for oh in range(dy.shape[2]):
        for ow in range(dy.shape[3]):
            dxp[:, :, oh * sh:oh * sh + kh, ow * sw:ow * sw + kw] += dy[:, :, oh, ow, None, None] / (kh * kw)
    return dxp[:, :, ph:ph + H, pw:pw + W]


def ref_bn_train(x3, w, b, eps):
    x = x3.astype(np.float64)
    mean = x.mean(axis=(0, 2))
    var = x.var(axis=(0, 2))
    inv = 1 / np.sqrt(var + eps)
    y = (x - mean[:, None]) * inv[:, None] * w[:, None].astype(np.float64) + b[:, None].astype(np.float64)
    M = x.shape[0] * x.shape[2]
    return y, mean, inv, var * M / (M - 1)


def ref_bn_backward(x3, dy3, w, eps):
    x = x3.astype(np.float64)
    dy = dy3.astype(np.float64)
    M = x.shape[0] * x.shape[2]
    mean = x.mean(axis=(0, 2))[:, None]
    inv = 1 / np.sqrt(x.var(axis=(0, 2)) + eps)[:, None]
    xhat = (x - mean) * inv
    db = dy.sum(axis=(0, 2))
    dw = (dy * xhat).sum(axis=(0, 2))
    dx = (w.astype(np.float64)[:, None] * inv / M) * (M * dy - db[:, None] - xhat * dw[:, None])
    return dx, dw, db



# ---------------------------------------------------------------- kernel runners

def run_maxpool(x, cfg, idx_dtype=np.int64):
    N, C, H, W, kh, kw, sh, sw, ph, pw = cfg
    OH, OW = out_hw(H, W, kh, kw, sh, sw, ph, pw)
    y = np.full((N, C, OH, OW), np.nan, x.dtype)
    am = np.full((N, C, OH, OW), -7, idx_dtype)
    kpool.maxpool2d_forward(x, y, kh, kw, sh, sw, ph, pw, am)
    return y, am


def run_avgpool(x, cfg):
    N, C, H, W, kh, kw, sh, sw, ph, pw = cfg
    OH, OW = out_hw(H, W, kh, kw, sh, sw, ph, pw)
    y = np.full((N, C, OH, OW), np.nan, x.dtype)
    kpool.avgpool2d_forward(x, y, kh, kw, sh, sw, ph, pw)
    return y


def run_bn_train(x3, w, b, rm, rv, eps=1e-5, momentum=0.1):
    C = x3.shape[1]
    y = np.full_like(x3, np.nan)
    mean = np.full(C, np.nan, x3.dtype)
    inv = np.full(C, np.nan, x3.dtype)
    knorm.batchnorm_forward_train(x3, w, b, eps, momentum, y, rm, rv, mean, inv)
    return y, mean, inv


# ---------------------------------------------------------------- max pooling

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", POOL_CONFIGS)
def test_maxpool_matches_reference(cfg, dtype):
    x = rand(cfg[:4], dtype, 1)
    y, am = run_maxpool(x, cfg)
    ry, ridx = ref_maxpool(x, *cfg[4:])
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(am, ridx)
    dy = rand(y.shape, dtype, 2)
    dx = np.full(x.shape, np.nan, dtype)
    kpool.maxpool2d_backward(dy, dx, *cfg[4:], am)
    np.testing.assert_allclose(dx, ref_maxpool_backward(dy, ridx, x.shape), **TOL[dtype])


def test_maxpool_int32_argmax():
    cfg = POOL_CONFIGS[1]
    x = rand(cfg[:4], np.float32, 3)
    y, am = run_maxpool(x, cfg, np.int32)
    ry, ridx = ref_maxpool(x, *cfg[4:])
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(am, ridx)
    dy = rand(y.shape, np.float32, 4)
    dx = np.empty(x.shape, np.float32)
    kpool.maxpool2d_backward(dy, dx, *cfg[4:], am)
    np.testing.assert_allclose(dx, ref_maxpool_backward(dy, ridx, x.shape), rtol=1e-6)


@pytest.mark.parametrize("cfg", POOL_CONFIGS)
def test_maxpool_gradcheck(cfg):
    x = distinct(cfg[:4], np.float64, 5)
    y, am = run_maxpool(x, cfg)
    R = rand(y.shape, np.float64, 6)
    dx = np.empty_like(x)
    kpool.maxpool2d_backward(R, dx, *cfg[4:], am)
    num = numeric_gradient(lambda: float((run_maxpool(x, cfg)[0] * R).sum()), x)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)


def test_maxpool_ties_go_to_first_element():
    # all-equal windows: y is that value, the index is the window's first (top-left) pixel,
    # and with overlapping windows (stride 1) each window's gradient goes to its own first pixel.
    x = np.ones((1, 2, 4, 5))
    cfg = (1, 2, 4, 5, 2, 2, 2, 2, 0, 0)
    y, am = run_maxpool(x, cfg)
    assert (y == 1).all()
    np.testing.assert_array_equal(am[0, 0], [[0, 2], [10, 12]])
    dx = np.empty_like(x)
    kpool.maxpool2d_backward(np.ones_like(y), dx, *cfg[4:], am)
    expect = np.zeros((4, 5))
    expect[[0, 0, 2, 2], [0, 2, 0, 2]] = 1
    np.testing.assert_array_equal(dx[0, 1], expect)

    cfg = (1, 2, 4, 5, 3, 3, 1, 1, 1, 1)     # windows overlap and include padding
    y, am = run_maxpool(x, cfg)
    ry, ridx = ref_maxpool(x, *cfg[4:])
    np.testing.assert_array_equal(am, ridx)
    # the window at (0, 0) covers rows -1..1, cols -1..1: its first real pixel is (0, 0)
    assert am[0, 0, 0, 0] == 0 and am[0, 0, 1, 1] == 0 and am[0, 0, 2, 3] == 1 * 5 + 2


def test_maxpool_nan_propagates():
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    x[0, 0, 1, 0] = np.nan
    y, am = run_maxpool(x, (1, 1, 4, 4, 2, 2, 2, 2, 0, 0))
    assert np.isnan(y[0, 0, 0, 0]) and am[0, 0, 0, 0] == 4
    np.testing.assert_array_equal(y[0, 0].ravel()[1:], [7, 13, 15])


# ---------------------------------------------------------------- average pooling

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", POOL_CONFIGS)
def test_avgpool_matches_reference(cfg, dtype):
    x = rand(cfg[:4], dtype, 7)
    y = run_avgpool(x, cfg)
    np.testing.assert_allclose(y, ref_avgpool(x, *cfg[4:]), **TOL[dtype])
    dy = rand(y.shape, dtype, 8)
    dx = np.full(x.shape, np.nan, dtype)
    kpool.avgpool2d_backward(dy, dx, *cfg[4:])
    np.testing.assert_allclose(dx, ref_avgpool_backward(dy, x.shape, *cfg[4:]), **TOL[dtype])


@pytest.mark.parametrize("cfg", POOL_CONFIGS)
def test_avgpool_gradcheck(cfg):
    x = rand(cfg[:4], np.float64, 9)
    R = rand(run_avgpool(x, cfg).shape, np.float64, 10)
    dx = np.empty_like(x)
    kpool.avgpool2d_backward(R, dx, *cfg[4:])
    num = numeric_gradient(lambda: float((run_avgpool(x, cfg) * R).sum()), x)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- global average pooling

def run_gap(x):
    y = np.full(x.shape[:2], np.nan, x.dtype)
    kpool.global_avgpool2d_forward(x, y)
    return y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 1, 1), (3, 1, 7, 2)])
def test_global_avgpool(shape, dtype):
    x = rand(shape, dtype, 11)
    y = run_gap(x)
    np.testing.assert_allclose(y, x.astype(np.float64).mean(axis=(2, 3)), **TOL[dtype])
    dy = rand(shape[:2], dtype, 12)
    dx = np.full(shape, np.nan, dtype)
    kpool.global_avgpool2d_backward(dy, dx)
    expect = np.broadcast_to(dy[:, :, None, None] / (shape[2] * shape[3]), shape)
    np.testing.assert_allclose(dx, expect, **TOL[dtype])
    if dtype is np.float64:
        R = rand(shape[:2], dtype, 13)
        kpool.global_avgpool2d_backward(R, dx)
        np.testing.assert_allclose(dx, numeric_gradient(lambda: float((run_gap(x) * R).sum()), x), rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------- batch norm

BN_SHAPES = [(4, 3, 5), (2, 2, 6), (5, 3, 1), (1, 2, 3)]    # (N, C, L): L=1 is BatchNorm1D on (C,)


def bn_inputs(shape, dtype, seed):
    x = (rand(shape, dtype, seed) * 2 + 3).astype(dtype)        # mean far from 0
    C = shape[1]
    w = (1 + 0.5 * rand((C,), dtype, seed + 1)).astype(dtype)
    b = rand((C,), dtype, seed + 2)
    return x, w, b


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batchnorm_train_matches_reference(shape, dtype):
    x, w, b = bn_inputs(shape, dtype, 20)
    C = shape[1]
    rm = rand((C,), dtype, 30)
    rv = (1 + rand((C,), dtype, 31) ** 2).astype(dtype)
    rm0, rv0 = rm.astype(np.float64), rv.astype(np.float64)
    y, mean, inv = run_bn_train(x, w, b, rm, rv, 1e-5, 0.1)
    ry, rmean, rinv, runb = ref_bn_train(x, w, b, 1e-5)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype is np.float64 else dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, ry, **tol)
    np.testing.assert_allclose(mean, rmean, **tol)
    np.testing.assert_allclose(inv, rinv, **tol)
    np.testing.assert_allclose(rm, 0.9 * rm0 + 0.1 * rmean, **tol)
    np.testing.assert_allclose(rv, 0.9 * rv0 + 0.1 * runb, **tol)

    dy = rand(shape, dtype, 40)
    dx = np.full_like(x, np.nan)
    dw = np.full(C, np.nan, dtype)
    db = np.full(C, np.nan, dtype)
    knorm.batchnorm_backward(x, dy, w, dx, dw, db, mean, inv)
    rdx, rdw, rdb = ref_bn_backward(x, dy, w, 1e-5)
    np.testing.assert_allclose(dx, rdx, **tol)
    np.testing.assert_allclose(dw, rdw, **tol)
    np.testing.assert_allclose(db, rdb, **tol)
    dw2 = np.full(C, np.nan, dtype)
    db2 = np.full(C, np.nan, dtype)
    knorm.batchnorm_backward(x, dy, w, None, dw2, db2, mean, inv)   # no input gradient wanted
    np.testing.assert_array_equal(dw2, dw)
    np.testing.assert_array_equal(db2, db)


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_eval_matches_reference(dtype):
    x, w, b = bn_inputs((3, 4, 5), dtype, 50)
    rm = rand((4,), dtype, 51)
    rv = (0.5 + rand((4,), dtype, 52) ** 2).astype(dtype)
    y = np.full_like(x, np.nan)
    knorm.batchnorm_forward_eval(x, w, b, rm, rv, 1e-5, y)
    f = lambda a: a.astype(np.float64)[:, None]
    expect = (x - f(rm)) / np.sqrt(f(rv) + 1e-5) * f(w) + f(b)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype is np.float64 else dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, expect, **tol)


@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batchnorm_gradcheck(shape):
    x, w, b = bn_inputs(shape, np.float64, 60)
    R = rand(shape, np.float64, 61)
    C = shape[1]

    def loss():
        y, _, _ = run_bn_train(x, w, b, np.zeros(C), np.ones(C))
        return float((y * R).sum())

    _, mean, inv = run_bn_train(x, w, b, np.zeros(C), np.ones(C))
    dx, dw, db = np.empty_like(x), np.empty(C), np.empty(C)
    knorm.batchnorm_backward(x, R, w, dx, dw, db, mean, inv)
    np.testing.assert_allclose(dx, numeric_gradient(loss, x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dw, numeric_gradient(loss, w), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(db, numeric_gradient(loss, b), rtol=1e-6, atol=1e-8)


def test_batchnorm_kernel_single_value_does_not_divide_by_zero():
    x = np.array([[[2.0]], [[2.0]]])[:1]           # (1, 1, 1): M == 1
    rm, rv = np.zeros(1), np.ones(1)
    y, mean, inv = run_bn_train(x, np.ones(1), np.zeros(1), rm, rv)
    assert np.isfinite(rv).all() and rv[0] == pytest.approx(0.9)
    assert y[0, 0, 0] == 0


# ---------------------------------------------------------------- against PyTorch

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", POOL_CONFIGS)
def test_pooling_matches_torch(cfg, dtype):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    kh, kw, sh, sw, ph, pw = cfg[4:]
    x = rand(cfg[:4], dtype, 70)
    x[0, 0, 0, :2] = x[0, 0, 1, 0]                # a few ties
    tol = TOL[dtype] if dtype is np.float64 else dict(rtol=1e-5, atol=1e-6)

    xt = torch.tensor(x, requires_grad=True)
    yt, it = F.max_pool2d(xt, (kh, kw), (sh, sw), (ph, pw), return_indices=True)
    y, am = run_maxpool(x, cfg)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(am, it.numpy())
    dy = rand(y.shape, dtype, 71)
    yt.backward(torch.tensor(dy))
    dx = np.empty_like(x)
    kpool.maxpool2d_backward(dy, dx, *cfg[4:], am)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol)

    xt = torch.tensor(x, requires_grad=True)
    yt = F.avg_pool2d(xt, (kh, kw), (sh, sw), (ph, pw), ceil_mode=False, count_include_pad=True)
    y = run_avgpool(x, cfg)
    np.testing.assert_allclose(y, yt.detach().numpy(), **tol)
    yt.backward(torch.tensor(dy))
    kpool.avgpool2d_backward(dy, dx, kh, kw, sh, sw, ph, pw)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol)

    xt = torch.tensor(x, requires_grad=True)
    yt = F.adaptive_avg_pool2d(xt, 1)
    y = run_gap(x)
    np.testing.assert_allclose(y, yt.detach().numpy()[:, :, 0, 0], **tol)
    dy = rand(y.shape, dtype, 72)
    yt.backward(torch.tensor(dy)[:, :, None, None])
    kpool.global_avgpool2d_backward(dy, dx)
    np.testing.assert_allclose(dx, xt.grad.numpy(), **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 3, 2, 3), (5, 3)])       # BatchNorm2d and BatchNorm1d
def test_batchnorm_matches_torch(shape, dtype):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    C = shape[1]
    tol = dict(rtol=1e-10, atol=1e-10) if dtype is np.float64 else dict(rtol=1e-5, atol=1e-5)
    _, w, b = bn_inputs((2, C, 1), dtype, 80)
    rm, rv = np.zeros(C, dtype), np.ones(C, dtype)
    trm, trv = torch.zeros(C, dtype=torch.from_numpy(rm).dtype), torch.ones(C, dtype=torch.from_numpy(rv).dtype)
    L = int(np.prod(shape[2:]))
    for step in range(4):                       # running statistics after several calls
        x = (rand(shape, dtype, 81 + step) * (1 + step) + step).astype(dtype)
        dy = rand(shape, dtype, 91 + step)
        xt = torch.tensor(x, requires_grad=True)
        wt = torch.tensor(w, requires_grad=True)
        bt = torch.tensor(b, requires_grad=True)
        yt = F.batch_norm(xt, trm, trv, wt, bt, training=True, momentum=0.1, eps=1e-5)
        yt.backward(torch.tensor(dy))

        x3 = x.reshape(shape[0], C, L)
        y, mean, inv = run_bn_train(x3, w, b, rm, rv)
        np.testing.assert_allclose(y.reshape(shape), yt.detach().numpy(), **tol)
        np.testing.assert_allclose(rm, trm.numpy(), **tol)
        np.testing.assert_allclose(rv, trv.numpy(), **tol)
        dx, dw, db = np.empty_like(x3), np.empty(C, dtype), np.empty(C, dtype)
        knorm.batchnorm_backward(x3, dy.reshape(x3.shape), w, dx, dw, db, mean, inv)
        np.testing.assert_allclose(dx.reshape(shape), xt.grad.numpy(), **tol)
        np.testing.assert_allclose(dw, wt.grad.numpy(), **tol)
        np.testing.assert_allclose(db, bt.grad.numpy(), **tol)

    x = rand(shape, dtype, 99)
    yt = F.batch_norm(torch.tensor(x), trm, trv, torch.tensor(w), torch.tensor(b), training=False, eps=1e-5)
    y = np.empty((shape[0], C, L), dtype)
    knorm.batchnorm_forward_eval(x.reshape(shape[0], C, L), w, b, rm, rv, 1e-5, y)
    np.testing.assert_allclose(y.reshape(shape), yt.numpy(), **tol)


# ---------------------------------------------------------------- the layers

K = SimpleNamespace(**{name: getattr(mod, name) for mod in (kpool, knorm)
                       for name in dir(mod) if name.endswith(("_forward", "_backward", "_train",
                                                              "_eval", "_params"))})


def make_slot(layer, in_shape, batch, dtype=np.float64):
    rng = np.random.default_rng(0)
    params = {k: np.empty(s, dtype) for k, s in layer.param_shapes([in_shape]).items()}
    grads = {k: np.full(s, np.nan, dtype) for k, s in layer.param_shapes([in_shape]).items()}
    buffers = {k: np.empty(s, dtype) for k, s in layer.buffer_shapes([in_shape]).items()}
    work = allocate(np.zeros, layer.workspace_shapes([in_shape], kernels.namespace("cpu")), batch, dtype)
    layer.init_params(params, buffers, [in_shape], rng)
    return Slot(layer, 0, "0", params, grads, buffers, work, 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pool_layers(dtype):
    x = distinct((2, 3, 6, 5), dtype, 100)
    for layer, cfg in [(MaxPool2D(2), (2, 3, 6, 5, 2, 2, 2, 2, 0, 0)),
                       (MaxPool2D((3, 2), stride=1, padding=1), (2, 3, 6, 5, 3, 2, 1, 1, 1, 1)),
                       (AvgPool2D(3, 2, 1), (2, 3, 6, 5, 3, 3, 2, 2, 1, 1))]:
        out = layer.output_shape([(3, 6, 5)])
        assert out == (3, *out_hw(6, 5, *cfg[4:]))
        slot = make_slot(layer, (3, 6, 5), batch=4, dtype=dtype)   # compiled for 4, run with 2
        y = np.empty((2, *out), dtype)
        layer.forward(K, slot, [x], y, True)
        ref = ref_maxpool(x, *cfg[4:])[0] if isinstance(layer, MaxPool2D) else ref_avgpool(x, *cfg[4:])
        np.testing.assert_allclose(y, ref, **TOL[dtype])
        dy = rand(y.shape, dtype, 101)
        dx = np.empty_like(x)
        layer.backward(K, slot, [x], y, dy, [dx])
        if isinstance(layer, MaxPool2D):
            expect = ref_maxpool_backward(dy, ref_maxpool(x, *cfg[4:])[1], x.shape)
        else:
            expect = ref_avgpool_backward(dy, x.shape, *cfg[4:])
        np.testing.assert_allclose(dx, expect, **TOL[dtype])
        layer.backward(K, slot, [x], y, dy, [None])            # no input gradient wanted



def test_pool_layer_shape_errors():
    with pytest.raises(ShapeError, match="at most half"):
        MaxPool2D(2, padding=2)
    with pytest.raises(ShapeError, match="at most half"):
        AvgPool2D((3, 2), padding=(1, 2))
    with pytest.raises(ShapeError, match="does not fit"):
        MaxPool2D(5).output_shape([(1, 4, 8)])
    with pytest.raises(ShapeError, match="channels, height, width"):
        AvgPool2D(2).output_shape([(4, 8)])
    with pytest.raises(ShapeError, match="channels, height, width"):
        GlobalAvgPool2D().output_shape([(8,)])
    with pytest.raises(ShapeError):
        MaxPool2D(0)
    with pytest.raises(ShapeError):
        MaxPool2D(2, stride=(1, 2, 3))
    assert MaxPool2D(3, padding=1).output_shape([(2, 1, 1)]) == (2, 1, 1)
    assert MaxPool2D((2, 3)).stride == (2, 3)


def test_batchnorm_layers():
    bn = BatchNorm2D(name="bn1")
    assert bn.param_shapes([(3, 4, 5)]) == {"weight": (3,), "bias": (3,)}
    assert bn.buffer_shapes([(3, 4, 5)]) == {"running_mean": (3,), "running_var": (3,)}
    slot = make_slot(bn, (3, 4, 5), batch=4)
    assert (slot.params["weight"] == 1).all() and (slot.params["bias"] == 0).all()
    assert (slot.buffers["running_mean"] == 0).all() and (slot.buffers["running_var"] == 1).all()
    x = rand((2, 3, 4, 5), np.float64, 110) + 1
    y = np.empty_like(x)
    bn.forward(K, slot, [x], y, True)
    ry, rmean, _, runb = ref_bn_train(x.reshape(2, 3, 20), np.ones(3), np.zeros(3), 1e-5)
    np.testing.assert_allclose(y, ry.reshape(x.shape), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(slot.buffers["running_mean"], 0.1 * rmean)
    np.testing.assert_allclose(slot.buffers["running_var"], 0.9 + 0.1 * runb)
    dy = rand(x.shape, np.float64, 111)
    dx = np.empty_like(x)
    bn.backward(K, slot, [x], y, dy, [dx])
    rdx, rdw, rdb = ref_bn_backward(x.reshape(2, 3, 20), dy.reshape(2, 3, 20), np.ones(3), 1e-5)
    np.testing.assert_allclose(dx, rdx.reshape(x.shape), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(slot.grads["weight"], rdw, rtol=1e-10)
    np.testing.assert_allclose(slot.grads["bias"], rdb, rtol=1e-10)
    bn.backward(K, slot, [x], y, dy, [None])
    np.testing.assert_allclose(slot.grads["weight"], rdw, rtol=1e-10)
    rm_before = slot.buffers["running_mean"].copy()
    bn.forward(K, slot, [x], y, False)                     # eval: running statistics, no update
    np.testing.assert_array_equal(slot.buffers["running_mean"], rm_before)
    rv = slot.buffers["running_var"][:, None, None]
    np.testing.assert_allclose(y, (x - rm_before[:, None, None]) / np.sqrt(rv + 1e-5), rtol=1e-10)
    with pytest.raises(ShapeError, match="BatchNorm1D"):
        BatchNorm2D().output_shape([(6,)])

    bn1 = BatchNorm1D()
    assert bn1.output_shape([(6,)]) == (6,) and bn1.output_shape([(6, 3)]) == (6, 3)
    with pytest.raises(ShapeError):
        bn1.output_shape([(2, 3, 4)])
    slot = make_slot(bn1, (6,), batch=4)
    x = rand((4, 6), np.float64, 112)
    y = np.empty_like(x)
    bn1.forward(K, slot, [x], y, True)
    np.testing.assert_allclose(y, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5), rtol=1e-9, atol=1e-10)
    with pytest.raises(ShapeError, match="more than 1 value per channel"):
        bn1.forward(K, slot, [x[:1]], y[:1], True)
    bn1.forward(K, slot, [x[:1]], y[:1], False)           # batch 1 is fine in evaluation
    slot = make_slot(bn1, (6, 3), batch=1)
    x = rand((1, 6, 3), np.float64, 113)                    # (C, L) input: batch 1 is fine when L > 1
    y = np.empty_like(x)
    bn1.forward(K, slot, [x], y, True)
    np.testing.assert_allclose(y, (x - x.mean(2, keepdims=True)) / np.sqrt(x.var(2, keepdims=True) + 1e-5),
                               rtol=1e-9, atol=1e-10)


def test_batchnorm_argument_errors():
    with pytest.raises(ShapeError):
        BatchNorm2D(eps=0)
    with pytest.raises(ShapeError):
        BatchNorm1D(momentum=None)
