"""A training run as `fastnet train` does it: data, model, the run folder, resume, evaluation.

The run folder (`--out`, default runs/<timestamp>, or runs/<timestamp>-2, -3, ... when taken)
holds
    run.json          the settings, so `--resume DIR` continues with the same ones
    model.safetensors the checkpoint, rewritten atomically after every epoch
    metrics.json      per epoch: loss, accuracy, val_*, images/s, seconds, and test_* when there
                      is no validation split (with one, the test set is evaluated once, at the
                      end); at the end "test_accuracy" and "test_loss"
    curves.png        loss and accuracy per epoch, train and validation (or test)
    train.log         the lines printed during the run
    (run.json also records "workers", the ranks of the run, and "threads_per_worker")
    best.safetensors  with a validation split: the checkpoint of the epoch with the lowest val_loss
The network's first layer is a Normalize with the training images' mean and std, so the model takes
raw images (fn.load(path).predict(x) needs nothing else). Checkpoints written before that carry the
statistics in model.info["normalize"] instead, and their data are standardised here, as they were.

Under MPI (`mpiexec -n K fastnet train ...`, fastnet/distributed.py) every rank runs this; rank 0
alone prints and writes the run folder (each checkpoint atomically, then a barrier), reads a
resumed run's files and broadcasts them; each rank reads the data set itself.
"""

import json
import math
import os
import sys
import tempfile
import time

import numpy as np

from . import callbacks, checkpoint, distributed, kernels, models, restore, schedules
from .atomic import atomic_write, remove_stale
from .data import datasets
from .data.augment import Augment
from .errors import DataError, DivergenceError, FastnetError
from .graph import Sequential
from .layers import Normalize
from .optim import SGD, Adam, AdamW
from .plan import parse_memory
from .spec import from_spec

ZOO = {"mlp": "mlp", "lenet": "lenet5", "lenet5": "lenet5", "cnn": "cnn", "resnet8": "resnet8",
       "lstm_rows": "lstm_rows"}
DEFAULTS = {"model": "cnn", "dataset": "fashion-mnist", "epochs": 3, "batch_size": 64,
            "optimizer": "adam", "lr": 2e-3, "momentum": 0.9, "weight_decay": 0.0,
            "clip_norm": None,
            "schedule": "cosine", "warmup_steps": 0, "val_split": 0.0, "device": "cpu", "seed": 0,
            "download": False, "augment": False, "flip": False, "conv_algorithm": "auto", "resize": None,
            "early_stopping": None, "tensorboard": None, "checkpoint_every": None, "max_memory": None,
            "workers": 1, "sync_bn": False}
# What `--resume` may change (the rest would make it another run: refused, naming the option).
RESUMABLE = ("epochs", "lr", "device", "download", "checkpoint_every", "max_memory", "workers")
CHECKPOINT = "model.safetensors"


class Log:
    """Print a line and keep it in train.log."""

    def __init__(self, folder):
        self.file = open(os.path.join(folder, "train.log"), "a", encoding="utf-8")

    def __call__(self, line):
        print(line, file=sys.stderr)
        self.file.write(line + "\n")
        self.file.flush()


def load_data(settings, normalize=None):
    """(train, val, test) as (x, y) pairs of raw images, and the training images' (mean, std), of the
    whole training set before any validation split (what a new run's Normalize takes); or, where
    `normalize` is given (a checkpoint from before the Normalize layer), the images standardised
    with it, as such a run was fed, and `normalize`."""
    (x_train, y_train), (x_test, y_test) = datasets.load(settings["dataset"],
                                                         download=settings.get("download", False),
                                                         resize=settings.get("resize"))
    if normalize is not None:
        x_train, x_test, normalize = datasets.standardize(x_train, x_test, mean=normalize[0], std=normalize[1])
    else:
        normalize = input_statistics(x_train)
    val = None
    if settings["val_split"]:
        # A fixed, seeded split: the same images are held out when a run is resumed.
        (x_train, y_train), val = datasets.split(x_train, y_train, settings["val_split"], settings["seed"])
    return (x_train, y_train), val, (x_test, y_test), normalize


def build_network(settings, classes, input_shape):
    name = settings["model"]
    if name in ZOO:
        return getattr(models, ZOO[name])(classes=classes, input_shape=input_shape)
    if name.endswith(".toml"):
        return from_spec(name)
    raise FastnetError(f"--model must be one of {', '.join(sorted(ZOO))} or a .toml spec file, got {name!r}")


