"""Dense (fully connected) layer, torch.nn.Linear's layout and initialisation."""

import math

from ..errors import ShapeError
from .base import Layer


class Dense(Layer):
    """y = x W^T + b with W of shape (out_features, in_features)."""

    def __init__(self, out_features, bias=True, name=None):
        super().__init__(name)
        if int(out_features) != out_features or out_features < 1:
            raise ShapeError(f"Dense: out_features must be a positive integer, got {out_features!r}")
        self.out_features = int(out_features)
        self.bias = bool(bias)

    def output_shape(self, input_shapes):
        (shape,) = input_shapes
        if len(shape) != 1:
            raise ShapeError(f"{self.describe()}: expects a flat input (features,), got per-sample "
                             f"shape {shape}; put a Flatten() before it")
        return (self.out_features,)

    def param_shapes(self, input_shapes):
        (in_features,) = input_shapes[0]
        shapes = {"weight": (self.out_features, in_features)}
        if self.bias:
            shapes["bias"] = (self.out_features,)
        return shapes

    def workspace_shapes(self, input_shapes, k):
        (in_features,) = input_shapes[0]
        return k.dense_workspace_shapes(in_features, self.out_features)

    def init_params(self, params, buffers, input_shapes, rng):
        # PyTorch's default: kaiming_uniform_(a=sqrt(5)) gives bound 1/sqrt(fan_in), bias the same.
        bound = 1.0 / math.sqrt(input_shapes[0][0])
        params["weight"][...] = rng.uniform(-bound, bound, params["weight"].shape)
        if self.bias:
            params["bias"][...] = rng.uniform(-bound, bound, params["bias"].shape)

    def forward(self, k, slot, xs, y, train):
        bias = slot.params["bias"] if self.bias else None
        k.dense_forward(xs[0], slot.params["weight"], bias, y,
                        **slot.workspaces_for(k.dense_forward, y.shape[0]))

    def backward(self, k, slot, xs, y, dy, dxs):
        k.dense_backward_weight(xs[0], dy, slot.grads["weight"],
                                **slot.workspaces_for(k.dense_backward_weight, dy.shape[0]))
        if self.bias:
            k.bias_backward(dy, slot.grads["bias"])
        if dxs[0] is not None:
            k.dense_backward_input(dy, slot.params["weight"], dxs[0])
