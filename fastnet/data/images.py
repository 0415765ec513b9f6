"""Read a data set from a folder of images, one subfolder per class, as torchvision's ImageFolder.

Layout:
    root/train/<class>/*.png|jpg   and   root/test/<class>/...   the two splits as they are; or
    root/<class>/*.png|jpg         one folder: a seeded `test_fraction` of each class (default 0.2,
                                   rounded, at least one image left for training) is held out as
                                   the test set, the same images every time.
A root with train/ but no test/ is split the same way. Classes are the subfolders of the training
split, sorted by name (torchvision's order: label i is the i-th name); test/ may lack a class but
not add one. Images are found in a class folder and its subfolders, sorted by path. Files and
folders whose names start with "." (.DS_Store, .ipynb_checkpoints) are skipped, and so are files
beside the class folders (a README); every other file in a class folder must be a PNG or JPEG
image, and a class folder without one is an error.

Channels: if every image is grey (Pillow modes 1, L, LA, or a palette of greys), one channel;
if any image is colour, every image is converted to RGB (a grey one to three equal channels, as
torchvision's loader does): three channels. Nothing is lost either way; alpha is dropped. 16-bit
and float images are refused.

Size: every image must have the same height and width unless `resize=(H, W)` is asked for
(bilinear, Pillow's); nothing is resized silently.

Pillow is optional (pip install 'fastnet[images]') and imported only here, when a folder is read.
"""

import collections
import os

import numpy as np

from ..errors import DataError, FastnetError

__all__ = ["load_image_folder", "class_names", "is_image_folder", "FORMATS"]

FORMATS = ("PNG", "JPEG")
_GREY = {"1", "L", "LA"}
_COLOUR = {"RGB", "RGBA", "CMYK", "YCbCr"}


def _pillow():
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise FastnetError("reading a folder of images needs Pillow: pip install 'fastnet[images]' "
                           "(or pip install Pillow)") from None
    return Image, UnidentifiedImageError


def is_image_folder(root):
    """Whether `root` looks like an image folder: a train/ folder or any (non-hidden) subfolder."""
    root = os.fspath(root)
    return os.path.isdir(root) and bool(_subfolders(root))


def _subfolders(folder):
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def _splits(root):
    """(train folder, test folder or None)."""
    train, test = os.path.join(root, "train"), os.path.join(root, "test")
    if os.path.isdir(train):
        return train, (test if os.path.isdir(test) else None)
    if os.path.isdir(test):
        raise DataError(f"{root}: has test/ but no train/; put the training images in {train}/<class>/")
    return root, None


def class_names(root):
    """The class names of an image folder, sorted: label i is class_names(root)[i]."""
    root = os.fspath(root)
    train, _ = _splits(root)
    names = _subfolders(train)
    if not names:
        raise DataError(f"{train}: no class folders; expected {train}/<class>/*.png (or .jpg), one folder "
                        f"per class")
    return names


def _files(folder):
    found = []
    for here, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(here, f) for f in sorted(files) if not f.startswith(".")]
    return found


def _scan(folder, classes):
    """(paths, labels) of one split, class by class."""
    paths, labels = [], []
    for name in _subfolders(folder):
        if name not in classes:
            raise DataError(f"{os.path.join(folder, name)}: a test class that the training split lacks "
                            f"(training classes: {', '.join(classes)})")
        files = _files(os.path.join(folder, name))
        if not files:
            raise DataError(f"{os.path.join(folder, name)}: an empty class folder; put its images "
                            f"(PNG or JPEG) there or remove it")
        paths += files
        labels += [classes.index(name)] * len(files)
    return paths, np.array(labels, np.int64)


