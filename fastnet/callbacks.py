"""Callbacks for `Model.fit`, in Keras's shape.

    model.fit(x, y, epochs=50, validation_data=(vx, vy), callbacks=[
        fn.callbacks.EarlyStopping(patience=3, restore_best_weights=True),
        fn.callbacks.ModelCheckpoint("best.safetensors", save_best_only=True),
        fn.callbacks.CSVLogger("log.csv"),
    ])

A `Callback` is bound to the model with `set_model(model)` (then `self.model`) and told the fit's
settings with `set_params(params)` (`self.params`: epochs, initial_epoch, steps, batch_size,
verbose, and "metrics", the keys every epoch's logs will carry a number for) before
`on_train_begin`; fit then calls

    on_train_begin(logs)            logs: {}
    on_epoch_begin(epoch, logs)     logs: {}
    on_batch_end(batch, logs)       batch: 0-based index in the epoch; logs: loss (the batch's),
                                    size (rows), lr (of this step), step (optimizer steps taken)
    on_epoch_end(epoch, logs)       logs: History's figures: loss, accuracy, val_loss,
                                    val_accuracy, lr, images_per_sec, seconds (None where not
                                    measured: accuracy for mse, val_* without validation_data)
    on_train_end(logs)              logs: the last epoch's figures ({} when no epoch ran)

Epochs are numbered as History and the printed lines number them: initial_epoch + 1 .. epochs
(Keras passes the 0-based index). A plain function in `callbacks=` is called as
`function(model, epoch, figures)` after every epoch, in its place in the list, as before
callbacks existed. Setting `model.stop_training = True` (fit resets it to False when it starts)
ends fit after the current epoch, once every callback has seen it; set in on_train_begin, no epoch
runs. on_train_end is not called when fit raises.

Monitors are History's keys (loss, accuracy, val_loss, val_accuracy); one the fit cannot give (a
typo, val_* without validation_data, accuracy with mse) is a `MonitorError` raised from
on_train_begin, before any step runs. mode="auto" maximises a monitor with "accuracy" in its name
and minimises the others.

This module sits beside losses, optimizers and schedules, below the model: callbacks receive the
model object and call its methods (state_dict, load_state_dict, save), they do not import model.py.
"""

import csv
import math
import os
import sys

from .errors import FastnetError, MonitorError


class Callback:
    """Base class: every hook is a no-op; override the ones you need."""

    model = None
    params = None

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_batch_end(self, batch, logs=None):
        pass


def _mode(monitor, mode, who):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{who}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if "accuracy" in monitor else "min"
    return mode


class _Monitored(Callback):
    """What the callbacks that watch one figure share: the check that fit records it, its value at
    an epoch's end, and "better than the best so far"."""

    def __init__(self, monitor, mode, min_delta):
        name = type(self).__name__
        if not isinstance(monitor, str):
            raise TypeError(f"{name}: monitor must be a key of History, e.g. 'val_loss', got {monitor!r}")
        if not (isinstance(min_delta, (int, float)) and math.isfinite(min_delta)):
            raise ValueError(f"{name}: min_delta must be a finite number, got {min_delta!r}")
        self.monitor = monitor
        self.mode = _mode(monitor, mode, name)
        self.min_delta = abs(float(min_delta))

    def _worst(self):
        return math.inf if self.mode == "min" else -math.inf

    def _better(self, value, best):
        if self.mode == "min":
            return value < best - self.min_delta
        return value > best + self.min_delta

    def _check_monitor(self):
        """Raise MonitorError now if this fit will not record the monitor (params known)."""
        keys = (self.params or {}).get("metrics")
        if keys is not None and self.monitor not in keys:
            raise MonitorError(self._missing(keys))

    def _value(self, logs):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise MonitorError(self._missing([key for key, v in (logs or {}).items() if v is not None]))
        return float(value)

    def _missing(self, keys):
        hint = ""
        if self.monitor.startswith("val_"):
            hint = " (val_* figures need fit(..., validation_data=...))"
        elif self.monitor == "accuracy":
            hint = " (accuracy is measured for cross_entropy only)"
        return (f"{type(self).__name__}: monitor {self.monitor!r} is not among the figures this fit "
                f"records: {', '.join(keys)}{hint}")


