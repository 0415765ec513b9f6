"""The compiled model: forward, gradients, train_step, fit, evaluate, predict, state dicts.

Everything the training loop touches was allocated at compile time. A step copies the batch
into the input buffer, runs the plan forward, the loss, the plan backward and one optimizer
kernel over the flat parameters; none of it allocates an array.
"""

import functools
import sys
import threading
import time
import warnings
from collections import OrderedDict

import numpy as np

from . import algorithms, checkpoint, distributed, kernels, losses
from . import onnx as onnx_export
from .callbacks import Callback
from .errors import (
    BusyError,
    CheckpointError,
    DataError,
    DistributedError,
    DivergenceError,
    FastnetError,
    ShapeError,
    SpecError,
)
from .layers import Softmax
from .optim import SGD, Optimizer
from .plan import MEMORY_PARTS, Plan, check_memory, estimate_memory, format_bytes, parse_memory
from .threads import restores_numpy_blas_threads

DTYPES = {"float32": np.float32, "float64": np.float64}


def _fixed_batch(method):
    """Keras' batch_size= argument, refused with the reason: the batch size is a compile-time choice."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if "batch_size" in kwargs:
            raise TypeError(f"{method.__name__}() takes no batch_size: a fastnet model's batch size is "
                            f"fixed when the network is compiled (this one: {self.batch_size}); compile "
                            f"again with batch_size={kwargs['batch_size']!r} (or fn.load(path, "
                            f"batch_size=...) for a checkpoint)")
        return method(self, *args, **kwargs)
    return wrapper


def _exclusive(method):
    """One thread at a time: the model's buffers (inputs, activations, gradients, parameters,
    optimizer state) are shared by every call, so a call from a second thread while another is
    running (a predict during a fit) would read or write half-updated buffers. It is refused with a
    BusyError, at once (never waits, never deadlocks). The same thread may nest calls (a callback
    evaluating or saving the model during its fit)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        lock = self.__dict__.get("_lock")
        if lock is None:    # a Model made without __init__ (never in fastnet): nothing to guard with
            return method(self, *args, **kwargs)
        if not lock.acquire(blocking=False):
            raise BusyError(f"{method.__name__}() was called while {self._busy}() runs in another thread: "
                            f"a model's buffers serve one call at a time. Wait for it to return, or give "
                            f"each thread its own model (compile again, or fn.load a checkpoint)")
        outermost = self._busy is None
        if outermost:
            self._busy = method.__name__
        try:
            return method(self, *args, **kwargs)
        finally:
            if outermost:
                self._busy = None
            lock.release()
    return wrapper


class History:
    """Per-epoch figures, as Keras's History: `history.history["loss"]` is a list, one per epoch.
    "lr" is the learning rate of the epoch's last step (before any callback changed it)."""

    KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "images_per_sec", "seconds")

    def __init__(self):
        self.epoch = []
        self.history = {key: [] for key in self.KEYS}

    def append(self, epoch, **figures):
        self.epoch.append(epoch)
        for key in self.KEYS:
            self.history[key].append(figures.get(key))

    def __getitem__(self, key):
        return self.history[key]

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, loss={self.history['loss']})"


