"""`fastnet train` / `fastnet eval` after issue 17: self-contained checkpoints (a Normalize layer
first, so fn.load(path).predict(raw images) is right), checkpoints from before it (the statistics
in model.info["normalize"]) still evaluated and resumed, what --resume may change and what it
refuses, `fastnet eval --device` and a CUDA checkpoint on a machine without a GPU, --flip apart from
--augment, unique default run folders, and the test set looked at once when there is a validation
split."""

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from test_cli import run_fastnet, write_dataset

import fastnet as fn
from fastnet import cli, run


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("idx")
    write_dataset(folder)
    return folder


def train(dataset, out, *args):
    """fastnet train in this process (its kernels are compiled once per test session)."""
    assert cli.main(["train", "--model", "mlp", "--batch-size", "32", "--dataset", str(dataset), "--out",
                     str(out), *args]) == 0


def raw_test_set(dataset):
    return fn.datasets.load(str(dataset))[1]


def test_a_checkpoint_predicts_raw_images_with_nothing_else_remembered(dataset, tmp_path):
    train(dataset, tmp_path / "run", "--epochs", "1")
    model = fn.load(tmp_path / "run" / "model.safetensors")
    first = model.network.layers[0]
    assert isinstance(first, fn.Normalize)
    (x_train, _), (x, y) = fn.datasets.load(str(dataset))
    assert (first.mean, first.std) == (float(x_train.mean()), float(x_train.std()))
    assert "normalize" not in model.info      # nothing for a reader to apply a second time
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    predicted = model.predict(x).argmax(axis=1)
    assert np.mean(predicted == y) == metrics["test_accuracy"] > 0.5
    proba = model.predict_proba(x)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(proba.argmax(axis=1), predicted)
    assert run.evaluate(tmp_path / "run" / "model.safetensors")["accuracy"] == metrics["test_accuracy"]


def test_a_graph_network_gets_normalize_reading_its_input():
    net = run.with_normalize(fn.models.resnet8(classes=4, input_shape=(1, 12, 12)), 0.25, 0.5)
    assert isinstance(net, fn.Graph)
    readers = [layer for layer in net.layers if any(src.layer is None for node in net._nodes
                                                    if node.layer is layer for src in node.inputs)]
    assert [type(layer) for layer in readers] == [fn.Normalize] and readers[0].name == "normalize"
    model = net.compile(batch_size=2)
    x = np.random.default_rng(0).random((2, 1, 12, 12), dtype=np.float32)
    plain = fn.models.resnet8(classes=4, input_shape=(1, 12, 12)).compile(batch_size=2)
    plain.load_state_dict(model.state_dict())     # the same names: nothing renamed
    np.testing.assert_allclose(model.predict(x), plain.predict((x - np.float32(0.25)) / np.float32(0.5)),
                               rtol=1e-5, atol=1e-6)
    assert run.with_normalize(net, 0.0, 1.0) is net     # one is enough


def old_run_folder(dataset, folder, epochs=1):
    """A run folder as fastnet wrote it before the Normalize layer: no Normalize, the data
    standardised by the run, the statistics in info["normalize"], a run.json without "flip"."""
    (x_train, y_train), (x_test, y_test) = fn.datasets.load(str(dataset))
    x_train, x_test, (mean, std) = fn.datasets.standardize(x_train, x_test)
    settings = {key: value for key, value in run.DEFAULTS.items() if key != "flip"}
    settings.update(model="mlp", dataset=str(dataset), epochs=epochs, batch_size=32)
    model = fn.models.mlp(classes=4).compile((1, 12, 12), 32, optimizer=fn.Adam(lr=2e-3), seed=0)
    model.info = {"normalize": [mean, std], "dataset": str(dataset)}
    model.fit(x_train, y_train, epochs=epochs, verbose=0)
    os.makedirs(folder)
    model.save(folder / "model.safetensors")
    (folder / "run.json").write_text(json.dumps(settings))
    (folder / "metrics.json").write_text(json.dumps({"settings": settings, "epochs": [
        {"epoch": 1, "loss": 1.0, "accuracy": 0.5, "images_per_sec": 1.0, "seconds": 1.0, "lr": 2e-3}]}))
    return model, x_test, y_test


