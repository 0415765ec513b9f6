"""Crash anywhere, resume exactly (issue 16): `fastnet train` killed with SIGKILL while it loads
its data, compiles, trains (mid-epoch) or writes a checkpoint, and a second time while it resumes,
always leaves a run folder whose checkpoint loads (or none before the first save), and
`fastnet train --resume` then finishes with parameters and optimizer state equal bit for bit to an
unbroken run's. The run saves every few steps (--checkpoint-every), so most resumes start
mid-epoch: the epoch's shuffle order, the augmentation counter and the schedule's position must
all come back.

Each run is `fastnet train` (cli.main) in a subprocess, started through a small driver that
announces on stdout the phase it enters (data loading, compile, each optimizer step, the middle of
each checkpoint write) and pauses PAUSE seconds inside the first two and inside each write, half of
the file written: windows for the kill to land in, which a tiny data set's few milliseconds of
loading would not give. Half the trials are aimed at a phase (a random occurrence of it, a random
delay after), the rest killed at a random moment of an unbroken run's measured duration. The phase
each kill hit is the driver's last announcement before it.

FASTNET_KILL_TRIALS raises the number of trials (default 20; about 4 s each on 2 cores, warm).
"""

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from test_cli import write_dataset

import fastnet as fn
from fastnet import checkpoint

TRIALS = int(os.environ.get("FASTNET_KILL_TRIALS", "20"))
PAUSE = 0.05

DRIVER = r'''
import contextlib, os, sys, time
def mark(what):
    os.write(1, (what + "\n").encode())
mark("import")
from fastnet import checkpoint, cli, run
from fastnet.model import Model

PAUSE = float(os.environ["CRASH_PAUSE"])

def phase(name, function):
    def entered(*args, **kwargs):
        mark(name)
        time.sleep(PAUSE)
        return function(*args, **kwargs)
    return entered

run.load_data = phase("load", run.load_data)
Model.__init__ = phase("compile", Model.__init__)
train_loaded = Model._train_loaded

def step(self, *args, **kwargs):
    loss = train_loaded(self, *args, **kwargs)
    mark(f"step {self.step}")
    return loss

Model._train_loaded = step
atomic_write = checkpoint.atomic_write

class HalfThenRest:
    def __init__(self, f):
        self.f = f
    def write(self, data):
        data = bytes(data)
        self.f.write(data[:len(data) // 2])
        self.f.flush()
        mark("save")
        time.sleep(PAUSE)
        self.f.write(data[len(data) // 2:])
    def __getattr__(self, name):
        return getattr(self.f, name)

@contextlib.contextmanager
def slow_write(path):
    with atomic_write(path) as f:
        yield HalfThenRest(f)

checkpoint.atomic_write = slow_write
sys.exit(cli.main(sys.argv[1:]))
'''

SPEC = """
[[layers]]
type = "flatten"
[[layers]]
type = "dense"
out_features = 16
[[layers]]
type = "relu"
[[layers]]
type = "dense"
out_features = 4
"""

# 96 images, batch 16: 6 steps an epoch, 18 in all; a checkpoint every 4 steps and after each epoch.
# Adam, a cosine schedule and shifts (--augment): every piece of state a resume must restore.
TRAIN = ("train", "--model", "tiny.toml", "--epochs", "3", "--batch-size", "16", "--optimizer", "adam",
         "--lr", "0.01", "--schedule", "cosine", "--augment", "--checkpoint-every", "4", "--seed", "5")
STEPS = 18