class Model:
    @restores_numpy_blas_threads
    def __init__(self, network, input_node, nodes, batch_size, loss, optimizer, device, seed, dtype,
                 conv_algorithm=algorithms.AUTO, max_memory=None):
        if int(batch_size) != batch_size or batch_size < 1:
            raise ShapeError(f"batch_size must be a positive integer, got {batch_size!r}")
        if _dtype_name(dtype) not in DTYPES:
            raise SpecError(f"dtype must be float32 or float64, got {dtype!r}")
        self.network = network
        self.device = device
        if device == "cuda" and distributed.launched() and distributed.world().size > 1:
            distributed.use_local_gpu()     # each rank its own GPU, before a CUDA context exists
        self.k = kernels.namespace(device)
        self.dtype = np.dtype(dtype)
        self.batch_size = int(batch_size)
        self.seed = seed
        algorithms.check_request(conv_algorithm)
        self.loss_fn = losses.get(loss)
        self.optimizer = optimizer if optimizer is not None else SGD(lr=0.01)
        if not isinstance(self.optimizer, Optimizer):
            raise TypeError(f"optimizer must be fn.SGD, fn.Adam or fn.AdamW, got {optimizer!r}")
        # The budget before anything is allocated (the plan's parameters, the algorithm trials).
        self.memory_estimate = estimate_memory(input_node, nodes, self.batch_size, self.dtype, self.k,
                                               self.optimizer, conv_algorithm)
        self.memory_limit = check_memory(self.memory_estimate, self.batch_size, device,
                                         parse_memory(max_memory))
        seeds = np.random.SeedSequence(seed).spawn(2)
        names = dict(zip(map(id, network.layers), network.layer_names()))
        self.plan = Plan(input_node, nodes, [names[id(node.layer)] for node in nodes], self.batch_size,
                         self.dtype, np.random.default_rng(seeds[0]), self.k, device, conv_algorithm)
        self._shuffle_rng = np.random.default_rng(seeds[1])
        self.input_shape = tuple(input_node.shape)
        self.output_shape = tuple(self.plan.output_node.shape)
        self.loss_fn.check_output(self.output_shape)
        self.targets = self.loss_fn.target_buffer(self.k, self.batch_size, self.output_shape, self.dtype)
        self.loss_work = self.loss_fn.workspace(self.k, self.batch_size, self.output_shape, self.dtype)
        self.opt_state = self.optimizer.state(self.k, self.plan.flat_params)
        # Batches are assembled on the host: in the input and target buffers themselves on the
        # CPU, in pinned host memory copied up afterwards on a GPU.
        self.x_staging = self.k.staging(self.plan.acts[0])
        self.y_staging = self.k.staging(self.targets)
        self._staged = self.x_staging is not self.plan.acts[0]
        self.step = 0      # optimizer steps taken
        self.epoch = 0     # epochs completed by fit
        self.schedule = None  # learning-rate schedule used by fit
        self.augment = None   # data augmentation used by fit
        self.info = {}     # free-form metadata carried in checkpoints (e.g. input normalisation)
        self._lock, self._busy = threading.RLock(), None    # one thread at a time (_exclusive)
        self._warm_up()
        self.plan.initialise()

    # -- compile-time warm-up ------------------------------------------------------------
    def _warm_up(self):
        """Run every kernel once so Numba compiles it now, not in the first step.
        Runs on the zero-filled buffers; parameters and optimizer state are reset after."""
        n = self.batch_size
        self._forward_loss(n, train=True)
        self.plan.backward(self.k, n, input_grad=True)
        self.loss_fn.correct(self.k, self.plan.acts[-1][:n], self.targets[:n])
        self.k.count_nonfinite(self.plan.flat_grads)
        self.optimizer.update(self.k, self.plan.flat_params, self.plan.flat_grads, self.opt_state, 1)
        self.plan.forward(self.k, n, train=False)
        for buf in [self.plan.flat_params, self.plan.flat_grads, *self.opt_state.values()]:
            self.k.fill(buf, 0.0)

    # -- the step ------------------------------------------------------------------------
    def _forward_loss(self, n, train):
        """Forward over the first n rows of the input buffer; returns the mean loss.
        Sets the output gradient buffer when train is true."""
        out = self.plan.forward(self.k, n, train)
        total = self.loss_fn.forward(self.k, out, self.targets[:n], self._work(n))
        count = self.loss_fn.count(n, self.output_shape)
        if train:   # data parallel: the mean over the global batch (the gradients are summed over ranks)
            rows = n if self._batch_rows is None else self._batch_rows
            scale = 1.0 / self.loss_fn.count(rows, self.output_shape)
            self.loss_fn.backward(self.k, out, self.targets[:n], self._work(n), scale,
                                  self.plan.grads[-1][:n])
        return total / count

    def _work(self, n):
        return None if self.loss_work is None else self.loss_work[:n]

    def _load(self, x, y):
        """Copy a batch (already checked) into the input and target buffers; returns its rows."""
        n = len(x)
        np.copyto(self.x_staging[:n], x, casting="unsafe")
        np.copyto(self.y_staging[:n], y, casting="unsafe")
        self._upload(n)
        return n

    def _upload(self, n, targets=True):
        """The batch assembled in the staging arrays into the model's buffers (nothing on the CPU:
        the staging arrays are the buffers)."""
        if self._staged:
            self.k.copy_in(self.plan.acts[0][:n], self.x_staging[:n])
            if targets:
                self.k.copy_in(self.targets[:n], self.y_staging[:n])

    def _check_batch(self, x, y):
        """Cheap checks for one batch: shapes and label range, no full scan for NaN."""
        x = self._check_x(x, finite=False)
        if len(x) > self.batch_size:
            raise ShapeError(f"a batch of {len(x)} rows is larger than the compiled batch size "
                             f"{self.batch_size}; use fit() for whole datasets")
        if len(x) == 0:
            raise ShapeError("an empty batch has no loss")
        y = self.loss_fn.check_targets(y, len(x), self.output_shape)
        return x, y

    @_exclusive
    @restores_numpy_blas_threads
    def train_step(self, x, y):
        """One optimizer step on one batch (at most batch_size rows); returns the loss."""
        self._warn_softmax_twice(stacklevel=5)    # the caller's line, past both decorators
        x, y = self._check_batch(x, y)
        n = self._load(x, y)
        return self._train_loaded(n, "train_step")

    @_exclusive
    @restores_numpy_blas_threads
    def gradients(self, x, y, input_grad=False):
        """Train-mode forward and backward without an update: (loss, {name: gradient copy}),
        with "input" added when input_grad is true."""
        x, y = self._check_batch(x, y)
        n = self._load(x, y)
        self.plan.set_step(self.step)
        loss = self._forward_loss(n, train=True)
        self.plan.backward(self.k, n, input_grad=input_grad)
        grads = OrderedDict((name, self.k.to_host(self.plan.slots[index].grads[short]))
                            for name, index, short in self.plan.param_names)
        if input_grad:
            grads["input"] = self.k.to_host(self.plan.grads[0][:n])
        return float(loss), grads

    # -- whole datasets ------------------------------------------------------------------
    @_exclusive
    @restores_numpy_blas_threads
    def forward(self, x, train=False):
        """Network outputs for any number of rows, in chunks of the compiled batch size."""
        x = self._check_x(x, finite=False)
        out = np.empty((len(x), *self.output_shape), self.dtype)
        for start in range(0, len(x), self.batch_size):
            chunk = x[start:start + self.batch_size]
            n = len(chunk)
            np.copyto(self.x_staging[:n], chunk, casting="unsafe")
            self._upload(n, targets=False)
            self.plan.set_step(self.step, row_offset=start)
            self.k.copy_out(out[start:start + n], self.plan.forward(self.k, n, train))
        return out

    @_fixed_batch
    @_exclusive
    @restores_numpy_blas_threads
    def predict(self, x):
        """Network outputs in evaluation mode (logits for a network ending in Dense)."""
        return self.forward(self._check_x(x, finite=True), train=False)

    def _ends_in_softmax(self):
        return isinstance(self.plan.output_node.layer, Softmax)

    def _warn_softmax_twice(self, stacklevel):
        """Once per model: a Softmax output trained with cross_entropy (which applies softmax
        itself) is softmax applied twice, as in PyTorch: allowed, but almost never meant."""
        if self.loss_fn.name == "cross_entropy" and self._ends_in_softmax() and not self._warned_softmax:
            self._warned_softmax = True
            warnings.warn("the network ends in Softmax and the loss is cross_entropy, which applies "
                          "softmax itself: softmax is applied twice (gradients shrink, training "
                          "stalls). Remove the final Softmax and train on logits (predict_proba gives "
                          "probabilities), or use another loss", UserWarning, stacklevel=stacklevel)

    _warned_softmax = False

    @_fixed_batch
    @_exclusive
    @restores_numpy_blas_threads
    def predict_proba(self, x):
        """Class probabilities: the softmax of predict's logits, row by row (for a model whose loss
        is cross_entropy, i.e. whose outputs are logits)."""
        if self.loss_fn.name != "cross_entropy":
            raise FastnetError(f"predict_proba() is the softmax of the logits of a model trained with "
                               f"loss='cross_entropy'; this one's loss is {self.loss_fn.name!r}: use predict()")
        if self._ends_in_softmax():
            raise FastnetError("predict_proba(): the network already ends in Softmax, so predict() gives "
                               "probabilities; a second softmax would flatten them")
        logits = self.predict(x).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return (e / e.sum(axis=1, keepdims=True)).astype(self.dtype)

    @_fixed_batch
    @_exclusive
    @restores_numpy_blas_threads
    def evaluate(self, x, y, comm=None):
        """{"loss": mean loss, "accuracy": fraction correct (None for mse)} in evaluation mode.
        Under MPI (comm: fastnet.distributed's, by default fit's while it runs, else this process's
        world) a collective: each rank evaluates its contiguous share of the rows and the sums are
        added up."""
        x = self._check_x(x, finite=True)
        y = self.loss_fn.check_targets(y, len(x), self.output_shape)
        if len(x) == 0:
            raise ShapeError("evaluate() needs at least one row")
        comm = comm or self._comm or distributed.world()
        lo, hi = distributed.shard(len(x), comm.rank, comm.size)
        total, correct = 0.0, 0
        for start in range(lo, hi, self.batch_size):
            end = min(start + self.batch_size, hi)
            n = self._load(x[start:end], y[start:end])
            total += self._forward_loss(n, train=False) * n
            hits = self.loss_fn.correct(self.k, self.plan.acts[-1][:n], self.targets[:n])
            correct += hits or 0
        total, correct = _global_sums(comm, total, correct)
        accuracy = correct / len(x) if self.loss_fn.has_accuracy else None
        return {"loss": total / len(x), "accuracy": accuracy}

    stop_training = False   # set by a callback: fit ends after the current epoch

    @_fixed_batch
    @_exclusive
    @restores_numpy_blas_threads
    def fit(self, x, y, epochs=1, validation_data=None, shuffle=True, verbose=1, schedule=None,
            initial_epoch=0, callbacks=(), augment=None, comm=None, sync_bn=False):
        """Minibatch training; returns a History (also model.history). All inputs are checked
        before any step runs.

        As Keras: epochs initial_epoch + 1 .. epochs run (numbered so). callbacks: fastnet.callbacks
        objects (Keras's hooks: on_train_begin, on_epoch_begin, on_batch_end, on_epoch_end,
        on_train_end; see fastnet/callbacks.py) and plain functions, each called as
        callback(model, epoch, figures) after every epoch (to save a checkpoint, say). A callback
        setting model.stop_training = True ends fit after the current epoch.
        schedule: a fastnet.schedules schedule setting the learning rate before every step (times
        model.info["lr_scale"], which ReduceLROnPlateau lowers; 1 if absent);
        augment: a fastnet.data.Augment applied as each batch is assembled. Both are kept by the
        model, and in its checkpoints, for later fits.
        comm: data parallelism (fastnet/distributed.py); by default this process's world, MPI under
        mpiexec. Every rank calls fit with the same arguments; batch_size is the global batch.
        sync_bn: BatchNorm's batch statistics over the global batch (one process's result; three
        small allreduces per BatchNorm layer and step), not each rank's own rows (the default, DDP's)."""
        self._warn_softmax_twice(stacklevel=6)    # the caller's line, past the three decorators
        x = self._check_x(x, finite=True)
        y = self.loss_fn.check_targets(y, len(x), self.output_shape)
        if len(x) == 0:
            raise ShapeError("fit() needs at least one row")
        if validation_data is not None:
            vx, vy = validation_data
            vx = self._check_x(vx, finite=True, what="validation x")
            vy = self.loss_fn.check_targets(vy, len(vx), self.output_shape, what="validation y")
        callbacks = list(callbacks)
        for callback in callbacks:
            if not (isinstance(callback, Callback) or callable(callback)):
                raise TypeError(f"callbacks: expected fastnet.callbacks.Callback objects or functions "
                                f"callback(model, epoch, figures), got {callback!r}")
        # One conversion up front, so each batch is a gather into the input buffer, not a cast.
        x = np.ascontiguousarray(x, dtype=self.dtype)
        y = np.ascontiguousarray(y, dtype=self.y_staging.dtype)
        if schedule is not None:
            self.schedule = schedule
        if augment is not None:
            if len(self.input_shape) != 3:
                raise ShapeError(f"augment needs (C, H, W) images, the model takes {self.input_shape}")
            self.augment = augment
        comm = distributed.world() if comm is None else comm
        if comm.size > 1:
            self._join(comm, x, y, validation_data, epochs, initial_epoch, shuffle, bool(sync_bn))
            verbose = verbose if comm.is_main else 0
        self._comm = comm
        self._sync_bn = bool(sync_bn) and comm.size > 1
        history = History()
        self.history, self.stop_training = history, False
        hooked = [callback for callback in callbacks if isinstance(callback, Callback)]
        # Only callbacks that override on_batch_end are called per batch.
        per_batch = [callback for callback in hooked if type(callback).on_batch_end is not Callback.on_batch_end]
        metrics = ["loss"] + (["accuracy"] if self.loss_fn.has_accuracy else [])
        if validation_data is not None:
            metrics += ["val_" + key for key in metrics]
        params = {"epochs": epochs, "initial_epoch": initial_epoch, "steps": -(-len(x) // self.batch_size),
                  "batch_size": self.batch_size, "verbose": verbose, "metrics": metrics + ["lr"]}
        for callback in hooked:
            callback.set_model(self)
            callback.set_params(params)
        for callback in hooked:
            callback.on_train_begin({})
        figures = {}
        for epoch in range(initial_epoch + 1, epochs + 1):
            if self.stop_training:
                break
            for callback in hooked:
                callback.on_epoch_begin(epoch, {})
            figures = self._fit_epoch(x, y, epoch, epochs, shuffle, verbose, per_batch)
            self._average_buffers()
            if validation_data is not None:
                val = self.evaluate(vx, vy)
                figures.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
            figures["lr"] = float(self.optimizer.lr)
            self.epoch += 1
            history.append(epoch, **figures)
            if verbose:
                print(_epoch_line(epoch, epochs, figures), file=sys.stderr)
            for callback in callbacks:
                if isinstance(callback, Callback):
                    callback.on_epoch_end(epoch, figures)
                else:
                    callback(self, epoch, figures)
        for callback in hooked:
            callback.on_train_end(figures)
        if comm.size > 1:
            self._check_same_parameters(comm)
        self._comm, self._batch_rows, self._row_offset = None, None, 0   # train_step: one process again
        self._set_sync(None)
        return history

    def _fit_epoch(self, x, y, epoch, epochs, shuffle, verbose, per_batch=()):
        from tqdm import tqdm
        order, first, (total, correct, seen) = self._epoch_start(len(x), shuffle)
        batches = range(first * self.batch_size, len(x), self.batch_size)
        # The bar only on a terminal; the one-line epoch summary is printed either way.
        bar = tqdm(batches, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False,
                   disable=not verbose or not sys.stderr.isatty(), file=sys.stderr)
        start_time = time.perf_counter()
        for i, start in enumerate(bar, first):
            rows = self._rank_rows(order, start)
            n = len(rows)
            if self.augment is None:
                np.take(x, rows, axis=0, out=self.x_staging[:n])
            else:   # on the host whatever the device: the data set stays in host memory
                self._gather_augmented(x, rows, n)
            np.take(y, rows, axis=0, out=self.y_staging[:n])
            self._upload(n)
            if self.schedule is not None:
                self.optimizer.lr = self.schedule(self.step) * self.info.get("lr_scale", 1.0)
            loss = self._train_loaded(n, f"epoch {epoch}, step {i + 1}", epoch) if n else self._idle_step(epoch)
            total += loss * n
            seen += n
            hits = self.loss_fn.correct(self.k, self.plan.acts[-1][:n], self.targets[:n])
            correct += hits or 0
            self._mark_position(len(x), i + 1, total, correct, seen)
            if per_batch:
                logs = {"loss": loss, "size": n, "lr": self.optimizer.lr, "step": self.step}
                for callback in per_batch:
                    callback.on_batch_end(i, logs)
            if verbose and (i % 20 == 0):
                elapsed = time.perf_counter() - start_time
                figures = {"loss": f"{total / seen:.4f}", "img_s": f"{seen / max(elapsed, 1e-9):.0f}"}
                if self.loss_fn.has_accuracy:
                    figures["acc"] = f"{correct / seen:.4f}"
                bar.set_postfix(figures)
        seconds = time.perf_counter() - start_time
        bar.close()
        self.position = None    # between epochs: the shuffle generator's state says it all
        total, correct, seen = _global_sums(self._comm, total, correct, seen)
        return {"loss": total / seen,
                "accuracy": correct / seen if self.loss_fn.has_accuracy else None,
                "images_per_sec": seen / seconds, "seconds": seconds}

    # Where fit is within an epoch, saved in checkpoints so that a resume continues mid-epoch
    # exactly (None between epochs): {"rng": the shuffle generator's state before this epoch's
    # order was drawn, "rows": the data set's size, "batch": the next batch, "total", "correct",
    # "seen": the epoch's running sums}. A loaded checkpoint's is also `_resume_position`, which
    # the next epoch fit runs starts from (once; a fit after an error in this process starts a
    # fresh epoch).
    position = None
    _resume_position = None

    def _epoch_start(self, rows, shuffle):
        """(order, first batch, (total, correct, seen)) of the epoch fit starts: a fresh one, or
        the one a checkpoint was saved in, its order drawn again from the generator state that drew it
        (for a data set of the size it was saved with; another size starts a fresh epoch)."""
        resume, self._resume_position = self._resume_position, None
        first, sums = 0, (0.0, 0, 0)
        if resume is not None and resume["rows"] == rows:
            self._shuffle_rng.bit_generator.state = resume["rng"]
            first, sums = resume["batch"], (resume["total"], resume["correct"], resume["seen"])
            if self._comm is not None and self._comm.rank > 0:
                sums = (0.0, 0, 0)      # rank 0's sums were saved: its share alone of the rows before
        self._epoch_rng = self._shuffle_rng.bit_generator.state
        order = self._shuffle_rng.permutation(rows) if shuffle else np.arange(rows)
        return order, first, sums

    def _mark_position(self, rows, batch, total, correct, seen):
        self.position = {"rng": self._epoch_rng, "rows": rows, "batch": batch, "total": float(total),
                         "correct": int(correct), "seen": int(seen)}

    def _train_loaded(self, n, where, epoch=None):
        """One step on the loaded batch. An update computed from a non-finite loss, or from
        non-finite gradients of a finite one (a layer that overflowed), is refused: a
        DivergenceError, and the parameters and optimizer state stay those of the last finite step."""
        self.plan.set_step(self.step, row_offset=self._row_offset)
        loss = self._forward_loss(n, train=True)
        if not np.isfinite(loss):
            raise self._divergence(f"the training loss became {loss}", where, epoch, loss)
        self.plan.backward(self.k, n, input_grad=False)
        self._update(loss, where, epoch)
        self._last_loss = float(loss)
        return loss

    def _idle_step(self, epoch):
        """A rank with no rows in this (last) batch of a data-parallel epoch: zero gradients into
        the collective, then the same update as its peers."""
        self.k.fill(self.plan.flat_grads, 0.0)
        self._update(0.0, "an idle rank's step", epoch)
        return 0.0

    def _update(self, loss, where, epoch):
        """The optimizer step from the gradients in plan.flat_grads: summed over the ranks first
        (data parallel), then refused if any is non-finite (one pass over the flat array; the sum
        is the same on every rank, so every rank refuses it alike)."""
        self._reduce_gradients()
        bad = self.k.count_nonfinite(self.plan.flat_grads)
        if bad:
            err = self._divergence(f"the gradients became non-finite ({bad:,} of {self.plan.flat_grads.size:,} "
                                   f"values NaN or inf) with a finite loss {loss:.6g}", where, epoch, loss, bad)
            err.everywhere = self._comm is not None and self._comm.size > 1
            raise err
        self.step += 1
        self.optimizer.update(self.k, self.plan.flat_params, self.plan.flat_grads, self.opt_state,
                              self.step)

    _last_loss = None   # the loss of the last step whose update was applied

    def _divergence(self, what, where, epoch, loss, bad=None):
        last = ("no step had finished in this process" if self._last_loss is None else
                f"the last finite loss was {self._last_loss:.6g} (step {self.step})")
        return DivergenceError(f"{what} at {where} (optimizer step {self.step + 1}); {last}; the update was not "
                               f"applied: the parameters are those of the last finite step. Try a lower learning "
                               f"rate{' (or look for a layer whose values overflow)' if bad else ''}.",
                               epoch=epoch, step=self.step + 1, last_loss=self._last_loss, loss=float(loss),
                               bad_gradients=bad)

    # -- data parallelism (fastnet/distributed.py): the hooks fit calls --------------------
    _comm = None          # fit's communicator while it runs (None: one process)
    _batch_rows = None    # rows of the global batch this step (None: one process)
    _row_offset = 0       # where this rank's rows start in it (Dropout's masks follow the row)

    def _rank_rows(self, order, start):
        """The rows of this rank's contiguous slice of the global batch starting at `start`."""
        rows = order[start:start + self.batch_size]
        comm = self._comm
        if comm is None or comm.size == 1:
            return rows
        lo, hi = distributed.shard(len(rows), comm.rank, comm.size)
        self._batch_rows, self._row_offset, self._batch_order = len(rows), lo, rows
        if self._sync_bn:
            self._set_sync((comm, len(rows)))
        return rows[lo:hi]

    _sync_bn = False

    def _gather_augmented(self, x, rows, n):
        """The augmented rows into the input staging buffer. Data parallel: the whole global batch
        is augmented (the compiled buffers hold it) and this rank's rows moved to the front, so
        each image gets the shifts and flips one process would give it (Augment draws them by
        step and position in the batch)."""
        if self._batch_rows is None:
            self.augment.gather(x, rows, self.x_staging[:n], self.step)
            return
        whole = self._batch_order
        self.augment.gather(x, whole, self.x_staging[:len(whole)], self.step)
        lo = self._row_offset
        if lo:
            self.x_staging[:n] = self.x_staging[lo:lo + n]     # overlapping: NumPy copies through a buffer

    def _set_sync(self, sync):
        """BatchNorm's synchronised statistics (fastnet/layers/norm.py) on (comm, global rows) or off."""
        for slot in self.plan.slots:
            if getattr(slot.layer, "is_batchnorm", False):
                slot.sync = sync

    def _reduce_gradients(self):
        """The gradients summed over the ranks (each already divided by the global row count):
        one collective of the flat array per step; every CHECK_EVERY steps the parameters are
        compared across ranks."""
        comm = self._comm
        if comm is None or comm.size == 1:
            return
        self._in_host_memory(self.plan.flat_grads, comm.allreduce_sum)
        if self.step % distributed.CHECK_EVERY == 0:
            self._check_same_parameters(comm)

    def _check_same_parameters(self, comm):
        crc = distributed.array_fingerprint(self.k.to_host(self.plan.flat_params))
        differ = distributed.differing_ranks(comm.allgather(crc))
        if differ:
            raise distributed.everywhere(DistributedError(
                f"the parameters of rank(s) {differ} differ from rank 0's at optimizer step {self.step}: the "
                f"ranks drifted apart (a rank running other code or other data, or an MPI whose allreduce "
                f"differs between ranks)"))

    def _average_buffers(self):
        """BatchNorm's running statistics (each rank's own, from its own rows) averaged over the
        ranks, before an evaluation or a checkpoint sees them."""
        comm = self._comm
        if comm is None or comm.size == 1 or self._sync_bn:   # synchronised: the same statistics everywhere
            return
        def average(host):
            comm.allreduce_sum(host)
            host /= comm.size

        for array in self.buffers().values():
            self._in_host_memory(array, average)

    def _in_host_memory(self, array, collective):
        """collective(host array), in place, on `array`: the array itself on the CPU; on a GPU a host
        copy, copied back after (the collectives go through host memory: no CUDA-aware MPI assumed)."""
        if self.device == "cpu":
            collective(array)
            return
        host = self.k.to_host(array)
        collective(host)
        self.k.copy_in(array, host)

    def _join(self, comm, x, y, validation_data, epochs, initial_epoch, shuffle, sync_bn):
        """Start of a data-parallel fit: the ranks must run the same network, settings and data
        shapes (a hash compared by every rank: a DistributedError on all of them), then take rank
        0's parameters, buffers, optimizer state and progress."""
        spec = self.network.to_spec()
        described = {
            "spec": spec, "input_shape": list(self.input_shape), "batch_size": self.batch_size,
            "loss": self.loss_fn.name, "dtype": self.dtype.name, "seed": self.seed, "device": self.device,
            "optimizer": [type(self.optimizer).__name__, sorted((k, repr(v)) for k, v in vars(self.optimizer).items())],
            "schedule": None if self.schedule is None else self.schedule.config(),
            "augment": None if self.augment is None else self.augment.config(),
            "x": list(x.shape), "y": [list(y.shape), distributed.array_fingerprint(y)],
            "validation": None if validation_data is None else [list(np.shape(v)) for v in validation_data],
            "epochs": [epochs, initial_epoch, bool(shuffle)], "step": [self.step, self.epoch], "sync_bn": sync_bn,
        }
        differ = distributed.differing_ranks(comm.allgather(distributed.fingerprint(described)))
        if differ:
            raise distributed.everywhere(DistributedError(
                f"rank(s) {differ} of {comm.size} were started with another network, other settings or other "
                f"data (shapes, labels) than rank 0; every rank must run the same command on the same data"))
        last = len(x) % self.batch_size
        if sync_bn and 0 < last < comm.size:
            raise distributed.everywhere(DistributedError(
                f"sync_bn: the last batch of each epoch ({len(x)} rows, batch {self.batch_size}) has {last} "
                f"row(s) for {comm.size} ranks, leaving a rank without rows; drop {last} rows or choose another "
                f"batch size"))
        for array in [self.plan.flat_params, *self.buffers().values(), *self.opt_state.values()]:
            self._in_host_memory(array, comm.bcast_array)
        state = comm.bcast({"rng": self._shuffle_rng.bit_generator.state, "lr": self.optimizer.lr,
                            "lr_scale": self.info.get("lr_scale")})
        self._shuffle_rng.bit_generator.state = state["rng"]
        self.optimizer.lr = state["lr"]
        if state["lr_scale"] is not None:
            self.info["lr_scale"] = state["lr_scale"]

    # -- checks --------------------------------------------------------------------------
    def _check_x(self, x, finite, what="x"):
        x = np.asarray(x)
        if x.ndim != len(self.input_shape) + 1 or x.shape[1:] != self.input_shape:
            raise ShapeError(f"{what}: expected shape (N, {', '.join(map(str, self.input_shape))}) for a "
                             f"model compiled with input_shape {self.input_shape}, got {x.shape}")
        if x.dtype.kind not in "iuf":
            raise DataError(f"{what}: expected numbers, got dtype {x.dtype}")
        if finite and x.dtype.kind == "f" and not np.all(np.isfinite(x)):
            bad = int(np.count_nonzero(~np.isfinite(x)))
            raise DataError(f"{what}: contains {bad} non-finite values (NaN or inf)")
        for slot, inputs in zip(self.plan.slots, self.plan.inputs_of):
            if 0 in inputs:     # a layer reading the input checks its values (Embedding's token ids)
                slot.layer.check_input(x, what)
        return x

    # -- parameters and state ------------------------------------------------------------
    def parameters(self):
        """Live parameter arrays by name (writing into them changes the model); on a GPU model,
        device arrays (state_dict() gives host copies)."""
        return OrderedDict((name, self.plan.slots[index].params[short])
                           for name, index, short in self.plan.param_names)

    def buffers(self):
        return OrderedDict((name, self.plan.slots[index].buffers[short])
                           for name, index, short in self.plan.buffer_names)

    @property
    def algorithms(self):
        """{layer prefix: algorithm} of every layer with several (the convolutions): what compile
        chose; compile(conv_algorithm=model.algorithms) runs the same arithmetic."""
        return {slot.prefix: slot.algorithm for slot in self.plan.slots if slot.algorithm is not None}

    @_exclusive
    def state_dict(self):
        """Copies of every parameter and buffer, in torch.nn.Module.state_dict's order and names."""
        state = OrderedDict()
        for slot in self.plan.slots:
            for short, array in list(slot.params.items()) + list(slot.buffers.items()):
                state[f"{slot.prefix}.{short}"] = self.k.to_host(array)
        return state

    @_exclusive
    def load_state_dict(self, state):
        """Copy parameters and buffers in; names, shapes and finiteness are checked first, so a
        mismatched dict changes nothing. A PyTorch state_dict (tensors or numpy arrays) works;
        `num_batches_tracked` entries are ignored."""
        targets = OrderedDict(list(self.parameters().items()) + list(self.buffers().items()))
        given = {name: _to_numpy(value) for name, value in state.items()
                 if not name.endswith("num_batches_tracked")}
        problems = []
        missing = [name for name in targets if name not in given]
        unexpected = [name for name in given if name not in targets]
        if missing:
            problems.append(f"missing: {', '.join(missing)}")
        if unexpected:
            problems.append(f"unexpected: {', '.join(unexpected)}")
        for name, target in targets.items():
            if name in given:
                value = given[name]
                if value.shape != target.shape:
                    problems.append(f"{name}: shape {value.shape}, the model has {target.shape}")
                elif value.dtype.kind not in "iuf" or not np.all(np.isfinite(value)):
                    problems.append(f"{name}: not finite numbers")
        if problems:
            raise CheckpointError("state dict does not match the model; " + "; ".join(problems))
        for name, target in targets.items():
            self.k.copy_in(target, given[name])

    @_exclusive
    def save(self, path):
        """Write a checkpoint (safetensors: weights, buffers, optimizer state, the network's spec,
        progress); `fastnet.load(path)` rebuilds the compiled model. Atomic."""
        checkpoint.save(self, path)

    def export_onnx(self, path, opset=17):
        """Write the network as an ONNX model (pip install 'fastnet[onnx]') with a dynamic batch
        axis: input "input", output "logits" (what predict returns), BatchNorm with its running
        statistics, Dropout dropped. Checked by onnx.checker, written atomically. Returns the path."""
        return onnx_export.export(self, path, opset=opset)

    def summary(self):
        """A table of layers, output shapes and parameter counts (and each layer's inputs when the
        network is not a chain), with the memory the buffers take."""
        plan = self.plan
        tensors = [plan.input_node] + plan.nodes
        chain = all(node.inputs == [tensors[i]] for i, node in enumerate(plan.nodes))
        counts = {}
        for _, index, short in plan.param_names:
            counts[index] = counts.get(index, 0) + plan.slots[index].params[short].size
        labels = [f"{slot.prefix if chain else node.name} {slot.layer.type_name}{'*' if slot.fused else ''}"
                  + (f" [{slot.algorithm}]" if slot.algorithm else "")
                  for slot, node in zip(plan.slots, plan.nodes)]
        width = max(24, max(map(len, labels)) + 2)
        lines = [f"{'layer':<{width}}{'output shape':<20}{'parameters':>12}" + ("" if chain else "  inputs")]
        for index, (label, node) in enumerate(zip(labels, plan.nodes)):
            line = f"{label:<{width}}{str(node.shape):<20}{counts.get(index, 0):>12,}"
            lines.append(line if chain else line + "  " + ", ".join(src.name for src in node.inputs))
        lines.append(f"total parameters: {plan.flat_params.size:,}")
        if plan.fused_from:
            lines.append("*: applied by the layer before it, in that layer's kernels (fused)")
        if plan.eval_folds:
            folded = ", ".join(bn.prefix for bn, _, _, _ in plan.eval_folds)
            lines.append(f"in evaluation, folded into the convolution before each (with a ReLU after it): {folded}")
        if self.algorithms:
            lines.append(f"[...]: the algorithm compile chose (conv_algorithm={plan.conv_algorithm!r})")
        memory = plan.memory
        lines.append(f"buffers at batch {self.batch_size}: activations {memory['activations'] / 2**20:.1f} MiB, "
                     f"gradients {memory['gradients'] / 2**20:.1f} MiB (shared between tensors whose "
                     f"gradients are not live at once; {memory['gradients_unshared'] / 2**20:.1f} MiB "
                     f"unshared)")
        estimate = self.memory_estimate
        parts = ", ".join(f"{MEMORY_PARTS[part]} {format_bytes(estimate[part])}" for part in MEMORY_PARTS
                          if estimate[part])
        lines.append(f"compile's memory estimate: {format_bytes(estimate['total'])} ({parts}); "
                     f"limit: {self.memory_limit[1]}")
        return "\n".join(lines)


def _dtype_name(dtype):
    try:
        return str(np.dtype(dtype))
    except TypeError:       # not a dtype at all ("float", 3, ...): the SpecError names it
        return None


def _global_sums(comm, *figures):
    """Figures summed over the ranks (one small collective; the figures unchanged in one process)."""
    if comm is None or comm.size == 1:
        return figures
    sums = comm.allreduce_sum(np.array(figures, np.float64))
    return tuple(type(f)(s) for f, s in zip(figures, sums))


def _to_numpy(value):
    if hasattr(value, "detach"):        # a torch.Tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _epoch_line(epoch, epochs, figures):
    parts = [f"epoch {epoch}/{epochs}", f"loss {figures['loss']:.4f}"]
    if figures.get("accuracy") is not None:
        parts.append(f"accuracy {figures['accuracy']:.4f}")
    if figures.get("val_loss") is not None:
        parts.append(f"val_loss {figures['val_loss']:.4f}")
    if figures.get("val_accuracy") is not None:
        parts.append(f"val_accuracy {figures['val_accuracy']:.4f}")
    parts.append(f"{figures['images_per_sec']:.0f} images/s")
    parts.append(f"{figures['seconds']:.1f} s")
    return " - ".join(parts)
