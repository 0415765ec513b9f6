"""Batch normalisation layers: BatchNorm2D over (C, H, W) inputs, BatchNorm1D over (C,) or (C, L).

PyTorch's semantics and names: parameters `weight` (ones) and `bias` (zeros) of shape (C,),
buffers `running_mean` (zeros) and `running_var` (ones) saved in the state dict; in training the
batch mean and biased variance normalise, and the running statistics are updated with momentum
(0.1) using the unbiased variance; in evaluation the running statistics normalise.

Differences from torch.nn.BatchNorm*d, all deliberate:
- affine and track_running_stats are always on; momentum must be a number (no momentum=None
  cumulative average), so there is no `num_batches_tracked` buffer.
- A training batch with only one value per channel (batch 1 for BatchNorm1D on (C,) inputs, or
  batch 1 of a 1x1 image for BatchNorm2D) raises ShapeError, as PyTorch raises ValueError
  ("Expected more than 1 value per channel when training"); it is raised before any kernel runs.
  A dataset whose last batch holds a single sample needs drop_last or another batch size.
- backward() assumes the last forward() on this slot was a training forward of the same batch:
  it uses the batch mean and inverse std that forward saved.

The kernels see every input as (N, C, L): the layer passes reshaped views (no copies).

Synchronised batch norm (Model.fit(sync_bn=True) under MPI, fastnet/distributed.py): the model sets
`slot.sync = (comm, global rows)` on the slot; the training forward then takes the statistics of
the global batch, whose rows are spread over the ranks: each rank's per-channel sums (the
batchnorm_sync_* kernels) are allreduced between the passes (two in the forward, one in the
backward), so the result is that of one process with the global batch. The parameter gradients
written are this rank's own sums; the model's allreduce of the flat gradients adds them up.
"""

import numpy as np

from ..errors import ShapeError
from .base import Layer


def _view3(a, n, c, length):
    """a as an (n, c, length) view (every buffer the plan hands over is contiguous, so a reshape
    is a view, on the CPU and on a GPU alike)."""
    return a.reshape(n, c, length)


