"""Real MPI: `mpiexec -n K fastnet train` as subprocesses (pip install 'fastnet[mpich]'), on a tiny
MLP and a tiny data set, each with a timeout. K ranks against one process, checkpoint + resume
against an unbroken run, and the faults: one rank raising, one rank killed, mismatched settings.
The sharding and equivalence logic itself is tested in-process in tests/test_distributed.py.

Without mpi4py and an mpiexec these tests skip, unless FASTNET_REQUIRE_MPI=1 (CI) makes that a failure."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import fastnet as fn
from fastnet import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fn.__file__)))
MPIEXEC = distributed.find_mpiexec()
try:
    import mpi4py  # noqa: F401
    HAVE_MPI = MPIEXEC is not None
except ImportError:
    HAVE_MPI = False
if not HAVE_MPI and os.environ.get("FASTNET_REQUIRE_MPI") == "1":
    raise RuntimeError("FASTNET_REQUIRE_MPI=1 but mpi4py or mpiexec is missing: pip install -e '.[mpich]'")
pytestmark = pytest.mark.skipif(not HAVE_MPI, reason="needs mpi4py and mpiexec: pip install 'fastnet[mpich]'")

TIMEOUT = 120
TRAIN = ["--model", "mlp", "--epochs", "2", "--batch-size", "16", "--schedule", "none", "--lr", "0.003"]

# rank 1 of a job whose other ranks run `python -m fastnet`: fails at the optimizer step given
FAULTY = """
import os, signal, sys
from fastnet import cli, distributed, model
how, step = sys.argv[1], int(sys.argv[2])
original = model.Model._reduce_gradients
def faulty(self):
    if self.step == step and distributed.world().rank == 1:
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError("rank 1 broke on purpose")
    original(self)
model.Model._reduce_gradients = faulty
sys.exit(cli.main(sys.argv[3:]))
"""


def environment():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("FASTNET_MPI", None)
    return env


def mpiexec(*groups, cwd):
    """Run `mpiexec` over ':'-separated groups of (ranks, command); (exit code, output, seconds)."""
    command = [MPIEXEC]
    for i, (ranks, args) in enumerate(groups):
        command += ([":"] if i else []) + ["-n", str(ranks), *args]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=TIMEOUT)
    return done.returncode, done.stdout + done.stderr, time.perf_counter() - start


def fastnet_command(*args):
    return [sys.executable, "-m", "fastnet", "train", *args]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A data set of 203 training images (not a multiple of the global batch of 16)."""
    folder = tmp_path_factory.mktemp("mpi")
    rng = np.random.default_rng(0)
    np.savez(folder / "tiny.npz", x_train=rng.integers(0, 255, (203, 8, 8), dtype=np.uint8),
             y_train=rng.integers(0, 10, 203), x_test=rng.integers(0, 255, (50, 8, 8), dtype=np.uint8),
             y_test=rng.integers(0, 10, 50))
    return folder


def parameters(path):
    return fn.load(path).state_dict()


def max_relative_difference(a, b):
    return max(float(np.max(np.abs(a[k] - b[k])) / np.max(np.abs(b[k]))) for k in b)


@pytest.fixture(scope="module")
def one_process(tiny):
    subprocess.run(fastnet_command("--dataset", "tiny.npz", *TRAIN, "--out", "one"), cwd=tiny, env=environment(),
                   check=True, capture_output=True, timeout=TIMEOUT)
    return parameters(tiny / "one" / "model.safetensors")


@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_train_as_one_process_with_the_global_batch(tiny, one_process, ranks):
    args = ["--dataset", "tiny.npz", *TRAIN, "--out", f"k{ranks}"]
    if ranks == 2:    # fastnet starts mpiexec itself
        done = subprocess.run(fastnet_command(*args, "--workers", "2"), cwd=tiny, env=environment(),
                              capture_output=True, text=True, timeout=TIMEOUT)
        code, output = done.returncode, done.stdout + done.stderr
    else:
        code, output, _ = mpiexec((ranks, fastnet_command(*args)), cwd=tiny)
    assert code == 0, output
    assert output.count("test accuracy") == 3, output        # rank 0 alone prints: two epochs, the end
    saved = json.loads((tiny / f"k{ranks}" / "run.json").read_text())
    assert saved["workers"] == ranks and saved["threads_per_worker"] >= 1
    difference = max_relative_difference(parameters(tiny / f"k{ranks}" / "model.safetensors"), one_process)
    print(f"{ranks} ranks vs one process, Adam, 26 steps, float32: max relative difference {difference:.2e}")
    assert difference < 1e-4