class Run:
    """One driver process, its announcements collected by a thread as they come."""

    def __init__(self, root, args, pause=PAUSE):
        self.start = time.perf_counter()
        self.stderr = open(root / "stderr.txt", "w+b")
        self.proc = subprocess.Popen([sys.executable, str(root / "driver.py"), *args], cwd=root,
                                     stdout=subprocess.PIPE, stderr=self.stderr,
                                     env=dict(os.environ, CRASH_PAUSE=str(pause), NUMBA_NUM_THREADS="1",
                                              PYTHONPATH=os.pathsep.join(sys.path)))
        self.marks = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.marks.append(line.decode().strip())

    def wait(self):
        self.proc.wait(timeout=300)
        self.reader.join()
        self.stderr.seek(0)
        err = self.stderr.read().decode()
        self.stderr.close()
        return self.proc.returncode, err

    def kill_at(self, target, rng):
        """SIGKILL once `target` happens: ("mark", name, k) the k-th announcement starting with name,
        then a random delay of up to 5 ms; ("time", seconds) that long after the start. Returns the
        phase hit (the last announcement before the kill), or None when the run ended first."""
        while self.proc.poll() is None:
            if target[0] == "time":
                hit = time.perf_counter() - self.start >= target[1]
            else:
                hit = sum(m.startswith(target[1]) for m in list(self.marks)) >= target[2]
            if hit:
                if target[0] == "mark":
                    time.sleep(rng.uniform(0, 0.005))
                last = self.marks[-1] if self.marks else "start-up"
                self.proc.kill()
                self.wait()
                return last.split()[0]
            time.sleep(0.0005)
        self.wait()
        return None


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crash")
    (folder / "data").mkdir()
    write_dataset(folder / "data", n_train=96, n_test=32)
    (folder / "tiny.toml").write_text(SPEC)
    (folder / "driver.py").write_text(DRIVER)
    return folder


def tensors_of(path):
    tensors, metadata = checkpoint.read(path)
    return tensors, {key: metadata[key] for key in ("step", "epoch", "position", "shuffle_rng", "schedule")}


def assert_bit_identical(path, reference):
    tensors, metadata = tensors_of(path)
    ref_tensors, ref_metadata = reference
    assert metadata == ref_metadata
    assert sorted(tensors) == sorted(ref_tensors)
    for name, array in tensors.items():
        assert array.dtype == ref_tensors[name].dtype and array.tobytes() == ref_tensors[name].tobytes(), name


FIGURES = ("epoch", "loss", "accuracy", "test_loss", "test_accuracy", "lr")


def figures_of(folder):
    """metrics.json without the timings: the partial epoch's running sums come back with a resume."""
    metrics = json.loads((folder / "metrics.json").read_text())
    return [{key: row[key] for key in FIGURES} for row in metrics["epochs"]], metrics["test_accuracy"]


def check_folder_after_kill(folder):
    """What a kill may leave: nothing, a folder without a checkpoint, or one whose checkpoint loads."""
    if (folder / "model.safetensors").exists():
        model = fn.load(folder / "model.safetensors")
        assert 0 < model.step <= STEPS and model.epoch <= 3
        return "checkpoint"
    return "folder" if (folder / "run.json").exists() else "nothing"


