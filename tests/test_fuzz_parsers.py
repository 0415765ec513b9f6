"""Every parser fastnet has, fed hostile bytes: the IDX reader, the TOML spec loader, the checkpoint
loader (safetensors header, tensors, metadata) and the .npz reader.

Whatever the bytes, a parser ends in valid data or in its own error (DataError, SpecError,
CheckpointError) -- never another exception type, never a hang (an alarm stops a call after
ALARM_S seconds and fails the test), never an allocation the file cannot justify (tracemalloc's
peak during the call is bounded by a multiple of the file's size, plus a fixed allowance; a lying
header that made a parser allocate what it claims would blow far past it).

Random bytes first, then structure-aware cases: valid headers with lying sizes, dtypes, shapes,
names and offsets. Each test runs FUZZ_EXAMPLES examples (200 by default; set
FASTNET_FUZZ_EXAMPLES=5000 for a longer hunt).
"""

import gzip
import io
import json
import os
import signal
import struct
import tempfile
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fastnet as fn
from fastnet import checkpoint
from fastnet.data import load_idx
from fastnet.data.npz import load_npz

FUZZ_EXAMPLES = int(os.environ.get("FASTNET_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEWER = settings(FUZZ, max_examples=max(20, FUZZ_EXAMPLES // 4))   # the ones that compile a model

ALARM_S = 20
ALLOWANCE = 8 * 2**20          # fixed: interpreter and library bookkeeping during one call
FACTOR = 16                    # per byte of file: the data, a decoded copy, a converted copy, ...

FOLDER = tempfile.mkdtemp(prefix="fastnet-fuzz-")


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"a parser ran past {ALARM_S} s")


def parse(call, data, errors, suffix=".bin", factor=FACTOR):
    """Write `data` to a file, call `call(path)`; return its result or the allowed error raised.
    Any other exception (MemoryError included) propagates and fails the test."""
    path = os.path.join(FOLDER, "case" + suffix)
    with open(path, "wb") as f:
        f.write(data)
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(ALARM_S)
    tracemalloc.start()
    try:
        try:
            result = call(path)
        except errors as err:
            assert str(err), f"{type(err).__name__} without a message"
            result = err
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert peak <= ALLOWANCE + factor * len(data), f"peak {peak} bytes for a {len(data)}-byte file"
    return result


# -- IDX ------------------------------------------------------------------------------------------

IDX_CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def check_idx(data, gz=False):
    result = parse(load_idx, gzip.compress(data, mtime=0) if gz else data, fn.DataError)
    if isinstance(result, np.ndarray):
        # valid: the header's shape and type, and exactly the data bytes the file holds
        code, ndim = data[2], data[3]
        shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
        assert result.shape == shape
        assert result.dtype == np.dtype(IDX_CODES[code]).newbyteorder("=")
        assert result.nbytes == len(data) - 4 - 4 * ndim
    return result


@FUZZ
@given(st.binary(max_size=300))
def test_idx_random_bytes(data):
    check_idx(data)


@FUZZ
@given(st.binary(max_size=300))
def test_idx_random_bytes_gzipped(data):
    check_idx(data, gz=True)


@FUZZ
@given(st.binary(min_size=2, max_size=300))
def test_idx_random_bytes_with_a_gzip_magic(data):
    parse(load_idx, b"\x1f\x8b" + data, fn.DataError)


@st.composite
def idx_files(draw):
    """A well-formed header (any type code, 0..5 dimensions, sizes anywhere in uint32), followed by
    data whose length may or may not match what the header claims."""
    code = draw(st.sampled_from(sorted(IDX_CODES)) | st.integers(0, 255))
    ndim = draw(st.integers(0, 5))
    shape = draw(st.lists(st.integers(0, 6) | st.integers(0, 2**32 - 1), min_size=ndim, max_size=ndim))
    header = struct.pack(f">2xBB{ndim}I", code, ndim, *shape)
    needed = np.dtype(IDX_CODES.get(code, ">u1")).itemsize * int(np.prod(shape, dtype=object))
    length = draw(st.sampled_from([needed, needed - 1, needed + 1]) | st.integers(0, 200))
    assume(0 <= length <= 5000)
    return header + draw(st.binary(min_size=length, max_size=length))


@FUZZ
@given(idx_files(), st.booleans())
def test_idx_structured_headers_with_lying_sizes(data, gz):
    check_idx(data, gz)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_idx_a_header_claiming_a_billion_images_in_a_100_byte_file(gz):
    header = struct.pack(">2xBB3I", 0x08, 3, 10**9, 28, 28)
    err = check_idx(header + bytes(100 - len(header)), gz)
    assert isinstance(err, fn.DataError) and "78400000" in str(err)


def test_idx_gzip_trailer_lying_about_a_huge_size_allocates_nothing():
    # a gzip trailer consistent (mod 2**32) with a header of 2**32 + 16 bytes, but almost no data
    header = struct.pack(">2xBB1I", 0x08, 1, 2**32 - 8 + 4)      # total = 2**32 + 4 -> isize 4
    stream = bytearray(gzip.compress(header + b"ab", mtime=0))
    stream[-4:] = struct.pack("<I", (len(header) + 2**32 - 4) % 2**32)
    err = parse(load_idx, bytes(stream), fn.DataError)
    assert isinstance(err, fn.DataError)


# -- spec (TOML) ------------------------------------------------------------------------------------

def check_spec(data):
    # SpecError; FileNotFoundError cannot happen (the file is there)
    return parse(fn.from_spec, data, fn.SpecError, suffix=".toml")


@FUZZ
@given(st.binary(max_size=300))
def test_spec_random_bytes(data):
    check_spec(data)


@FUZZ
@given(st.text(alphabet=st.sampled_from('[]=."\n abcdefghijklmnopqrstuvwxyz_0123456789,{}-#'), max_size=300))
def test_spec_random_toml_like_text(text):
    check_spec(text.encode())


LAYER_TYPES = sorted(fn.Layer.types)
NAMES = st.sampled_from(["a", "b", "c", "input", "a:0", "a:1", "b:0", ""])
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 8) | st.integers() | st.floats(allow_nan=True)
    | st.text(max_size=5) | NAMES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8)
