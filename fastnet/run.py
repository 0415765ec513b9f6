"""A training run as `fastnet train` does it: data, model, the run folder, resume, evaluation.

The run folder (`--out`, default runs/<timestamp>) holds
    run.json          the settings, so `--resume DIR` continues with the same ones
    model.safetensors the checkpoint, rewritten atomically after every epoch
    metrics.json      per epoch: loss, accuracy, val_*, test_*, images/s, seconds; at the end
                      "test_accuracy" and "test_loss"
    curves.png        loss and accuracy per epoch, train and test
    train.log         the lines printed during the run
    best.safetensors  with a validation split: the checkpoint of the epoch with the lowest val_loss
Inputs are standardised with the training set's mean and std; both travel in the checkpoint
(model.info["normalize"]) so `fastnet eval` feeds the model what it was trained on.
"""

import json
import math
import os
import sys
import time

import numpy as np

from . import callbacks, models, restore, schedules
from .atomic import atomic_write
from .data import datasets
from .data.augment import Augment
from .errors import DataError, FastnetError
from .optim import SGD, Adam, AdamW
from .spec import from_spec

ZOO = {"mlp": "mlp", "lenet": "lenet5", "lenet5": "lenet5", "cnn": "cnn", "resnet8": "resnet8"}
DEFAULTS = {"model": "cnn", "dataset": "fashion-mnist", "epochs": 3, "batch_size": 64,
            "optimizer": "adam", "lr": 2e-3, "momentum": 0.9, "weight_decay": 0.0,
            "schedule": "cosine", "warmup_steps": 0, "val_split": 0.0, "device": "cpu", "seed": 0,
            "download": False, "augment": False, "conv_algorithm": "auto", "resize": None,
            "early_stopping": None, "tensorboard": None}


class Log:
    """Print a line and keep it in train.log."""

    def __init__(self, folder):
        self.file = open(os.path.join(folder, "train.log"), "a", encoding="utf-8")

    def __call__(self, line):
        print(line, file=sys.stderr)
        self.file.write(line + "\n")
        self.file.flush()


def load_data(settings, normalize=None):
    """(train, val, test) as (x, y) pairs, standardised; and the (mean, std) used."""
    (x_train, y_train), (x_test, y_test) = datasets.load(settings["dataset"],
                                                         download=settings.get("download", False),
                                                         resize=settings.get("resize"))
    mean, std = normalize if normalize is not None else (None, None)
    x_train, x_test, normalize = datasets.standardize(x_train, x_test, mean=mean, std=std)
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


def build_optimizer(settings):
    lr, decay = settings["lr"], settings["weight_decay"]
    if settings["optimizer"] == "sgd":
        return SGD(lr=lr, momentum=settings["momentum"], weight_decay=decay)
    if settings["optimizer"] == "adam":
        return Adam(lr=lr, weight_decay=decay)
    return AdamW(lr=lr, weight_decay=decay)


def build_schedule(settings, steps_per_epoch):
    """none: constant lr; step: halve it every epoch; cosine: anneal to 0 over the whole run."""
    kind, lr, warmup = settings["schedule"], settings["lr"], settings["warmup_steps"]
    if kind == "none":
        return schedules.Constant(lr, warmup) if warmup else None
    if kind == "step":
        return schedules.StepDecay(lr, step_size=steps_per_epoch, gamma=0.5, warmup_steps=warmup)
    return schedules.Cosine(lr, total_steps=settings["epochs"] * steps_per_epoch, warmup_steps=warmup)