def test_killed_anywhere_then_resumed_equals_an_unbroken_run(root):
    data = ("--dataset", str(root / "data"))
    began = time.perf_counter()
    unbroken = Run(root, (*TRAIN, *data, "--out", "unbroken"), pause=0.0)
    code, err = unbroken.wait()
    assert code == 0, err
    duration = time.perf_counter() - began
    assert sum(m.startswith("step") for m in unbroken.marks) == STEPS
    reference = tensors_of(root / "unbroken" / "model.safetensors")
    assert reference[1]["step"] == str(STEPS) and reference[1]["position"] == "null"

    rng = np.random.default_rng(16)
    aims = [("mark", "load", 1), ("mark", "compile", 1), ("mark", "step", None), ("mark", "save", None)]
    phases, left, compared, second_kills = {}, {}, 0, 0
    for trial in range(TRIALS):
        if trial % 2 == 0:
            target = aims[(trial // 2) % len(aims)]
            if target[2] is None:   # a random step (of 18) or save (of 7: steps 4, 8, 12, 16 and 3 epochs)
                target = (*target[:2], int(rng.integers(1, STEPS if target[1] == "step" else 8)))
        else:
            target = ("time", float(rng.uniform(0.0, duration)))
        folder = root / f"trial{trial}"
        phase = Run(root, (*TRAIN, *data, "--out", folder.name)).kill_at(target, rng)
        key = phase or "finished before the kill"
        phases[key] = phases.get(key, 0) + 1
        state = check_folder_after_kill(folder)
        left[state] = left.get(state, 0) + 1
        if state == "nothing":      # killed before the run folder held anything: start it again
            args = (*TRAIN, *data, "--out", folder.name)
        else:
            args = ("train", "--resume", folder.name)
        if phase is not None and trial % 3 == 0:    # a second kill, while it resumes
            again = ("mark", "step", 1) if trial % 2 else ("mark", "save", 1)
            if Run(root, args).kill_at(again, rng) is not None:
                second_kills += 1
                if check_folder_after_kill(folder) != "nothing":
                    args = ("train", "--resume", folder.name)
        code, err = Run(root, args, pause=0.0).wait()
        assert code == 0, f"trial {trial} ({target}, hit {phase}): {err}"
        assert not [f for f in os.listdir(folder) if f.endswith(".tmp")], "a crashed save's temporary file stayed"
        assert_bit_identical(folder / "model.safetensors", reference)
        assert figures_of(folder) == figures_of(root / "unbroken")
        compared += 1
    print(f"\n{TRIALS} kill trials, phases hit {phases}, left behind {left}, {second_kills} second kills "
          f"during a resume, {compared} resumed runs compared bit for bit; {time.perf_counter() - began:.0f} s")
    assert compared == TRIALS
    if TRIALS >= 20:    # every phase was hit (the aimed trials make sure of it)
        assert {"load", "compile", "step", "save"} <= set(phases), phases


def test_a_checkpoint_saved_mid_epoch_resumes_that_epoch_exactly(tmp_path):
    """The model-level path under `--checkpoint-every`: a checkpoint written by a callback in the
    middle of an epoch, loaded and fit again, gives the unbroken run's parameters, optimizer state
    and epoch figures (the shuffle order, augmentation and schedule of that epoch continue)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(100, 1, 8, 8)).astype(np.float32), rng.integers(0, 4, 100)   # 7 batches

    def compiled():
        return fn.Sequential([fn.Flatten(), fn.Dense(16), fn.ReLU(), fn.Dense(4)]).compile(
            (1, 8, 8), 16, optimizer=fn.Adam(lr=0.01), seed=3)

    path = tmp_path / "mid.safetensors"

    class SaveAtStep10(fn.callbacks.Callback):
        def on_batch_end(self, batch, logs=None):
            if self.model.step == 10:
                self.model.save(path)

    unbroken = compiled()
    history = unbroken.fit(x, y, epochs=3, verbose=0, callbacks=[SaveAtStep10()],
                           schedule=fn.schedules.Cosine(0.01, total_steps=21), augment=fn.data.Augment(pad=1))
    resumed = fn.load(path)
    assert (resumed.step, resumed.epoch, resumed.position["batch"]) == (10, 1, 3)
    rest = resumed.fit(x, y, epochs=3, initial_epoch=resumed.epoch, verbose=0)
    assert rest.history["loss"] == history.history["loss"][1:]
    assert rest.history["accuracy"] == history.history["accuracy"][1:]
    for name, value in unbroken.state_dict().items():
        assert value.tobytes() == resumed.state_dict()[name].tobytes(), name
    for name, value in unbroken.opt_state.items():
        assert value.tobytes() == resumed.opt_state[name].tobytes(), name
    assert resumed.position is None and resumed.step == unbroken.step == 21


def test_checkpoint_every_must_be_a_positive_number_of_steps(tmp_path, capsys):
    from fastnet import cli
    assert cli.main(["train", "--checkpoint-every", "0", "--out", str(tmp_path / "run")]) == 2
    assert "--checkpoint-every takes a number of optimizer steps, an integer >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