class EarlyStopping(_Monitored):
    """Stop training when the monitor has stopped improving.

    An epoch improves when the monitor beats the best so far by more than min_delta; after
    `patience` epochs in a row without improvement, fit stops (Keras's rule: 0 and 1 both stop at
    the first epoch that does not improve). restore_best_weights: when fit ends (stopped or not),
    the parameters and buffers of the best epoch are put back, bit for bit (the optimizer state is
    the last epoch's). After fit: best, best_epoch, stopped_epoch (0 if it did not stop).

    resume_from(values): for a run continued from a checkpoint, the monitor's values of the epochs
    already run, so patience counts as in an unbroken run (a run that had already stopped runs no
    further epoch); restore_best_weights then only knows the epochs run since.
    """

    def __init__(self, monitor="val_loss", patience=0, min_delta=0.0, mode="auto", restore_best_weights=False,
                 verbose=0):
        super().__init__(monitor, mode, min_delta)
        if int(patience) != patience or patience < 0:
            raise ValueError(f"EarlyStopping: patience must be an integer >= 0, got {patience!r}")
        self.patience = int(patience)
        self.restore_best_weights = bool(restore_best_weights)
        self.verbose = verbose
        self._previous = []
        self._reset()

    def _reset(self):
        self.wait, self.stopped_epoch = 0, 0
        self.best, self.best_epoch, self.best_weights = self._worst(), None, None

    def resume_from(self, values, first_epoch=1):
        self._previous = [(first_epoch + i, float(v)) for i, v in enumerate(values)]
        return self

    def on_train_begin(self, logs=None):
        self._check_monitor()
        self._reset()
        for epoch, value in self._previous:
            if self._update(epoch, value, weights=False):
                self.stopped_epoch = epoch
                self.model.stop_training = True
                break

    def _update(self, epoch, value, weights):
        """Count one epoch; True when patience has run out."""
        if self._better(value, self.best):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if weights and self.restore_best_weights:
                self.best_weights = self.model.state_dict()
            return False
        self.wait += 1
        return self.wait >= self.patience

    def on_epoch_end(self, epoch, logs=None):
        if self._update(epoch, self._value(logs), weights=True):
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.verbose:
                print(f"epoch {epoch}: early stopping: {self.monitor} has not improved on "
                      f"{self.best:.6g} (epoch {self.best_epoch}) for {self.wait} epochs", file=sys.stderr)

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)
            if self.verbose:
                print(f"restored the weights of epoch {self.best_epoch} ({self.monitor} {self.best:.6g})",
                      file=sys.stderr)


class ModelCheckpoint(_Monitored):
    """Save the model (Model.save: atomic, a whole checkpoint that fastnet.load reads) after every
    epoch, or with save_best_only only after an epoch whose monitor beats the best so far (strictly).
    `path` may name figures, formatted with the epoch's: "ckpt-{epoch:03d}-{val_loss:.3f}.safetensors".
    initial_value_threshold: the best value to beat at the start (as Keras; a resumed run passes
    the best of its earlier epochs). The monitor is only needed with save_best_only."""

    def __init__(self, path, monitor="val_loss", save_best_only=False, mode="auto", initial_value_threshold=None,
                 verbose=0):
        super().__init__(monitor, mode, 0.0)
        self.path = os.fspath(path)
        self.save_best_only = bool(save_best_only)
        self.initial_value_threshold = initial_value_threshold
        self.verbose = verbose
        self.best = self._worst()

    def on_train_begin(self, logs=None):
        if self.save_best_only:
            self._check_monitor()
        threshold = self.initial_value_threshold
        self.best = self._worst() if threshold is None else float(threshold)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            value = self._value(logs)
            if not self._better(value, self.best):
                return
            self.best = value
        path = self.path.format(epoch=epoch, **logs) if "{" in self.path else self.path
        self.model.save(path)
        if self.verbose:
            print(f"epoch {epoch}: saved {path}", file=sys.stderr)


class CSVLogger(Callback):
    """One row per epoch: epoch, then the epoch's figures (History's keys, sorted as Keras sorts
    them; empty where a figure was not measured). append=True continues an existing file (its
    header kept); otherwise the file is rewritten when fit starts. Each row is flushed as written."""

    def __init__(self, path, separator=",", append=False):
        self.path, self.separator, self.append = os.fspath(path), separator, bool(append)
        self._file, self._writer, self._keys = None, None, None

    def on_train_begin(self, logs=None):
        exists = self.append and os.path.exists(self.path) and os.path.getsize(self.path) > 0
        self._file = open(self.path, "a" if self.append else "w", newline="", encoding="utf-8")
        self._writer, self._keys, self._header = None, None, not exists

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._keys is None:
            self._keys = sorted(logs)
            self._writer = csv.writer(self._file, delimiter=self.separator)
            if self._header:
                self._writer.writerow(["epoch", *self._keys])
        self._writer.writerow([epoch, *("" if logs.get(key) is None else logs[key] for key in self._keys)])
        self._file.flush()

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()
            self._file = None