class _BatchNorm(Layer):
    is_batchnorm = True
    def __init__(self, eps=1e-5, momentum=0.1, name=None):
        super().__init__(name)
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps > 0:
            raise ShapeError(f"{name or type(self).__name__}: eps must be a positive number, got {eps!r}")
        if (not isinstance(momentum, (int, float)) or isinstance(momentum, bool)
                or not 0.0 <= momentum <= 1.0):
            raise ShapeError(
                f"{name or type(self).__name__}: momentum must be a number in [0, 1], got {momentum!r}")
        self.eps = float(eps)
        self.momentum = float(momentum)

    def _channels(self, input_shapes):
        return self.output_shape(input_shapes)[0]

    def param_shapes(self, input_shapes):
        c = self._channels(input_shapes)
        return {"weight": (c,), "bias": (c,)}

    def buffer_shapes(self, input_shapes):
        c = self._channels(input_shapes)
        return {"running_mean": (c,), "running_var": (c,)}

    def workspace_shapes(self, input_shapes, k):
        # the batch mean and inverse std the training forward saves for the backward, per channel
        return k.batchnorm_workspace_shapes(self._channels(input_shapes))

    def init_params(self, params, buffers, input_shapes, rng):
        params["weight"][...] = 1
        params["bias"][...] = 0
        buffers["running_mean"][...] = 0
        buffers["running_var"][...] = 1

    def _as3d(self, a):
        """Batched array (n, C, ...) -> (n, C, L) view."""
        n, c = a.shape[0], a.shape[1]
        length = 1
        for s in a.shape[2:]:
            length *= s
        return _view3(a, n, c, length)

    def forward(self, k, slot, xs, y, train):
        x3 = self._as3d(xs[0])
        y3 = self._as3d(y)
        p, b = slot.params, slot.buffers
        sync = getattr(slot, "sync", None)
        if train and sync is not None:
            self._sync_forward(k, slot, x3, y3, *sync)
        elif train:
            n, _, length = x3.shape
            if n * length <= 1:
                raise ShapeError(
                    f"{self.describe()}: expected more than 1 value per channel when training, "
                    f"got input of shape {tuple(xs[0].shape)} (batch {n}); use a batch of at "
                    f"least 2 (e.g. drop a last batch of one sample) or evaluate with train=False")
            k.batchnorm_forward_train(x3, p["weight"], p["bias"], self.eps, self.momentum, y3,
                                      b["running_mean"], b["running_var"],
                                      **slot.workspaces_for(k.batchnorm_forward_train, n))
        else:
            k.batchnorm_forward_eval(x3, p["weight"], p["bias"], b["running_mean"],
                                     b["running_var"], self.eps, y3)

    def fold(self, k, slot, weight, bias, folded_weight, folded_bias):
        """Evaluation mode folded into the layer before it, y = weight @ x + bias (bias None: none):
        the folded weight and bias give this layer's output directly (the plan's fusion)."""
        p, b = slot.params, slot.buffers
        k.batchnorm_fold(weight.reshape(weight.shape[0], -1), bias, p["weight"], p["bias"], b["running_mean"],
                         b["running_var"], self.eps, folded_weight.reshape(weight.shape[0], -1), folded_bias)

    def _sync_work(self, k, slot, channels):
        """The float64 sums the synchronised kernels write, allocated once per slot."""
        work = getattr(slot, "sync_work", None)
        if work is None:
            work = slot.sync_work = {"mean": k.zeros((channels,), np.float64),
                                     "squares": k.zeros((channels,), np.float64),
                                     "grads": k.zeros((2, channels), np.float64)}
        return work

    @staticmethod
    def _allreduce(k, comm, array):
        """array summed over the ranks in place (through host memory on a GPU); the host copy."""
        if isinstance(array, np.ndarray):
            return comm.allreduce_sum(array)
        host = comm.allreduce_sum(k.to_host(array))
        k.copy_in(array, host)
        return host

    def _sync_forward(self, k, slot, x3, y3, comm, rows):
        n, c, length = x3.shape
        count = rows * length
        if count <= 1:
            raise ShapeError(f"{self.describe()}: expected more than 1 value per channel when training, got a "
                             f"global batch of {rows} with {length} value(s) per channel")
        p, b = slot.params, slot.buffers
        work = self._sync_work(k, slot, c)
        k.batchnorm_sync_sums(x3, work["mean"])
        host = self._allreduce(k, comm, work["mean"])
        host /= count
        if host is not work["mean"]:
            k.copy_in(work["mean"], host)
        k.batchnorm_sync_squares(x3, work["mean"], work["squares"])
        self._allreduce(k, comm, work["squares"])
        k.batchnorm_sync_forward(x3, p["weight"], p["bias"], self.eps, self.momentum, work["mean"], work["squares"],
                                 count, y3, b["running_mean"], b["running_var"],
                                 **slot.workspaces_for(k.batchnorm_forward_train, n))

    def _sync_backward(self, k, slot, x3, dy3, dx3, comm, rows):
        work = slot.sync_work
        saved = slot.workspaces_for(k.batchnorm_forward_train, x3.shape[0])
        g = slot.grads
        k.batchnorm_sync_backward_sums(x3, dy3, saved["save_mean"], saved["save_invstd"], work["grads"])
        grads = work["grads"]    # this rank's own sums: the model's flat allreduce adds them up
        local = grads if isinstance(grads, np.ndarray) else k.to_host(grads)
        k.copy_in(g["bias"], local[0])
        k.copy_in(g["weight"], local[1])
        self._allreduce(k, comm, work["grads"])
        if dx3 is not None:
            k.batchnorm_sync_backward(x3, dy3, slot.params["weight"], saved["save_mean"], saved["save_invstd"],
                                      work["grads"], rows * x3.shape[2], dx3)

    def backward(self, k, slot, xs, y, dy, dxs):
        x3 = self._as3d(xs[0])
        dy3 = self._as3d(dy)
        g = slot.grads
        dx3 = None if dxs[0] is None else self._as3d(dxs[0])
        sync = getattr(slot, "sync", None)
        if sync is not None:
            self._sync_backward(k, slot, x3, dy3, dx3, *sync)
            return
        k.batchnorm_backward(x3, dy3, slot.params["weight"], dx3, g["weight"], g["bias"],
                             **slot.workspaces_for(k.batchnorm_backward, dy.shape[0]))

    def __repr__(self):
        extra = f", name={self.name!r}" if self.name else ""
        return f"{self.type_name}(eps={self.eps}, momentum={self.momentum}{extra})"


class BatchNorm2D(_BatchNorm):
    """Batch norm over (C, H, W) inputs: statistics per channel over the batch and the plane."""

    def output_shape(self, input_shapes):
        return self.image_input(input_shapes, hint="; use BatchNorm1D for (features,) inputs")


class BatchNorm1D(_BatchNorm):
    """Batch norm over (C,) inputs (statistics over the batch) or (C, L) (over batch and length)."""

    def output_shape(self, input_shapes):
        if len(input_shapes) != 1:
            raise ShapeError(f"{self.describe()}: expected 1 input, got {len(input_shapes)}")
        shape = tuple(input_shapes[0])
        if len(shape) not in (1, 2):
            raise ShapeError(
                f"{self.describe()}: expected a (features,) or (channels, length) input per "
                f"sample, got shape {shape}; use BatchNorm2D for images")
        return shape
