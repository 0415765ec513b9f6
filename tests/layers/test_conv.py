"""Conv2D: gradient checks over many geometries, PyTorch parity (nn.Conv2d), CPU-vs-CUDA agreement,
the ReLU the plan fuses into it, compile-time shape errors and PyTorch's initialisation bounds, each
algorithm (im2col, direct, Winograd) on its own and compile's choice between them; then the kernels:
the CUDA kernels against the CPU's over several chunks of images, which a layer reaches only on
batches too large for the simulator, Winograd's and the direct convolution's against im2col's."""

import itertools

import numpy as np
import pytest
from cuda_helpers import CUDA_WARNINGS, close, dev, empty, randn
from gradcheck import check_gradients, numeric_gradient
from harness import check_layer, grid

import fastnet as fn
import fastnet.kernels.cpu as kc
import fastnet.kernels.cuda as kg
from fastnet.kernels.shapes import conv2d_output_hw
from fastnet.kernels.workspace import allocate

pytestmark = CUDA_WARNINGS

# (in_shape, out_channels, kernel_size, stride, padding)
GEOMETRIES = [
    ((1, 5, 5), 2, 3, 1, 0),
    ((2, 6, 5), 3, 3, 1, 1),             # non-square image, "same" padding
    ((3, 7, 7), 2, 3, 2, 1),             # stride 2
    ((2, 8, 7), 2, (3, 2), (3, 1), 2),   # stride 3, non-square kernel, padding 2
    ((2, 5, 6), 3, (2, 3), 2, (1, 0)),   # padding only along the height
    ((2, 4, 5), 3, (4, 5), 1, 0),        # kernel = image: one output pixel
    ((3, 4, 4), 2, 5, 1, 2),             # kernel larger than the image, padded
    ((12, 3, 3), 9, 1, 1, 0),            # 1x1 with many channels
    ((2, 6, 6), 2, 3, 3, 0),             # windows that tile the image exactly
    ((8, 5, 4), 6, 3, 1, 1),             # O*K = 432 > SMALL_C: the weight gradient through BLAS
    ((3, 5, 5), 8, 3, 1, 1),             # O*K = 216: the weight gradient a loop, the input's BLAS
    ((4, 7, 7), 12, 3, 2, 1),            # BLAS products, stride 2
]

# Tiny cases for the CUDA simulator, the CUDA kernel tests' cases as layers:
# (geometry, bias, batch, rows): rows < batch is a smaller last batch.
CUDA_CASES = [
    (((2, 5, 5), 3, (3, 2), 2, 1), True, 2, 1),              # stride 2, padding 1, non-square kernel
    (((2, 5, 6), 2, (2, 3), (1, 2), (0, 1)), False, 2, 2),   # no bias; stride and padding per axis
]


def geometry_id(g):
    return "in{}-o{}-k{}-s{}-p{}".format(*g).replace(" ", "")


def applies(algorithm, geometry):
    in_shape, out_channels, kernel, stride, padding = geometry
    pair = lambda v: tuple(v) if isinstance(v, tuple) else (v, v)
    return algorithm in kc.conv2d_algorithms(in_shape[0], *in_shape[1:], out_channels, *pair(kernel),
                                             *pair(stride), *pair(padding))


# 3x3 stride 1, which Winograd computes: odd and even outputs (a last partial tile), no padding,
# padding 2 and along one axis only, one channel, more channels than a vector
WINOGRAD_GEOMETRIES = [g for g in GEOMETRIES if applies("winograd", g)] + [
    ((1, 3, 3), 1, 3, 1, 0),             # one output pixel: one tile, three quarters outside
    ((3, 9, 6), 4, 3, 1, 2),
    ((2, 7, 8), 3, 3, 1, (1, 0)),
    ((17, 6, 5), 9, 3, 1, 1),
]
ALGORITHM_CASES = ([(g, "im2col") for g in GEOMETRIES] + [(g, "direct") for g in GEOMETRIES]
                   + [(g, "winograd") for g in WINOGRAD_GEOMETRIES])


