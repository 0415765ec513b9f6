"""MaxPool2D, AvgPool2D and GlobalAvgPool2D: gradient checks, PyTorch parity (max_pool2d,
avg_pool2d with count_include_pad=True, adaptive_avg_pool2d(1) + flatten) over many geometries,
ties and NaN, CPU-vs-CUDA agreement, and the errors the layers raise; then the kernels themselves:
max pooling's argmax against a numpy reference, average pooling's CUDA kernels the CPU's bit for
bit."""

import numpy as np
import pytest
from cuda_helpers import CUDA_WARNINGS, close, dev, empty, randn, same
from harness import build, check_layer, grid

import fastnet as fn
import fastnet.kernels.cpu as kc
import fastnet.kernels.cuda as kg

pytestmark = CUDA_WARNINGS

# (N, C, H, W, kh, kw, sh, sw, ph, pw)
POOL_CONFIGS = [
    (2, 3, 6, 5, 2, 2, 2, 2, 0, 0),    # classic 2x2/2, odd width (last column dropped)
    (2, 2, 7, 6, 2, 2, 2, 2, 0, 0),    # 2x2/2, odd height (last row dropped)
    (1, 2, 7, 6, 3, 2, 1, 1, 1, 1),    # batch 1, stride 1 (overlapping windows), padding 1, non-square kernel
    (2, 2, 8, 7, 3, 3, 3, 3, 1, 0),    # stride 3, padding on one axis only
    (1, 3, 5, 4, 5, 4, 1, 1, 0, 0),    # kernel equal to the image
    (2, 1, 5, 7, 2, 3, 2, 1, 1, 1),    # non-square stride and kernel, padding 1
    (3, 2, 4, 4, 3, 3, 2, 2, 1, 1),    # stride < kernel with padding
    # the CUDA kernel tests' geometries on (2, 2, 5, 5) images, for the simulator
    (2, 2, 5, 5, 2, 2, 2, 2, 0, 0),
    (2, 2, 5, 5, 3, 3, 2, 2, 1, 1),
    (2, 2, 5, 5, 3, 2, 1, 2, 1, 0),
]
CUDA_CONFIGS = (7, 8, 9)


def config_id(cfg):
    return "n{}c{}-{}x{}-k{}x{}-s{}{}-p{}{}".format(*cfg)


def pool(kind, cfg):
    kh, kw, sh, sw, ph, pw = cfg[4:]
    layer = {"max": fn.MaxPool2D, "avg": fn.AvgPool2D}[kind]
    return lambda: layer((kh, kw), stride=(sh, sw), padding=(ph, pw))


def torch_pool(kind, cfg):
    kh, kw, sh, sw, ph, pw = cfg[4:]
    if kind == "max":
        return lambda nn: nn.MaxPool2d((kh, kw), (sh, sw), (ph, pw))
    return lambda nn: nn.AvgPool2d((kh, kw), (sh, sw), (ph, pw), count_include_pad=True)


def distinct(shape, seed):
    """Values with no ties and gaps of 0.1, so max pooling is differentiable everywhere."""
    size = int(np.prod(shape))
    perm = np.random.default_rng(seed).permutation(size)
    return ((perm - size / 2) * 0.1).reshape(shape)


# -- a pooling layer inside a network, over the layer's options ------------------------------------

POOLS = [
    (lambda: fn.MaxPool2D(2), lambda nn: nn.MaxPool2d(2)),
    (lambda: fn.MaxPool2D((3, 2), stride=(2, 1), padding=1), lambda nn: nn.MaxPool2d((3, 2), (2, 1), 1)),
    (lambda: fn.MaxPool2D(3, stride=3), lambda nn: nn.MaxPool2d(3, 3)),
    (lambda: fn.AvgPool2D(2), lambda nn: nn.AvgPool2d(2)),
    (lambda: fn.AvgPool2D((2, 3), stride=1, padding=1), lambda nn: nn.AvgPool2d((2, 3), 1, 1)),
    (lambda: fn.AvgPool2D((5, 6)), lambda nn: nn.AvgPool2d((5, 6))),
    (fn.GlobalAvgPool2D, lambda nn: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())),
]


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("pool_fns", POOLS, ids=["max2", "max3x2s21p1", "max3s3", "avg2", "avg2x3p1",
                                                 "avg_full", "global"])
def test_pooling(pool_fns, batch):
    fastnet_pool, torch_module = pool_fns
    features = int(np.prod(fastnet_pool().output_shape([(2, 5, 6)])))
    rng = np.random.default_rng(3)
    # Distinct, well separated values: no ties for max pooling, so differences are well defined.
    x = rng.permutation(batch * 2 * 5 * 6).reshape(batch, 2, 5, 6) * 0.1
    y = rng.normal(size=(batch, 2))
    report = check_layer(lambda: [fastnet_pool(), fn.Flatten(), fn.Dense(2)], (2, 5, 6), batch, x=x, y=y,
                         eps=1e-5, torch_net=lambda nn: [torch_module(nn), nn.Flatten(), nn.Linear(features, 2)])
    assert report["checked"] == 2