def input_statistics(x):
    """(mean, std) of the training images over every pixel (the Normalize layer's arguments),
    computed as datasets.standardize computes them."""
    mean, std = float(x.mean()), float(x.std())
    if not std > 0:
        raise DataError(f"cannot normalise the inputs: the training images' standard deviation is {std}")
    return mean, std


def with_normalize(network, mean, std):
    """The network with Normalize(mean, std) first, reading the input (unchanged if a Normalize
    reads the input already). A Sequential gets it at index 0; a Graph as a layer "normalize" that
    every reader of the input then reads instead."""
    if isinstance(network, Sequential):
        if network.layers and isinstance(network.layers[0], Normalize):
            return network
        return Sequential([Normalize(mean, std), *network.layers], input_shape=network.input_shape)
    spec = network.to_spec()
    source = spec.get("input", "input")
    entries = spec["layers"]
    if any(e["type"] == "normalize" and e["inputs"] == [source] for e in entries):
        return network
    taken = {e.get("name") for e in entries} | {source}
    name = next(n for n in ("normalize", *(f"normalize_{i}" for i in range(2, len(taken) + 2))) if n not in taken)
    for entry in entries:
        entry["inputs"] = [name if i == source else i for i in entry["inputs"]]
    spec["layers"] = [{"type": "normalize", "name": name, "mean": mean, "std": std, "inputs": [source]}, *entries]
    return from_spec(spec)


def build_optimizer(settings):
    lr, decay, clip = settings["lr"], settings["weight_decay"], settings.get("clip_norm")
    if settings["optimizer"] == "sgd":
        return SGD(lr=lr, momentum=settings["momentum"], weight_decay=decay, clip_norm=clip)
    if settings["optimizer"] == "adam":
        return Adam(lr=lr, weight_decay=decay, clip_norm=clip)
    return AdamW(lr=lr, weight_decay=decay, clip_norm=clip)


def build_schedule(settings, steps_per_epoch):
    """none: constant lr; step: halve it every epoch; cosine: anneal to 0 over the whole run."""
    kind, lr, warmup = settings["schedule"], settings["lr"], settings["warmup_steps"]
    if kind == "none":
        return schedules.Constant(lr, warmup) if warmup else None
    if kind == "step":
        return schedules.StepDecay(lr, step_size=steps_per_epoch, gamma=0.5, warmup_steps=warmup)
    return schedules.Cosine(lr, total_steps=settings["epochs"] * steps_per_epoch, warmup_steps=warmup)


