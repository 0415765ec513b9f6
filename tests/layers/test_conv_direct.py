"""The direct convolution (kernels/cpu/conv_direct.py), kernel by kernel: float64 agreement with the
im2col kernels (conv.py) over many geometries, with and without bias, fused ReLU and input
gradient; a float64 central-difference gradient check of the kernels themselves; float32 agreement
with the im2col kernels on the zoo's convolutions; and the workspaces' names."""

import inspect
import itertools

import numpy as np
import pytest
from gradcheck import numeric_gradient

from fastnet.kernels.cpu import conv
from fastnet.kernels.cpu.conv_direct import (conv2d_direct_backward, conv2d_direct_forward,
                                             conv2d_direct_workspace_shapes)
from fastnet.kernels.shapes import conv2d_output_hw
from fastnet.kernels.workspace import allocate

ALGORITHMS = {"im2col": (conv.conv2d_forward, conv.conv2d_backward, conv.conv2d_workspace_shapes),
              "direct": (conv2d_direct_forward, conv2d_direct_backward, conv2d_direct_workspace_shapes)}


def run(algorithm, x, w, b, dy, stride, padding, relu, want_dx):
    """(y, dw, db, dx, masked dy) of one forward and backward; gradients prefilled with NaN so an
    entry left unwritten shows."""
    forward, backward, shapes = ALGORITHMS[algorithm]
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


def inputs(N, C, H, W, O, KH, KW, stride, padding, bias, dtype, seed):
    rng = np.random.default_rng(seed)
    OH, OW = conv2d_output_hw(H, W, KH, KW, *stride, *padding)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((O, C, KH, KW)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype) if bias else None
    dy = rng.standard_normal((N, O, OH, OW)).astype(dtype)
    return x, w, b, dy


def assert_agree(N, C, H, W, O, kernel, stride, padding, bias, relu, want_dx, dtype, rtol, seed=0):
    x, w, b, dy = inputs(N, C, H, W, O, *kernel, stride, padding, bias, dtype, seed)
    ref = run("im2col", x, w, b, dy, stride, padding, relu, want_dx)
    got = run("direct", x, w, b, dy, stride, padding, relu, want_dx)
    for name, r, g in zip(("y", "dw", "db", "dx", "masked dy"), ref, got):
        if r is None:
            assert g is None
            continue
        assert np.all(np.isfinite(g)), f"{name}: entries not written"
        scale = max(1.0, float(np.abs(r).max()))
        np.testing.assert_allclose(g, r, rtol=0, atol=rtol * scale, err_msg=name)


CHANNELS = [(1, 1), (3, 8), (8, 3), (16, 16), (17, 32), (32, 17), (1, 16), (16, 1), (3, 17), (32, 3)]
KERNELS = [(1, 1), (3, 3), (5, 5), (3, 5)]
STRIDES = [(1, 1), (2, 2), (2, 1)]
PADDINGS = [(0, 0), (1, 1), (2, 2), (1, 0)]

# every kernel x stride x padding, each with channels, batch, bias, ReLU and dx taken in turn
GEOMETRIES = []
for i, (kernel, stride, padding) in enumerate(itertools.product(KERNELS, STRIDES, PADDINGS)):
    C, O = CHANNELS[i % len(CHANNELS)]
    GEOMETRIES.append((5 if i % 3 else 1, C, 9, 7, O, kernel, stride, padding, i % 2 == 0, i % 4 < 2, i % 5 != 4))
# every channel pair of {1, 3, 8, 16, 17, 32}, 3x3 "same", stride 1 and 2
for (C, O), s in itertools.product(itertools.product((1, 3, 8, 16, 17, 32), repeat=2), (1, 2)):
    GEOMETRIES.append((2, C, 6, 5, O, (3, 3), (s, s), (1, 1), True, C % 2 == 1, True))
