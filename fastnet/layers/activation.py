"""Activations: element-wise (ReLU, LeakyReLU, Sigmoid, Tanh) and Softmax over features."""

from ..errors import ShapeError
from .base import Layer


class _Elementwise(Layer):
    """Output shape = input shape; kernels run on flat views of the batch."""

    def output_shape(self, input_shapes):
        return tuple(input_shapes[0])


class ReLU(_Elementwise):
    # y = x if x > 0 else 0, dx = dy if x > 0 else 0; the mask can be read from y instead of x (y > 0
    # exactly where x > 0), which is what lets a layer before it apply it (Layer.fuses_relu).
    is_relu = True

    def forward(self, k, slot, xs, y, train):
        k.relu_forward(xs[0].reshape(-1), y.reshape(-1))

    def backward(self, k, slot, xs, y, dy, dxs):
        if dxs[0] is not None:
            k.relu_backward(xs[0].reshape(-1), dy.reshape(-1), dxs[0].reshape(-1))


class LeakyReLU(_Elementwise):
    def __init__(self, negative_slope=0.01, name=None):
        super().__init__(name)
        self.negative_slope = float(negative_slope)

    def forward(self, k, slot, xs, y, train):
        k.leaky_relu_forward(xs[0].reshape(-1), self.negative_slope, y.reshape(-1))

    def backward(self, k, slot, xs, y, dy, dxs):
        if dxs[0] is not None:
            k.leaky_relu_backward(xs[0].reshape(-1), dy.reshape(-1), self.negative_slope,
                                  dxs[0].reshape(-1))


class Sigmoid(_Elementwise):
    def forward(self, k, slot, xs, y, train):
        k.sigmoid_forward(xs[0].reshape(-1), y.reshape(-1))

    def backward(self, k, slot, xs, y, dy, dxs):
        if dxs[0] is not None:
            k.sigmoid_backward(y.reshape(-1), dy.reshape(-1), dxs[0].reshape(-1))


class Tanh(_Elementwise):
    def forward(self, k, slot, xs, y, train):
        k.tanh_forward(xs[0].reshape(-1), y.reshape(-1))

    def backward(self, k, slot, xs, y, dy, dxs):
        if dxs[0] is not None:
            k.tanh_backward(y.reshape(-1), dy.reshape(-1), dxs[0].reshape(-1))


class Softmax(Layer):
    """Softmax over the features of a flat input, for inference heads.

    Train with loss="cross_entropy" on the logits instead (it fuses the softmax);
    a Softmax before cross_entropy would apply it twice, as in PyTorch.
    """

    def output_shape(self, input_shapes):
        (shape,) = input_shapes
        if len(shape) != 1:
            raise ShapeError(f"{self.describe()}: expects a flat input (features,), got {shape}")
        return tuple(shape)

    def forward(self, k, slot, xs, y, train):
        k.softmax_forward(xs[0], y)

    def backward(self, k, slot, xs, y, dy, dxs):
        if dxs[0] is not None:
            k.softmax_backward(y, dy, dxs[0])
