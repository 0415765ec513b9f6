"""The CPU's algorithms for one convolution: the same math, different kernels (conv.py's im2col +
GEMM, conv_winograd.py's Winograd F(2x2, 3x3), conv_direct.py's register-blocked direct
convolution). Compile measures those that apply to a layer and
keeps the fastest (fastnet/algorithms.py); the layer finds an algorithm's kernels by name:
"im2col" -> conv2d_forward, conv2d_backward, conv2d_workspace_shapes; any other name a ->
conv2d_a_forward, conv2d_a_backward, conv2d_a_workspace_shapes."""

from .conv_winograd import conv2d_winograd_applies


def conv2d_algorithms(C, H, W, O, KH, KW, sh, sw, ph, pw):
    """The names of the algorithms that compute this convolution here, im2col first (it and direct
    compute any)."""
    names = ["im2col", "direct"]
    if conv2d_winograd_applies(C, H, W, O, KH, KW, sh, sw, ph, pw):
        names.append("winograd")
    return tuple(names)
