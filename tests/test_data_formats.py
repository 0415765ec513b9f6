"""Data sets beyond IDX: Keras-style .npz files and folders of images per class (torchvision's
ImageFolder), through `datasets.load` and `fastnet train --dataset`; every bad file a DataError
naming it."""

import json
import shutil
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from test_cli import run_fastnet

import fastnet as fn
from fastnet.data import datasets, images
from fastnet.errors import DataError, FastnetError

RNG = np.random.default_rng(0)


# --- .npz --------------------------------------------------------------------------------------


def keras_arrays(n_train=12, n_test=6, shape=(28, 28), classes=3):
    return {"x_train": RNG.integers(0, 256, (n_train, *shape), dtype=np.uint8),
            "y_train": RNG.integers(0, classes, n_train).astype(np.uint8),
            "x_test": RNG.integers(0, 256, (n_test, *shape), dtype=np.uint8),
            "y_test": RNG.integers(0, classes, n_test).astype(np.uint8)}


def save_npz(path, compressed=True, **arrays):
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


@pytest.mark.parametrize("compressed", [True, False])
def test_npz_grey_round_trip(tmp_path, compressed):
    arrays = keras_arrays()
    path = save_npz(tmp_path / "mnist.npz", compressed, **arrays)
    (x_train, y_train), (x_test, y_test) = datasets.load(path)
    assert x_train.shape == (12, 1, 28, 28) and x_test.shape == (6, 1, 28, 28)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    np.testing.assert_array_equal(x_train[:, 0], arrays["x_train"] / np.float32(255))
    np.testing.assert_array_equal(x_test[:, 0], arrays["x_test"] / np.float32(255))
    np.testing.assert_array_equal(y_train, arrays["y_train"])
    np.testing.assert_array_equal(y_test, arrays["y_test"])
    assert datasets.class_names(path) is None


def test_npz_colour_channel_last_becomes_nchw_and_column_labels_flatten(tmp_path):
    arrays = keras_arrays(shape=(5, 7, 3))          # (N, H, W, C), as keras' cifar10 arrays
    arrays["y_train"] = arrays["y_train"][:, None]  # (N, 1) labels, as cifar10 has them
    path = save_npz(tmp_path / "colour.npz", **arrays)
    (x_train, y_train), (x_test, _) = datasets.load(str(path))
    assert x_train.shape == (12, 3, 5, 7) and x_test.shape == (6, 3, 5, 7)
    np.testing.assert_array_equal(x_train, arrays["x_train"].transpose(0, 3, 1, 2) / np.float32(255))
    np.testing.assert_array_equal(y_train, arrays["y_train"][:, 0])


def test_npz_float_images_are_taken_as_they_are(tmp_path):
    arrays = keras_arrays()
    arrays["x_train"] = RNG.random((12, 28, 28))     # float64
    arrays["x_test"] = RNG.random((6, 28, 28)).astype(np.float32)
    (x_train, _), (x_test, _) = datasets.load(save_npz(tmp_path / "f.npz", **arrays))
    assert x_train.dtype == x_test.dtype == np.float32
    np.testing.assert_array_equal(x_train[:, 0], arrays["x_train"].astype(np.float32))


def bad(key, value):
    return lambda a: a.__setitem__(key, value)


BAD_NPZ = [
    ("missing key", lambda a: a.pop("y_test"), "missing y_test"),
    ("images not uint8 or float", bad("x_train", np.full((12, 28, 28), "a")), "x_train has dtype <U1"),
    ("integer images beyond 0..255", bad("x_test", np.full((6, 28, 28), 300, np.int32)), "values 300..300"),
    ("bool images", bad("x_train", np.zeros((12, 28, 28), bool)), "x_train has dtype bool"),
    ("images of two dimensions", bad("x_train", np.zeros((12, 784), np.uint8)), "got shape (12, 784)"),
    ("channel-first colour", bad("x_train", np.zeros((12, 3, 28, 28), np.uint8)), "looks channel-first"),
    ("no images", lambda a: a.update(x_train=np.zeros((0, 28, 28), np.uint8), y_train=np.zeros(0, np.uint8)),
     "x_train holds no images"),
    ("float labels", bad("y_train", np.zeros(12, np.float32)), "y_train has dtype float32"),
    ("one-hot labels", bad("y_test", np.eye(3, dtype=np.uint8)[np.zeros(6, int)]), "one-hot"),
    ("negative labels", bad("y_test", np.full(6, -1, np.int64)), "negative label"),
    ("label count", bad("y_train", np.zeros(11, np.uint8)), "12 train images (x_train) but 11 labels"),
    ("train and test sizes", bad("x_test", np.zeros((6, 27, 28), np.uint8)), "but test images are"),
    ("NaN", bad("x_train", np.where(np.arange(12 * 784).reshape(12, 28, 28) == 800, np.nan, 0.5)),
     "non-finite values (NaN or inf, or beyond float32), the first at image 1 (C, H, W) = (0, 0, 16)"),
    ("inf", bad("x_test", np.full((6, 28, 28), np.inf, np.float32)), "non-finite"),
    ("beyond float32", bad("x_test", np.full((6, 28, 28), 1e300)), "non-finite"),
    ("an object array", bad("y_train", np.array([1, "two", None] * 4, dtype=object)),
     "y_train is an object array (pickled Python objects); fastnet never unpickles"),
]