def algorithm_case_id(case):
    return f"{case[1]}-{geometry_id(case[0])}"


def conv(geometry, bias=True):
    _, out_channels, kernel, stride, padding = geometry
    return lambda: fn.Conv2D(out_channels, kernel, stride, padding, bias=bias)


def torch_conv(geometry, bias=True):
    in_shape, out_channels, kernel, stride, padding = geometry
    return lambda nn: [nn.Conv2d(in_shape[0], out_channels, kernel, stride, padding, bias=bias)]


@pytest.mark.parametrize("case", ALGORITHM_CASES, ids=algorithm_case_id)
@pytest.mark.parametrize("batch", [1, 3])
def test_conv2d_gradients(case, batch):
    geometry, algorithm = case
    report = check_layer(conv(geometry), geometry[0], batch, seed=batch, conv_algorithm=algorithm)
    assert report["model"].algorithms == {"0": algorithm}
    assert report["checked"] == 2


PARITY_CASES = ([(g, algorithm) for algorithm in ("im2col", "direct") for g in GEOMETRIES[:5]]
                + [(g, "winograd") for g in WINOGRAD_GEOMETRIES[:5]])


@pytest.mark.parametrize("case, device, dtype", grid(PARITY_CASES, ids=algorithm_case_id))
def test_conv2d_matches_pytorch(case, device, dtype):
    geometry, algorithm = case
    report = check_layer(conv(geometry), geometry[0], 4, dtype=dtype, seed=3, torch_net=torch_conv(geometry),
                         conv_algorithm=algorithm)
    assert report["model"].algorithms == {"0": algorithm}
    assert report["checked"] in (None, 2)


def case_id(case):
    geometry, bias, batch, rows = case
    return f"{geometry_id(geometry)}-{'bias' if bias else 'nobias'}-b{batch}-rows{rows}"


@pytest.mark.parametrize("case, device, dtype", grid(CUDA_CASES, cuda=(0, 1), ids=case_id))
def test_conv2d_on_both_devices(case, device, dtype):
    # Gradient check (float64), PyTorch parity and, on CUDA, agreement with the CPU. The first
    # layer with parameters: asked for no input gradient, the backward computes none (checked on
    # CUDA too).
    geometry, bias, batch, rows = case
    report = check_layer(conv(geometry, bias), geometry[0], batch, rows=rows, device=device, dtype=dtype,
                         torch_net=torch_conv(geometry, bias), without_input_grad=True)
    assert list(report["model"].parameters()) == ["0.weight", "0.bias"][:1 + bias]


def test_conv2d_without_bias_in_a_network_with_a_smaller_last_batch():
    net = fn.Sequential([fn.Conv2D(3, 3, padding=1, bias=False), fn.Tanh(), fn.MaxPool2D(2),
                         fn.Conv2D(4, (2, 3), stride=(1, 2)), fn.Flatten(), fn.Dense(3)])
    model = net.compile((2, 6, 8), 4, loss="cross_entropy", dtype="float64")
    assert "0.bias" not in model.parameters()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 2, 6, 8))                 # 3 rows through a batch compiled for 4
    assert check_gradients(model, x, np.array([0, 2, 1])) == 5


def test_conv2d_shape_errors_name_the_layer():
    with pytest.raises(fn.ShapeError, match="conv_big.*5x5.*3x3"):
        fn.Sequential([fn.Conv2D(2, 5, name="conv_big")]).compile((1, 3, 3), 2)
    with pytest.raises(fn.ShapeError, match="Conv2D.*channels, height, width"):
        fn.Sequential([fn.Conv2D(2, 3)]).compile((9,), 2)
    for bad in [dict(kernel_size=0), dict(kernel_size=(3, 3, 3)), dict(stride=0), dict(padding=-1)]:
        with pytest.raises(fn.ShapeError):
            fn.Conv2D(2, **{"kernel_size": 3, **bad})
    with pytest.raises(fn.ShapeError, match="out_channels"):
        fn.Conv2D(0, 3)


