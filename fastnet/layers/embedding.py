"""Embedding: integer token ids -> rows of a learned table, torch.nn.Embedding's layout,
initialisation and padding_idx.

Tokens reach the layer as the model's input values, in the model's float dtype (the input buffer
is the model's): every integer below 2^24 is exact in float32, so a float32 model refuses a table
of more rows (ShapeError at compile). The model checks the input it is given before anything runs
(check_input, called by Model for the layers that read its input): a non-integer value or a token
outside [0, num_embeddings) is a DataError naming the first one. The output as a function of the
token values is piecewise constant, so the input gradient, where one is asked for, is zero.
"""

import numpy as np

from ..errors import DataError, ShapeError
from .base import Layer

FLOAT32_EXACT = 2**24       # float32 holds every integer up to this one exactly


def _positive_int(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ShapeError(f"Embedding: {what} must be a positive integer, got {value!r}")
    return int(value)


class Embedding(Layer):
    """y[..., :] = weight[x[...], :]: a per-sample input of token ids of any shape S gives
    S + (embedding_dim,), as torch.nn.Embedding (weight (num_embeddings, embedding_dim), drawn from
    N(0, 1)). padding_idx (as torch's, negative counting from the end): that row starts at zero and
    its gradient stays zero."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, name=None):
        super().__init__(name)
        self.num_embeddings = _positive_int(num_embeddings, "num_embeddings")
        self.embedding_dim = _positive_int(embedding_dim, "embedding_dim")
        if padding_idx is not None:
            if (isinstance(padding_idx, bool) or not isinstance(padding_idx, (int, np.integer))
                    or not -self.num_embeddings <= padding_idx < self.num_embeddings):
                raise ShapeError(f"Embedding: padding_idx must be None or an integer in "
                                 f"[-{self.num_embeddings}, {self.num_embeddings}), got {padding_idx!r}")
            padding_idx = int(padding_idx) % self.num_embeddings     # torch keeps it so too
        self.padding_idx = padding_idx

    def config(self):
        args = super().config()
        if self.padding_idx is None:    # left out, as a TOML spec would (TOML has no null)
            del args["padding_idx"]
        return args

    def output_shape(self, input_shapes):
        if len(input_shapes) != 1:
            raise ShapeError(f"{self.describe()}: expected 1 input, got {len(input_shapes)}")
        return (*input_shapes[0], self.embedding_dim)

    def param_shapes(self, input_shapes):
        return {"weight": (self.num_embeddings, self.embedding_dim)}

    def init_params(self, params, buffers, input_shapes, rng):
        weight = params["weight"]
        if weight.dtype == np.float32 and self.num_embeddings > FLOAT32_EXACT:
            raise ShapeError(f"{self.describe()}: {self.num_embeddings} token ids do not all fit a "
                             f"float32 input exactly (at most {FLOAT32_EXACT}); compile with "
                             f"dtype='float64'")
        weight[...] = rng.standard_normal(weight.shape)
        if self.padding_idx is not None:
            weight[self.padding_idx] = 0

    def check_input(self, x, what):
        """Refuse (DataError) token ids that are not integers in [0, num_embeddings)."""
        if x.size == 0:
            return
        flat = x.reshape(-1)
        if x.dtype.kind == "f":
            bad = np.flatnonzero(~np.isfinite(flat) | (flat != np.round(flat)))
            if bad.size:
                raise DataError(f"{what}: {self.describe()} takes integer token ids; {bad.size} of the "
                                f"{flat.size} values are not integers (the first, at flat index {bad[0]}: "
                                f"{flat[bad[0]].item()!r})")
        bad = np.flatnonzero((flat < 0) | (flat >= self.num_embeddings))
        if bad.size:
            raise DataError(f"{what}: {self.describe()} takes token ids in [0, {self.num_embeddings}); "
                            f"{bad.size} of the {flat.size} are outside (the first, at flat index "
                            f"{bad[0]}: {flat[bad[0]].item()!r}): raise num_embeddings or map them to "
                            f"a known token")

    def _views(self, x, y):
        return x.reshape(-1), y.reshape(-1, self.embedding_dim)

    def forward(self, k, slot, xs, y, train):
        tokens, rows = self._views(xs[0], y)
        k.embedding_forward(tokens, slot.params["weight"], rows)

    def backward(self, k, slot, xs, y, dy, dxs):
        tokens, rows = self._views(xs[0], dy)
        padding = -1 if self.padding_idx is None else self.padding_idx
        k.embedding_backward(tokens, rows, padding, slot.grads["weight"])
        if dxs[0] is not None:      # piecewise constant in the token values: a zero gradient
            k.fill(dxs[0].reshape(-1), 0.0)
