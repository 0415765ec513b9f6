"""Conv2D: gradient checks over many geometries, PyTorch parity (nn.Conv2d), CPU-vs-CUDA agreement,
the ReLU the plan fuses into it, compile-time shape errors and PyTorch's initialisation bounds; then
the CUDA kernels against the CPU's over several chunks of images, which a layer reaches only on
batches too large for the simulator."""

import numpy as np
import pytest
from cuda_helpers import CUDA_WARNINGS, close, dev, empty, randn
from gradcheck import check_gradients
from harness import check_layer, grid

import fastnet as fn
import fastnet.kernels.cpu as kc
import fastnet.kernels.cuda as kg
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


def conv(geometry, bias=True):
    _, out_channels, kernel, stride, padding = geometry
    return lambda: fn.Conv2D(out_channels, kernel, stride, padding, bias=bias)


def torch_conv(geometry, bias=True):
    in_shape, out_channels, kernel, stride, padding = geometry
    return lambda nn: [nn.Conv2d(in_shape[0], out_channels, kernel, stride, padding, bias=bias)]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=geometry_id)
@pytest.mark.parametrize("batch", [1, 3])
def test_conv2d_gradients(geometry, batch):
    report = check_layer(conv(geometry), geometry[0], batch, seed=batch)
    assert report["checked"] == 2


@pytest.mark.parametrize("geometry, device, dtype", grid(GEOMETRIES[:5], ids=geometry_id))
def test_conv2d_matches_pytorch(geometry, device, dtype):
    report = check_layer(conv(geometry), geometry[0], 4, dtype=dtype, seed=3, torch_net=torch_conv(geometry))
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

@pytest.mark.parametrize("geometry, device, dtype",
                         grid(GEOMETRIES[1:4] + [FUSED_CUDA], cuda=(3,), ids=geometry_id, dtypes=["float64"]))
def test_relu_fused_into_the_convolution_has_correct_gradients(geometry, device, dtype):
    in_shape, out_channels, kernel, stride, padding = geometry
    report = check_layer(lambda: [fn.Conv2D(out_channels, kernel, stride, padding), fn.ReLU()], in_shape,
                         2, device=device, dtype=dtype, seed=3,
                         torch_net=lambda nn: [nn.Conv2d(in_shape[0], out_channels, kernel, stride, padding),
                                               nn.ReLU()])
    assert report["model"].plan.fused_from == {2: 1}   # the ReLU (tensor 2) is applied by the conv
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