ARG_NAMES = st.sampled_from(["out_channels", "out_features", "kernel_size", "stride", "padding", "p",
                             "negative_slope", "name", "inputs", "axis", "sizes", "momentum", "eps",
                             "bias", "groups", "dilation", "in_channels", "num_features", "units"])


@st.composite
def spec_dicts(draw):
    """What tomllib could give: a dict of layers (registered types, mostly), argument values of every
    type, input shapes with huge or negative sizes, graph inputs naming each other (cycles too)."""
    layers = draw(st.lists(st.fixed_dictionaries(
        {"type": st.sampled_from(LAYER_TYPES) | st.text(max_size=6)},
        optional={"name": NAMES, "inputs": st.lists(NAMES, max_size=3) | NAMES | VALUES,
                  **{arg: VALUES for arg in draw(st.lists(ARG_NAMES, max_size=4, unique=True))}}),
        max_size=5))
    spec = {"layers": draw(st.just(layers) | VALUES)}
    if draw(st.booleans()):
        spec["input_shape"] = draw(st.lists(st.integers(1, 12) | st.integers() | VALUES, max_size=4) | VALUES)
    for key in ("input", "output"):
        if draw(st.integers(0, 3)) == 0:
            spec[key] = draw(NAMES | VALUES)
    return spec


def build_spec(spec):
    tracemalloc.start()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(ALARM_S)
    try:
        try:
            result = fn.from_spec(spec)
        except fn.SpecError as err:
            assert str(err)
            result = err
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        signal.alarm(0)
        tracemalloc.stop()
    assert peak <= ALLOWANCE, f"peak {peak} bytes building {spec!r}"
    return result