def train(settings, out=None, resume=None):
    """Run (or resume) a training run; returns the final metrics dict."""
    if resume is not None:
        folder = resume
        settings = _resume_settings(resume, settings)
        _check_callback_settings(settings)
        model = restore.load(os.path.join(resume, "model.safetensors"), device=settings["device"])
        train_set, val, test, normalize = load_data(settings, tuple(model.info["normalize"]))
        metrics = _read_json(os.path.join(resume, "metrics.json"))
        metrics["epochs"] = metrics["epochs"][:model.epoch]    # epochs after the checkpoint are redone
    else:
        _check_callback_settings(settings)
        folder = out or os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
        train_set, val, test, normalize = load_data(settings)
        names = datasets.class_names(settings["dataset"])     # an image folder's class folders
        classes = max(int(max(train_set[1].max(), test[1].max())) + 1, len(names or ()))
        network = build_network(settings, classes, train_set[0].shape[1:])
        model = network.compile(train_set[0].shape[1:], settings["batch_size"],
                                optimizer=build_optimizer(settings), device=settings["device"],
                                seed=settings["seed"], conv_algorithm=settings.get("conv_algorithm", "auto"))
        model.schedule = build_schedule(settings, math.ceil(len(train_set[0]) / settings["batch_size"]))
        model.info = {"normalize": list(normalize), "dataset": settings["dataset"]}
        if names:
            model.info["classes"] = names
        if settings.get("resize"):
            model.info["resize"] = list(settings["resize"])
        if settings.get("augment"):
            # Shift by up to 2 pixels (padding with black, standardised) and flip left-right.
            model.augment = Augment(pad=2, flip=True, fill=(0.0 - normalize[0]) / normalize[1],
                                    seed=settings["seed"])
        metrics = {"settings": settings, "epochs": []}
    watchers, early = _callbacks(settings, folder, val is not None, metrics["epochs"])
    if resume is None:
        os.makedirs(folder, exist_ok=True)    # only now: a run that cannot start leaves nothing
        with atomic_write(os.path.join(folder, "run.json")) as f:
            f.write(json.dumps(settings, indent=2).encode())
    log = Log(folder)
    log(f"{settings['model']} on {settings['dataset']}: {len(train_set[0])} training, "
        f"{0 if val is None else len(val[0])} validation, {len(test[0])} test images; "
        f"{sum(p.size for p in model.parameters().values())} parameters; writing to {folder}")
    start = time.perf_counter()

    def after_epoch(model, epoch, figures):
        tested = model.evaluate(*test)
        row = {"epoch": epoch, **figures, "test_loss": tested["loss"], "test_accuracy": tested["accuracy"],
               "lr": model.optimizer.lr}
        metrics["epochs"].append(row)
        log(f"epoch {epoch}/{settings['epochs']}: loss {row['loss']:.4f}, accuracy {row['accuracy']:.4f}, "
            + (f"val accuracy {row['val_accuracy']:.4f}, " if val is not None else "")
            + f"test accuracy {row['test_accuracy']:.4f}, {row['images_per_sec']:.0f} images/s, "
            f"{row['seconds']:.1f} s")
        model.save(os.path.join(folder, "model.safetensors"))
        _write_outputs(folder, metrics)

    model.fit(*train_set, epochs=settings["epochs"], initial_epoch=model.epoch, validation_data=val,
              verbose=1 if sys.stderr.isatty() else 0, callbacks=[after_epoch, *watchers])
    if early is not None and early.stopped_epoch:
        metrics["stopped_epoch"] = early.stopped_epoch
        log(f"early stopping after epoch {early.stopped_epoch}: val_loss has not improved on "
            f"{early.best:.4f} (epoch {early.best_epoch}) for {early.wait} epochs")
    final = model.evaluate(*test)
    metrics.update(test_accuracy=final["accuracy"], test_loss=final["loss"])
    _write_outputs(folder, metrics)
    log(f"test accuracy {final['accuracy']:.4f}, test loss {final['loss']:.4f} "
        f"({time.perf_counter() - start:.1f} s of training this session); files in {folder}")
    return metrics


def _check_callback_settings(settings):
    patience = settings.get("early_stopping")
    if patience is not None and (int(patience) != patience or patience < 0):
        raise FastnetError(f"--early-stopping takes a patience, an integer >= 0, got {patience!r}")
    if patience is not None and not settings["val_split"]:
        raise FastnetError("--early-stopping watches val_loss: it needs a validation split (--val-split 0.1, say)")


def _callbacks(settings, folder, validation, rows):
    """The run's callbacks beside its own after-epoch one, and the EarlyStopping among them (or None).
    rows: the epochs already run (a resume), so best.safetensors is only replaced by a better epoch
    and early stopping counts patience as an unbroken run would."""
    watchers, early = [], None
    if validation:
        done = [row["val_loss"] for row in rows]
        watchers.append(callbacks.ModelCheckpoint(os.path.join(folder, "best.safetensors"), monitor="val_loss",
                                                  save_best_only=True,
                                                  initial_value_threshold=min(done) if done else None))
    if settings.get("tensorboard"):
        watchers.append(callbacks.TensorBoard(settings["tensorboard"]))
    if settings.get("early_stopping") is not None:
        early = callbacks.EarlyStopping("val_loss", patience=settings["early_stopping"])
        watchers.append(early.resume_from([row["val_loss"] for row in rows], first_epoch=1))
    return watchers, early


def evaluate(path, dataset=None, batch_size=256):
    """Accuracy, loss, per-class accuracy and the confusion matrix of a checkpoint on a test set."""
    model = restore.load(path, batch_size=batch_size)
    name = dataset or model.info.get("dataset")
    if name is None:
        raise DataError(f"{path} does not say which data set it was trained on; pass --dataset")
    _, _, (x, y), _ = load_data({"dataset": name, "val_split": 0, "seed": 0, "resize": model.info.get("resize")},
                                tuple(model.info.get("normalize", (0.0, 1.0))))
    result = model.evaluate(x, y)
    predicted = model.predict(x).argmax(axis=1)
    classes = model.output_shape[0]
    confusion = np.zeros((classes, classes), np.int64)
    np.add.at(confusion, (y, predicted), 1)
    per_class = [float(confusion[c, c] / confusion[c].sum()) if confusion[c].sum() else None
                 for c in range(classes)]
    return {"dataset": name, "images": len(x), "accuracy": result["accuracy"], "loss": result["loss"],
            "per_class_accuracy": per_class, "confusion_matrix": confusion.tolist()}


def _resume_settings(folder, overrides):
    saved = _read_json(os.path.join(folder, "run.json"))
    if overrides.get("epochs") is not None:
        saved["epochs"] = overrides["epochs"]    # resuming may extend the run
    return saved


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