@pytest.mark.parametrize("case, change, message", BAD_NPZ, ids=[case for case, _, _ in BAD_NPZ])
def test_a_bad_npz_is_a_data_error_naming_the_file_and_the_problem(tmp_path, case, change, message):
    arrays = keras_arrays()
    change(arrays)
    path = save_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as err:
        datasets.load(path)
    assert str(path) in str(err.value) and message in str(err.value), str(err.value)


def test_an_object_array_is_refused_without_being_unpickled(tmp_path, monkeypatch):
    arrays = keras_arrays()
    arrays["x_test"] = np.array([object()] * 6, dtype=object)
    path = save_npz(tmp_path / "pickled.npz", **arrays)
    import pickle
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    with pytest.raises(DataError, match="x_test is an object array"):
        datasets.load(path)


def corrupt_member(path):
    """Flip bytes inside a stored member's data: the zip's CRC no longer matches."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("x_train.npy")
    start = info.header_offset + 30 + len(info.filename) + 200
    data[start:start + 50] = bytes(50)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncated", "corrupt member", "not a zip", "empty file", "lying header"])
def test_a_truncated_or_corrupt_npz_is_a_data_error(tmp_path, damage):
    path = save_npz(tmp_path / "mnist.npz", compressed=False, **keras_arrays())
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:3000])
        expected = "truncated or corrupt .npz"
    elif damage == "corrupt member":
        corrupt_member(path)
        expected = "truncated or corrupt .npz"
    elif damage == "not a zip":
        np.save(tmp_path / "x.npy", np.zeros(3))
        path = tmp_path / "x.npy"
        expected = "not an .npz file"
    elif damage == "empty file":
        path.write_bytes(b"")
        expected = "not an .npz file"
    else:
        # a header that claims 10**12 images: refused before anything that size is allocated
        arrays = keras_arrays()
        with zipfile.ZipFile(path, "w") as z:
            for key, value in arrays.items():
                with z.open(key + ".npy", "w") as f:
                    if key == "x_train":
                        np.lib.format.write_array_header_1_0(
                            f, {"descr": "|u1", "fortran_order": False, "shape": (10**12, 28, 28)})
                        f.write(value.tobytes())
                    else:
                        np.lib.format.write_array(f, value)
        expected = "x_train's header says uint8 (1000000000000, 28, 28)"
    with pytest.raises(DataError) as err:
        datasets.load(path)
    assert str(path) in str(err.value) and expected in str(err.value), str(err.value)


def test_resize_is_refused_for_npz_and_idx(tmp_path):
    path = save_npz(tmp_path / "mnist.npz", **keras_arrays())
    with pytest.raises(DataError, match="resize applies to folders of images only"):
        datasets.load(path, resize=(8, 8))


# --- image folders -----------------------------------------------------------------------------


def write_image(path, pixels, fmt=None):
    """pixels uint8 (H, W) grey or (H, W, 3) colour."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return pixels


def write_folder(root, classes=("cat", "dog"), per_class=3, size=(6, 5), colour=False, ext="png",
                 layout="split"):
    """Images of each class under root/train/<class>, root/test/<class> (layout "split") or
    root/<class> ("flat"); returns {path: pixels}."""
    written = {}
    splits = ("train", "test") if layout == "split" else ("",)
    for split in splits:
        for name in classes:
            for i in range(per_class):
                pixels = RNG.integers(0, 256, (*size, 3) if colour else size, dtype=np.uint8)
                path = root / split / name / f"{i:02d}.{ext}"
                written[path] = write_image(path, pixels)
    return written


def as_chw(pixels):
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