def test_conv2d_initialisation_follows_pytorch_bounds():
    model = fn.Sequential([fn.Conv2D(8, 3)]).compile((4, 6, 6), 2, loss="mse", seed=0)
    bound = 1 / np.sqrt(4 * 3 * 3)
    for name in ("0.weight", "0.bias"):
        values = model.parameters()[name]
        assert np.abs(values).max() <= bound and np.abs(values).max() > 0.8 * bound, name


# -- the ReLU fused into the convolution ---------------------------------------------------------

FUSED_CUDA = ((1, 4, 4), 2, 3, 1, 1)

FUSED_CASES = ([(g, "im2col") for g in GEOMETRIES[1:4] + [FUSED_CUDA]] + [(g, "direct") for g in GEOMETRIES[1:4]]
               + [(WINOGRAD_GEOMETRIES[1], "winograd"), (WINOGRAD_GEOMETRIES[-2], "winograd")])


@pytest.mark.parametrize("case, device, dtype",
                         grid(FUSED_CASES, cuda=(3,), ids=algorithm_case_id, dtypes=["float64"]))
def test_relu_fused_into_the_convolution_has_correct_gradients(case, device, dtype):
    geometry, algorithm = case
    in_shape, out_channels, kernel, stride, padding = geometry
    report = check_layer(lambda: [fn.Conv2D(out_channels, kernel, stride, padding), fn.ReLU()], in_shape,
                         2, device=device, dtype=dtype, seed=3, conv_algorithm=algorithm,
                         torch_net=lambda nn: [nn.Conv2d(in_shape[0], out_channels, kernel, stride, padding),
                                               nn.ReLU()])
    assert report["model"].plan.fused_from == {2: 1}   # the ReLU (tensor 2) is applied by the conv
    assert report["model"].algorithms == {"0": algorithm}
    assert report["checked"] in (None, 2)


def test_fused_relu_trains_exactly_as_an_unfused_one():
    # LeakyReLU(0) is the same function but is never fused: outputs, gradients and the parameters
    # after a few steps must be the same numbers.
    def network(activation):
        return fn.Sequential([fn.Conv2D(4, 3, padding=1), activation(), fn.MaxPool2D(2),
                              fn.Conv2D(5, 3), activation(), fn.Flatten(), fn.Dense(3)])

    fused, plain = (network(a).compile((2, 8, 8), 6, optimizer=fn.SGD(0.1, momentum=0.9), seed=1)
                    for a in (fn.ReLU, lambda: fn.LeakyReLU(0.0)))
    assert fused.plan.fused_from == {2: 1, 5: 4} and plain.plan.fused_from == {}
    plain.load_state_dict(fused.state_dict())
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(6, 2, 8, 8)).astype(np.float32), rng.integers(0, 3, 6)
    np.testing.assert_array_equal(fused.predict(x), plain.predict(x))
    for a, b in zip(fused.gradients(x, y)[1].values(), plain.gradients(x, y)[1].values()):
        np.testing.assert_array_equal(a, b)
    for _ in range(3):
        fused.train_step(x, y)
        plain.train_step(x, y)
    for name, value in fused.state_dict().items():
        np.testing.assert_array_equal(value, plain.state_dict()[name], err_msg=name)


def test_relu_is_not_fused_when_the_convolution_output_has_another_reader():
    x = fn.Input((2, 5, 5))
    c = fn.Conv2D(3, 3, padding=1)(x)
    h = fn.Add()(fn.ReLU()(c), c)                    # c is read by the ReLU and by the Add
    out = fn.Dense(2)(fn.Flatten()(fn.Conv2D(2, 3)(h)))
    model = fn.Graph(inputs=x, outputs=out).compile(batch_size=3, dtype="float64", seed=4)
    assert model.plan.fused_from == {}
    rng = np.random.default_rng(5)
    assert check_gradients(model, rng.normal(size=(3, 2, 5, 5)), np.array([0, 1, 1])) == 6


