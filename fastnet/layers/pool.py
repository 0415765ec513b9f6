"""Pooling layers over NCHW images: MaxPool2D, AvgPool2D, GlobalAvgPool2D (PyTorch semantics).

MaxPool2D / AvgPool2D take kernel_size, stride (default: kernel_size) and padding as an int or an
(h, w) pair, with ceil_mode=False and dilation 1. As in PyTorch, padding may be at most half the
kernel (2 * padding <= kernel_size per axis), and the padded image must hold at least one window;
anything else is a ShapeError naming the layer. Max pooling treats padding as -inf; average
pooling counts padding in the divisor (count_include_pad=True).

GlobalAvgPool2D maps (C, H, W) to (C,) (Keras' GlobalAveragePooling2D; the same numbers as
PyTorch's adaptive_avg_pool2d(x, 1) followed by a flatten).
"""

from ..errors import ShapeError
from ..kernels.shapes import pool2d_output_hw
from .base import Layer, int_pair


class _Pool2D(Layer):
    def __init__(self, kernel_size, stride=None, padding=0, name=None):
        super().__init__(name)
        label = name or type(self).__name__
        self.kernel_size = int_pair(kernel_size, "kernel_size", label, 1)
        self.stride = self.kernel_size if stride is None else int_pair(stride, "stride", label, 1)
        self.padding = int_pair(padding, "padding", label, 0)
        kh, kw = self.kernel_size
        ph, pw = self.padding
        if 2 * ph > kh or 2 * pw > kw:
            raise ShapeError(
                f"{label}: padding must be at most half the kernel size, got padding="
                f"{self.padding} for kernel_size={self.kernel_size}")

    def output_shape(self, input_shapes):
        C, H, W = self.image_input(input_shapes)
        kh, kw = self.kernel_size
        OH, OW = pool2d_output_hw(H, W, *self._args())
        if OH < 1 or OW < 1:
            raise ShapeError(
                f"{self.describe()}: a {kh}x{kw} window does not fit the input {H}x{W} "
                f"with padding {self.padding}")
        return (C, OH, OW)

    def _args(self):
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph, pw = self.padding
        return kh, kw, sh, sw, ph, pw

    def __repr__(self):
        extra = f", name={self.name!r}" if self.name else ""
        return (f"{self.type_name}(kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}{extra})")


class MaxPool2D(_Pool2D):
    """Max pooling; the index of each chosen pixel is kept in the workspace "argmax" for backward."""

    def workspace_shapes(self, input_shapes, k):
        C, H, W = input_shapes[0]
        return k.maxpool2d_workspace_shapes(C, H, W, *self._args())

    def forward(self, k, slot, xs, y, train):
        k.maxpool2d_forward(xs[0], y, *self._args(), **slot.workspaces_for(k.maxpool2d_forward, y.shape[0]))

    def backward(self, k, slot, xs, y, dy, dxs):
        if dxs[0] is None:
            return
        k.maxpool2d_backward(dy, dxs[0], *self._args(), **slot.workspaces_for(k.maxpool2d_backward, dy.shape[0]))


class AvgPool2D(_Pool2D):
    """Average pooling with count_include_pad=True: every window is divided by kh * kw."""

    def forward(self, k, slot, xs, y, train):
        k.avgpool2d_forward(xs[0], y, *self._args())

    def backward(self, k, slot, xs, y, dy, dxs):
        if dxs[0] is None:
            return
        k.avgpool2d_backward(dy, dxs[0], *self._args())


class GlobalAvgPool2D(Layer):
    """(C, H, W) -> (C,): the mean of each channel's plane."""

    def output_shape(self, input_shapes):
        return (self.image_input(input_shapes)[0],)

    def forward(self, k, slot, xs, y, train):
        k.global_avgpool2d_forward(xs[0], y)

    def backward(self, k, slot, xs, y, dy, dxs):
        if dxs[0] is None:
            return
        k.global_avgpool2d_backward(dy, dxs[0])