@pytest.mark.parametrize("colour", [False, True], ids=["grey", "rgb"])
def test_png_folder_round_trip_with_sorted_class_order(tmp_path, colour):
    # classes written in an order that is not the sorted one: labels follow sorted names
    written = write_folder(tmp_path, classes=("zebra", "Ant", "bee"), colour=colour)
    (x_train, y_train), (x_test, y_test) = datasets.load(tmp_path)
    assert datasets.class_names(tmp_path) == ["Ant", "bee", "zebra"]     # codepoint order, as sorted()
    channels = 3 if colour else 1
    assert x_train.shape == x_test.shape == (9, channels, 6, 5) and x_train.dtype == np.float32
    np.testing.assert_array_equal(y_train, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(y_test, y_train)
    for split, x in (("train", x_train), ("test", x_test)):
        for i, (name, index) in enumerate((n, j) for n in ("Ant", "bee", "zebra") for j in range(3)):
            expected = as_chw(written[tmp_path / split / name / f"{index:02d}.png"])
            np.testing.assert_array_equal(x[i], expected / np.float32(255))


@pytest.mark.parametrize("colour", [False, True], ids=["grey", "rgb"])
def test_jpeg_folder_loads_close_to_what_was_written(tmp_path, colour):
    ramp = np.add.outer(np.arange(16), np.arange(16)).astype(np.uint8) * 4    # smooth: JPEG's loss is small
    written = {}
    for name, offset in (("a", 0), ("b", 60)):
        grey = ramp + offset
        written[name] = np.stack([grey, grey // 2, 255 - grey], -1) if colour else grey
        for split in ("train", "test"):
            write_image(tmp_path / split / name / "0.jpg", written[name])
            write_image(tmp_path / split / name / "1.jpeg", written[name])
    (x_train, y_train), (x_test, _) = datasets.load(tmp_path)
    assert x_train.shape == x_test.shape == (4, 3 if colour else 1, 16, 16)
    np.testing.assert_array_equal(y_train, [0, 0, 1, 1])
    for i, name in enumerate("aabb"):
        assert np.abs(x_train[i] * 255 - as_chw(written[name])).mean() < 3


def test_one_folder_is_split_by_a_seeded_fraction_of_each_class(tmp_path):
    write_folder(tmp_path, classes=("a", "b", "c"), per_class=10, layout="flat")
    (x_train, y_train), (x_test, y_test) = datasets.load(tmp_path)
    assert len(x_train) == 24 and len(x_test) == 6
    assert np.bincount(y_test).tolist() == [2, 2, 2] and np.bincount(y_train).tolist() == [8, 8, 8]
    (again, _), (again_test, _) = datasets.load(tmp_path)
    np.testing.assert_array_equal(again_test, x_test)                 # the same images every time
    (_, _), (other_test, _) = datasets.load(tmp_path, seed=1, test_fraction=0.5)
    assert len(other_test) == 15
    # no image is in both sets, none is lost
    rows = {x.tobytes() for x in np.concatenate([x_train, x_test])}
    assert len(rows) == 30


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(1, 30), min_size=1, max_size=6), fraction=st.floats(0.01, 0.99),
       seed=st.integers(0, 2**32 - 1))
def test_the_held_out_split_is_a_seeded_partition_of_each_class(counts, fraction, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    RNG.shuffle(labels)
    paths = [f"{i}.png" for i in range(len(labels))]
    train, test = images._hold_out(paths, labels, fraction, seed)
    assert sorted(train.tolist() + test.tolist()) == list(range(len(labels)))     # a partition
    for label, n in enumerate(counts):
        held = int(np.sum(labels[test] == label))
        assert held == min(round(n * fraction), n - 1)          # each class's share, >= 1 image kept
    again = images._hold_out(paths, labels, fraction, seed)
    np.testing.assert_array_equal(again[1], test)


def test_train_without_test_is_split_too_and_test_may_lack_a_class_but_not_add_one(tmp_path):
    write_folder(tmp_path / "a", classes=("x", "y"), per_class=5, layout="flat")
    (tmp_path / "a" / "train").mkdir()
    for name in ("x", "y"):
        (tmp_path / "a" / name).rename(tmp_path / "a" / "train" / name)
    (_, y_train), (_, y_test) = datasets.load(tmp_path / "a")
    assert len(y_train) == 8 and len(y_test) == 2

    write_folder(tmp_path / "b", classes=("x", "y"), per_class=2)
    for f in (tmp_path / "b" / "test" / "x").iterdir():
        f.unlink()
    (tmp_path / "b" / "test" / "x").rmdir()
    (_, _), (_, y_test) = datasets.load(tmp_path / "b")
    np.testing.assert_array_equal(y_test, [1, 1])                    # y is still label 1
    write_image(tmp_path / "b" / "test" / "z" / "0.png", np.zeros((6, 5), np.uint8))
    with pytest.raises(DataError, match="a test class that the training split lacks"):
        datasets.load(tmp_path / "b")


def test_resize_makes_differently_sized_images_one_size_and_without_it_they_are_refused(tmp_path):
    write_image(tmp_path / "train" / "a" / "0.png", np.full((10, 8), 200, np.uint8))
    write_image(tmp_path / "train" / "a" / "1.png", np.full((10, 8), 100, np.uint8))
    odd = tmp_path / "train" / "b" / "0.png"
    write_image(odd, np.full((12, 12), 50, np.uint8))
    write_image(tmp_path / "test" / "b" / "0.png", np.full((10, 8), 50, np.uint8))
    with pytest.raises(DataError) as err:
        datasets.load(tmp_path)
    assert str(odd) in str(err.value) and "12x12 (HxW) but most images are 10x8" in str(err.value)
    (x_train, _), (x_test, _) = datasets.load(tmp_path, resize=(4, 6))
    assert x_train.shape == (3, 1, 4, 6) and x_test.shape == (1, 1, 4, 6)
    np.testing.assert_allclose(x_train[:, 0, 0, 0] * 255, [200, 100, 50], atol=1)   # flat images stay flat
    with pytest.raises(DataError, match="resize must be"):
        datasets.load(tmp_path, resize=(0, 6))


def test_a_mixed_folder_becomes_rgb_with_grey_images_in_three_equal_channels(tmp_path):
    grey = write_image(tmp_path / "train" / "a" / "0.png", RNG.integers(0, 256, (4, 4), dtype=np.uint8))
    colour = write_image(tmp_path / "train" / "b" / "0.png", RNG.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    rgba = RNG.integers(0, 256, (4, 4, 4), dtype=np.uint8)
    write_image(tmp_path / "test" / "b" / "0.png", rgba)
    (x_train, _), (x_test, _) = datasets.load(tmp_path)
    assert x_train.shape == (2, 3, 4, 4)
    np.testing.assert_array_equal(x_train[0] * 255, np.stack([grey] * 3).astype(np.float32))
    np.testing.assert_array_equal(x_train[1] * 255, colour.transpose(2, 0, 1).astype(np.float32))
    np.testing.assert_array_equal(x_test[0] * 255, rgba[..., :3].transpose(2, 0, 1).astype(np.float32))


def test_a_grey_palette_image_is_grey_and_a_colour_palette_is_colour(tmp_path):
    pixels = RNG.integers(0, 4, (5, 5), dtype=np.uint8)
    img = Image.fromarray(pixels, mode="L").convert("P")
    img.putpalette([v for g in (0, 80, 160, 240) for v in (g, g, g)])
    (tmp_path / "train" / "a").mkdir(parents=True)
    img.save(tmp_path / "train" / "a" / "0.png")
    write_image(tmp_path / "test" / "a" / "0.png", np.zeros((5, 5), np.uint8))
    (x_train, _), _ = datasets.load(tmp_path)
    assert x_train.shape == (1, 1, 5, 5)
    np.testing.assert_array_equal(x_train[0, 0] * 255, (pixels * 80).astype(np.float32))
    img.putpalette([v for g in (0, 80, 160, 240) for v in (g, 0, 255 - g)])
    img.save(tmp_path / "train" / "a" / "0.png")
    (x_train, _), _ = datasets.load(tmp_path)
    assert x_train.shape == (1, 3, 5, 5)


def test_hidden_files_and_files_beside_the_class_folders_are_skipped(tmp_path):
    write_folder(tmp_path, per_class=1)
    (tmp_path / "train" / "cat" / ".DS_Store").write_bytes(b"\x00\x01junk")
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "train" / "cat" / ".thumbnails").mkdir()
    (tmp_path / "train" / "cat" / ".thumbnails" / "00.png").write_text("not read")
    (tmp_path / "train" / "README.txt").write_text("two classes")
    write_image(tmp_path / "train" / "dog" / "more" / "9.png", np.zeros((6, 5), np.uint8))  # nested: counted
    (x_train, y_train), _ = datasets.load(tmp_path)
    assert datasets.class_names(tmp_path) == ["cat", "dog"]
    np.testing.assert_array_equal(y_train, [0, 1, 1])


def truncate(path):
    path.write_bytes(path.read_bytes()[:60])


BAD_FOLDERS = [
    ("a text file", lambda d: (d / "train" / "cat" / "notes.txt").write_text("hello"), "notes.txt",
     "not an image"),
    ("a text file named .png", lambda d: (d / "test" / "dog" / "fake.png").write_bytes(b"not a png"),
     "fake.png", "not an image"),
    ("a truncated PNG", lambda d: truncate(d / "train" / "dog" / "01.png"), "01.png", "truncated or corrupt"),
    ("a truncated JPEG", lambda d: (write_image(d / "train" / "dog" / "j.jpg", np.zeros((6, 5), np.uint8)),
                                    truncate(d / "train" / "dog" / "j.jpg")), "j.jpg", "truncated or corrupt"),
    ("a GIF", lambda d: Image.fromarray(np.zeros((6, 5), np.uint8)).save(d / "train" / "cat" / "g.gif"),
     "g.gif", "a GIF image; fastnet reads PNG and JPEG"),
    ("a 16-bit PNG", lambda d: Image.fromarray(np.zeros((6, 5), np.uint16)).save(d / "test" / "cat" / "w.png"),
     "w.png", "16-bit or float pixels"),
    ("an empty class folder", lambda d: (d / "train" / "emu").mkdir(), "emu", "an empty class folder"),
    ("no class folders", lambda d: shutil.rmtree(d / "train") or (d / "train").mkdir(), "train",
     "no class folders"),
    ("test/ without train/", lambda d: (d / "train").rename(d / "other"), "", "has test/ but no train/"),
]


@pytest.mark.parametrize("case, damage, named, message", BAD_FOLDERS, ids=[c for c, *_ in BAD_FOLDERS])
def test_a_bad_image_folder_is_a_data_error_naming_the_file(tmp_path, case, damage, named, message):
    write_folder(tmp_path, per_class=2)
    damage(tmp_path)
    with pytest.raises(DataError) as err:
        datasets.load(tmp_path)
    text = str(err.value)
    assert str(tmp_path) in text and named in text.split(":")[0] and message in text, text


def test_a_folder_that_is_neither_idx_nor_images_says_so(tmp_path):
    (tmp_path / "x.txt").write_text("?")
    with pytest.raises(DataError, match="neither the four IDX files .* nor one subfolder of images"):
        datasets.load(tmp_path)
    with pytest.raises(DataError, match="unknown data set .* an .npz file"):
        datasets.load(tmp_path / "nowhere.npz")


def test_without_pillow_an_image_folder_asks_for_the_images_extra(tmp_path, monkeypatch):
    write_folder(tmp_path, per_class=1)
    monkeypatch.setitem(sys.modules, "PIL", None)        # `from PIL import ...` raises ImportError
    with pytest.raises(FastnetError, match=r"needs Pillow: pip install 'fastnet\[images\]'"):
        datasets.load(tmp_path)


# --- fastnet train end to end ------------------------------------------------------------------


TRAIN = ("train", "--model", "mlp", "--batch-size", "8", "--epochs", "1", "--seed", "1")


def test_fastnet_train_on_an_npz_file(tmp_path):
    path = save_npz(tmp_path / "mnist.npz", **keras_arrays(n_train=32, n_test=16, shape=(8, 8), classes=4))
    out = run_fastnet(*TRAIN, "--dataset", str(path), "--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["epochs"]] == [1]
    model = fn.load(tmp_path / "run" / "model.safetensors")
    assert model.input_shape == (1, 8, 8) and model.output_shape == (4,)
    assert model.info["dataset"] == str(path) and "classes" not in model.info

    bad = tmp_path / "bad.npz"
    bad.write_bytes(path.read_bytes()[:100])
    out = run_fastnet(*TRAIN, "--dataset", str(bad), "--out", str(tmp_path / "bad_run"))
    assert out.returncode == 2 and str(bad) in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "bad_run").exists()


def test_fastnet_train_on_an_image_folder_with_resize_keeps_the_class_names(tmp_path):
    data = tmp_path / "pets"
    write_folder(data, classes=("dog", "cat", "bird"), per_class=4, size=(10, 12), colour=True)
    out = run_fastnet(*TRAIN, "--dataset", str(data), "--resize", "6x8", "--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    model = fn.load(tmp_path / "run" / "model.safetensors")
    assert model.input_shape == (3, 6, 8) and model.output_shape == (3,)
    assert model.info["classes"] == ["bird", "cat", "dog"] and model.info["resize"] == [6, 8]
    evaluated = run_fastnet("eval", str(tmp_path / "run" / "model.safetensors"), "--json")   # resizes again
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["images"] == 12

    out = run_fastnet(*TRAIN, "--dataset", str(data), "--resize", "6by8")
    assert out.returncode == 2 and "expected HxW" in out.stderr