class TensorBoard(Callback):
    """TensorBoard event files, written with tensorboardX (pip install 'fastnet[tensorboard]'; no
    TensorFlow), laid out as Keras lays them out: log_dir/train and log_dir/validation, scalars
    epoch_loss, epoch_accuracy (both runs: one chart each, train and validation overlaid) and
    epoch_learning_rate, at step = the epoch's number. update_freq="batch" (or an integer n: every
    n optimizer steps) adds batch_loss at step = optimizer steps taken. `tensorboard --logdir
    log_dir` shows them."""

    def __init__(self, log_dir="logs", update_freq="epoch"):
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            raise FastnetError("TensorBoard needs the tensorboardX package: pip install 'fastnet[tensorboard]' "
                               "(or pip install tensorboardX)") from None
        if update_freq not in ("epoch", "batch") and not (isinstance(update_freq, int) and update_freq > 0):
            raise ValueError(f"TensorBoard: update_freq must be 'epoch', 'batch' or a positive integer, "
                             f"got {update_freq!r}")
        self.log_dir = os.fspath(log_dir)
        self.update_freq = 1 if update_freq == "batch" else update_freq
        self._writers = {}

    def _writer(self, run):
        if run not in self._writers:
            from tensorboardX import SummaryWriter
            self._writers[run] = SummaryWriter(os.path.join(self.log_dir, run))
        return self._writers[run]

    def on_train_begin(self, logs=None):
        self._writer("train")

    def on_batch_end(self, batch, logs=None):
        if self.update_freq != "epoch" and logs and logs["step"] % self.update_freq == 0:
            self._writer("train").add_scalar("batch_loss", logs["loss"], logs["step"])

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        for key, run, tag in (("loss", "train", "epoch_loss"), ("accuracy", "train", "epoch_accuracy"),
                              ("lr", "train", "epoch_learning_rate"),
                              ("val_loss", "validation", "epoch_loss"),
                              ("val_accuracy", "validation", "epoch_accuracy")):
            if logs.get(key) is not None:
                self._writer(run).add_scalar(tag, float(logs[key]), epoch)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


class ReduceLROnPlateau(_Monitored):
    """Multiply the learning rate by `factor` when the monitor has not improved (by more than
    min_delta) for `patience` epochs; then wait `cooldown` epochs before counting again; never
    below min_lr (Keras's rule and defaults).

    With a schedule: the schedule keeps its shape and the callback scales it. The model keeps the
    scale in model.info["lr_scale"] (1.0 to start) and fit sets each step's learning rate to
    schedule(step) * lr_scale; a reduction multiplies lr_scale by new_lr / lr, where lr is the
    learning rate of the epoch's last step and new_lr = max(lr * factor, min_lr) (so min_lr bounds
    the reduced rate when it is made; a cosine still anneals below it afterwards). model.info
    travels in checkpoints, so a resumed model keeps the reduced rate.
    Without a schedule the optimizer's lr is reduced itself (saved with the optimizer).
    patience and cooldown counting restarts with each fit, as in Keras.
    """

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, mode="auto", min_delta=1e-4, cooldown=0,
                 min_lr=0.0, verbose=0):
        super().__init__(monitor, mode, min_delta)
        if not (isinstance(factor, (int, float)) and 0.0 < factor < 1.0):
            raise ValueError(f"ReduceLROnPlateau: factor must be in (0, 1), got {factor!r}")
        for name, value in (("patience", patience), ("cooldown", cooldown)):
            if int(value) != value or value < 0:
                raise ValueError(f"ReduceLROnPlateau: {name} must be an integer >= 0, got {value!r}")
        if not (isinstance(min_lr, (int, float)) and min_lr >= 0):
            raise ValueError(f"ReduceLROnPlateau: min_lr must be a number >= 0, got {min_lr!r}")
        self.factor, self.patience, self.cooldown = float(factor), int(patience), int(cooldown)
        self.min_lr, self.verbose = float(min_lr), verbose
        self._reset()

    def _reset(self):
        self.best, self.wait, self.cooldown_counter = self._worst(), 0, 0

    def on_train_begin(self, logs=None):
        self._check_monitor()
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        value = self._value(logs)
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._better(value, self.best):
            self.best, self.wait = value, 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience:
                self._reduce(epoch)
                self.cooldown_counter, self.wait = self.cooldown, 0

    def _reduce(self, epoch):
        model = self.model
        lr = float(model.optimizer.lr)
        if lr <= self.min_lr:
            return
        new_lr = max(lr * self.factor, self.min_lr)
        if model.schedule is not None:
            model.info["lr_scale"] = model.info.get("lr_scale", 1.0) * (new_lr / lr)
        model.optimizer.lr = new_lr
        if self.verbose:
            print(f"epoch {epoch}: ReduceLROnPlateau: learning rate {lr:.6g} -> {new_lr:.6g}", file=sys.stderr)
