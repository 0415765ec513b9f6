"""Graph layers: Add (element-wise sum of several inputs), Concat (join along an axis) and
Slice (split along an axis into several outputs), for networks built with fastnet.Graph.

Their backward passes are copies, so they can add into an input gradient that another reader has
already written (slot.accumulate[i], set by the plan): a tensor read twice costs no extra buffer.
An axis counts the per-sample axes from 1, as in PyTorch's NCHW (axis=1 is the channels); the
kernels see every tensor as (M, C, inner) with the axes before `axis` folded into M.
"""

import math

from ..errors import ShapeError
from .base import Layer


def _check_axis(layer, axis):
    if isinstance(axis, bool) or int(axis) != axis or axis < 1:
        raise ShapeError(f"{layer}: axis must be a per-sample axis >= 1 (1 = channels), got {axis!r}")
    return int(axis)


def _view3(a, axis):
    """a (batch, *shape) as (M, C, inner) around `axis`, without a copy."""
    shape = a.shape
    return a.reshape(math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:]))


class Add(Layer):
    """y = x_1 + x_2 + ... for inputs of one shape (Keras' Add; a residual connection)."""

    n_inputs = None
    accumulates = True
    fuses_relu = True       # the ReLU closing a residual block: applied in the same pass

    def output_shape(self, input_shapes):
        first = tuple(input_shapes[0])
        for shape in input_shapes[1:]:
            if tuple(shape) != first:
                raise ShapeError(f"{self.describe()}: inputs must all have one shape, got "
                                 f"{' and '.join(str(tuple(s)) for s in input_shapes)}")
        return first

    def forward(self, k, slot, xs, y, train):
        flat, out = [x.reshape(-1) for x in xs], y.reshape(-1)
        if len(flat) == 1:
            k.copy_forward(flat[0], out)
        else:
            k.add_forward(flat[0], flat[1], out, slot.relu and len(flat) == 2)
            for x in flat[2:]:
                k.accumulate(out, x)
        if slot.relu and len(flat) != 2:
            k.relu_forward(out, out)

    def backward(self, k, slot, xs, y, dy, dxs):
        if slot.relu:               # the gradient of the sum itself: dy where y > 0 (in place)
            k.relu_backward(y.reshape(-1), dy.reshape(-1), dy.reshape(-1))
        for dx, add in zip(dxs, slot.accumulate):
            if dx is None:
                continue
            if add:
                k.accumulate(dx.reshape(-1), dy.reshape(-1))
            else:
                k.copy_forward(dy.reshape(-1), dx.reshape(-1))


class Concat(Layer):
    """Inputs joined along `axis` (torch.cat(dim=axis)); every other axis must agree."""

    n_inputs = None
    accumulates = True

    def __init__(self, axis=1, name=None):
        super().__init__(name)
        self.axis = _check_axis(name or "Concat", axis)

    def output_shape(self, input_shapes):
        a = self.axis
        first = tuple(input_shapes[0])
        if a > len(first):
            raise ShapeError(f"{self.describe()}: axis {a} does not exist in inputs of shape {first}")
        for shape in input_shapes[1:]:
            shape = tuple(shape)
            if len(shape) != len(first) or shape[:a - 1] + shape[a:] != first[:a - 1] + first[a:]:
                raise ShapeError(f"{self.describe()}: inputs must agree on every axis but {a}, got "
                                 f"{' and '.join(str(tuple(s)) for s in input_shapes)}")
        return first[:a - 1] + (sum(s[a - 1] for s in input_shapes),) + first[a:]

    def forward(self, k, slot, xs, y, train):
        out, offset = _view3(y, self.axis), 0
        for x in xs:
            part = _view3(x, self.axis)
            k.copy_channels(part, 0, out, offset, part.shape[1], False)
            offset += part.shape[1]

    def backward(self, k, slot, xs, y, dy, dxs):
        grad, offset = _view3(dy, self.axis), 0
        for x, dx, add in zip(xs, dxs, slot.accumulate):
            count = x.shape[self.axis]
            if dx is not None:
                k.copy_channels(grad, offset, _view3(dx, self.axis), 0, count, add)
            offset += count


class Slice(Layer):
    """Splits its input along `axis` into consecutive sections of the given sizes (torch.split with
    a list of sizes): calling it on a node returns one node per section."""

    accumulates = True

    def __init__(self, sections, axis=1, name=None):
        super().__init__(name)
        label = name or "Slice"
        self.axis = _check_axis(label, axis)
        try:
            self.sections = [int(s) for s in sections]
        except (TypeError, ValueError):
            raise ShapeError(f"{label}: sections must be a list of sizes, got {sections!r}") from None
        if not self.sections or any(s < 1 or s != t for s, t in zip(self.sections, sections)):
            raise ShapeError(f"{label}: sections must be a non-empty list of positive sizes, "
                             f"got {sections!r}")

    @property
    def n_outputs(self):
        return len(self.sections)

    def output_shapes(self, input_shapes):
        a = self.axis
        shape = tuple(input_shapes[0])
        if a > len(shape):
            raise ShapeError(f"{self.describe()}: axis {a} does not exist in inputs of shape {shape}")
        if sum(self.sections) != shape[a - 1]:
            raise ShapeError(f"{self.describe()}: sections {self.sections} add up to "
                             f"{sum(self.sections)}, but axis {a} of the input {shape} has "
                             f"{shape[a - 1]}")
        return [shape[:a - 1] + (size,) + shape[a:] for size in self.sections]

    def output_shape(self, input_shapes):
        return self.output_shapes(input_shapes)[0]

    def forward(self, k, slot, xs, y, train):
        part = _view3(y, self.axis)
        offset = sum(self.sections[:slot.output_index])
        k.copy_channels(_view3(xs[0], self.axis), offset, part, 0, part.shape[1], False)

    def backward(self, k, slot, xs, y, dy, dxs):
        dx = dxs[0]
        if dx is None:
            return
        if not slot.accumulate[0]:
            k.fill(dx.reshape(-1), 0.0)  # the channels of the other sections, until they add theirs
        grad = _view3(dy, self.axis)
        offset = sum(self.sections[:slot.output_index])
        k.copy_channels(grad, 0, _view3(dx, self.axis), offset, grad.shape[1], True)
