"""2-D convolution, torch.nn.Conv2d's layout, semantics and initialisation (no dilation, no groups).

A convolution has several algorithms on a device (k.conv2d_algorithms: on the CPU im2col + GEMM,
fastnet/kernels/cpu/conv.py, a register-blocked direct convolution, conv_direct.py, and Winograd
F(2x2, 3x3), conv_winograd.py), each with its own
kernels and workspaces, found by name (algorithm_kernels). Which one a compiled layer runs is
slot.algorithm, chosen at compile (fastnet/algorithms.py); the layer itself holds no choice.
"""

import math

from ..errors import ShapeError
from ..kernels.shapes import conv2d_output_hw
from .base import Layer, int_pair

DEFAULT_ALGORITHM = "im2col"     # computes every convolution on every device


_KERNEL_NAMES = {}     # algorithm -> its kernels' names, made once (a step formats no strings)


def kernel_names(algorithm):
    """(forward, backward, workspace_shapes) names of a convolution algorithm's kernels: im2col's
    are conv2d_forward, ...; another algorithm a's conv2d_a_forward, ..."""
    names = _KERNEL_NAMES.get(algorithm)
    if names is None:
        prefix = "conv2d" if algorithm in (None, DEFAULT_ALGORITHM) else f"conv2d_{algorithm}"
        names = _KERNEL_NAMES[algorithm] = (f"{prefix}_forward", f"{prefix}_backward", f"{prefix}_workspace_shapes")
    return names


def algorithm_kernels(k, algorithm):
    """(forward, backward, workspace_shapes) of a convolution algorithm in namespace k."""
    return tuple(getattr(k, name) for name in kernel_names(algorithm))


class Conv2D(Layer):
    """y[n, o] = b[o] + sum_c w[o, c] (*) x[n, c], with w of shape (out_channels, in_channels, kh, kw)."""

    fuses_relu = True
    folds_batchnorm = True

    def __init__(self, out_channels, kernel_size, stride=1, padding=0, bias=True, name=None):
        super().__init__(name)
        label = name or "Conv2D"
        if isinstance(out_channels, bool) or int(out_channels) != out_channels or out_channels < 1:
            raise ShapeError(f"{label}: out_channels must be a positive integer, got {out_channels!r}")
        self.out_channels = int(out_channels)
        self.kernel_size = int_pair(kernel_size, "kernel_size", label, 1)
        self.stride = int_pair(stride, "stride", label, 1)
        self.padding = int_pair(padding, "padding", label, 0)
        self.bias = bool(bias)

    def output_shape(self, input_shapes):
        _, H, W = self.image_input(input_shapes)
        (kh, kw) = self.kernel_size
        OH, OW = conv2d_output_hw(H, W, kh, kw, *self.stride, *self.padding)
        if OH < 1 or OW < 1:
            raise ShapeError(f"{self.describe()}: a {kh}x{kw} kernel does not fit the input "
                             f"{H}x{W} with padding {self.padding}")
        return (self.out_channels, OH, OW)

    def param_shapes(self, input_shapes):
        in_channels = input_shapes[0][0]
        shapes = {"weight": (self.out_channels, in_channels, *self.kernel_size)}
        if self.bias:
            shapes["bias"] = (self.out_channels,)
        return shapes

    def _geometry_args(self, input_shapes):
        C, H, W = input_shapes[0]
        return (C, H, W, self.out_channels, *self.kernel_size, *self.stride, *self.padding)

    def algorithms(self, input_shapes, k):
        return k.conv2d_algorithms(*self._geometry_args(input_shapes))

    def workspace_shapes(self, input_shapes, k, algorithm=DEFAULT_ALGORITHM):
        return getattr(k, kernel_names(algorithm)[2])(*self._geometry_args(input_shapes))

    def init_params(self, params, buffers, input_shapes, rng):
        # PyTorch's default: kaiming_uniform_(a=sqrt(5)) gives bound 1/sqrt(fan_in), bias the same.
        C = input_shapes[0][0]
        bound = 1.0 / math.sqrt(C * self.kernel_size[0] * self.kernel_size[1])
        params["weight"][...] = rng.uniform(-bound, bound, params["weight"].shape)
        if self.bias:
            params["bias"][...] = rng.uniform(-bound, bound, params["bias"].shape)

    def _geometry(self):
        return (*self.stride, *self.padding)

    def forward(self, k, slot, xs, y, train):
        bias = slot.params.get("bias")      # a folded batch norm's too, where the plan folds one
        forward = getattr(k, kernel_names(slot.algorithm)[0])
        forward(xs[0], slot.params["weight"], bias, y, *self._geometry(), slot.relu,
                **slot.workspaces_for(forward, y.shape[0]))

    def backward(self, k, slot, xs, y, dy, dxs):
        db = slot.grads["bias"] if self.bias else None
        backward = getattr(k, kernel_names(slot.algorithm)[1])
        backward(xs[0], slot.params["weight"], y, dy, slot.grads["weight"], db, dxs[0], *self._geometry(),
                 slot.relu, **slot.workspaces_for(backward, dy.shape[0]))

    def __repr__(self):
        extra = "" if self.bias else ", bias=False"
        extra += f", name={self.name!r}" if self.name else ""
        return (f"Conv2D({self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}{extra})")
