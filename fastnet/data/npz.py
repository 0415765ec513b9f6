"""Read an MNIST-like data set from one `.npz` file with the keys Keras's `mnist.npz` has:
x_train, y_train, x_test, y_test.

Decisions:
- np.load with allow_pickle=False: an object array (pickled Python objects, which could run code)
  is refused, never unpickled. Each array's .npy header is read first, so an object array, a
  wrong dtype or a header claiming more data than the archive holds is reported before any
  array is allocated.
- Images: (N, H, W) grey, or (N, H, W, C) channel-last with C = 1, 3 or 4 (as Keras's
  cifar10/mnist arrays are), returned as fastnet's (N, C, H, W) float32. Integer images must hold
  0..255 and are scaled to [0, 1] as the IDX files are; float images are taken as they are
  (float32) and must be finite.
- Labels: integer class indices >= 0, shape (N,) or (N, 1) (Keras's cifar10 saves (N, 1));
  returned as int64. Float, bool or one-hot (N, K) labels are refused.
- Extra keys are ignored. Everything wrong inside the file raises `DataError` naming the file.
"""

import os
import zipfile
import zlib

import numpy as np

from ..errors import DataError

__all__ = ["load_npz", "KEYS"]

KEYS = ("x_train", "y_train", "x_test", "y_test")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")   # a zip's first entry, or an empty zip's end record
_MAX_RATIO = {zipfile.ZIP_STORED: 1, zipfile.ZIP_DEFLATED: 1032}   # uncompressed / compressed, at most
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, NotImplementedError)


def load_npz(path):
    """((x_train, y_train), (x_test, y_test)) from a Keras-style .npz file: images float32
    (N, C, H, W), labels int64."""
    name = os.fspath(path)
    with open(name, "rb") as f:
        magic = f.read(4)
    if magic not in _ZIP_MAGIC:
        raise DataError(f"{name}: not an .npz file (a zip archive of .npy arrays, as np.savez writes); "
                        f"it starts with {magic.hex(' ') or 'nothing'}")
    try:
        with np.load(name, allow_pickle=False) as archive:
            missing = [key for key in KEYS if key not in archive.files]
            if missing:
                raise DataError(f"{name}: missing {', '.join(missing)}; an MNIST-like .npz holds "
                                f"{', '.join(KEYS)} (found: {', '.join(archive.files) or 'no arrays'})")
            arrays = {}
            for key in KEYS:
                _check_header(name, archive.zip, key)
                arrays[key] = archive[key]
    except DataError:
        raise
    except _READ_ERRORS as err:
        raise DataError(f"{name}: truncated or corrupt .npz file: {type(err).__name__}: {err}") from None

    out = []
    for split in ("train", "test"):
        x = _images(name, "x_" + split, arrays["x_" + split])
        y = _labels(name, "y_" + split, arrays["y_" + split])
        if len(y) != len(x):
            raise DataError(f"{name}: {len(x)} {split} images (x_{split}) but {len(y)} labels (y_{split})")
        out.append((x, y))
    if out[0][0].shape[1:] != out[1][0].shape[1:]:
        raise DataError(f"{name}: train images are (C, H, W) = {out[0][0].shape[1:]} but test images are "
                        f"{out[1][0].shape[1:]}")
    return tuple(out)


def _check_header(name, zip_file, key):
    """The member's dtype and shape, from its .npy header, checked before its data is read: np.load
    allocates the whole array the header claims before reading a byte of it."""
    member = key + ".npy"
    try:
        info = zip_file.getinfo(member)
    except KeyError:        # np.load lists a member "x_train" (no .npy) as x_train too: raw bytes
        raise DataError(f"{name}: {key} is not a .npy array (the archive has no {member})") from None
    if info.compress_type not in _MAX_RATIO:
        raise DataError(f"{name}: {member} is compressed with zip method {info.compress_type}; "
                        f"np.savez stores and np.savez_compressed deflates, nothing else")
    with zip_file.open(member) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            # 3.0 is 2.0 with a UTF-8 header; read as latin-1 the dict's keys and dtypes are the same
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise DataError(f"{name}: {member} has .npy format version {version}; known: 1.0, 2.0, 3.0")
    if dtype.hasobject:
        raise DataError(f"{name}: {key} is an object array (pickled Python objects); fastnet never unpickles "
                        f"data: save plain numeric arrays (np.savez(..., x_train=np.asarray(x, np.uint8)))")
    needed = dtype.itemsize * int(np.prod(shape, dtype=object))
    # The zip's own sizes can lie too: the uncompressed size is only a claim, but no more than
    # what its compressed bytes can inflate to (deflate: at most ~1032 to 1).
    held = min(info.file_size, _MAX_RATIO[info.compress_type] * info.compress_size)
    if needed > held:
        raise DataError(f"{name}: {key}'s header says {dtype} {shape} ({needed} bytes) but the archive "
                        f"holds only {held} bytes for it: truncated or corrupt")


def _images(name, key, x):
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[3] not in (1, 3, 4):
            hint = ("; it looks channel-first (N, C, H, W): save it channel-last, "
                    "x.transpose(0, 2, 3, 1)" if x.shape[1] in (1, 3, 4) else "")
            raise DataError(f"{name}: {key} has shape {x.shape}: colour images must be channel-last "
                            f"(N, H, W, C) with C = 1, 3 or 4{hint}")
        x = x.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"{name}: {key} must be images of shape (N, H, W) or (N, H, W, C), got shape {x.shape}")
    if len(x) == 0:
        raise DataError(f"{name}: {key} holds no images")
    if x.dtype.kind in "ui":
        low, high = int(x.min()), int(x.max())
        if low < 0 or high > 255:
            raise DataError(f"{name}: {key} is {x.dtype} with values {low}..{high}; integer images must "
                            f"hold 0..255 (uint8, as mnist.npz does)")
        return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255)
    if x.dtype.kind == "f":
        with np.errstate(over="ignore"):      # beyond float32: inf, reported below
            x = np.ascontiguousarray(x, dtype=np.float32)
        finite = np.isfinite(x)
        if not finite.all():
            where = np.unravel_index(int(np.flatnonzero(~finite)[0]), x.shape)
            raise DataError(f"{name}: {key} holds non-finite values (NaN or inf, or beyond float32), "
                            f"the first at image {where[0]} (C, H, W) = {tuple(int(i) for i in where[1:])}")
        return x
    raise DataError(f"{name}: {key} has dtype {x.dtype}; images must be uint8 (0..255) or float")


def _labels(name, key, y):
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{name}: {key} must be class indices of shape (N,) or (N, 1), got shape {y.shape}"
                        + ("; one-hot labels: save y.argmax(axis=1)" if y.ndim == 2 else ""))
    if y.dtype.kind not in "ui":
        raise DataError(f"{name}: {key} has dtype {y.dtype}; labels must be integer class indices")
    if len(y) and int(y.min()) < 0:
        raise DataError(f"{name}: {key} holds a negative label ({int(y.min())}); labels are class indices >= 0")
    return y.astype(np.int64)
