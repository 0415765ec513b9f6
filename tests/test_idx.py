"""IDX files: round trips, hand-built bytes, malformed files, memory safety, atomic writes."""

import gzip
import os
import struct
import tracemalloc

import numpy as np
import pytest

import fastnet.atomic as atomic_module
from fastnet.data import idx as idx_module
from fastnet.data.idx import load_idx, save_idx
from fastnet.errors import DataError

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
SHAPES = [(7,), (3, 4, 5), (0, 28, 28), (2, 1, 3, 1)]
FASHION_LABELS = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"


def header(code, *shape):
    return struct.pack(f">2xBB{len(shape)}I", code, len(shape), *shape)


def write(tmp_path, data, name="f.idx"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- round trips -------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".idx", ".idx.gz"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip(tmp_path, dtype, shape, suffix):
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    else:
        array = rng.standard_normal(shape).astype(dtype)
    path = tmp_path / f"a{suffix}"
    save_idx(path, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == suffix.endswith(".gz")
    back = load_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    assert back.shape == shape
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable


def test_save_accepts_non_contiguous_and_big_endian(tmp_path):
    array = np.arange(24, dtype=">i4").reshape(4, 6)[:, ::2]
    save_idx(tmp_path / "a.idx", array)
    back = load_idx(tmp_path / "a.idx")
    assert back.dtype == np.int32 and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_gzip_detected_by_magic_not_suffix(tmp_path):
    raw = header(0x08, 3) + bytes([1, 2, 3])
    path = write(tmp_path, gzip.compress(raw), "no-suffix.idx")
    np.testing.assert_array_equal(load_idx(path), [1, 2, 3])
    # ...and a raw file named .gz is read as raw.
    path = write(tmp_path, raw, "lying.idx.gz")
    np.testing.assert_array_equal(load_idx(path), [1, 2, 3])


def test_saved_bytes_are_exact_and_gzip_is_reproducible(tmp_path):
    save_idx(tmp_path / "a.idx", np.array([[1, -2]], dtype=np.int16))
    assert (tmp_path / "a.idx").read_bytes() == header(0x0B, 1, 2) + b"\x00\x01\xff\xfe"
    save_idx(tmp_path / "a.idx.gz", np.arange(10, dtype=np.uint8))
    first = (tmp_path / "a.idx.gz").read_bytes()
    save_idx(tmp_path / "a.idx.gz", np.arange(10, dtype=np.uint8))
    assert (tmp_path / "a.idx.gz").read_bytes() == first


# --- hand-built files --------------------------------------------------------


def test_hand_built_uint8_images(tmp_path):
    data = header(0x08, 2, 2, 3) + bytes(range(12))
    array = load_idx(write(tmp_path, data))
    assert array.dtype == np.uint8 and array.shape == (2, 2, 3)
    assert array[1, 0, 2] == 8 and array[0, 1, 0] == 3


@pytest.mark.parametrize(
    "code, fmt, values, dtype",
    [
        (0x09, "b", [-128, -1, 0, 127], np.int8),
        (0x0B, "h", [-32768, -2, 258, 32767], np.int16),
        (0x0C, "i", [-(2**31), -2, 16909060, 2**31 - 1], np.int32),
        (0x0D, "f", [-1.5, 0.0, 3.25, 1e30], np.float32),
        (0x0E, "d", [-1.5, 0.1, 3.25, 1e300], np.float64),
    ],
)
def test_hand_built_big_endian(tmp_path, code, fmt, values, dtype):
    data = header(code, 2, 2) + struct.pack(f">4{fmt}", *values)
    array = load_idx(write(tmp_path, data))
    assert array.dtype == np.dtype(dtype) and array.dtype.isnative
    assert array.shape == (2, 2)
    np.testing.assert_array_equal(array.ravel(), np.array(values, dtype=dtype))


def test_hand_built_gzip(tmp_path):
    data = header(0x0C, 2) + struct.pack(">2i", 1, -70000)
    array = load_idx(write(tmp_path, gzip.compress(data), "x.gz"))
    np.testing.assert_array_equal(array, [1, -70000])


# --- malformed files ---------------------------------------------------------

MALFORMED = [
    (b"", "header too short: expected 4 bytes, found 0"),
    (b"\x00\x00\x08", "header too short: expected 4 bytes, found 3"),
    (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "bad magic: expected first two bytes 00 00, found 01 00"),
    (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "unknown type code 0x07"),
    (b"\x00\x00\x08\x00", "zero dimensions"),
    (b"\x00\x00\x08\x03" + struct.pack(">2I", 1, 1), r"3 dimensions need 12 size bytes, found 8"),
    (header(0x08, 10) + bytes(9), r"data truncated: shape \(10,\) of uint8 needs 10 data bytes, found only 9"),
    (header(0x0B, 2, 3) + bytes(11), r"data truncated: .* needs 12 data bytes, found only 11"),
    (header(0x08, 10) + bytes(11), r"trailing bytes: shape \(10,\) of uint8 needs 10 data bytes, found 11"),
]


@pytest.mark.parametrize("data, message", MALFORMED)
@pytest.mark.parametrize("compress", [False, True])
def test_malformed(tmp_path, data, message, compress):
    if compress:
        data = gzip.compress(data)
        if "data truncated" in message or "trailing bytes" in message:
            # The gzip trailer's ISIZE disagrees with the header: caught before reading data.
            message = "gzip trailer says .* truncated or corrupt"
    path = write(tmp_path, data, "bad.idx")
    with pytest.raises(DataError, match=message) as info:
        load_idx(path)
    assert "bad.idx" in str(info.value)


def test_truncated_gzip_stream(tmp_path):
    good = gzip.compress(header(0x08, 1000) + os.urandom(1000))
    path = write(tmp_path, good[:-10], "cut.gz")
    with pytest.raises(DataError, match="cut.gz.*(truncated|corrupt)"):
        load_idx(path)
    path = write(tmp_path, good[:15], "tiny.gz")
    with pytest.raises(DataError, match="truncated gzip stream: expected at least 18 bytes, found 15"):
        load_idx(path)


def test_truncated_gzip_with_matching_trailer(tmp_path):
    # Cut the deflate stream short but keep a trailer that agrees with the header.
    good = gzip.compress(header(0x08, 1000) + os.urandom(1000))
    path = write(tmp_path, good[:40] + good[-8:], "cut.gz")
    with pytest.raises(DataError, match="corrupt or truncated gzip stream"):
        load_idx(path)


def test_corrupt_gzip_crc(tmp_path):
    data = bytearray(gzip.compress(header(0x08, 5) + bytes(5)))
    data[-8] ^= 0xFF  # the CRC32 field
    with pytest.raises(DataError, match="corrupt or truncated gzip stream.*CRC"):
        load_idx(write(tmp_path, bytes(data), "crc.gz"))


def test_corrupt_gzip_header(tmp_path):
    data = b"\x1f\x8b\x08\xff" + bytes(30)  # reserved flag bits set
    with pytest.raises(DataError, match="corrupt or truncated gzip stream"):
        load_idx(write(tmp_path, data, "hdr.gz"))


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_idx(tmp_path / "nope.idx")


# --- no allocation from a lying header --------------------------------------

HUGE = (60000, 28, 28, 1000)  # float64: ~376 GB claimed


def peak_bytes(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def test_lying_header_raw_allocates_nothing(tmp_path):
    path = write(tmp_path, header(0x0E, *HUGE) + bytes(64))

    def load():
        with pytest.raises(DataError, match="data truncated.*found only 64"):
            load_idx(path)

    assert peak_bytes(load) < 1_000_000


def test_lying_header_gzip_allocates_nothing(tmp_path):
    raw = header(0x0E, *HUGE) + bytes(64)
    path = write(tmp_path, gzip.compress(raw), "huge.gz")

    def load():
        with pytest.raises(DataError, match="gzip trailer"):
            load_idx(path)

    assert peak_bytes(load) < 1_000_000


def test_lying_header_gzip_with_forged_trailer_allocates_nothing(tmp_path):
    # ISIZE forged to agree with the header, so the bounded read is what saves us.
    raw = header(0x0E, *HUGE) + os.urandom(300_000)
    total = len(header(0x0E, *HUGE)) + 8 * np.prod(HUGE, dtype=object)
    data = gzip.compress(raw)[:-4] + struct.pack("<I", total % 2**32)
    path = write(tmp_path, data, "forged.gz")

    def load():
        with pytest.raises(DataError, match="huge|forged.gz"):
            load_idx(path)

    assert peak_bytes(load) < 1_000_000


# --- save_idx: bad input and atomicity --------------------------------------


@pytest.mark.parametrize("dtype", [np.int64, np.uint16, np.float16, np.bool_, np.complex64])
def test_save_unsupported_dtype(tmp_path, dtype):
    with pytest.raises(DataError, match=f"cannot save dtype {np.dtype(dtype)} as IDX; supported: uint8"):
        save_idx(tmp_path / "a.idx", np.zeros(3, dtype=dtype))
    assert os.listdir(tmp_path) == []


def test_save_zero_dimensional(tmp_path):
    with pytest.raises(DataError, match="0-d array"):
        save_idx(tmp_path / "a.idx", np.uint8(3))


class FailingFile:
    """Wraps the temp file: the second write (the data, after the header) fails."""

    def __init__(self, f):
        self.f, self.writes = f, 0

    def write(self, data):
        self.writes += 1
        if self.writes == 2:
            raise OSError("disk on fire")
        return self.f.write(data)

    def __getattr__(self, attr):
        return getattr(self.f, attr)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
@pytest.mark.parametrize("fail_at", ["write", "fsync", "replace"])
def test_save_is_atomic(tmp_path, monkeypatch, name, fail_at):
    path = tmp_path / name
    save_idx(path, np.arange(5, dtype=np.uint8))
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk on fire")

    if fail_at == "write" and name.endswith(".gz"):
        monkeypatch.setattr(idx_module.gzip.GzipFile, "write", boom)
    elif fail_at == "write":
        monkeypatch.setattr(atomic_module, "open", lambda *a: FailingFile(open(*a)), raising=False)
    else:
        monkeypatch.setattr(idx_module.os, fail_at, boom)

    with pytest.raises(OSError, match="disk on fire"):
        save_idx(path, np.arange(100, dtype=np.float64))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [name]  # no temp file left behind


def test_save_creates_with_umask_permissions(tmp_path):
    save_idx(tmp_path / "a.idx", np.arange(3, dtype=np.uint8))
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.idx").stat().st_mode & 0o777 == 0o666 & ~umask


# --- real data ---------------------------------------------------------------


def test_fashion_mnist_test_labels():
    if not os.path.exists(FASHION_LABELS):
        if os.environ.get("FASTNET_REQUIRE_DATA") == "1":     # CI installs it: missing is a failure
            pytest.fail(f"{FASHION_LABELS} is missing")
        pytest.skip(f"{FASHION_LABELS} not installed (Debian package dataset-fashion-mnist)")
    labels = load_idx(FASHION_LABELS)
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert labels.min() == 0 and labels.max() == 9