# -- each pooling alone over many geometries ---------------------------------------------------------

@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("cfg, device, dtype", grid(POOL_CONFIGS, CUDA_CONFIGS, ids=config_id))
def test_pool_geometry(cfg, kind, device, dtype):
    # Distinct values: the float64 gradient check is well defined for max pooling too.
    check_layer(pool(kind, cfg), cfg[1:4], cfg[0], x=distinct(cfg[:4], 5), device=device, dtype=dtype,
                eps=1e-5, torch_net=torch_pool(kind, cfg))


@pytest.mark.parametrize("cfg, device, dtype", grid(POOL_CONFIGS, CUDA_CONFIGS[:2], ids=config_id))
def test_maxpool_ties_and_avgpool_match_torch(cfg, device, dtype):
    # Ties between window entries (torch takes the first maximum too); on the simulator's
    # geometries, small integers: ties everywhere (max pooling only on CUDA: the geometry test has
    # average pooling there).
    if device == "cuda" or cfg[0] == 2 and cfg[2:4] == (5, 5):
        x = np.random.default_rng(6).integers(-3, 4, cfg[:4]).astype(float)
    else:
        x = np.random.default_rng(70).standard_normal(cfg[:4])
        x[0, 0, 0, :2] = x[0, 0, 1, 0]
    for kind in ("max",) if device == "cuda" else ("max", "avg"):
        check_layer(pool(kind, cfg), cfg[1:4], cfg[0], x=x, device=device, dtype=dtype, gradcheck=False,
                    torch_net=torch_pool(kind, cfg))


@pytest.mark.parametrize("shape, device, dtype", grid([(2, 3, 4, 5), (1, 2, 1, 1), (3, 1, 7, 2), (2, 3, 5, 4)],
                                                      cuda=(3,), ids=lambda s: "x".join(map(str, s))))
def test_global_avgpool(shape, device, dtype):
    report = check_layer(fn.GlobalAvgPool2D, shape[1:], shape[0], device=device, dtype=dtype,
                         torch_net=lambda nn: [nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())])
    assert report["model"].output_shape == shape[1:2]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layer, torch_module", [
    (lambda: fn.MaxPool2D(2), lambda nn: nn.MaxPool2d(2)),
    (lambda: fn.MaxPool2D((3, 2), stride=1, padding=1), lambda nn: nn.MaxPool2d((3, 2), 1, 1)),
    (lambda: fn.AvgPool2D(3, 2, 1), lambda nn: nn.AvgPool2d(3, 2, 1))], ids=["max2", "max3x2s1p1", "avg3s2p1"])
def test_pool_layers_in_a_smaller_last_batch(layer, torch_module, dtype):
    # compiled for 4 rows, run with 2
    report = check_layer(layer, (3, 6, 5), 4, rows=2, x=distinct((2, 3, 6, 5), 100), dtype=dtype, eps=1e-5,
                         torch_net=lambda nn: [torch_module(nn)])
    pooling = layer()
    kh, kw = pooling.kernel_size
    (sh, sw), (ph, pw) = pooling.stride, pooling.padding
    assert report["model"].output_shape == (3, (6 + 2 * ph - kh) // sh + 1, (5 + 2 * pw - kw) // sw + 1)


# -- ties and NaN ---------------------------------------------------------------------------------

def first_pixel_gradient(dy, shape, kh, kw, sh, sw, ph, pw):
    """dx when every window's gradient goes to its first (top-left) pixel inside the image."""
    dx = np.zeros(shape)
    for n, c, oh, ow in np.ndindex(*dy.shape):
        dx[n, c, max(oh * sh - ph, 0), max(ow * sw - pw, 0)] += dy[n, c, oh, ow]
    return dx


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_maxpool_ties_go_to_first_element(device):
    # all-equal windows: y is that value, and each window's gradient goes to its first (top-left)
    # pixel; with overlapping windows that include padding, to its first pixel inside the image.
    x = np.ones((1, 2, 4, 5))
    for geometry in [(2, 2, 2, 2, 0, 0), (3, 3, 1, 1, 1, 1)]:
        model = build(pool("max", (1, 2, 4, 5, *geometry)), (2, 4, 5), 1, device=device)
        assert (model.forward(x) == 1).all()
        y = np.zeros((1, *model.output_shape))
        _, grads = model.gradients(x, y, input_grad=True)
        dy = np.full(y.shape, 2 / y.size)            # mse: 2 (y - target) / count
        np.testing.assert_allclose(grads["input"], first_pixel_gradient(dy, x.shape, *geometry), rtol=1e-12)
        if geometry[0] == 2:
            expect = np.zeros((4, 5))
            expect[[0, 0, 2, 2], [0, 2, 0, 2]] = dy[0, 0, 0, 0]
            np.testing.assert_allclose(grads["input"][0, 1], expect, rtol=1e-12)
        else:
            # the window at (0, 0) covers rows -1..1, cols -1..1: its first real pixel is (0, 0),
            # as for the window at (1, 1); the window at (2, 3) starts at pixel (1, 2)
            assert grads["input"][0, 0, 0, 0] == pytest.approx(4 * dy[0, 0, 0, 0])
            assert grads["input"][0, 0, 1, 2] == pytest.approx(dy[0, 0, 0, 0])


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_maxpool_nan_propagates(device):
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    x[0, 0, 1, 0] = np.nan
    model = build(lambda: fn.MaxPool2D(2), (1, 4, 4), 1, device=device)
    y = model.forward(x)
    assert np.isnan(y[0, 0, 0, 0])
    np.testing.assert_array_equal(y[0, 0].ravel()[1:], [7, 13, 15])
    _, grads = model.gradients(x, np.zeros_like(y), input_grad=True)
    dx = grads["input"][0, 0]
    assert np.isnan(dx[1, 0])                          # the NaN's gradient: the window's (NaN) one
    assert (dx[[0, 0, 1], [0, 1, 1]] == 0).all()       # the window's other pixels get none
    np.testing.assert_allclose(dx[[1, 3, 3], [3, 1, 3]], 2 * np.array([7, 13, 15]) / 4)


# -- errors ---------------------------------------------------------------------------------------

def test_pool_layer_shape_errors():
    with pytest.raises(fn.ShapeError, match="at most half"):
        fn.MaxPool2D(2, padding=2)
    with pytest.raises(fn.ShapeError, match="at most half"):
        fn.AvgPool2D((3, 2), padding=(1, 2))
    with pytest.raises(fn.ShapeError, match="does not fit"):
        build(lambda: fn.MaxPool2D(5), (1, 4, 8))
    with pytest.raises(fn.ShapeError, match="channels, height, width"):
        build(lambda: fn.AvgPool2D(2), (4, 8))
    with pytest.raises(fn.ShapeError, match="channels, height, width"):
        build(fn.GlobalAvgPool2D, (8,))
    with pytest.raises(fn.ShapeError):
        fn.MaxPool2D(0)
    with pytest.raises(fn.ShapeError):
        fn.MaxPool2D(2, stride=(1, 2, 3))
    assert build(lambda: fn.MaxPool2D(3, padding=1), (2, 1, 1)).output_shape == (2, 1, 1)
    assert fn.MaxPool2D((2, 3)).stride == (2, 3)


# -- the kernels themselves (fastnet.kernels.cpu / .cuda) ------------------------------------------
# The max-pooling kernel's argmax workspace against a plain-numpy reference (the layer tests see it
# only through the input gradient), in both index dtypes; the CUDA average-pooling kernels bit for
# bit against the CPU's.

KERNEL_TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-6)}