@FUZZ
@given(spec_dicts())
def test_spec_structured_dicts_of_every_shape(spec):
    build_spec(spec)


@pytest.mark.parametrize("spec, message", [
    ({"input_shape": [1, 4, 4], "layers": [{"type": "relu", "name": "a", "inputs": ["b"]},
                                          {"type": "relu", "name": "b", "inputs": ["a"]}]}, "cycle"),
    ({"input_shape": [1, 4, 4], "layers": [{"type": "relu", "name": "a", "inputs": ["a"]}]}, "cycle"),
    ({"input_shape": [10**30, 4], "layers": [{"type": "flatten"}, {"type": "dense", "out_features": 10**30}]},
     None),
    ({"input_shape": [4], "layers": [{"type": "dense", "out_features": 10**30}]}, None),
    ({"input_shape": [4], "layers": [{"type": "dense", "out_features": "ten"}]}, None),
    ({"input_shape": [4], "layers": [{"type": "dense", "out_features": [3]}]}, None),
    ({"input_shape": [4], "layers": [{"type": "dense", "out_features": 3.5}]}, None),
    ({"input_shape": [3, 8, 8], "layers": [{"type": "conv2d", "out_channels": 2, "kernel_size": 10**20}]}, None),
    ({"input_shape": [3, 8, 8], "layers": [{"type": "conv2d", "out_channels": 2, "kernel_size": -3}]}, None),
    ({"input_shape": [True, 8], "layers": [{"type": "flatten"}]}, None),
    ({"input_shape": "big", "layers": [{"type": "flatten"}]}, "input_shape"),
    ({"layers": {"type": "flatten"}}, "layers"),
    ({"layers": [{"type": 7}]}, "unknown type"),
])
def test_spec_lying_and_hostile_cases(spec, message):
    result = build_spec(spec)
    if message is not None:
        assert isinstance(result, fn.SpecError) and message in str(result)
    else:
        # a network the spec really describes, or a SpecError; never an allocation of its claim
        assert isinstance(result, (fn.SpecError, fn.Sequential, fn.Graph))


# -- checkpoints (safetensors) -----------------------------------------------------------------------

def _tiny_checkpoint():
    model = fn.Sequential([fn.Flatten(), fn.Dense(3)]).compile((2, 2), 4, optimizer=fn.Adam(lr=0.01), seed=0)
    path = os.path.join(FOLDER, "tiny.safetensors")
    model.save(path)
    with open(path, "rb") as f:
        return f.read()


TINY = _tiny_checkpoint()
(TINY_HEADER_LEN,) = struct.unpack("<Q", TINY[:8])
TINY_HEADER = json.loads(TINY[8:8 + TINY_HEADER_LEN])
TINY_DATA = TINY[8 + TINY_HEADER_LEN:]


def safetensors_bytes(header, data, header_len=None):
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if header_len is None else header_len) + raw + data


def check_read(data):
    result = parse(checkpoint.read, data, fn.CheckpointError, suffix=".safetensors")
    if not isinstance(result, Exception):
        tensors, metadata = result
        assert sum(t.nbytes for t in tensors.values()) <= len(data)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    return result


@pytest.fixture(autouse=True, scope="module")
def _memory_limit():
    """load's memory limit (fastnet/restore.py) at 16 MiB: a checkpoint here may ask for no more."""
    from fastnet import restore
    before, restore.MEMORY_LIMIT = restore.MEMORY_LIMIT, 16 * 2**20
    yield
    restore.MEMORY_LIMIT = before


def check_load(data, factor=FACTOR):
    return parse(fn.load, data, fn.CheckpointError, suffix=".safetensors", factor=factor)


@FUZZ
@given(st.binary(max_size=300))
def test_checkpoint_random_bytes(data):
    check_read(data)
    check_load(data)


@FUZZ
@given(st.data())
def test_checkpoint_a_real_file_with_bytes_changed_or_cut(data):
    raw = bytearray(TINY)
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    check_read(bytes(raw[:cut]) if data.draw(st.booleans()) else bytes(raw))


