"""Read and write IDX files, the format of MNIST and Fashion-MNIST.

Layout: two zero bytes, a type code, the number of dimensions, one big-endian
uint32 per dimension, then the data, big-endian and row-major. Files may be
gzip-compressed; `load_idx` recognises gzip by its magic bytes, not the suffix.

Decisions:
- A header with zero dimensions is rejected (no IDX data set has one), and
  `save_idx` refuses 0-d arrays to match. A dimension of size 0 is fine.
- A missing file raises FileNotFoundError, as `open` does; everything wrong
  *inside* a file raises `DataError`.
- A gzip file must be a single gzip member: its ISIZE trailer is checked
  against the size the header claims (concatenated members would fail it).
"""

import gzip
import os
import struct
import zlib

import numpy as np

from ..atomic import atomic_write
from ..errors import DataError

# Type code -> big-endian dtype, as the IDX format defines them.
_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dtype.newbyteorder("="): code for code, dtype in _DTYPES.items()}
_KNOWN = ", ".join(f"0x{code:02X} ({dtype.name})" for code, dtype in _DTYPES.items())

_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_MIN_SIZE = 18  # 10-byte header + 8-byte trailer; anything shorter is not gzip
_CHUNK = 256 * 1024  # bounded reads: memory grows only with data actually present


def load_idx(path) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a native-endian array of its dtype and shape."""
    name = os.fspath(path)
    with open(name, "rb") as f:
        if f.read(2) == _GZIP_MAGIC:
            return _load_gzip(f, name)
        f.seek(0)
        dtype, shape, header_size = _read_header(f, name)
        needed = _nbytes(dtype, shape)
        # Compare with the file size before reading, so a lying header allocates nothing.
        present = os.fstat(f.fileno()).st_size - header_size
        _check_length(name, dtype, shape, needed, present)
        return _decode(f.read(needed), dtype, shape)


def _load_gzip(f, name):
    size = os.fstat(f.fileno()).st_size
    if size < _GZIP_MIN_SIZE:
        raise DataError(
            f"{name}: truncated gzip stream: expected at least {_GZIP_MIN_SIZE} bytes, found {size}"
        )
    f.seek(-4, os.SEEK_END)
    (isize,) = struct.unpack("<I", f.read(4))  # the trailer: uncompressed size mod 2**32
    f.seek(0)
    try:
        with gzip.GzipFile(fileobj=f, mode="rb") as gz:
            dtype, shape, header_size = _read_header(gz, name)
            needed = _nbytes(dtype, shape)
            total = header_size + needed
            if total % 2**32 != isize:
                raise DataError(
                    f"{name}: the IDX header implies {total} bytes uncompressed "
                    f"({total % 2**32} mod 2**32) but the gzip trailer says {isize}; "
                    "the file is truncated or corrupt"
                )
            # The trailer can lie too (it is only mod 2**32), so never allocate
            # `needed` up front -- GzipFile.read(n) would preallocate n bytes.
            data = bytearray()
            while len(data) < needed:
                chunk = gz.read(min(_CHUNK, needed - len(data)))
                if not chunk:
                    break
                data += chunk
            _check_length(name, dtype, shape, needed, len(data))
            # Reading on to the end makes gzip verify its CRC and length trailer.
            if gz.read(1):
                raise DataError(
                    f"{name}: trailing bytes: shape {shape} of {dtype.name} needs "
                    f"{needed} data bytes, found more"
                )
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{name}: corrupt or truncated gzip stream: {e}") from None
    return _decode(data, dtype, shape)


def _read_header(f, name):
    """Parse the header from a binary stream; return (big-endian dtype, shape, header size)."""
    head = f.read(4)
    if len(head) < 4:
        raise DataError(f"{name}: header too short: expected 4 bytes, found {len(head)}")
    if head[:2] != b"\x00\x00":
        raise DataError(f"{name}: bad magic: expected first two bytes 00 00, found {head[:2].hex(' ')}")
    code, ndim = head[2], head[3]
    if code not in _DTYPES:
        raise DataError(f"{name}: unknown type code 0x{code:02X}; expected one of {_KNOWN}")
    if ndim == 0:
        raise DataError(f"{name}: header has zero dimensions; expected at least 1")
    sizes = f.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise DataError(
            f"{name}: header too short: {ndim} dimensions need {4 * ndim} size bytes, "
            f"found {len(sizes)}"
        )
    shape = struct.unpack(f">{ndim}I", sizes)
    dtype = _DTYPES[code]
    nonzero = _nbytes(dtype, [size for size in shape if size])
    if 0 in shape and nonzero > np.iinfo(np.intp).max:
        # no data to check against, but no array can have this shape (NumPy refuses to make one)
        raise DataError(f"{name}: header shape {shape} describes an impossible array ({nonzero} bytes "
                        f"if the zero sizes were not zero)")
    return dtype, shape, 4 + 4 * ndim


def _nbytes(dtype, shape):
    # Python ints: a lying header cannot overflow this.
    n = dtype.itemsize
    for size in shape:
        n *= size
    return n


def _check_length(name, dtype, shape, needed, present):
    what = f"shape {shape} of {dtype.name} needs {needed} data bytes"
    if present < needed:
        raise DataError(f"{name}: data truncated: {what}, found only {present}")
    if present > needed:
        raise DataError(f"{name}: trailing bytes: {what}, found {present}")


def _decode(data, dtype, shape):
    # astype copies into a fresh, writable, native-endian array.
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def save_idx(path, array) -> None:
    """Write `array` as an IDX file, gzip-compressed if `path` ends with `.gz`.

    Atomic: the data goes to a temporary file in the same directory, is flushed
    and fsynced, then renamed onto `path`; a failure leaves `path` untouched.
    """
    name = os.fspath(path)
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _CODES:
        raise DataError(
            f"{name}: cannot save dtype {array.dtype} as IDX; supported: "
            f"{', '.join(d.name for d in _DTYPES.values())} (convert with .astype(...))"
        )
    if array.ndim == 0:
        raise DataError(f"{name}: cannot save a 0-d array as IDX; expected at least 1 dimension")
    if max(array.shape) >= 2**32:
        raise DataError(f"{name}: shape {array.shape} has a size that does not fit in uint32")
    header = struct.pack(f">2xBB{array.ndim}I", _CODES[native], array.ndim, *array.shape)
    data = array.astype(_DTYPES[_CODES[native]], copy=False).tobytes()  # big-endian, C order

    with atomic_write(name) as f:
        if name.endswith(".gz"):
            # mtime=0: the same array always gives the same bytes.
            with gzip.GzipFile(filename=os.path.basename(name), mode="wb", fileobj=f, mtime=0) as gz:
                gz.write(header)
                gz.write(data)
        else:
            f.write(header)
            f.write(data)
