"""fit's callbacks (fastnet/callbacks.py): the hooks and their order, stop_training, History's lr,
each ready callback doing what it says, and `fastnet train --early-stopping / --tensorboard` with
best.safetensors. Monitored figures are scripted where the test is about the rule (a plain
function before the callback overwrites the epoch's val_loss), real where it is about the model."""

import csv
import json
import os
import struct
import sys

import numpy as np
import pytest
from test_cli import run_fastnet, write_dataset

import fastnet as fn
from fastnet.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    ModelCheckpoint,
    MonitorError,
    ReduceLROnPlateau,
    TensorBoard,
)

BATCH, ROWS = 16, 64          # 4 steps an epoch


def small_mlp(**kw):
    kw.setdefault("optimizer", fn.SGD(lr=0.1, momentum=0.9))
    return fn.Sequential([fn.Flatten(), fn.Dense(8), fn.ReLU(), fn.Dense(4)]).compile((2, 3, 3), BATCH, **kw)


def data(n=ROWS, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2, 3, 3)).astype(np.float32), rng.integers(0, 4, n)


X, Y = data()
VAL = data(32, seed=1)


def scripted(values, key="val_loss"):
    """A plain callback that makes the epoch's `key` the next of `values` (for the callbacks after it)."""
    def script(model, epoch, figures):
        figures[key] = values[epoch - 1]
    return script


def snapshots():
    """A plain callback keeping a copy of the state dict at every epoch's end."""
    kept = {}

    def keep(model, epoch, figures):
        kept[epoch] = model.state_dict()
    return kept, keep


# -- the hooks ---------------------------------------------------------------------------------

class Recorder(Callback):
    def __init__(self):
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin", self.model, dict(self.params)))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, logs["step"], logs["size"]))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, sorted(logs)))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end", logs["loss"]))


def test_hooks_run_in_keras_order_and_plain_functions_keep_their_signature():
    model = small_mlp()
    recorder, seen = Recorder(), []
    x, y = X[:56], Y[:56]                              # 3 full batches and one of 8

    def plain(m, epoch, figures):
        seen.append((m, epoch, dict(figures)))
        recorder.calls.append(("plain", epoch))
    history = model.fit(x, y, epochs=3, initial_epoch=1, validation_data=VAL, verbose=0,
                        callbacks=[recorder, plain])
    begin, *rest = recorder.calls
    assert begin[0] == "train_begin" and begin[1] is model
    assert begin[2]["metrics"] == ["loss", "accuracy", "val_loss", "val_accuracy", "lr"]
    assert (begin[2]["epochs"], begin[2]["initial_epoch"], begin[2]["steps"]) == (3, 1, 4)
    keys = sorted(["loss", "accuracy", "val_loss", "val_accuracy", "lr", "images_per_sec", "seconds"])
    per_epoch = lambda e, s: ([("epoch_begin", e)] + [("batch_end", b, s + b + 1, 16 if b < 3 else 8)
                                                       for b in range(4)] + [("epoch_end", e, keys), ("plain", e)])
    assert rest[:-1] == per_epoch(2, 0) + per_epoch(3, 4)
    assert rest[-1] == ("train_end", history["loss"][-1])
    # the plain function: called (model, epoch, figures) after every epoch, figures as History's
    assert [(m is model, epoch) for m, epoch, _ in seen] == [(True, 2), (True, 3)]
    assert [figures["loss"] for _, _, figures in seen] == history["loss"]
    assert [figures["val_accuracy"] for _, _, figures in seen] == history["val_accuracy"]
    with pytest.raises(TypeError, match="callbacks"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[42])


