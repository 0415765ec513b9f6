"""Datasets for users: `load` an MNIST-like data set by name or folder; `load_idx` / `save_idx`.

    (x_train, y_train), (x_test, y_test) = fastnet.datasets.load("fashion-mnist")

as keras.datasets.*.load_data() returns them, but ready for a network: images float32 in [0, 1]
with a channel axis (N, 1, 28, 28), labels int64.

A name is looked for, in order, in `root`, `root`/<name>, $FASTNET_DATA/<name>, ~/.cache/fastnet/<name> and
/usr/share/datasets/<name> (where Debian's dataset-fashion-mnist package puts Fashion-MNIST).
A folder holds the four IDX files under their usual names, raw or gzipped.

A path may also be a Keras-style `.npz` file (x_train, y_train, x_test, y_test: see data/npz.py)
or a folder of images, one subfolder per class, as torchvision's ImageFolder (train/ and test/, or
one folder split by a seeded fraction: see data/images.py; `class_names(path)` gives the classes).
"""

import hashlib
import http.client
import os
import urllib.request

import numpy as np

from ..atomic import atomic_write
from ..errors import DataError
from . import images
from .idx import load_idx, save_idx
from .npz import load_npz

__all__ = ["load", "fetch", "standardize", "split", "load_idx", "save_idx", "load_npz", "class_names",
           "search_paths", "NAMES", "SOURCES"]

NAMES = ("fashion-mnist", "mnist", "kmnist")
FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

# Where `fetch` downloads each data set (mirrors in order) and the SHA-256 of every file, as the
# projects publish them (cross-checked against several independent public download scripts).
# KMNIST has none here: without a checksum we could vouch for, its download is refused.
SOURCES = {
    "fashion-mnist": (["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"], {
        "train-images-idx3-ubyte.gz": "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
        "train-labels-idx1-ubyte.gz": "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
        "t10k-images-idx3-ubyte.gz": "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
        "t10k-labels-idx1-ubyte.gz": "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
    }),
    "mnist": (["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"], {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    }),
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


def load(name_or_path, root=None, download=False, resize=None, test_fraction=0.2, seed=0):
    """((x_train, y_train), (x_test, y_test)) of an MNIST-like data set: by name, or the path of
    a folder of IDX files, an .npz file or a folder of images per class.
    download=True fetches a named set that is not found (see `fetch`). resize=(H, W), and the
    seeded test_fraction held out where an image folder has no test/, apply to image folders."""
    name = os.fspath(name_or_path)
    if name in NAMES:
        folders = search_paths(name, root)
    elif os.path.isdir(name):
        if not _has_files(name) and images.is_image_folder(name):
            return images.load_image_folder(name, resize=resize, test_fraction=test_fraction, seed=seed)
        folders = [name]
    elif os.path.isfile(name):
        _no_resize(name, resize)
        return load_npz(name)
    else:
        raise DataError(f"unknown data set {name!r}: expected one of {', '.join(NAMES)}, a folder holding "
                        f"the four IDX files or one subfolder of images per class, or an .npz file")
    _no_resize(name, resize)
    for folder in folders:
        if _has_files(folder):
            return _load_folder(folder)
    if download and name in NAMES:
        return _load_folder(fetch(name, root))
    if name not in NAMES:
        raise DataError(f"{name}: neither the four IDX files ({', '.join(FILES.values())}, raw or .gz) "
                        f"nor one subfolder of images (PNG or JPEG) per class")
    tried = "\n  ".join(folders)
    hint = (" (on Debian/Ubuntu: apt-get install dataset-fashion-mnist)" if name == "fashion-mnist"
            else "")
    raise DataError(f"data set {name!r} not found; looked for {', '.join(FILES.values())} "
                    f"(raw or .gz) in:\n  {tried}\nPut the files in one of those folders{hint}"
                    f"{', or pass download=True (--download)' if name in SOURCES else ''}.")


def class_names(name_or_path):
    """The names of a data set's classes where it has them (an image folder's class folders,
    sorted: label i is the i-th), else None."""
    name = os.fspath(name_or_path)
    if name not in NAMES and os.path.isdir(name) and not _has_files(name) and images.is_image_folder(name):
        return images.class_names(name)
    return None


def _no_resize(name, resize):
    if resize is not None:
        raise DataError(f"{name}: resize applies to folders of images only; IDX and .npz images are "
                        f"used at the size they are stored")


def standardize(x, *others, mean=None, std=None):
    """(x - mean) / std for x and every array in `others`, with x's own mean and std unless given
    (as torchvision's Normalize with the training set's statistics). Returns the standardised
    arrays, then (mean, std)."""
    mean = float(x.mean()) if mean is None else float(mean)
    std = float(x.std()) if std is None else float(std)
    if not std > 0:
        raise DataError(f"cannot standardise: the standard deviation is {std}")
    scaled = [(a - np.float32(mean)) / np.float32(std) for a in (x, *others)]
    return (*scaled, (mean, std))


def split(x, y, fraction, seed=0):
    """((x_train, y_train), (x_val, y_val)): a seeded random `fraction` of the rows held out."""
    if not 0 < fraction < 1:
        raise DataError(f"a validation split must be a fraction in (0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(len(x))
    cut = len(x) - int(round(len(x) * fraction))
    return (x[order[:cut]], y[order[:cut]]), (x[order[cut:]], y[order[cut:]])


def fetch(name, root=None, timeout=60):
    """Fetch a named data set's four files into root/<name> (default: $FASTNET_DATA/<name> or
    ~/.cache/fastnet/<name>), checking each file's SHA-256; returns the folder.

    Each file is written to a temporary file and renamed only once complete and verified, so an
    interrupted or corrupt download never leaves a file that looks usable."""
    if name not in SOURCES:
        raise DataError(f"no verified download source for {name!r} (known: {', '.join(SOURCES)}); "
                        f"put its four IDX files in {search_paths(name)[-2]}")
    urls, checksums = SOURCES[name]
    base = root or os.environ.get("FASTNET_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "fastnet")
    folder = os.path.join(os.fspath(base), name)
    os.makedirs(folder, exist_ok=True)
    for filename, sha256 in checksums.items():
        target = os.path.join(folder, filename)
        if os.path.isfile(target) and _sha256_of(target) == sha256:
            continue
        failures = []
        for url in urls:
            try:
                _fetch(url + filename, target, sha256, timeout)
                break
            except (OSError, http.client.HTTPException, DataError) as err:
                failures.append(f"{url + filename}: {err}")
        else:
            raise DataError(f"could not download {name}'s {filename}:\n  " + "\n  ".join(failures)
                            + f"\nCopy the four files into {folder} by hand to use them offline.")
    return folder


def _fetch(url, target, sha256, timeout):
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as response, atomic_write(target) as f:
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            f.write(chunk)
        if digest.hexdigest() != sha256:     # raising here discards the temporary file
            raise DataError(f"SHA-256 mismatch (got {digest.hexdigest()}, expected {sha256}): "
                            f"corrupt or not the published file")


def _sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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