def _hold_out(paths, labels, fraction, seed):
    """Split each class by a seeded permutation: (train indices, test indices), each sorted."""
    if not 0 < fraction < 1:
        raise DataError(f"test_fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        order = rows[rng.permutation(len(rows))]
        n_test = min(int(round(len(rows) * fraction)), len(rows) - 1)
        test += order[:n_test].tolist()
        train += order[n_test:].tolist()
    return np.sort(np.array(train, np.int64)), np.sort(np.array(test, np.int64))


def _check_resize(resize):
    if resize is None:
        return None
    try:
        h, w = (int(v) for v in resize)
        ok = (h, w) == tuple(resize) and h > 0 and w > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DataError(f"resize must be (height, width), two positive integers, got {resize!r}")
    return h, w


def load_image_folder(root, resize=None, test_fraction=0.2, seed=0):
    """((x_train, y_train), (x_test, y_test)) from a folder of images per class (see the module's
    notes): images float32 (N, C, H, W) in [0, 1], labels int64 indices into class_names(root)."""
    root = os.fspath(root)
    resize = _check_resize(resize)
    classes = class_names(root)
    train_dir, test_dir = _splits(root)
    paths, labels = _scan(train_dir, classes)
    if test_dir is not None:
        test_paths, test_labels = _scan(test_dir, classes)
        if not test_paths:
            raise DataError(f"{test_dir}: no class folders; expected {test_dir}/<class>/*.png (or .jpg)")
        parts = ((paths, labels), (test_paths, test_labels))
    else:
        rows_train, rows_test = _hold_out(paths, labels, test_fraction, seed)
        if not len(rows_test):
            raise DataError(f"{root}: too few images to hold out a test fraction of {test_fraction} "
                            f"({len(paths)} images); add more, or a test/ folder beside train/")
        parts = tuple(([paths[i] for i in rows], labels[rows]) for rows in (rows_train, rows_test))

    every = parts[0][0] + parts[1][0]
    headers = [_header(path) for path in every]
    channels = 1 if all(c == 1 for _, _, c in headers) else 3
    if resize is None:
        sizes = collections.Counter(size for _, size, _ in headers)
        (w, h), _ = sizes.most_common(1)[0]
        for path, (_, (width, height), _) in zip(every, headers):
            if (width, height) != (w, h):
                raise DataError(f"{path}: {height}x{width} (HxW) but most images are {h}x{w}; images must all "
                                f"be the same size, or pass resize=(H, W) (fastnet train --resize HxW)")
    else:
        h, w = resize
    out = []
    for split_paths, split_labels in parts:
        x = np.empty((len(split_paths), channels, h, w), np.uint8)
        for i, path in enumerate(split_paths):
            x[i] = _decode(path, channels, resize)
        out.append((x.astype(np.float32) / np.float32(255), split_labels))
    return tuple(out)


def _header(path):
    """(mode, (width, height), channels) from the file's header, without decoding its pixels."""
    Image, UnidentifiedImageError = _pillow()
    try:
        with Image.open(path) as img:
            kind, mode, size = img.format, img.mode, img.size
            palette = img.getpalette() if mode in ("P", "PA") else None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image (Pillow cannot read it); a class folder holds only PNG or "
                        f"JPEG images") from None
    except Exception as err:          # anything Pillow raises on a file means the file is bad
        raise DataError(f"{path}: truncated or corrupt image: {type(err).__name__}: {err}") from None
    if kind not in FORMATS:
        raise DataError(f"{path}: a {kind} image; fastnet reads PNG and JPEG (convert it)")
    if mode in _GREY:
        return mode, size, 1
    if mode in ("P", "PA"):
        grey = palette is not None and all(palette[i] == palette[i + 1] == palette[i + 2]
                                           for i in range(0, len(palette) - 2, 3))
        return mode, size, 1 if grey else 3
    if mode in _COLOUR:
        return mode, size, 3
    raise DataError(f"{path}: Pillow mode {mode} (16-bit or float pixels); fastnet reads 8-bit grey or "
                    f"colour images")


def _decode(path, channels, resize):
    """The image's pixels as uint8 (C, H, W), converted to L or RGB and resized if asked."""
    Image, _ = _pillow()
    try:
        with Image.open(path) as img:
            img.load()
            img = img.convert("L" if channels == 1 else "RGB")
            if resize is not None and img.size != (resize[1], resize[0]):
                img = img.resize((resize[1], resize[0]), Image.Resampling.BILINEAR)
            pixels = np.asarray(img, np.uint8)
    except Exception as err:          # truncated or corrupt data past a good header
        raise DataError(f"{path}: truncated or corrupt image: {type(err).__name__}: {err}") from None
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