def test_stop_training_ends_fit_after_the_epoch_and_is_reset_by_the_next_fit():
    model = small_mlp()
    ends = []

    class StopAtTwo(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                self.model.stop_training = True
    history = model.fit(X, Y, epochs=5, verbose=0,
                        callbacks=[StopAtTwo(), lambda m, epoch, figures: ends.append(epoch)])
    assert history.epoch == [1, 2] and ends == [1, 2]          # the later callback saw epoch 2 too
    assert model.epoch == 2 and model.step == 8 and model.history is history
    assert model.fit(X, Y, epochs=4, initial_epoch=2, verbose=0).epoch == [3, 4]   # reset: runs on

    def stop_now(m, epoch, figures):        # a plain function may stop it as well
        m.stop_training = True
    assert model.fit(X, Y, epochs=9, initial_epoch=4, verbose=0, callbacks=[stop_now]).epoch == [5]

    class StopBeforeAny(Callback):
        def on_train_begin(self, logs=None):
            self.model.stop_training = True
    assert model.fit(X, Y, epochs=9, initial_epoch=5, verbose=0, callbacks=[StopBeforeAny()]).epoch == []
    assert model.step == 20


def test_history_records_each_epochs_last_learning_rate():
    schedule = fn.schedules.Cosine(lr=0.1, total_steps=3 * 4)
    model = small_mlp()
    history = model.fit(X, Y, epochs=3, schedule=schedule, verbose=0)
    assert history["lr"] == [schedule(4 * e - 1) for e in (1, 2, 3)]
    assert history["lr"][0] > history["lr"][1] > history["lr"][2]
    constant = small_mlp(optimizer=fn.Adam(lr=0.003)).fit(X, Y, epochs=2, verbose=0)
    assert constant["lr"] == [0.003, 0.003]


# -- monitors ----------------------------------------------------------------------------------

def test_a_monitor_the_fit_does_not_record_is_a_clear_error_before_any_step():
    model = small_mlp()
    with pytest.raises(MonitorError, match=r"'val_loss'.*loss, accuracy, lr.*validation_data") as err:
        model.fit(X, Y, epochs=2, verbose=0, callbacks=[EarlyStopping()])
    assert isinstance(err.value, fn.FastnetError) and isinstance(err.value, ValueError)
    assert not isinstance(err.value, KeyError)
    with pytest.raises(MonitorError, match="'val_acc'.*val_accuracy"):
        model.fit(X, Y, epochs=2, validation_data=VAL, verbose=0, callbacks=[ReduceLROnPlateau("val_acc")])
    with pytest.raises(MonitorError, match="'accuracy'.*cross_entropy"):
        mse = fn.Sequential([fn.Flatten(), fn.Dense(4)]).compile((2, 3, 3), BATCH, loss="mse")
        mse.fit(X, np.eye(4, dtype=np.float32)[Y], epochs=1, verbose=0,
                callbacks=[ModelCheckpoint("unused", monitor="accuracy", save_best_only=True)])
    assert model.step == 0 and mse.step == 0
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="smallest")


# -- EarlyStopping ----------------------------------------------------------------------------

@pytest.mark.parametrize("monitor, kwargs, values, last, best", [
    ("val_loss", {"patience": 0}, [1.0, 0.9, 0.95, 0.8, 0.7, 0.6], 3, 2),        # Keras: 0 stops at once, as 1
    ("val_loss", {"patience": 1}, [1.0, 0.9, 0.95, 0.8, 0.7, 0.6], 3, 2),
    ("val_loss", {"patience": 2}, [1.0, 0.9, 0.95, 0.8, 0.85, 0.81], 6, 4),
    ("val_loss", {"patience": 2}, [1.0, 0.9, 0.95, 0.91, 0.8, 0.7], 4, 2),
    ("val_loss", {"patience": 1, "min_delta": 0.15}, [1.0, 0.9, 0.8, 0.7, 0.6, 0.5], 2, 1),   # 0.1 is too little
    ("val_loss", {"patience": 1, "min_delta": 0.05}, [1.0, 0.9, 0.8, 0.7, 0.6, 0.58], 6, 5),
    ("val_accuracy", {"patience": 1}, [0.5, 0.6, 0.7, 0.65, 0.9, 0.95], 4, 3),  # auto: accuracy is maximised
    ("val_loss", {"patience": 1, "mode": "max"}, [0.5, 0.6, 0.7, 0.65, 0.9, 0.95], 4, 3),
    ("val_accuracy", {"patience": 1, "mode": "min"}, [0.5, 0.6, 0.4, 0.3, 0.2, 0.1], 2, 1),
    ("val_loss", {"patience": 3}, [1.0, 0.9, 0.8, 0.7, 0.6, 0.5], None, 6),      # never stops
])
def test_early_stopping_stops_at_the_epoch_its_rule_names(monitor, kwargs, values, last, best):
    model = small_mlp()
    early = EarlyStopping(monitor, **kwargs)
    history = model.fit(X, Y, epochs=6, validation_data=VAL, verbose=0, callbacks=[scripted(values, monitor), early])
    assert history.epoch == list(range(1, (last or 6) + 1))
    assert early.stopped_epoch == (last or 0) and model.epoch == (last or 6)
    assert early.best_epoch == best and early.best == values[best - 1]