def unbroken(tiny):
    if not (tiny / "k2").exists():
        code, output, _ = mpiexec((2, fastnet_command("--dataset", "tiny.npz", *TRAIN, "--out", "k2")), cwd=tiny)
        assert code == 0, output
    return parameters(tiny / "k2" / "model.safetensors")


# 13 steps an epoch: 17 is in the second; 10 in the first, after the step checkpoint of step 8
@pytest.mark.parametrize("how, step, every", [("raise", 2, None), ("kill", 17, None), ("kill", 10, 4)])
def test_a_failing_rank_ends_the_job_and_the_last_checkpoint_resumes(tiny, how, step, every):
    (tiny / "faulty.py").write_text(FAULTY)
    args = ["--dataset", "tiny.npz", *TRAIN, "--out", f"fault-{how}-{step}"]
    if every:
        args += ["--checkpoint-every", str(every)]
    code, output, seconds = mpiexec((1, fastnet_command(*args)),
                                    (1, [sys.executable, "faulty.py", how, str(step), "train", *args]), cwd=tiny)
    assert code != 0 and seconds < 60, output
    checkpoint = tiny / f"fault-{how}-{step}" / "model.safetensors"
    if how == "raise":
        assert output.count("RuntimeError: rank 1 broke on purpose") == 1, output
        assert not checkpoint.exists()       # it failed in the first epoch
        return
    kept = fn.load(checkpoint)    # the last checkpoint is whole: resume from it
    assert (kept.epoch, kept.step) == ((0, 8) if every else (1, 13))
    code, output, _ = mpiexec((2, fastnet_command("--resume", f"fault-{how}-{step}", "--epochs", "2")), cwd=tiny)
    assert code == 0, output
    resumed = parameters(checkpoint)
    for name, value in unbroken(tiny).items():
        assert np.array_equal(resumed[name], value), name


def test_mismatched_settings_are_refused_on_every_rank(tiny):
    args = ["--dataset", "tiny.npz", *TRAIN, "--out", "mismatch"]
    other = [*args, "--seed", "1"]
    code, output, seconds = mpiexec((1, fastnet_command(*args)), (1, fastnet_command(*other)), cwd=tiny)
    assert code == 2, output
    assert output.count("rank(s) [1] of 2 were started with another network, other settings") == 1, output


def test_a_one_process_checkpoint_resumes_on_two_ranks(tiny, one_process):
    import shutil
    shutil.copytree(tiny / "one", tiny / "one-more")
    code, output, _ = mpiexec((2, fastnet_command("--resume", "one-more", "--epochs", "3")), cwd=tiny)
    assert code == 0, output
    resumed = fn.load(tiny / "one-more" / "model.safetensors")
    assert resumed.epoch == 3 and json.loads((tiny / "one-more" / "run.json").read_text())["workers"] == 2
    assert max_relative_difference(resumed.state_dict(), one_process) > 0     # it trained on


def test_an_error_every_rank_meets_is_shown_once(tiny):
    code, output, seconds = mpiexec((2, fastnet_command("--dataset", "missing.npz", *TRAIN, "--out", "missing")),
                                    cwd=tiny)
    assert code == 2 and seconds < 60, output
    assert output.count("unknown data set 'missing.npz'") == 1, output
    assert not (tiny / "missing").exists()


def test_the_mpi_example_trains_on_two_ranks(tmp_path):
    try:
        fn.datasets.load("fashion-mnist")
    except fn.DataError:
        if os.environ.get("FASTNET_REQUIRE_DATA") == "1":
            raise
        pytest.skip("Fashion-MNIST is not installed")
    example = os.path.join(ROOT, "examples", "train_mpi.py")
    code, output, _ = mpiexec((2, [sys.executable, "-m", "mpi4py", example, "--epochs", "1", "--limit", "2000"]),
                              cwd=tmp_path)
    assert code == 0, output
    assert output.count("2 process(es): test {'loss'") == 1 and (tmp_path / "mlp-mpi.safetensors").exists(), output
