"""The command line reports a user's mistake as one line and an exit code, never a traceback
(issue 16); --debug shows the traceback; a run that cannot start leaves no folder."""

import inspect
import json
import os
import subprocess
import sys

import pytest
from test_cli import run_fastnet, write_dataset

import fastnet as fn
from fastnet import cli, errors

HUGE = """input_shape = [1, 12, 12]
[[layers]]
type = "flatten"
[[layers]]
type = "dense"
out_features = 1000000000
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("idx")
    write_dataset(folder, n_train=64, n_test=32)
    return folder


def test_a_network_too_big_for_the_machine_is_one_line_exit_2_and_no_run_folder(dataset, tmp_path):
    (tmp_path / "huge.toml").write_text(HUGE)
    out = subprocess.run([sys.executable, "-m", "fastnet", "train", "--model", "huge.toml", "--dataset",
                          str(dataset), "--epochs", "1"], capture_output=True, text=True, timeout=600,
                         cwd=tmp_path, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastnet: error: the network needs "), out.stderr
    assert " TiB at batch " in lines[0] and "available" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_debug_shows_the_traceback(tmp_path):
    for args in (["--debug", "eval", str(tmp_path / "missing.safetensors")],
                 ["eval", str(tmp_path / "missing.safetensors"), "--debug"]):
        out = run_fastnet(*args)
        assert out.returncode != 0 and "Traceback" in out.stderr and "CheckpointError" in out.stderr, args


def test_a_missing_spec_file_is_one_line_and_exit_2(dataset, tmp_path):
    out = run_fastnet("train", "--model", str(tmp_path / "nothing.toml"), "--dataset", str(dataset),
                      "--out", str(tmp_path / "run"))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "nothing.toml" in out.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("raised, code, text", [
    (KeyboardInterrupt(), 130, "fastnet: interrupted"),
    (fn.ShapeError("bad shape"), 2, "fastnet: error: bad shape"),
    (fn.FastnetError("plain"), 2, "fastnet: error: plain"),
    (fn.MemoryBudgetError("too big"), 2, "fastnet: error: too big"),
    (fn.DivergenceError("loss became nan"), 1, "fastnet: error: loss became nan"),
    (FileNotFoundError(2, "No such file or directory", "x.npz"), 2,
     "fastnet: error: No such file or directory: 'x.npz'"),
    (PermissionError(13, "Permission denied", "runs"), 2, "fastnet: error: Permission denied: 'runs'"),
    (OSError(28, "No space left on device"), 1, "fastnet: error: OSError: [Errno 28] No space left on device"),
])
def test_errors_become_one_line_and_an_exit_code(monkeypatch, capsys, raised, code, text):
    def fail():
        raise raised
    monkeypatch.setattr(cli, "info", fail)
    assert cli.main(["info"]) == code
    assert capsys.readouterr().err == text + "\n"
    with pytest.raises(type(raised)):
        cli.main(["info", "--debug"])


def test_a_bug_is_not_hidden(monkeypatch):
    def fail():
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(cli, "info", fail)
    with pytest.raises(ZeroDivisionError):
        cli.main(["info"])


def test_help_documents_the_exit_codes():
    out = run_fastnet("--help")
    assert out.returncode == 0
    for line in ("exit codes:", "  2    bad input", "  130  interrupted", "--debug"):
        assert line in out.stdout, line


def test_every_fastnet_error_is_also_a_standard_exception():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)
               if issubclass(c, errors.FastnetError) and c is not errors.FastnetError]
    assert {c.__name__ for c in classes} >= {"ShapeError", "DataError", "CheckpointError", "SpecError",
                                             "DivergenceError", "MonitorError", "MemoryBudgetError"}
    for c in classes:
        standard = [base for base in c.__mro__ if base.__module__ == "builtins" and base not in (Exception,
                                                                                                 BaseException, object)]
        assert standard, f"{c.__name__} subclasses no standard exception"
    assert issubclass(fn.CheckpointError, ValueError)
    assert issubclass(fn.MemoryBudgetError, MemoryError)


def test_an_unknown_loss_is_a_spec_error():
    with pytest.raises(fn.SpecError, match="unknown loss 'hinge'"):
        fn.models.mlp().compile((1, 28, 28), 8, loss="hinge")


@pytest.mark.parametrize("make, text", [
    (lambda: fn.SGD(lr=-0.1), "SGD: lr must be a finite number >= 0, got -0.1"),
    (lambda: fn.SGD(lr=0.1, momentum=float("nan")), "SGD: momentum must be a finite number >= 0"),
    (lambda: fn.SGD(lr=0.1, nesterov=True), "SGD: nesterov momentum requires a momentum"),
    (lambda: fn.Adam(lr=1e-3, eps=-1.0), "Adam: eps must be a finite number >= 0"),
    (lambda: fn.AdamW(weight_decay="0.1"), "AdamW: weight_decay must be a finite number >= 0"),
    (lambda: fn.models.mlp().compile((1, 28, 28), 8, dtype="float16"), "dtype must be float32 or float64"),
    (lambda: fn.models.mlp().compile((1, 28, 28), 8, dtype="bogus"), "dtype must be float32 or float64"),
])
def test_bad_optimizer_and_dtype_arguments_are_spec_errors(make, text):
    with pytest.raises(fn.SpecError, match=text.replace("(", r"\(").replace(")", r"\)")) as caught:
        make()
    assert isinstance(caught.value, ValueError)


def test_train_max_memory_is_compile_s_budget(dataset, tmp_path, capsys):
    common = ["train", "--model", "mlp", "--dataset", str(dataset), "--epochs", "1", "--batch-size", "16"]
    assert cli.main([*common, "--max-memory", "64KiB", "--out", str(tmp_path / "small")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastnet: error: the network needs ") and "64.0 KiB" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "small").exists()
    assert cli.main([*common, "--max-memory", "lots", "--out", str(tmp_path / "bad")]) == 2
    assert "max_memory must be a positive number of bytes or a size such as '4GiB'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert cli.main([*common, "--max-memory", "1GiB", "--out", str(tmp_path / "fits")]) == 0
    assert json.loads((tmp_path / "fits" / "run.json").read_text())["max_memory"] == "1GiB"