# -- the kernels themselves (fastnet.kernels.cpu / .cuda) ------------------------------------------

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


def test_conv_several_chunks_float64():
    # 3 images in chunks of 2: the weight gradient adds the second chunk into the first's partials.
    # At sizes the simulator can run, a layer's workspace holds a chunk of up to 256 images: only
    # the kernel given smaller cols/partial workspaces reaches several chunks.
    _conv_case(np.random.default_rng(5), np.float64, N=3, C=2, H=4, W=4, O=3, KH=2, KW=2,
               sh=1, sw=1, ph=0, pw=0, bias=True, want_dx=True, chunk=2)


# (N, C, H, W, O, ph, pw): several chunks of images per thread (the tiles of a chunk > 256 at 14x14),
# fewer images than threads, a partial last tile on both axes, more channels than a chunk's rows
WINOGRAD_KERNEL_CASES = [(11, 3, 14, 14, 5, 1, 1), (1, 2, 5, 7, 3, 0, 1), (3, 33, 3, 4, 2, 1, 1),
                         (2, 1, 9, 9, 40, 2, 2)]


@pytest.mark.parametrize("case", WINOGRAD_KERNEL_CASES, ids=str)
@pytest.mark.parametrize("relu", [False, True])
def test_winograd_kernels_equal_im2col_in_float64(case, relu):
    N, C, H, W, O, ph, pw = case
    rng = np.random.default_rng(7)
    x, w, b = rng.normal(size=(N, C, H, W)), rng.normal(size=(O, C, 3, 3)), rng.normal(size=O)
    OH, OW = H + 2 * ph - 2, W + 2 * pw - 2
    dy = rng.normal(size=(N, O, OH, OW))
    results = {}
    for name in ("im2col", "winograd"):
        forward, backward, shapes = fn.layers.conv.algorithm_kernels(kc, name)
        work = allocate(np.empty, shapes(C, H, W, O, 3, 3, 1, 1, ph, pw), N, np.float64)
        y = np.empty((N, O, OH, OW))
        forward(x, w, b, y, 1, 1, ph, pw, relu, **work.for_kernel(forward, N))
        dw, db, dx = np.empty_like(w), np.empty(O), np.empty_like(x)
        backward(x, w, y, dy.copy(), dw, db, dx, 1, 1, ph, pw, relu, **work.for_kernel(backward, N))
        dw_only = np.empty_like(w)             # no input gradient asked for: the same weight gradient
        backward(x, w, y, dy.copy(), dw_only, None, None, 1, 1, ph, pw, relu, **work.for_kernel(backward, N))
        np.testing.assert_array_equal(dw_only, dw)
        results[name] = (y, dw, db, dx)
    for name, a, b in zip(("y", "dw", "db", "dx"), results["im2col"], results["winograd"]):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12 * np.abs(a).max(), err_msg=name)


def test_winograd_float32_error_is_near_im2col_error():
    # Against a float64 reference, Winograd F(2x2, 3x3)'s float32 error is a small multiple of
    # im2col's (Lavin & Gray: ~1.6x), on cnn's second convolution's shape.
    rng = np.random.default_rng(8)
    N, C, H, O = 4, 32, 14, 64
    x, w = rng.normal(size=(N, C, H, H)), rng.normal(size=(O, C, 3, 3)) / np.sqrt(9 * C)
    errors = {}
    reference = None
    for name, dtype in (("im2col", np.float64), ("im2col", np.float32), ("winograd", np.float32)):
        forward, _, shapes = fn.layers.conv.algorithm_kernels(kc, name)
        work = allocate(np.empty, shapes(C, H, H, O, 3, 3, 1, 1, 1, 1), N, dtype)
        y = np.empty((N, O, H, H), dtype)
        forward(x.astype(dtype), w.astype(dtype), None, y, 1, 1, 1, 1, False, **work.for_kernel(forward, N))
        if reference is None:
            reference = y
        else:
            errors[name] = np.abs(y - reference).max()
    assert 0 < errors["winograd"] < 4 * errors["im2col"], errors