def test_restore_best_weights_puts_the_best_epoch_back_bit_for_bit():
    kept, keep = snapshots()
    model = small_mlp()
    early = EarlyStopping(patience=2, restore_best_weights=True)
    model.fit(X, Y, epochs=8, validation_data=VAL, verbose=0,
              callbacks=[keep, scripted([1.0, 0.5, 0.7, 0.6, 0.1, 0.1, 0.1, 0.1]), early])
    assert early.stopped_epoch == 4 and early.best_epoch == 2
    final = model.state_dict()
    for name, value in kept[2].items():
        np.testing.assert_array_equal(final[name], value, err_msg=name)
    assert any(not np.array_equal(kept[4][name], final[name]) for name in final)
    # not stopped: the best weights are restored when fit ends all the same (as Keras 3 does)
    model = small_mlp()
    kept, keep = snapshots()
    model.fit(X, Y, epochs=3, validation_data=VAL, verbose=0,
              callbacks=[keep, scripted([1.0, 0.5, 0.7]), EarlyStopping(patience=5, restore_best_weights=True)])
    assert all(np.array_equal(model.state_dict()[name], value) for name, value in kept[2].items())
    # and without restore_best_weights the last epoch's stay
    model = small_mlp()
    kept, keep = snapshots()
    model.fit(X, Y, epochs=3, validation_data=VAL, verbose=0,
              callbacks=[keep, scripted([1.0, 0.5, 0.7]), EarlyStopping(patience=5)])
    assert all(np.array_equal(model.state_dict()[name], value) for name, value in kept[3].items())


def test_early_stopping_resumed_counts_patience_as_an_unbroken_run():
    model = small_mlp()
    values = [1.0, 0.5, 0.7, 0.6, 0.8]
    early = EarlyStopping(patience=3).resume_from(values[:2])        # epochs 1, 2 ran before
    history = model.fit(X, Y, epochs=8, initial_epoch=2, validation_data=VAL, verbose=0,
                        callbacks=[scripted(values + [0.1] * 3), early])
    assert history.epoch == [3, 4, 5] and early.stopped_epoch == 5 and early.best_epoch == 2
    stopped = EarlyStopping(patience=1).resume_from([1.0, 0.5, 0.7])  # it had stopped at epoch 3
    assert model.fit(X, Y, epochs=8, initial_epoch=3, validation_data=VAL, verbose=0,
                     callbacks=[stopped]).epoch == []
    assert stopped.stopped_epoch == 3


# -- ModelCheckpoint ---------------------------------------------------------------------------

def test_model_checkpoint_save_best_only_writes_on_improvement_and_the_file_loads(tmp_path):
    kept, keep = snapshots()
    model = small_mlp()
    pattern = str(tmp_path / "ckpt-{epoch:02d}-{val_loss:.2f}.safetensors")
    every = tmp_path / "last.safetensors"
    model.fit(X, Y, epochs=5, validation_data=VAL, verbose=0,
              callbacks=[keep, scripted([1.0, 0.8, 0.9, 0.8, 0.7]),
                         ModelCheckpoint(pattern, save_best_only=True), ModelCheckpoint(every)])
    assert sorted(os.listdir(tmp_path)) == ["ckpt-01-1.00.safetensors", "ckpt-02-0.80.safetensors",
                                            "ckpt-05-0.70.safetensors", "last.safetensors"]
    for path, epoch in ((tmp_path / "ckpt-02-0.80.safetensors", 2), (every, 5)):
        loaded = fn.load(path)
        assert loaded.epoch == epoch and loaded.step == 4 * epoch
        for name, value in kept[epoch].items():
            np.testing.assert_array_equal(loaded.state_dict()[name], value, err_msg=name)
    # a threshold to beat from the start (a resumed run's best so far): nothing here beats 0.75 but 0.7
    best = tmp_path / "best" / "best.safetensors"
    best.parent.mkdir()
    model.fit(X, Y, epochs=5, validation_data=VAL, verbose=0,
              callbacks=[scripted([1.0, 0.8, 0.9, 0.8, 0.7]),
                         ModelCheckpoint(best, save_best_only=True, initial_value_threshold=0.75)])
    assert os.listdir(best.parent) == ["best.safetensors"] and fn.load(best).epoch == 10


# -- CSVLogger ---------------------------------------------------------------------------------