def test_an_old_checkpoint_still_evaluates_and_resumes(dataset, tmp_path):
    folder = tmp_path / "old"
    model, x_test, y_test = old_run_folder(dataset, folder)
    expected = model.evaluate(x_test, y_test)
    result = run.evaluate(folder / "model.safetensors")
    assert result["accuracy"] == expected["accuracy"]
    assert result["loss"] == pytest.approx(expected["loss"], rel=1e-6)
    assert cli.main(["train", "--resume", str(folder), "--epochs", "2"]) == 0
    resumed = fn.load(folder / "model.safetensors")
    assert resumed.epoch == 2 and not isinstance(resumed.network.layers[0], fn.Normalize)
    assert resumed.info["normalize"] == model.info["normalize"]
    # trained on standardised data: still as good on them (raw data would give chance)
    assert resumed.evaluate(x_test, y_test)["accuracy"] >= expected["accuracy"] - 0.05 > 0.45
    metrics = json.loads((folder / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["epochs"]] == [1, 2]


def test_resume_applies_lr_and_epochs_and_refuses_the_rest(dataset, tmp_path, capsys):
    folder = tmp_path / "run"
    train(dataset, folder, "--epochs", "1", "--schedule", "none", "--lr", "0.001")
    assert cli.main(["train", "--resume", str(folder), "--epochs", "2", "--lr", "0.0005"]) == 0
    metrics = json.loads((folder / "metrics.json").read_text())
    assert [row["lr"] for row in metrics["epochs"]] == [0.001, 0.0005]
    assert json.loads((folder / "run.json").read_text())["lr"] == 0.0005   # the next resume keeps it
    capsys.readouterr()
    before = (folder / "model.safetensors").read_bytes()
    for option in (["--batch-size", "16"], ["--model", "lenet"], ["--dataset", "mnist"], ["--augment"],
                   ["--optimizer", "sgd"], ["--out", str(tmp_path / "elsewhere")]):
        assert cli.main(["train", "--resume", str(folder), "--epochs", "3", *option]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"fastnet: error: {option[0]} cannot" in err, err
    assert (folder / "model.safetensors").read_bytes() == before       # nothing trained, nothing lost
    # the saved value given again is no change
    assert cli.main(["train", "--resume", str(folder), "--epochs", "3", "--batch-size", "32"]) == 0
    assert fn.load(folder / "model.safetensors").epoch == 3


def test_resume_with_a_longer_cosine_anneals_over_the_whole_run(dataset, tmp_path):
    folder = tmp_path / "run"
    train(dataset, folder, "--epochs", "1", "--schedule", "cosine")
    assert cli.main(["train", "--resume", str(folder), "--epochs", "3"]) == 0
    rows = json.loads((folder / "metrics.json").read_text())["epochs"]
    lrs = [row["lr"] for row in rows]
    assert lrs[2] < lrs[1] and lrs[1] > 0       # not stuck at the first run's end (lr 0)
    schedule = fn.load(folder / "model.safetensors").schedule
    assert schedule.total_steps == 3 * 8


def test_eval_device_and_a_cuda_checkpoint_on_a_machine_without_a_gpu(dataset, tmp_path):
    pytest.importorskip("numba.cuda")
    from conftest import GPU

    model = fn.Sequential([fn.Normalize(0.3, 0.2), fn.Flatten(), fn.Dense(4)]).compile(
        (1, 12, 12), 8, device="cuda")
    model.info = {"dataset": str(dataset)}
    path = tmp_path / "cuda.safetensors"
    model.save(path)
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, "-m", "fastnet", "eval", str(path), "--json"], capture_output=True,
                         text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["device"] == ("cuda" if GPU else "cpu")
    x, y = raw_test_set(dataset)
    assert result["accuracy"] == pytest.approx(model.evaluate(x, y)["accuracy"], abs=1 / 128)
    out = run_fastnet("eval", str(path), "--device", "cpu", "--json", env={"NUMBA_ENABLE_CUDASIM": "0"})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["device"] == "cpu"


def test_flip_is_its_own_choice_and_augment_only_shifts(dataset, tmp_path):
    train(dataset, tmp_path / "shift", "--epochs", "1", "--augment")
    assert fn.load(tmp_path / "shift" / "model.safetensors").augment.config() == {
        "pad": 2, "flip": False, "fill": 0.0, "seed": 0}
    train(dataset, tmp_path / "flip", "--epochs", "1", "--flip")
    assert fn.load(tmp_path / "flip" / "model.safetensors").augment.config() == {
        "pad": 0, "flip": True, "fill": 0.0, "seed": 0}
    train(dataset, tmp_path / "plain", "--epochs", "1")
    assert fn.load(tmp_path / "plain" / "model.safetensors").augment is None


def test_default_run_folders_are_unique_within_a_second(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(run.time, "strftime", lambda _: "20250101-000000")
    folders = []
    threads = [threading.Thread(target=lambda: folders.append(run._make_folder(None))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(folders) == sorted(os.path.join("runs", "20250101-000000" + suffix)
                                     for suffix in ["", *(f"-{i}" for i in range(2, 9))])
    assert run._make_folder(str(tmp_path / "given")) == str(tmp_path / "given")


def test_the_test_set_is_evaluated_once_when_there_is_a_validation_split(dataset, tmp_path, monkeypatch):
    calls = []
    evaluate = fn.Model.evaluate

    def counting(self, x, y):
        calls.append(len(x))
        return evaluate(self, x, y)

    monkeypatch.setattr(fn.Model, "evaluate", counting)
    train(dataset, tmp_path / "val", "--epochs", "2", "--val-split", "0.25")
    rows = json.loads((tmp_path / "val" / "metrics.json").read_text())["epochs"]
    assert all("test_accuracy" not in row and row["val_accuracy"] is not None for row in rows)
    assert calls == [64, 64, 128]           # validation after each epoch, the test set at the end
    calls.clear()
    train(dataset, tmp_path / "noval", "--epochs", "2")
    rows = json.loads((tmp_path / "noval" / "metrics.json").read_text())["epochs"]
    assert all(row["test_accuracy"] is not None for row in rows)
    assert calls == [128, 128, 128]