# -- the direct kernels (kernels/cpu/conv_direct.py) against im2col's: float64 agreement over many
# geometries, with and without bias, fused ReLU and input gradient; a float64 central-difference
# check of the kernels themselves; float32 agreement on the zoo's convolutions ---------------------

KERNELS_BY_ALGORITHM = {name: fn.layers.conv.algorithm_kernels(kc, name) for name in ("im2col", "direct")}


def run_kernels(algorithm, x, w, b, dy, stride, padding, relu, want_dx):
    """(y, dw, db, dx, masked dy) of one forward and backward; gradients prefilled with NaN so an
    entry left unwritten shows."""
    forward, backward, shapes = KERNELS_BY_ALGORITHM[algorithm]
    (N, C, H, W), (O, _, KH, KW) = x.shape, w.shape
    (sh, sw), (ph, pw) = stride, padding
    ws = allocate(np.zeros, shapes(C, H, W, O, KH, KW, sh, sw, ph, pw), N, x.dtype)
    OH, OW = conv2d_output_hw(H, W, KH, KW, sh, sw, ph, pw)
    y = np.full((N, O, OH, OW), np.nan, x.dtype)
    forward(x, w, b, y, sh, sw, ph, pw, relu, **ws.for_kernel(forward, N))
    dy = dy.copy()
    dw = np.full_like(w, np.nan)
    db = None if b is None else np.full_like(b, np.nan)
    dx = np.full_like(x, np.nan) if want_dx else None
    backward(x, w, y, dy, dw, db, dx, sh, sw, ph, pw, relu, **ws.for_kernel(backward, N))
    return y, dw, db, dx, dy


def kernel_inputs(N, C, H, W, O, KH, KW, stride, padding, bias, dtype, seed):
    rng = np.random.default_rng(seed)
    OH, OW = conv2d_output_hw(H, W, KH, KW, *stride, *padding)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((O, C, KH, KW)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype) if bias else None
    dy = rng.standard_normal((N, O, OH, OW)).astype(dtype)
    return x, w, b, dy


def assert_agree(N, C, H, W, O, kernel, stride, padding, bias, relu, want_dx, dtype, rtol, seed=0):
    x, w, b, dy = kernel_inputs(N, C, H, W, O, *kernel, stride, padding, bias, dtype, seed)
    ref = run_kernels("im2col", x, w, b, dy, stride, padding, relu, want_dx)
    got = run_kernels("direct", x, w, b, dy, stride, padding, relu, want_dx)
    for name, r, g in zip(("y", "dw", "db", "dx", "masked dy"), ref, got):
        if r is None:
            assert g is None
            continue
        assert np.all(np.isfinite(g)), f"{name}: entries not written"
        scale = max(1.0, float(np.abs(r).max()))
        np.testing.assert_allclose(g, r, rtol=0, atol=rtol * scale, err_msg=name)


DIRECT_CHANNELS = [(1, 1), (3, 8), (8, 3), (16, 16), (17, 32), (32, 17), (1, 16), (16, 1), (3, 17), (32, 3)]
DIRECT_KERNELS = [(1, 1), (3, 3), (5, 5), (3, 5)]
DIRECT_STRIDES = [(1, 1), (2, 2), (2, 1)]
DIRECT_PADDINGS = [(0, 0), (1, 1), (2, 2), (1, 0)]

# every kernel x stride x padding, each with channels, batch, bias, ReLU and dx taken in turn
DIRECT_GEOMETRIES = []
for i, (kernel, stride, padding) in enumerate(itertools.product(DIRECT_KERNELS, DIRECT_STRIDES, DIRECT_PADDINGS)):
    C, O = DIRECT_CHANNELS[i % len(DIRECT_CHANNELS)]
    batch, bias, relu, want_dx = 5 if i % 3 else 1, i % 2 == 0, i % 4 < 2, i % 5 != 4
    DIRECT_GEOMETRIES.append((batch, C, 9, 7, O, kernel, stride, padding, bias, relu, want_dx))