def train(settings, out=None, resume=None):
    """Run (or resume) a training run; returns the final metrics dict. Resuming a run killed before
    its first checkpoint starts it again in its folder, with its saved settings. Under MPI every
    rank runs this; rank 0 alone reads the run folder (and broadcasts it) and writes it."""
    comm = distributed.world()
    workers = {"workers": comm.size, "threads_per_worker": _threads_per_worker(comm)}
    if resume is not None:
        restart = comm.bcast(_restart_settings(resume) if comm.is_main else None)
        if restart is not None:
            settings = _resume_settings(resume, restart, settings)
            out, resume = resume, None
    if resume is not None:
        folder = resume
        saved, saved_metrics, model_bytes = _read_resume(comm, resume)
        settings = {**_resume_settings(resume, saved, settings), **workers}
        _check_callback_settings(settings)
        model = _load_checkpoint(comm, os.path.join(resume, CHECKPOINT), model_bytes, settings["device"],
                                 settings.get("max_memory"))
        # a checkpoint from before the Normalize layer: its data standardised as they were then
        train_set, val, test, _ = load_data(settings, model.info.get("normalize"))
        if settings["lr"] != saved["lr"] or settings["epochs"] != saved["epochs"]:
            # the schedule made again for the new lr or length (a cosine anneals over the whole run)
            model.optimizer.lr = settings["lr"]
            model.schedule = build_schedule(settings, math.ceil(len(train_set[0]) / settings["batch_size"]))
        if settings != saved and comm.is_main:
            with atomic_write(os.path.join(folder, "run.json")) as f:
                f.write(json.dumps(settings, indent=2).encode())
        if saved_metrics is None and model.epoch == 0:
            saved_metrics = {"epochs": []}    # a checkpoint from within the first epoch: no epoch to report yet
        elif saved_metrics is None:
            raise FastnetError(f"cannot resume: {os.path.join(resume, 'metrics.json')} is missing")
        metrics = saved_metrics
        metrics["settings"] = settings
        metrics["epochs"] = metrics["epochs"][:model.epoch]    # epochs after the checkpoint are redone
    else:
        settings = {**settings, **workers}
        _check_callback_settings(settings)
        train_set, val, test, (mean, std) = load_data(settings)
        names = datasets.class_names(settings["dataset"])     # an image folder's class folders
        classes = max(int(max(train_set[1].max(), test[1].max())) + 1, len(names or ()))
        network = with_normalize(build_network(settings, classes, train_set[0].shape[1:]), mean, std)
        model = network.compile(train_set[0].shape[1:], settings["batch_size"],
                                optimizer=build_optimizer(settings), device=settings["device"],
                                seed=settings["seed"], conv_algorithm=settings.get("conv_algorithm", "auto"),
                                max_memory=settings.get("max_memory"))
        model.schedule = build_schedule(settings, math.ceil(len(train_set[0]) / settings["batch_size"]))
        model.info = {"dataset": settings["dataset"]}
        if names:
            model.info["classes"] = names
        if settings.get("resize"):
            model.info["resize"] = list(settings["resize"])
        if settings.get("augment") or settings.get("flip"):
            # --augment: shifts by up to 2 pixels (padding with black); --flip: left-right flips
            # (wrong for digits and text, hence its own choice)
            model.augment = Augment(pad=2 if settings.get("augment") else 0, flip=bool(settings.get("flip")),
                                    fill=0.0, seed=settings["seed"])
        metrics = {"settings": settings, "epochs": []}
        folder = None
        if comm.is_main:
            folder = _make_folder(out)    # only now: a run that cannot start leaves nothing
            with atomic_write(os.path.join(folder, "run.json")) as f:
                f.write(json.dumps(settings, indent=2).encode())
        folder = comm.bcast(folder)
    watchers, early = _callbacks(settings, folder, val is not None, metrics["epochs"], comm.is_main)
    saver = Saver(os.path.join(folder, CHECKPOINT), settings.get("checkpoint_every"), model if resume else None, comm)
    log = Log(folder) if comm.is_main else (lambda line: None)
    log(f"{settings['model']} on {settings['dataset']}: {len(train_set[0])} training, "
        f"{0 if val is None else len(val[0])} validation, {len(test[0])} test images; "
        f"{sum(p.size for p in model.parameters().values())} parameters; writing to {folder}")
    start = time.perf_counter()

    def after_epoch(model, epoch, figures):
        row = {"epoch": epoch, **figures, "lr": model.optimizer.lr}
        if val is None:   # with a validation split, the test set is looked at once, at the end
            tested = model.evaluate(*test)
            row.update(test_loss=tested["loss"], test_accuracy=tested["accuracy"])
        metrics["epochs"].append(row)
        log(f"epoch {epoch}/{settings['epochs']}: loss {row['loss']:.4f}, accuracy {row['accuracy']:.4f}, "
            + (f"val accuracy {row['val_accuracy']:.4f}, " if val is not None else
               f"test accuracy {row['test_accuracy']:.4f}, ")
            + f"{row['images_per_sec']:.0f} images/s, {row['seconds']:.1f} s")
        # the figures first: a crash between the two leaves figures for an epoch the checkpoint
        # has not reached, which a resume drops and redoes (never a checkpoint without its figures)
        if comm.is_main:
            _write_outputs(folder, metrics)
        saver.save(model)

    try:
        model.fit(*train_set, epochs=settings["epochs"], initial_epoch=model.epoch, validation_data=val,
                  verbose=1 if sys.stderr.isatty() else 0, callbacks=[after_epoch, saver, *watchers],
                  sync_bn=settings.get("sync_bn", False))
    except DivergenceError as err:
        raise saver.diverged(err, folder) from err
    if early is not None and early.stopped_epoch:
        metrics["stopped_epoch"] = early.stopped_epoch
        log(f"early stopping after epoch {early.stopped_epoch}: val_loss has not improved on "
            f"{early.best:.4f} (epoch {early.best_epoch}) for {early.wait} epochs")
    final = model.evaluate(*test)
    metrics.update(test_accuracy=final["accuracy"], test_loss=final["loss"])
    if comm.is_main:
        _write_outputs(folder, metrics)
    log(f"test accuracy {final['accuracy']:.4f}, test loss {final['loss']:.4f} "
        f"({time.perf_counter() - start:.1f} s of training this session); files in {folder}")
    return metrics