def test_csv_logger_writes_one_row_per_epoch_and_appends(tmp_path):
    path = tmp_path / "log.csv"
    model = small_mlp()
    first = model.fit(X, Y, epochs=2, validation_data=VAL, verbose=0, callbacks=[CSVLogger(path)])
    second = model.fit(X, Y, epochs=3, initial_epoch=2, validation_data=VAL, verbose=0,
                       callbacks=[CSVLogger(path, append=True)])
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "accuracy", "images_per_sec", "loss", "lr", "seconds", "val_accuracy", "val_loss"]
    assert [row[0] for row in rows[1:]] == ["1", "2", "3"]
    for row, (history, i) in zip(rows[1:], [(first, 0), (first, 1), (second, 0)]):
        for key, cell in zip(rows[0][1:], row[1:]):
            assert float(cell) == history[key][i], key       # written as repr: exact
    model.fit(X, Y, epochs=1, verbose=0, callbacks=[CSVLogger(path)])   # not appending: rewritten
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 2 and rows[0][-1] == "seconds" and "val_loss" not in rows[0]


# -- TensorBoard -------------------------------------------------------------------------------

def read_events(folder):
    """{tag: [(step, value)]} from the TFRecord event files in folder (tensorboardX's own protobufs)."""
    from tensorboardX.proto import event_pb2

    scalars = {}
    for name in sorted(os.listdir(folder)):
        data = (folder / name).read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4           # length, its crc, the record, its crc
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_tensorboard_writes_event_files_keras_lays_out(tmp_path):
    model = small_mlp()
    history = model.fit(X, Y, epochs=3, validation_data=VAL, verbose=0,
                        callbacks=[TensorBoard(tmp_path / "tb", update_freq="batch")])
    assert sorted(os.listdir(tmp_path / "tb")) == ["train", "validation"]
    train, val = read_events(tmp_path / "tb" / "train"), read_events(tmp_path / "tb" / "validation")
    for scalars, tag, key in ((train, "epoch_loss", "loss"), (train, "epoch_accuracy", "accuracy"),
                              (train, "epoch_learning_rate", "lr"), (val, "epoch_loss", "val_loss"),
                              (val, "epoch_accuracy", "val_accuracy")):
        assert [step for step, _ in scalars[tag]] == [1, 2, 3], tag
        np.testing.assert_allclose([v for _, v in scalars[tag]], history[key], rtol=1e-6, err_msg=tag)
    assert [step for step, _ in train["batch_loss"]] == list(range(1, 13))
    assert "batch_loss" not in val


def test_tensorboard_without_tensorboardx_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)      # import tensorboardX raises ImportError
    with pytest.raises(fn.FastnetError, match=r"tensorboardX.*pip install 'fastnet\[tensorboard\]'"):
        TensorBoard("logs")


# -- ReduceLROnPlateau -------------------------------------------------------------------------

def test_reduce_lr_on_plateau_without_a_schedule_scales_the_optimizer():
    model = small_mlp(optimizer=fn.SGD(lr=0.1))
    plateau = [1.0] * 7
    history = model.fit(X, Y, epochs=7, validation_data=VAL, verbose=0,
                        callbacks=[scripted(plateau), ReduceLROnPlateau(factor=0.5, patience=2, min_lr=0.03)])
    # epoch 1 is the best; 2, 3 do not improve: reduced after 3, again after 5, then min_lr holds it
    assert history["lr"] == [0.1, 0.1, 0.1, 0.05, 0.05, 0.03, 0.03]
    assert model.optimizer.lr == 0.03 and "lr_scale" not in model.info
    cooled = small_mlp(optimizer=fn.SGD(lr=0.1))
    history = cooled.fit(X, Y, epochs=7, validation_data=VAL, verbose=0,
                         callbacks=[scripted([1.0, 1.0, 0.5, 0.6, 0.6, 0.6, 0.6]),
                                    ReduceLROnPlateau(factor=0.1, patience=1, cooldown=2)])
    # reduced after epoch 2; epoch 3 cools down (and improves); epoch 4 ends the cooldown and counts
    # (Keras's counting), reduced again; epoch 5 cools down, 6 counts: reduced a third time
    assert history["lr"] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.0001], rel=1e-12)