# every channel pair of {1, 3, 8, 16, 17, 32}, 3x3 "same", stride 1 and 2
for (C, O), s in itertools.product(itertools.product((1, 3, 8, 16, 17, 32), repeat=2), (1, 2)):
    DIRECT_GEOMETRIES.append((2, C, 6, 5, O, (3, 3), (s, s), (1, 1), True, C % 2 == 1, True))
# conv.py's layer test geometries: stride 3, kernel = image, kernel larger than the image
DIRECT_GEOMETRIES += [(2, 2, 8, 7, 2, (3, 2), (3, 1), (2, 2), True, False, True),
               (3, 2, 4, 5, 3, (4, 5), (1, 1), (0, 0), False, True, True),
               (2, 3, 4, 4, 2, (5, 5), (1, 1), (2, 2), True, False, True),
               (2, 2, 6, 6, 2, (3, 3), (3, 3), (0, 0), True, True, False),
               (1, 4, 1, 1, 3, (1, 1), (2, 2), (0, 0), True, False, True),      # a 1x1 image, stride 2
               (2, 3, 3, 3, 5, (1, 1), (2, 2), (1, 1), False, False, True)]     # padding past a 1x1 kernel


def direct_geometry_id(g):
    N, C, H, W, O, k, s, p, bias, relu, dx = g
    return (f"n{N}-c{C}-{H}x{W}-o{O}-k{k[0]}x{k[1]}-s{s[0]}{s[1]}-p{p[0]}{p[1]}"
            f"{'-bias' if bias else ''}{'-relu' if relu else ''}{'' if dx else '-nodx'}")


@pytest.mark.parametrize("geometry", DIRECT_GEOMETRIES, ids=direct_geometry_id)
def test_direct_matches_im2col_float64(geometry):
    N, C, H, W, O, kernel, stride, padding, bias, relu, want_dx = geometry
    assert_agree(N, C, H, W, O, kernel, stride, padding, bias, relu, want_dx, np.float64, 1e-12)


@pytest.mark.parametrize("kernel, stride, padding", [((3, 2), (2, 1), (1, 0)), ((3, 3), (1, 1), (1, 1)),
                                                     ((2, 3), (1, 2), (0, 2))])
def test_direct_gradients_central_difference(kernel, stride, padding):
    # L = sum(g * conv2d(x, w) + b): its gradients are the backward of dy = g, checked entry by entry
    N, C, H, W, O = 2, 3, 6, 5, 4
    x, w, b, g = kernel_inputs(N, C, H, W, O, *kernel, stride, padding, True, np.float64, seed=7)
    _, dw, db, dx, _ = run_kernels("direct", x, w, b, g, stride, padding, False, True)

    def loss():
        return float(np.sum(g * run_kernels("direct", x, w, b, g, stride, padding, False, False)[0]))

    for array, analytic in ((x, dx), (w, dw), (b, db)):
        np.testing.assert_allclose(analytic, numeric_gradient(loss, array, eps=1e-6), rtol=1e-7, atol=1e-8)


# the zoo's convolutions: (C, H, O, kernel, stride, padding)
ZOO_CONVS = [(1, 28, 6, 5, 1, 2), (6, 14, 16, 5, 1, 0), (1, 28, 32, 3, 1, 1), (32, 14, 64, 3, 1, 1),
       (1, 28, 16, 3, 1, 1), (16, 28, 16, 3, 1, 1), (16, 28, 32, 3, 2, 1), (32, 14, 32, 3, 1, 1),
       (32, 14, 64, 3, 2, 1), (64, 7, 64, 3, 1, 1), (16, 28, 32, 1, 2, 0), (32, 14, 64, 1, 2, 0)]