DTYPES = st.sampled_from(["F32", "F64", "F16", "BF16", "I64", "I32", "U8", "BOOL", "F8_E4M3", "X9", "f32", ""])


@st.composite
def lying_headers(draw):
    """A safetensors header of plausible entries with lying dtypes, shapes and offsets (overlapping,
    reversed, past the end), a header length that may lie, and data of any length."""
    data = draw(st.binary(max_size=200))
    entries = {}
    for name in draw(st.lists(st.text(max_size=6), max_size=4, unique=True)):
        start = draw(st.integers(0, 220) | st.integers(-5, 2**64))
        end = draw(st.integers(0, 220) | st.just(start) | st.integers(-5, 2**64))
        entries[name] = {"dtype": draw(DTYPES | VALUES),
                         "shape": draw(st.lists(st.integers(0, 10) | st.integers(-1, 2**64), max_size=3) | VALUES),
                         "data_offsets": draw(st.just([start, end]) | VALUES)}
        for key in draw(st.lists(st.sampled_from(["dtype", "shape", "data_offsets"]), max_size=1)):
            del entries[name][key]
    if draw(st.booleans()):
        entries["__metadata__"] = draw(st.dictionaries(st.text(max_size=6), st.text(max_size=6) | VALUES, max_size=3)
                                       | VALUES)
    raw_len = len(json.dumps(entries).encode())
    header_len = draw(st.just(raw_len) | st.integers(0, raw_len + 10) | st.integers(0, 2**64 - 1))
    return safetensors_bytes(entries, data, header_len)


@FUZZ
@given(lying_headers())
def test_checkpoint_safetensors_headers_with_lying_offsets_shapes_and_dtypes(data):
    check_read(data)


@pytest.mark.parametrize("change", [
    lambda h: h["1.weight"].update(data_offsets=[0, 10**12]),                  # past the end
    lambda h: h["1.weight"].update(data_offsets=[0, 8]),                       # short of its shape
    lambda h: h["1.weight"].update(shape=[10**9, 10**9]),                      # shape claims more
    lambda h: h["1.weight"].update(dtype="F64"),                               # dtype claims more
    lambda h: h["1.bias"].update(data_offsets=h["1.weight"]["data_offsets"]),  # overlapping
    lambda h: h["1.weight"].update(data_offsets=[8, 0]),                       # reversed
    lambda h: h["1.weight"].update(shape=[-1, 4]),
    lambda h: h.update(__metadata__="not a dict"),
    lambda h: h["__metadata__"].update(format=7),
])
def test_checkpoint_hand_made_lying_headers_are_checkpoint_errors(change):
    header = json.loads(json.dumps(TINY_HEADER))
    change(header)
    err = check_read(safetensors_bytes(header, TINY_DATA))
    assert isinstance(err, fn.CheckpointError)
    assert isinstance(check_load(safetensors_bytes(header, TINY_DATA)), fn.CheckpointError)


def test_checkpoint_a_header_length_of_2_to_the_64_minus_1():
    err = check_read(struct.pack("<Q", 2**64 - 1) + b"{}")
    assert isinstance(err, fn.CheckpointError)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10) | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)


@st.composite
def lying_metadata(draw):
    """The tiny checkpoint's metadata with some values replaced: JSON of the wrong type, or not JSON,
    or one key of a JSON object given a wrong value (a huge batch size, an unknown optimizer...)."""
    metadata = dict(TINY_HEADER["__metadata__"])
    for key in draw(st.lists(st.sampled_from(sorted(metadata)), min_size=1, max_size=3, unique=True)):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            metadata[key] = draw(st.text(max_size=8))
        elif kind == 1:
            metadata[key] = json.dumps(draw(JSON_VALUES))
        elif kind == 2:
            del metadata[key]
        else:
            try:
                value = json.loads(TINY_HEADER["__metadata__"][key])
            except ValueError:                  # "format", "fastnet_version": plain strings
                continue
            if isinstance(value, dict) and value:
                inner = draw(st.sampled_from(sorted(value)))
                value[inner] = draw(JSON_VALUES | st.sampled_from([10**12, 2**63, -1, 0, "SGD", "AdamW"]))
            metadata[key] = json.dumps(value)
    return metadata


