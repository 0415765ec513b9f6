"""Saves that fail: a full disk (ENOSPC from the write), a folder that cannot be written (EACCES,
EROFS), a rename that fails. Each is a CheckpointError naming the file (its __cause__ the
OSError), the previous checkpoint stays byte for byte what it was, and no temporary file is left
behind. `fastnet train` whose checkpoint save fails mid-run says so in one line and exits
non-zero, the previous model.safetensors intact."""

import contextlib
import errno
import os

import numpy as np
import pytest

import fastnet as fn
from fastnet import atomic, checkpoint, cli
from fastnet.data import save_idx


def small_model():
    return fn.Sequential([fn.Flatten(), fn.Dense(3)]).compile((2, 2), 4, optimizer=fn.Adam(lr=0.01), seed=0)


def step(model, seed):
    rng = np.random.default_rng(seed)
    model.train_step(rng.normal(size=(4, 2, 2)).astype(np.float32), rng.integers(0, 3, 4))


class FullDisk:
    """A file whose write stores half the data, then fails as a full disk does."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(bytes(data)[:len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.f, name)


def full_disk_after(saves_that_succeed):
    """An atomic_write for fastnet.checkpoint whose writes fail once `saves_that_succeed` are done."""
    calls = []

    @contextlib.contextmanager
    def write(path):
        calls.append(path)
        with atomic.atomic_write(path) as f:
            yield f if len(calls) <= saves_that_succeed else FullDisk(f)
    return write


@pytest.fixture
def saved(tmp_path):
    model = small_model()
    path = tmp_path / "model.safetensors"
    model.save(path)
    step(model, 1)                  # the model moves on; the file on disk is the one to keep
    return model, path, path.read_bytes()


def assert_untouched(path, before):
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name], "a temporary file was left behind"
    assert fn.load(path).step == 0


def test_a_full_disk_is_a_checkpoint_error_and_the_previous_file_is_kept(saved, monkeypatch):
    model, path, before = saved
    monkeypatch.setattr(checkpoint, "atomic_write", full_disk_after(0))
    with pytest.raises(fn.CheckpointError, match="No space left on device") as caught:
        model.save(path)
    assert str(path) in str(caught.value) and "unchanged" in str(caught.value)
    assert caught.value.__cause__.errno == errno.ENOSPC
    monkeypatch.undo()
    assert_untouched(path, before)


def test_a_full_disk_on_the_first_save_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "atomic_write", full_disk_after(0))
    with pytest.raises(fn.CheckpointError, match="No space left"):
        small_model().save(tmp_path / "model.safetensors")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_a_folder_that_cannot_be_written_is_a_checkpoint_error(saved, monkeypatch, code):
    # As root chmod does not stop a write, so the temporary file's creation fails instead, as it
    # does in a read-only folder or on a read-only file system.
    model, path, before = saved
    real_open = os.open

    def refuse(name, flags, *args):
        if flags & os.O_CREAT:
            raise OSError(code, os.strerror(code), name)
        return real_open(name, flags, *args)
    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(fn.CheckpointError, match=os.strerror(code)):
        model.save(path)
    monkeypatch.undo()
    assert_untouched(path, before)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_folder_for_real(saved):
    model, path, before = saved
    os.chmod(path.parent, 0o555)
    try:
        with pytest.raises(fn.CheckpointError, match="Permission denied"):
            model.save(path)
    finally:
        os.chmod(path.parent, 0o755)
    assert_untouched(path, before)


def test_a_failed_rename_is_a_checkpoint_error(saved, monkeypatch):
    model, path, before = saved

    def fail(src, dst):
        raise OSError(errno.EIO, os.strerror(errno.EIO), src)
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(fn.CheckpointError, match="Input/output error"):
        model.save(path)
    monkeypatch.undo()
    assert_untouched(path, before)


def test_idx_saves_that_fail_leave_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    # save_idx is not a checkpoint: its OSError comes through as it is (no FastnetError wraps it)
    path = tmp_path / "labels-idx1-ubyte"
    save_idx(path, np.arange(5, dtype=np.uint8))
    before = path.read_bytes()

    def fail(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        save_idx(path, np.arange(9, dtype=np.uint8))
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == [path.name]


def write_dataset(folder):
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("t10k", 32)):
        save_idx(folder / f"{split}-images-idx3-ubyte", rng.integers(0, 255, (n, 8, 8)).astype(np.uint8))
        save_idx(folder / f"{split}-labels-idx1-ubyte", rng.integers(0, 4, n).astype(np.uint8))


def test_fastnet_train_whose_checkpoint_save_fails_mid_run(tmp_path, monkeypatch, capsys):
    (tmp_path / "data").mkdir()
    write_dataset(tmp_path / "data")
    saves = []
    real = full_disk_after(1)

    @contextlib.contextmanager
    def write(path):                # record the file as the failing save finds it
        if os.path.exists(path):
            with open(path, "rb") as f:
                saves.append(f.read())
        with real(path) as f:
            yield f
    monkeypatch.setattr(checkpoint, "atomic_write", write)
    run = tmp_path / "run"
    code = cli.main(["train", "--model", "mlp", "--dataset", str(tmp_path / "data"), "--epochs", "3",
                     "--batch-size", "16", "--seed", "1", "--out", str(run)])
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("fastnet: error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], err
    assert err.rstrip("\n").splitlines()[-1] == errors[0]
    # the epoch-1 checkpoint, as the failing epoch-2 save found it, is what is on disk
    assert len(saves) == 1 and (run / "model.safetensors").read_bytes() == saves[0]
    assert fn.load(run / "model.safetensors").epoch == 1
    assert not [name for name in os.listdir(run) if name.endswith(".tmp")]