@pytest.mark.parametrize("zoo", ZOO_CONVS, ids=lambda z: "c{}-{}x{}-o{}-k{}-s{}-p{}".format(z[0], z[1], z[1], *z[2:]))
def test_direct_matches_im2col_float32_zoo(zoo):
    C, H, O, k, s, p = zoo
    assert_agree(3, C, H, H, O, (k, k), (s, s), (p, p), True, True, True, np.float32, 1e-4, seed=1)


# -- the algorithm compile chooses ---------------------------------------------------------------

def test_auto_measures_each_convolution_once_and_keeps_the_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(fn.algorithms, "_MEASURED", {})
    calls = []
    measure = fn.algorithms.measure
    monkeypatch.setattr(fn.algorithms, "measure", lambda *a, **kw: calls.append(a[0]) or measure(*a, **kw))
    net = lambda: fn.models.cnn(channels=(4, 8), hidden=16)
    model = net().compile((1, 28, 28), 8)
    # the first conv (one channel: no input gradient) and the second are both 3x3 stride 1
    assert len(calls) == 2 and set(model.algorithms) == {"0", "3"}
    assert set(model.algorithms.values()) <= {"im2col", "direct", "winograd"}
    cached = fn.algorithms.cached_choices()
    assert sorted(entry["choice"] for entry in cached.values()) == sorted(model.algorithms.values())
    for entry in cached.values():
        assert set(entry["seconds"]) == {"im2col", "direct", "winograd"}
        assert all(s > 0 for s in entry["seconds"].values())
    monkeypatch.setattr(fn.algorithms, "_MEASURED", {})    # a new process: the disk has the answer
    again = net().compile((1, 28, 28), 8)
    assert len(calls) == 2 and again.algorithms == model.algorithms
    assert "Conv2D [" in again.summary()


def test_a_forced_algorithm_runs_where_it_applies_and_im2col_elsewhere():
    net = fn.Sequential([fn.Conv2D(3, 3, padding=1), fn.Conv2D(2, 3, stride=2), fn.Conv2D(2, 1)])
    model = net.compile((2, 9, 9), 2, loss="mse", conv_algorithm="winograd")
    assert model.algorithms == {"0": "winograd", "1": "im2col", "2": "im2col"}
    for name in ("im2col", "direct"):           # these compute every convolution
        assert net.compile((2, 9, 9), 2, loss="mse", conv_algorithm=name).algorithms == dict.fromkeys("012", name)
    chosen = net.compile((2, 9, 9), 2, loss="mse", conv_algorithm={"0": "direct", "2": "im2col"}).algorithms
    assert chosen["0"] == "direct" and chosen["2"] == "im2col" and chosen["1"] in ("im2col", "direct")
    for bad in ("fastest", {"0": "fft"}):
        with pytest.raises(fn.SpecError, match="conv_algorithm|unknown algorithm"):
            net.compile((2, 9, 9), 2, loss="mse", conv_algorithm=bad)


def test_a_checkpoint_keeps_the_algorithms_and_resumes_bit_identically(tmp_path):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(12, 2, 8, 8)).astype(np.float32), rng.integers(0, 3, 12)
    net = lambda: fn.Sequential([fn.Conv2D(4, 3, padding=1), fn.ReLU(), fn.Conv2D(4, 3), fn.Flatten(),
                                 fn.Dense(3)])
    choice = {"0": "winograd", "2": "direct"}
    whole = net().compile((2, 8, 8), 4, optimizer=fn.SGD(0.05, momentum=0.9), seed=2, conv_algorithm=choice)
    whole.fit(x, y, epochs=2, verbose=0)
    half = net().compile((2, 8, 8), 4, optimizer=fn.SGD(0.05, momentum=0.9), seed=2, conv_algorithm=choice)
    half.fit(x, y, epochs=1, verbose=0)
    half.save(tmp_path / "half.safetensors")
    resumed = fn.load(tmp_path / "half.safetensors")
    assert resumed.algorithms == choice
    resumed.fit(x, y, epochs=2, initial_epoch=1, verbose=0)
    for name, value in whole.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name], value, err_msg=name)