class Saver(callbacks.Callback):
    """Writes the run's checkpoint (atomically: a crash leaves the previous one whole) after every
    epoch (`save`, called by the run) and, with --checkpoint-every N, after every N-th optimizer
    step too (a mid-epoch checkpoint: fastnet.load gives a model whose next fit continues that
    epoch exactly). Remembers what it wrote last, so a divergence can name the checkpoint kept."""

    def __init__(self, path, every=None, loaded=None, comm=None):
        super().__init__()
        self.path, self.every, self.comm = path, every, comm or distributed.world()
        self.last = None if loaded is None else (loaded.epoch, loaded.step)

    def on_batch_end(self, batch, logs=None):
        if self.every and self.model.step % self.every == 0:
            self.save(self.model)

    def save(self, model):
        """Every rank calls it (at the same step); rank 0 writes, the others wait until it has."""
        if self.comm.is_main:
            model.save(self.path)
        self.comm.barrier()    # the checkpoint is whole before any rank goes on
        self.last = (model.epoch, model.step)

    def diverged(self, err, folder):
        """The DivergenceError `err` with the checkpoint the run folder keeps named in its message."""
        if self.last is None:
            kept = f"no checkpoint was saved before it ({folder} holds none)"
        else:
            epochs, step = self.last
            kept = (f"the last good checkpoint, {self.path} ({epochs} epoch{'' if epochs == 1 else 's'} complete, "
                    f"optimizer step {step}), is "
                    f"intact: `fastnet train --resume {folder} --lr <lower>` continues from it")
        named = DivergenceError(f"{err} {kept}", epoch=err.epoch, step=err.step, last_loss=err.last_loss,
                                loss=err.loss, bad_gradients=err.bad_gradients,
                                checkpoint=None if self.last is None else self.path)
        named.everywhere = getattr(err, "everywhere", False)    # under MPI: met by every rank alike
        return named


def _check_callback_settings(settings):
    every = settings.get("checkpoint_every")
    if every is not None and (int(every) != every or every < 1):
        raise FastnetError(f"--checkpoint-every takes a number of optimizer steps, an integer >= 1, got {every!r}")
    parse_memory(settings.get("max_memory"))    # a SpecError naming the value, before anything is loaded
    patience = settings.get("early_stopping")
    if patience is not None and (int(patience) != patience or patience < 0):
        raise FastnetError(f"--early-stopping takes a patience, an integer >= 0, got {patience!r}")
    if patience is not None and not settings["val_split"]:
        raise FastnetError("--early-stopping watches val_loss: it needs a validation split (--val-split 0.1, say)")
    if settings.get("tensorboard"):
        callbacks.TensorBoard(settings["tensorboard"])   # tensorboardX missing: refused before any folder


def _callbacks(settings, folder, validation, rows, main=True):
    """The run's callbacks beside its own after-epoch one, and the EarlyStopping among them (or None).
    rows: the epochs already run (a resume), so best.safetensors is only replaced by a better epoch
    and early stopping counts patience as an unbroken run would. Not main (an MPI rank other than
    0): only the early stopping, which every rank decides alike from the global val_loss."""
    watchers, early = [], None
    if validation and main:
        done = [row["val_loss"] for row in rows]
        watchers.append(callbacks.ModelCheckpoint(os.path.join(folder, "best.safetensors"), monitor="val_loss",
                                                  save_best_only=True,
                                                  initial_value_threshold=min(done) if done else None))
    if settings.get("tensorboard") and main:
        watchers.append(callbacks.TensorBoard(settings["tensorboard"]))
    if settings.get("early_stopping") is not None:
        early = callbacks.EarlyStopping("val_loss", patience=settings["early_stopping"])
        watchers.append(early.resume_from([row["val_loss"] for row in rows], first_epoch=1))
    return watchers, early


def evaluate(path, dataset=None, batch_size=256, device=None):
    """Accuracy, loss, per-class accuracy and the confusion matrix of a checkpoint on a test set.
    device: where to run it; by default the device it was saved from where that is usable here,
    else the CPU (a checkpoint from a GPU evaluates on a machine without one)."""
    device = device or eval_device(path)
    model = restore.load(path, batch_size=batch_size, device=device)
    name = dataset or model.info.get("dataset")
    if name is None:
        raise DataError(f"{path} does not say which data set it was trained on; pass --dataset")
    _, _, (x, y), _ = load_data({"dataset": name, "val_split": 0, "seed": 0, "resize": model.info.get("resize")},
                                model.info.get("normalize"))
    result = model.evaluate(x, y)
    predicted = model.predict(x).argmax(axis=1)
    classes = model.output_shape[0]
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (y, predicted), 1)
    per_class = [float(confusion[c, c] / confusion[c].sum()) if confusion[c].sum() else None
                 for c in range(classes)]
    return {"dataset": name, "images": len(x), "device": device, "accuracy": result["accuracy"],
            "loss": result["loss"], "per_class_accuracy": per_class, "confusion_matrix": confusion.tolist()}