def test_reduce_lr_on_plateau_scales_a_cosine_schedule_and_a_resume_keeps_the_scale(tmp_path):
    steps = 4
    schedule = fn.schedules.Cosine(lr=0.1, total_steps=10 * steps)
    model = small_mlp(optimizer=fn.SGD(lr=0.1))
    used = []

    class StepLR(Callback):
        def on_batch_end(self, batch, logs=None):
            used.append((logs["step"] - 1, logs["lr"]))
    history = model.fit(X, Y, epochs=5, validation_data=VAL, schedule=schedule, verbose=0,
                        callbacks=[scripted([1.0, 0.9, 0.95, 0.95, 0.95]), ReduceLROnPlateau(factor=0.5, patience=1),
                                   StepLR()])
    # reduced after epoch 3 and after epoch 4 (cooldown 0): the cosine's own shape, times 1, 0.5, 0.25
    scale = {1: 1.0, 2: 1.0, 3: 1.0, 4: 0.5, 5: 0.25}
    assert used == [(s, schedule(s) * scale[s // steps + 1]) for s in range(5 * steps)]
    assert history["lr"] == [schedule(steps * e - 1) * scale[e] for e in range(1, 6)]
    assert model.info["lr_scale"] == 0.125          # reduced again after epoch 5
    model.save(tmp_path / "m.safetensors")
    resumed = fn.load(tmp_path / "m.safetensors")
    assert resumed.info["lr_scale"] == 0.125 and resumed.schedule.config() == schedule.config()
    used.clear()
    resumed.fit(X, Y, epochs=6, initial_epoch=5, verbose=0, callbacks=[StepLR()])
    assert used == [(s, schedule(s) * 0.125) for s in range(5 * steps, 6 * steps)]


# -- fastnet train ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("idx")
    write_dataset(folder)
    return folder


# Adam at a high rate on the easy synthetic set: val_loss falls, then stops falling within 8 epochs.
TRAIN = ("train", "--model", "mlp", "--batch-size", "32", "--optimizer", "adam", "--lr", "0.05",
         "--schedule", "none", "--seed", "3")


def test_train_early_stopping_needs_a_validation_split(dataset, tmp_path):
    out = run_fastnet(*TRAIN, "--dataset", str(dataset), "--early-stopping", "2", "--out", str(tmp_path / "run"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == ["fastnet: error: --early-stopping watches val_loss: it needs a "
                                               "validation split (--val-split 0.1, say)"]
    assert not (tmp_path / "run").exists()


def test_train_early_stopping_best_checkpoint_tensorboard_and_resume(dataset, tmp_path):
    run, tb = tmp_path / "run", tmp_path / "tb"
    out = run_fastnet(*TRAIN, "--dataset", str(dataset), "--epochs", "8", "--val-split", "0.25",
                      "--early-stopping", "1", "--tensorboard", str(tb), "--out", str(run))
    assert out.returncode == 0, out.stderr
    assert sorted(os.listdir(run)) == ["best.safetensors", "curves.png", "metrics.json", "model.safetensors",
                                       "run.json", "train.log"]
    metrics = json.loads((run / "metrics.json").read_text())
    losses = [row["val_loss"] for row in metrics["epochs"]]
    # it stopped at the first epoch that did not beat the best before it, before the 8 asked for
    stop = next(e for e in range(2, len(losses) + 1) if not losses[e - 1] < min(losses[:e - 1]))
    assert len(losses) == stop == metrics["stopped_epoch"] < 8
    assert f"early stopping after epoch {stop}" in (run / "train.log").read_text()
    best_epoch = losses.index(min(losses)) + 1
    assert best_epoch < stop
    assert fn.load(run / "best.safetensors").epoch == best_epoch
    assert fn.load(run / "model.safetensors").epoch == stop
    settings = json.loads((run / "run.json").read_text())
    assert settings["early_stopping"] == 1 and settings["tensorboard"] == str(tb)
    scalars = read_events(tb / "validation")
    np.testing.assert_allclose([v for _, v in scalars["epoch_loss"]], losses, rtol=1e-6)
    # resuming a run that stopped early runs no further epoch and keeps best.safetensors
    best_bytes = (run / "best.safetensors").read_bytes()
    resumed = run_fastnet("train", "--resume", str(run), "--epochs", "8")
    assert resumed.returncode == 0, resumed.stderr
    assert fn.load(run / "model.safetensors").epoch == stop
    assert len(json.loads((run / "metrics.json").read_text())["epochs"]) == stop
    assert (run / "best.safetensors").read_bytes() == best_bytes