@FEWER
@given(lying_metadata())
def test_checkpoint_metadata_with_wrong_types_and_values(metadata):
    header = dict(TINY_HEADER, __metadata__=metadata)
    # a real model is compiled: allow its fixed cost (kernels, buffers) over the file's size
    result = check_load(safetensors_bytes(header, TINY_DATA), factor=1024)
    assert isinstance(result, (fn.CheckpointError, fn.Model))


@pytest.mark.parametrize("key, value", [
    ("compile", {"batch_size": 10**12}), ("compile", {"batch_size": -4}), ("compile", {"batch_size": "4"}),
    ("compile", {"optimizer": {"type": "Pickle"}}), ("compile", {"optimizer": {"type": "SGD", "lr": "x"}}),
    ("compile", {"dtype": "object"}), ("compile", {"loss": 7}), ("compile", {"seed": "x"}),
    ("spec", {"layers": [{"type": "flatten"}, {"type": "dense", "out_features": 10**9}], "input_shape": [2, 2]}),
    ("spec", {"layers": [{"type": "flatten"}, {"type": "dense", "out_features": 3}], "input_shape": [10**6, 10**6]}),
    ("spec", [1, 2]), ("step", "ten"), ("epoch", "1e9"), ("shuffle_rng", {"state": 1}), ("info", "x"),
])
def test_checkpoint_metadata_hand_made_lies(key, value):
    metadata = dict(TINY_HEADER["__metadata__"])
    if isinstance(value, dict) and key == "compile":
        metadata[key] = json.dumps({**json.loads(metadata[key]), **value})
    else:
        metadata[key] = value if isinstance(value, str) else json.dumps(value)
    result = check_load(safetensors_bytes(dict(TINY_HEADER, __metadata__=metadata), TINY_DATA), factor=1024)
    assert isinstance(result, fn.CheckpointError), result


# -- .npz ------------------------------------------------------------------------------------------

def _npz_bytes(arrays, compressed=False):
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


GOOD_NPZ = {"x_train": np.zeros((3, 4, 4), np.uint8), "y_train": np.array([0, 1, 2]),
            "x_test": np.full((2, 4, 4), 255, np.uint8), "y_test": np.array([1, 1])}


def check_npz(data):
    result = parse(load_npz, data, fn.DataError, suffix=".npz")
    if not isinstance(result, Exception):
        (x, y), (xt, yt) = result
        assert x.dtype == xt.dtype == np.float32 and y.dtype == yt.dtype == np.int64
        assert len(x) == len(y) and len(xt) == len(yt)
    return result


@FUZZ
@given(st.binary(max_size=300), st.sampled_from([b"", b"PK\x03\x04", b"PK\x05\x06"]))
def test_npz_random_bytes(data, prefix):
    check_npz(prefix + data)


@FUZZ
@given(st.data(), st.booleans())
def test_npz_a_real_file_with_bytes_changed_or_cut(data, compressed):
    raw = bytearray(_npz_bytes(GOOD_NPZ, compressed))
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(4, len(raw)))
    check_npz(bytes(raw[:cut]) if data.draw(st.booleans()) else bytes(raw))


NPY_DTYPES = st.sampled_from(["|u1", "<i8", "<f4", ">f8", "|b1", "<c8", "|O", "<U3", "|V4", "<M8[s]",
                              "[('a', '<i4')]", "bogus", "<f2"])


def npy_bytes(descr, shape, data, version=1):
    descr = descr if descr.startswith("[") else repr(descr)
    header = f"{{'descr': {descr}, 'fortran_order': False, 'shape': {tuple(shape)!r}, }}"
    header = header.encode("latin1")
    if version == 1:
        pad = 16 - (10 + len(header) + 1) % 16
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header) + pad + 1) + header + b" " * pad + b"\n" + data
    pad = 16 - (12 + len(header) + 1) % 16
    return (b"\x93NUMPY" + bytes([version, 0]) + struct.pack("<I", len(header) + pad + 1) + header
            + b" " * pad + b"\n" + data)