# conv.py's layer test geometries: stride 3, kernel = image, kernel larger than the image
GEOMETRIES += [(2, 2, 8, 7, 2, (3, 2), (3, 1), (2, 2), True, False, True),
               (3, 2, 4, 5, 3, (4, 5), (1, 1), (0, 0), False, True, True),
               (2, 3, 4, 4, 2, (5, 5), (1, 1), (2, 2), True, False, True),
               (2, 2, 6, 6, 2, (3, 3), (3, 3), (0, 0), True, True, False),
               (1, 4, 1, 1, 3, (1, 1), (2, 2), (0, 0), True, False, True),      # a 1x1 image, stride 2
               (2, 3, 3, 3, 5, (1, 1), (2, 2), (1, 1), False, False, True)]     # padding past a 1x1 kernel


def geometry_id(g):
    N, C, H, W, O, k, s, p, bias, relu, dx = g
    return (f"n{N}-c{C}-{H}x{W}-o{O}-k{k[0]}x{k[1]}-s{s[0]}{s[1]}-p{p[0]}{p[1]}"
            f"{'-bias' if bias else ''}{'-relu' if relu else ''}{'' if dx else '-nodx'}")


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=geometry_id)
def test_direct_matches_im2col_float64(geometry):
    N, C, H, W, O, kernel, stride, padding, bias, relu, want_dx = geometry
    assert_agree(N, C, H, W, O, kernel, stride, padding, bias, relu, want_dx, np.float64, 1e-12)


@pytest.mark.parametrize("kernel, stride, padding", [((3, 2), (2, 1), (1, 0)), ((3, 3), (1, 1), (1, 1)),
                                                     ((2, 3), (1, 2), (0, 2))])
def test_direct_gradients_central_difference(kernel, stride, padding):
    # L = sum(g * conv2d(x, w) + b): its gradients are the backward of dy = g, checked entry by entry
    N, C, H, W, O = 2, 3, 6, 5, 4
    x, w, b, g = inputs(N, C, H, W, O, *kernel, stride, padding, True, np.float64, seed=7)
    _, dw, db, dx, _ = run("direct", x, w, b, g, stride, padding, False, True)

    def loss():
        return float(np.sum(g * run("direct", x, w, b, g, stride, padding, False, False)[0]))

    for array, analytic in ((x, dx), (w, dw), (b, db)):
        np.testing.assert_allclose(analytic, numeric_gradient(loss, array, eps=1e-6), rtol=1e-7, atol=1e-8)


# the zoo's convolutions: (C, H, O, kernel, stride, padding)
ZOO = [(1, 28, 6, 5, 1, 2), (6, 14, 16, 5, 1, 0), (1, 28, 32, 3, 1, 1), (32, 14, 64, 3, 1, 1),
       (1, 28, 16, 3, 1, 1), (16, 28, 16, 3, 1, 1), (16, 28, 32, 3, 2, 1), (32, 14, 32, 3, 1, 1),
       (32, 14, 64, 3, 2, 1), (64, 7, 64, 3, 1, 1), (16, 28, 32, 1, 2, 0), (32, 14, 64, 1, 2, 0)]


@pytest.mark.parametrize("zoo", ZOO, ids=lambda z: "c{}-{}x{}-o{}-k{}-s{}-p{}".format(z[0], z[1], z[1], *z[2:]))
def test_direct_matches_im2col_float32_zoo(zoo):
    C, H, O, k, s, p = zoo
    assert_agree(3, C, H, H, O, (k, k), (s, s), (p, p), True, True, True, np.float32, 1e-4, seed=1)


def test_workspace_names_are_the_kernels_last_parameters():
    specs = conv2d_direct_workspace_shapes(3, 9, 7, 5, 3, 3, 2, 1, 1, 0)
    forward = list(inspect.signature(conv2d_direct_forward.py_func).parameters)
    backward = list(inspect.signature(conv2d_direct_backward.py_func).parameters)
    assert forward[:9] == ["x", "w", "b", "y", "sh", "sw", "ph", "pw", "relu"]
    assert backward[:12] == ["x", "w", "y", "dy", "dw", "db", "dx", "sh", "sw", "ph", "pw", "relu"]
    assert set(forward[9:]) | set(backward[12:]) == set(specs)
    assert all(not spec.per_sample for spec in specs.values())
