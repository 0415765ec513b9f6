"""Datasets for users: `load` an MNIST-like data set by name or folder; `load_idx` / `save_idx`.

    (x_train, y_train), (x_test, y_test) = fastnet.datasets.load("fashion-mnist")

as keras.datasets.*.load_data() returns them, but ready for a network: images float32 in [0, 1]
with a channel axis (N, 1, 28, 28), labels int64.

A name is looked for, in order, in `root`, `root`/<name>, $FASTNET_DATA/<name>, ~/.cache/fastnet/<name> and
/usr/share/datasets/<name> (where Debian's dataset-fashion-mnist package puts Fashion-MNIST).
A folder holds the four IDX files under their usual names, raw or gzipped.
"""

import os

import numpy as np

from ..errors import DataError
from .idx import load_idx, save_idx

__all__ = ["load", "load_idx", "save_idx", "search_paths", "NAMES"]

NAMES = ("fashion-mnist", "mnist", "kmnist")
FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def search_paths(name, root=None):
    """The folders `load(name, root)` looks in, in order."""
    paths = []
    if root is not None:
        paths += [os.fspath(root), os.path.join(os.fspath(root), name)]
    if os.environ.get("FASTNET_DATA"):
        paths.append(os.path.join(os.environ["FASTNET_DATA"], name))
    paths.append(os.path.join(os.path.expanduser("~"), ".cache", "fastnet", name))
    paths.append(os.path.join("/usr/share/datasets", name))
    return paths


def load(name_or_path, root=None):
    """((x_train, y_train), (x_test, y_test)) of an MNIST-like data set, by name or folder."""
    name = os.fspath(name_or_path)
    if name in NAMES:
        folders = search_paths(name, root)
    elif os.path.isdir(name):
        folders = [name]
    else:
        raise DataError(f"unknown data set {name!r}: expected one of {', '.join(NAMES)} "
                        f"or a folder holding the four IDX files")
    for folder in folders:
        if _has_files(folder):
            return _load_folder(folder)
    tried = "\n  ".join(folders)
    hint = (" (on Debian/Ubuntu: apt-get install dataset-fashion-mnist)" if name == "fashion-mnist"
            else "")
    raise DataError(f"data set {name!r} not found; looked for {', '.join(FILES.values())} "
                    f"(raw or .gz) in:\n  {tried}\nPut the files in one of those folders{hint}.")


def _find(folder, stem):
    for candidate in (stem, stem + ".gz"):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None


def _has_files(folder):
    return all(_find(folder, stem) for stem in FILES.values())


def _load_folder(folder):
    arrays = {key: load_idx(_find(folder, stem)) for key, stem in FILES.items()}
    for split in ("train", "test"):
        x, y = arrays["x_" + split], arrays["y_" + split]
        if x.ndim != 3 or x.dtype != np.uint8:
            raise DataError(f"{folder}: {split} images must be uint8 of shape (N, H, W), "
                            f"got {x.dtype} {x.shape}")
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{folder}: {len(x)} {split} images but labels of shape {y.shape}")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise DataError(f"{folder}: train images are {arrays['x_train'].shape[1:]} but test images "
                        f"are {arrays['x_test'].shape[1:]}")
    images = {k: (arrays[k][:, None].astype(np.float32) / np.float32(255)) for k in ("x_train", "x_test")}
    return ((images["x_train"], arrays["y_train"].astype(np.int64)),
            (images["x_test"], arrays["y_test"].astype(np.int64)))