@st.composite
def lying_npz(draw):
    """Archives of .npy members with lying headers: shapes claiming more (or less) than the data,
    object and odd dtypes, members under the wrong names, deflated or stored."""
    buffer = io.BytesIO()
    compression = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    with zipfile.ZipFile(buffer, "w", compression) as z, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)        # duplicate member names: on purpose
        for key in draw(st.lists(st.sampled_from(["x_train", "y_train", "x_test", "y_test"]), max_size=4,
                                 unique=True)) + ["x_train", "y_train", "x_test", "y_test"]:
            if key + ".npy" in z.namelist() or key in z.namelist():
                continue
            shape = draw(st.lists(st.integers(0, 5) | st.integers(0, 2**40), max_size=4))
            data = draw(st.binary(max_size=100))
            member = npy_bytes(draw(NPY_DTYPES), shape, data, draw(st.sampled_from([1, 2, 3])))
            name = key + draw(st.sampled_from([".npy", ".npy", "", ".NPY"]))
            z.writestr(name, member if draw(st.integers(0, 5)) else draw(st.binary(max_size=40)))
    return buffer.getvalue()


@FUZZ
@given(lying_npz())
def test_npz_members_with_lying_npy_headers(data):
    check_npz(data)


def _lying_member_npz(shape, data, descr="|u1", compression=zipfile.ZIP_STORED, version=1, name="x_train.npy"):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as z:
        for key, array in GOOD_NPZ.items():
            if not name.startswith(key):
                z.writestr(key + ".npy", npy_bytes(array.dtype.str, array.shape, array.tobytes()))
        z.writestr(name, npy_bytes(descr, shape, data, version))
    return buffer.getvalue()


def _with_claimed_size(raw, member, size):
    """The archive with `member`'s uncompressed size rewritten (local header and central directory)."""
    raw = bytearray(raw)
    encoded = member.encode()
    for signature, size_at, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        at = raw.find(signature)
        while at != -1:
            if raw[at + name_at:at + name_at + len(encoded)] == encoded:
                raw[at + size_at:at + size_at + 4] = struct.pack("<I", size)
            at = raw.find(signature, at + 4)
    return bytes(raw)


@pytest.mark.parametrize("case", ["billion-stored", "billion-v3", "billion-deflated-size-lie", "object",
                                  "no-npy-suffix", "structured"])
def test_npz_hand_made_lies_are_data_errors(case):
    if case == "billion-stored":
        raw = _lying_member_npz((10**9, 28, 28), bytes(50))
    elif case == "billion-v3":
        raw = _lying_member_npz((10**9, 28, 28), bytes(50), version=3)
    elif case == "billion-deflated-size-lie":
        # the zip claims the member uncompresses to ~4 GB; the .npy header agrees; the data is 50 bytes
        raw = _lying_member_npz((2**31, 2), bytes(50), compression=zipfile.ZIP_DEFLATED)
        raw = _with_claimed_size(raw, "x_train.npy", 2**32 - 1)
    elif case == "object":
        raw = _lying_member_npz((3,), bytes(50), descr="|O")
    elif case == "no-npy-suffix":
        raw = _lying_member_npz((3, 4, 4), bytes(48), name="x_train")
    else:
        raw = _lying_member_npz((3, 4, 4), bytes(192), descr="[('a', '<i4')]")
    err = check_npz(raw)
    assert isinstance(err, fn.DataError), err


def test_npz_the_good_file_loads():
    (x, y), (xt, yt) = check_npz(_npz_bytes(GOOD_NPZ, compressed=True))
    assert x.shape == (3, 1, 4, 4) and xt.max() == 1.0 and list(yt) == [1, 1]
