"""Recurrent layers: RNN, LSTM and GRU over batch-first (N, T, features) sequences, with
PyTorch's parameter names, layouts, gate orders and initialisation, so that a torch.nn.LSTM's
(GRU's, RNN's) state_dict loads: in a Sequential, layer 0's parameters are "0.weight_ih_l0"
(gates * hidden, features), "0.weight_hh_l0" (gates * hidden, hidden), "0.bias_ih_l0" and
"0.bias_hh_l0" (gates * hidden), gates stacked i, f, g, o (LSTM) or r, z, n (GRU, b_hn inside
r * (W_hn h + b_hn)). One layer is one torch layer (num_layers=1), unidirectional, from zero
initial states; stack layers for depth (each but the last with return_sequences=True).

The kernels (fastnet/kernels/cpu/recurrent.py) compute the input projection of every step as
one matrix product, then the recurrence step by step; the backward runs through time in reverse.
"""

import math

from ..errors import ShapeError
from .base import Layer


def _positive_integer(value):
    """An int or a whole float >= 1 (not a bool, a string, None)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and value >= 1 and int(value) == value)


class _Recurrent(Layer):
    """What RNN, LSTM and GRU share: configuration, shapes, parameters, initialisation."""

    gates = 1           # gate blocks stacked in the weights
    cell = ""           # the kernels' prefix: k.<cell>_forward, k.<cell>_backward

    def __init__(self, hidden_size, return_sequences=False, truncate=None, name=None):
        super().__init__(name)
        kind = type(self).__name__
        if not _positive_integer(hidden_size):
            raise ShapeError(f"{kind}: hidden_size must be a positive integer, got {hidden_size!r}")
        if truncate is not None and not _positive_integer(truncate):
            raise ShapeError(f"{kind}: truncate must be a positive number of steps or None (full "
                             f"backpropagation through time), got {truncate!r}")
        self.hidden_size = int(hidden_size)
        self.return_sequences = bool(return_sequences)
        self.truncate = None if truncate is None else int(truncate)

    def config(self):
        args = super().config()
        if args["truncate"] is None:        # the default; TOML has no null
            del args["truncate"]
        return args

    def _sequence(self, input_shapes):
        if len(input_shapes) != 1 or len(input_shapes[0]) != 2:
            shape = tuple(input_shapes[0]) if len(input_shapes) == 1 else input_shapes
            raise ShapeError(f"{self.describe()}: expects a (steps, features) sequence per sample "
                             f"(batch-first (N, T, F) input), got per-sample shape {shape}; put a "
                             f"Reshape((steps, features)) before it")
        steps, features = input_shapes[0]
        return int(steps), int(features)

    def output_shape(self, input_shapes):
        steps, _ = self._sequence(input_shapes)
        return (steps, self.hidden_size) if self.return_sequences else (self.hidden_size,)

    def param_shapes(self, input_shapes):
        _, features = self._sequence(input_shapes)
        rows = self.gates * self.hidden_size
        return {"weight_ih_l0": (rows, features), "weight_hh_l0": (rows, self.hidden_size),
                "bias_ih_l0": (rows,), "bias_hh_l0": (rows,)}

    def workspace_shapes(self, input_shapes, k):
        steps, features = self._sequence(input_shapes)
        return getattr(k, f"{self.cell}_workspace_shapes")(steps, features, self.hidden_size)

    def init_params(self, params, buffers, input_shapes, rng):
        # PyTorch's default for its recurrent layers: every parameter uniform(-1/sqrt(H), 1/sqrt(H)).
        bound = 1.0 / math.sqrt(self.hidden_size)
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            params[name][...] = rng.uniform(-bound, bound, params[name].shape)

    def _steps_out(self, a):
        """The output (or its gradient) as (N, Ty, H): (N, H) is the last step only."""
        return a if self.return_sequences else a.reshape(a.shape[0], 1, a.shape[1])

    def _weights(self, slot):
        p = slot.params
        return p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"]

    def _grads(self, slot):
        g = slot.grads
        return g["weight_ih_l0"], g["weight_hh_l0"], g["bias_ih_l0"], g["bias_hh_l0"]

    def _extra(self):
        """Arguments of the kernels after the weights (the RNN's nonlinearity)."""
        return ()

    def forward(self, k, slot, xs, y, train):
        kernel = getattr(k, f"{self.cell}_forward")
        kernel(xs[0], *self._weights(slot), *self._extra(), self._steps_out(y),
               **slot.workspaces_for(kernel, y.shape[0]))

    def backward(self, k, slot, xs, y, dy, dxs):
        kernel = getattr(k, f"{self.cell}_backward")
        w_ih, w_hh, _, _ = self._weights(slot)
        kernel(xs[0], w_ih, w_hh, *self._extra(), self._steps_out(dy), dxs[0], *self._grads(slot),
               self.truncate or 0, **slot.workspaces_for(kernel, dy.shape[0]))


class LSTM(_Recurrent):
    """torch.nn.LSTM(features, hidden_size, batch_first=True), one layer: gates i, f, g, o.

    return_sequences: the output is every step's hidden state (N, T, hidden_size), else the last
    step's (N, hidden_size). truncate=k: truncated backpropagation through time, no gradient
    flowing from step s into step s-1 where T - s is a multiple of k (the state detached there, as
    h.detach() in PyTorch): chunks of k steps counted back from the last step, so the last output's
    gradient reaches exactly k steps back and every output's at most k; None (the default): the
    full backpropagation through time (so is any k >= T). The forward is the same either way."""

    gates = 4
    cell = "lstm"


class GRU(_Recurrent):
    """torch.nn.GRU(features, hidden_size, batch_first=True), one layer: gates r, z, n with
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)). return_sequences and truncate as LSTM's."""

    gates = 3
    cell = "gru"


class RNN(_Recurrent):
    """torch.nn.RNN(features, hidden_size, nonlinearity, batch_first=True), one layer:
    h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), act tanh or relu. return_sequences and
    truncate as LSTM's."""

    cell = "rnn"

    def __init__(self, hidden_size, nonlinearity="tanh", return_sequences=False, truncate=None, name=None):
        super().__init__(hidden_size, return_sequences, truncate, name)
        if nonlinearity not in ("tanh", "relu"):
            raise ShapeError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity

    def _extra(self):
        return (self.nonlinearity == "relu",)