def eval_device(path):
    """The device a checkpoint was saved from if it is usable here, else "cpu"."""
    _, metadata = checkpoint.read(path)
    try:
        saved = json.loads(metadata.get("compile", "{}")).get("device", "cpu")
    except (ValueError, AttributeError):
        saved = "cpu"       # restore.load says what is wrong with the metadata
    if saved == "cuda":
        try:
            kernels.check_cuda()
        except FastnetError:
            return "cpu"
    return saved if saved in kernels.DEVICES else "cpu"


def _threads_per_worker(comm):
    """Numba's threads in this rank: under MPI, unless NUMBA_NUM_THREADS says, the cores shared
    between the ranks of this machine (K ranks each with every core would fight over them)."""
    import numba
    if comm.size > 1 and "NUMBA_NUM_THREADS" not in os.environ:
        numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS,
                                         (os.cpu_count() or 1) // distributed.local_size())))
    return numba.get_num_threads()


def _read_resume(comm, folder):
    """(run.json, metrics.json, the checkpoint's bytes for the other ranks or None), read by rank 0
    and broadcast; a file that cannot be read is the same error on every rank."""
    payload = None
    if comm.is_main:
        try:
            model_bytes = None
            if comm.size > 1:
                with open(os.path.join(folder, CHECKPOINT), "rb") as f:
                    model_bytes = f.read()
            metrics = os.path.join(folder, "metrics.json")    # none yet for a checkpoint within epoch 1
            payload = (_read_json(os.path.join(folder, "run.json")),
                       _read_json(metrics) if os.path.exists(metrics) else None, model_bytes)
        except (FastnetError, OSError) as err:
            payload = err
    payload = comm.bcast(payload)
    if isinstance(payload, BaseException):
        raise distributed.everywhere(payload)
    return payload


def _load_checkpoint(comm, path, model_bytes, device, max_memory=None):
    """restore.load on rank 0; the other ranks load rank 0's bytes (from a file of their own)."""
    if model_bytes is None or comm.is_main:
        return restore.load(path, device=device, max_memory=max_memory)
    fd, local = tempfile.mkstemp(suffix=".safetensors")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model_bytes)
        return restore.load(local, device=device, max_memory=max_memory)
    finally:
        os.unlink(local)


def _restart_settings(folder):
    """The saved settings of a run folder that has no checkpoint yet (a run killed before its first
    save starts again there), or None when it has one; either way the temporary files of a save
    a crash interrupted are removed first."""
    if os.path.isdir(folder):
        remove_stale(folder)
    if os.path.exists(os.path.join(folder, CHECKPOINT)):
        return None
    return _read_json(os.path.join(folder, "run.json"))


def _resume_settings(folder, saved, given):
    """The saved settings with what `given` may change on a resume (RESUMABLE) changed; any other
    option given with a value other than the saved one is a FastnetError naming it."""
    settings = dict(saved)
    for key, value in given.items():
        if value is None:
            continue
        was = saved.get(key, DEFAULTS.get(key))
        if key in RESUMABLE:
            settings[key] = value
        elif value != was:
            option = "--" + key.replace("_", "-")
            raise FastnetError(f"{option} cannot change when resuming: the run in {folder} has "
                               f"{option} {was}; a resume may change only "
                               f"{', '.join('--' + k for k in RESUMABLE)} (start a new run for the rest)")
    return settings


def _make_folder(out):
    """Create the run folder: `out`, or runs/<timestamp>, with -2, -3, ... added where another run
    took that name in the same second (os.mkdir is atomic: two runs never share one)."""
    if out is not None:
        os.makedirs(out, exist_ok=True)
        return out
    base = os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs("runs", exist_ok=True)
    for attempt in range(1, 10000):
        folder = base if attempt == 1 else f"{base}-{attempt}"
        try:
            os.mkdir(folder)
            return folder
        except FileExistsError:
            continue
    raise FastnetError(f"cannot make a run folder beside {base}: too many taken; pass --out")


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise FastnetError(f"cannot resume: {path} is missing or unreadable ({err})") from None


def _write_outputs(folder, metrics):
    with atomic_write(os.path.join(folder, "metrics.json")) as f:
        f.write(json.dumps(metrics, indent=2).encode())
    _plot_curves(os.path.join(folder, "curves.png"), metrics["epochs"])


def _plot_curves(path, rows):
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        ax.plot(epochs, [row[key] for row in rows], "o-", label="train")
        if rows and rows[0].get("val_" + key) is not None:
            ax.plot(epochs, [row["val_" + key] for row in rows], "o-", label="validation")
        if rows and rows[0].get("test_" + key) is not None:
            ax.plot(epochs, [row["test_" + key] for row in rows], "o-", label="test")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
