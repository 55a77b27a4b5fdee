"""Property tests for the MNIST readers: generated IDX files (raw and gzip'd), `.npz` archives and whole
`--data-dir` folders, written to real files. The property: the input loads, and then its arrays have
the shapes its headers declare, or it is refused with the project's one-line DataError naming the
file; never another exception, and never memory in proportion to what a header claims (the headers
claim up to 2^32-1 per dimension, or 10^15 images, over bodies of a few bytes).

    python -m pytest tests/test_fuzz_data.py -q                        # the short 'ci' profile
    HYPOTHESIS_PROFILE=long python -m pytest tests/test_fuzz_data.py   # 2000 inputs a property

`--hypothesis-show-statistics` prints how many inputs each property tried and what became of them.
"""

import functools
import gzip
import itertools
import math
import shutil
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from mnist_lab.data import idx
from mnist_lab.data.sources import load_mnist
from mnist_lab.errors import DataError
from tests.conftest import IDX_NAMES

# Memory a read may use: a fixed allowance (chunks of 1 MiB, the 8 MiB an LZMA member's decoder
# takes) and twice the bytes really there (a growing buffer), however much more a header claims.
FIXED_MEMORY = 16 << 20

HUGE_DIMS = (2**16, 2**21, 2**22, 2**31 - 1, 2**31, 2**32 - 1)  # products that wrap int64, 'negative' int32s
dims = st.one_of(st.integers(0, 6), st.just(28), st.sampled_from(HUGE_DIMS), st.integers(0, 2**32 - 1))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One folder for the module: hypothesis runs many inputs inside one call of a test."""
    return tmp_path_factory.mktemp("fuzz_data")


counter = itertools.count()


def fresh_folder(workdir):
    folder = workdir / f"case{next(counter)}"
    folder.mkdir()
    return folder


def loads_or_refuses(read, path, present):
    """`read(path)`, or None when it raised a one-line DataError naming `path` (a file, or its folder).

    Any other exception fails the property; so does a peak of traced memory (numpy's buffers and
    Python's bytes alike) above FIXED_MEMORY + 2 * `present`, the bytes the input really holds.
    """
    tracemalloc.start()
    try:
        result = read(path)
    except DataError as error:
        message = str(error)
        assert "\n" not in message, message
        assert str(path) in message, message
        result = None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < FIXED_MEMORY + 2 * present, f"{peak} bytes traced reading {present} bytes"
    event("loaded" if result is not None else "refused")
    return result


# IDX: a header (magic, dtype code, rank 0-255, dimensions) and a body that fits it, falls short,
# runs over, or is anything at all; sometimes the header itself is cut.

@st.composite
def idx_files(draw):
    """An IDX file's bytes: mostly a header of some kind over a body of some kind, else any bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    prefix = draw(st.sampled_from([b"\0\0"] * 8 + [b"\0\1", b"\x1f\x8b", b"PK"]))
    code = draw(st.sampled_from([idx.IDX_UBYTE] * 14 + [0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0xFF]))
    shape = draw(st.one_of(
        st.tuples(st.integers(0, 4), st.just(28), st.just(28)),   # images, or nearly
        st.tuples(st.integers(0, 8)),                              # labels
        st.lists(dims, min_size=0, max_size=6).map(tuple),
        st.integers(0, 255).flatmap(lambda rank: st.lists(dims, min_size=rank, max_size=rank).map(tuple)),
    ))
    header = prefix + bytes([code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    count = math.prod(shape)
    body = draw(st.one_of(
        st.binary(min_size=count, max_size=count) if count <= 4096 else st.nothing(),
        st.binary(max_size=count if count <= 4096 else 64).map(lambda data: data[:max(count - 1, 0)]),
        st.binary(min_size=1, max_size=64).map(lambda extra: bytes(min(count, 4096)) + extra),
        st.binary(max_size=64),
        st.lists(st.integers(0, 9), min_size=count, max_size=count).map(bytes) if count <= 2000 else st.nothing(),
    ))
    raw = header + body
    cut = draw(st.one_of(st.none(), st.none(), st.none(), st.integers(0, len(header) - 1)))
    return raw if cut is None else raw[:cut]


def declared_shape(raw):
    """The oracle: the shape a well-formed IDX file of unsigned bytes declares and holds, else None."""
    if len(raw) < 4 or raw[:3] != bytes([0, 0, idx.IDX_UBYTE]) or not 0 < raw[3] <= idx.MAX_DIMENSIONS:
        return None
    rank = raw[3]
    if len(raw) < 4 + 4 * rank:
        return None
    shape = struct.unpack(f">{rank}I", raw[4:4 + 4 * rank])
    if math.prod(size for size in shape if size) > np.iinfo(np.intp).max:
        return None  # (0, 2^31-1, 28, 2^31-1): empty, yet numpy refuses the shape
    return shape if len(raw) == 4 + 4 * rank + math.prod(shape) else None


@st.composite
def gzip_of(draw, raw, rarely_damaged=False):
    """(`raw` gzip'd, whether it decompresses to `raw`, the most it decompresses to): intact; cut; a
    byte changed; or followed by members of 16 MiB of zeros each."""
    packed = gzip.compress(raw, compresslevel=1)
    damage = draw(st.sampled_from(["none"] * (9 if rarely_damaged else 2) + ["cut", "flip", "bomb"]))
    event(f"gzip: {damage}")
    if damage == "cut":
        return packed[:draw(st.integers(0, len(packed) - 1))], False, len(raw)
    if damage == "flip":
        where = draw(st.integers(0, len(packed) - 1))
        changed = packed[:where] + bytes([packed[where] ^ draw(st.integers(1, 255))]) + packed[where + 1:]
        return changed, False, len(changed) * idx.DEFLATE_MAX_RATIO
    if damage == "bomb":
        members = draw(st.integers(1, 3))
        return packed + zeros_member() * members, False, len(raw) + members * (16 << 20)
    return packed, True, len(raw)


@functools.cache
def zeros_member():
    return gzip.compress(bytes(16 << 20), compresslevel=9)  # about 16 KiB


def check_idx_readers(path, raw, intact=True, present=None):
    """Each IDX reader loads `path` as the shape its header declares, or refuses it in one line.

    `raw` is what the file decompresses to when `intact`; a damaged gzip file may still load when
    the damage missed what it holds (its timestamp, say), and then it must hold `raw`.
    """
    shape = declared_shape(raw)
    present = len(raw) if present is None else present
    array = loads_or_refuses(idx.read_idx, path, present)
    if array is not None:
        assert array.shape == shape and array.dtype == np.uint8
        assert array.tobytes() == raw[4 + 4 * len(shape):]
    elif intact:
        assert shape is None, f"a well-formed IDX file of shape {shape} was refused"
    images = loads_or_refuses(idx.load_idx_images, path, present)
    if images is not None:
        assert images.shape == shape and shape[1:] == (28, 28) and shape[0] > 0
    labels = loads_or_refuses(idx.load_idx_labels, path, present)
    if labels is not None:
        assert labels.shape == shape and labels.dtype == np.uint8 and labels.max(initial=0) <= 9


@given(raw=idx_files())
def test_a_raw_idx_file_loads_as_its_header_says_or_is_refused_in_one_line(workdir, raw):
    path = workdir / "train-images-idx3-ubyte"
    path.write_bytes(raw)
    check_idx_readers(path, raw)


@given(data=st.data(), raw=idx_files())
def test_a_gzipped_idx_file_loads_as_its_header_says_or_is_refused_in_one_line(workdir, data, raw):
    packed, intact, expands_to = data.draw(gzip_of(raw))
    path = workdir / "train-images-idx3-ubyte.gz"
    path.write_bytes(packed)
    check_idx_readers(path, raw, intact, expands_to)


# npz: members whose .npy headers declare any dtype, order and shape (negative, zero, 10^15 images)
# over bodies that fit, fall short, run over, or are anything; archives stored, deflated, bzip2'd or
# lzma'd, with members missing or named without `.npy`, and whole archives cut or changed.

DESCRS = ["|u1", "|u1", "|u1", "<u1", "<i8", ">i4", "<u2", "|i1", "|b1", "<f4", "|O", "<U3", "|S0", "|V0",
          "<m8[s]", "<M8[D]", [("a", "<i4")], ("|u1", (2,)), "float128", "<i9", ""]
NPY_VERSIONS = [(1, 0), (2, 0), (3, 0), (0, 9)]
COMPRESSIONS = [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA]


@st.composite
def sound_npy_members(draw, key, n):
    """A member as np.save writes it: uint8 images (n, 28, 28) or integer labels 0-9 (n,)."""
    if key.startswith("x"):
        descr, shape = "|u1", (n, 28, 28)
        body = draw(st.binary(min_size=n * 784, max_size=n * 784))
    else:
        descr, shape = draw(st.sampled_from(["|u1", "<i8", ">i4", "<u2", "|i1"])), (n,)
        body = np.array(draw(st.lists(st.integers(0, 9), min_size=n, max_size=n)), descr).tobytes()
    fortran = draw(st.booleans())
    header_text = f"{{'descr': {descr!r}, 'fortran_order': {fortran!r}, 'shape': {shape!r}, }}"
    return npy_bytes(draw(st.sampled_from(NPY_VERSIONS[:2])), header_text, body), shape


@st.composite
def wild_npy_members(draw, key):
    """A member whose header declares anything (or is anything) over a body of any kind."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200)), None
    n = draw(st.one_of(st.integers(0, 4), st.sampled_from([10**6, 10**12, 10**15, -1])))
    shape = draw(st.one_of(
        st.just((n, 28, 28) if key.startswith("x") else (n,)),
        st.lists(st.one_of(st.integers(-3, 30), st.sampled_from([10**12, 2**63])), max_size=5).map(tuple),
    ))
    descr = draw(st.sampled_from(DESCRS))
    fortran = draw(st.booleans())
    header_text = draw(st.one_of(
        st.just(f"{{'descr': {descr!r}, 'fortran_order': {fortran!r}, 'shape': {shape!r}, }}"),
        st.text(st.characters(max_codepoint=255), max_size=80),
    ))
    try:
        itemsize = np.dtype(descr if not isinstance(descr, list) else [tuple(field) for field in descr]).itemsize
    except (TypeError, ValueError):
        itemsize = 1
    size = math.prod(shape) * itemsize
    body = draw(st.one_of(
        st.binary(min_size=size, max_size=size) if 0 <= size <= 4096 else st.nothing(),
        st.lists(st.integers(0, 9), min_size=size, max_size=size).map(bytes) if 0 <= size <= 4096 else st.nothing(),
        st.binary(max_size=64),
        st.binary(min_size=1, max_size=16).map(lambda extra: bytes(min(max(size, 0), 4096)) + extra),
    ))
    return npy_bytes(draw(st.sampled_from(NPY_VERSIONS)), header_text, body), shape


def npy_bytes(version, header_text, body):
    header_text += " " * (-(len(header_text) + 11) % 64) + "\n"  # padded as np.save pads it
    encoded = header_text.encode("utf8" if version == (3, 0) else "latin1")
    length = struct.pack("<H" if version == (1, 0) else "<I", len(encoded))
    return b"\x93NUMPY" + bytes(version) + length + encoded + body


@st.composite
def npz_archives(draw):
    """(the archive's bytes, or None to write `members` with zipfile; the members; each key's declared
    shape; whether the archive is sound: four sound members whose counts agree)."""
    if draw(st.integers(0, 14)) == 0:
        return draw(st.binary(max_size=400)), {}, {}, False
    counts = {"train": draw(st.integers(1, 3)), "test": draw(st.integers(1, 3))}
    members, shapes, sound = {}, {}, True
    for key in idx.NPZ_KEYS:
        if draw(st.integers(0, 15)) == 0:
            sound = False
            continue  # missing
        name = key + draw(st.sampled_from([".npy"] * 5 + [""]))
        if draw(st.integers(0, 3)) > 0:
            members[name], shapes[key] = draw(sound_npy_members(key, counts[key.split("_")[1]]))
        else:
            members[name], shapes[key] = draw(wild_npy_members(key))
            sound = False
    return None, members, shapes, sound


def write_npz(path, archive, members, compression, damage):
    if archive is not None:
        path.write_bytes(archive)
        return
    with zipfile.ZipFile(path, "w", compression) as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
    if damage is not None:
        raw = path.read_bytes()
        where, change = damage
        where %= len(raw)
        path.write_bytes(raw[:where] if change == 0 else raw[:where] + bytes([raw[where] ^ change]) + raw[where + 1:])


def check_npz(path, shapes, present, sound):
    arrays = loads_or_refuses(idx.load_npz, path, present)
    assert arrays is not None or not sound, "a sound archive was refused"
    if arrays is not None:
        for key, array in zip(idx.NPZ_KEYS, arrays):
            assert array.shape == tuple(shapes[key]), (key, array.shape, shapes[key])
        assert arrays[0].shape[1:] == (28, 28) and len(arrays[0]) == len(arrays[1]) > 0
    return arrays


npz_damage = st.one_of(st.none(), st.none(), st.none(), st.tuples(st.integers(0, 10**6), st.integers(0, 255)))


@given(npz=npz_archives(), compression=st.sampled_from(COMPRESSIONS), damage=npz_damage)
def test_an_npz_archive_loads_as_its_headers_say_or_is_refused_in_one_line(workdir, npz, compression, damage):
    archive, members, shapes, sound = npz
    path = workdir / "mnist.npz"
    write_npz(path, archive, members, compression, damage)
    check_npz(path, shapes, len(archive or b"") + sum(map(len, members.values())), sound and damage is None)


# Whole --data-dir folders: any of the four IDX files under either spelling, raw or gzip'd, each
# consistent with the others or not, beside an npz or not; read the way every command reads them.

@st.composite
def idx_datasets(draw):
    """({key: bytes} for a subset of the four files, whether they make a sound dataset): mostly a
    consistent small one, with a file missing, a count off by one, a label of 10, or a file of any kind."""
    counts = {"train": draw(st.integers(0, 4)), "test": draw(st.integers(1, 4))}
    files, sound = {}, counts["train"] > 0
    for key in idx.NPZ_KEYS:
        if draw(st.integers(0, 11)) == 0:
            sound = False
            continue
        if draw(st.integers(0, 5)) == 0:
            files[key] = draw(idx_files())
            sound = False
            continue
        n = counts[key.split("_")[1]]
        if draw(st.integers(0, 7)) == 0:
            n, sound = n + 1, False
        if key.startswith("x"):
            shape, body = (n, 28, 28), draw(st.binary(min_size=n * 784, max_size=n * 784))
        else:
            labels = draw(st.lists(st.integers(0, 9), min_size=n, max_size=n))
            if labels and draw(st.integers(0, 7)) == 0:
                labels[-1], sound = 10, False
            shape, body = (n,), bytes(labels)
        files[key] = bytes([0, 0, idx.IDX_UBYTE, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + body
    return files, sound


@given(data=st.data(), dataset=idx_datasets(), spelling=st.sampled_from(sorted(IDX_NAMES)),
       compress=st.sampled_from(["none", "all", "some"]), npz=st.one_of(st.none(), st.none(), npz_archives()))
def test_a_data_dir_folder_loads_or_is_refused_in_one_line(workdir, data, dataset, spelling, compress, npz):
    files, sound = dataset
    folder = fresh_folder(workdir)
    present = 0
    try:
        for key, raw in files.items():
            gzipped = compress == "all" or (compress == "some" and data.draw(st.booleans()))
            name = IDX_NAMES[spelling][key] + (".gz" if gzipped else "")
            packed, intact, expands_to = data.draw(gzip_of(raw, rarely_damaged=True)) if gzipped \
                else (raw, True, len(raw))
            (folder / name).write_bytes(packed)
            present += expands_to
            sound = sound and intact
        if npz is not None:
            archive, members, _, _ = npz
            write_npz(folder / "mnist.npz", archive, members, zipfile.ZIP_DEFLATED, None)
            present += len(archive or b"") + sum(map(len, members.values()))
        mnist = loads_or_refuses(lambda path: load_mnist(path, log=lambda line: None), folder, present)
        assert mnist is not None or not sound, "a sound dataset was refused"
        if mnist is not None:
            assert not mnist.verified
            assert mnist.x_train.shape[1:] == mnist.x_test.shape[1:] == (28, 28)
            assert len(mnist.x_train) == len(mnist.y_train) > 0 and len(mnist.x_test) == len(mnist.y_test) > 0
            assert mnist.y_train.max() <= 9 and mnist.y_test.max() <= 9
            if len(files) == 4:  # the IDX files win over an npz beside them
                for key, array in zip(idx.NPZ_KEYS, mnist.arrays()):
                    assert array.shape == declared_shape(files[key])
    finally:
        shutil.rmtree(folder)