def out_hw(H, W, kh, kw, sh, sw, ph, pw):
    return (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1


def ref_maxpool(x, kh, kw, sh, sw, ph, pw):
    """y and the argmax (h * W + w of the first maximum in each window, padding never chosen)."""
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


def run_maxpool(x, cfg, idx_dtype=np.int64):
    N, C, H, W, kh, kw, sh, sw, ph, pw = cfg
    OH, OW = out_hw(H, W, kh, kw, sh, sw, ph, pw)
    y = np.full((N, C, OH, OW), np.nan, x.dtype)
    am = np.full((N, C, OH, OW), -7, idx_dtype)
    kc.maxpool2d_forward(x, y, kh, kw, sh, sw, ph, pw, am)
    return y, am


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cfg", POOL_CONFIGS[:7], ids=config_id)
def test_maxpool_matches_reference(cfg, dtype):
    x = randn(np.random.default_rng(1), cfg[:4], dtype)
    y, am = run_maxpool(x, cfg)
    ry, ridx = ref_maxpool(x, *cfg[4:])
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(am, ridx)
    dy = randn(np.random.default_rng(2), y.shape, dtype)
    dx = np.full(x.shape, np.nan, dtype)
    kc.maxpool2d_backward(dy, dx, *cfg[4:], am)
    np.testing.assert_allclose(dx, ref_maxpool_backward(dy, ridx, x.shape), **KERNEL_TOL[dtype])


def test_maxpool_int32_argmax():
    cfg = POOL_CONFIGS[1]
    x = randn(np.random.default_rng(3), cfg[:4], np.float32)
    y, am = run_maxpool(x, cfg, np.int32)
    ry, ridx = ref_maxpool(x, *cfg[4:])
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(am, ridx)
    dy = randn(np.random.default_rng(4), y.shape, np.float32)
    dx = np.empty(x.shape, np.float32)
    kc.maxpool2d_backward(dy, dx, *cfg[4:], am)
    np.testing.assert_allclose(dx, ref_maxpool_backward(dy, ridx, x.shape), rtol=1e-6)


@pytest.mark.parametrize("geometry", [(2, 2, 2, 2, 0, 0), (3, 3, 2, 2, 1, 1), (3, 2, 1, 2, 1, 0)])
def test_avgpool_cuda_kernels_are_the_cpus_bit_for_bit(geometry):
    # test_pool_geometry compares the devices within tolerance; these kernels add in the same
    # order on both, so they agree exactly.
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


def test_global_avgpool_cuda_kernels_match_the_cpus():
    # the input gradient bit for bit (test_global_avgpool: within tolerance)
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
