"""Readers for the MNIST file formats: IDX (gzip'd or raw) and the Keras `mnist.npz`.

Every reader checks what it reads (magic number, sizes, image shape, label range) and raises a
DataError that names the file and the problem, so a broken download never reaches training.
Headers are read and checked first and bodies streamed in bounded chunks, so a header that claims
more than the file holds, or a small archive that expands without end, costs no more memory than
the data that is really there and the header really declares.
"""

import gzip
import lzma
import math
import os
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from mnist_lab.errors import DataError, first_line
from models.common import IMAGE_SIZE, NUM_CLASSES

IDX_UBYTE = 0x08
IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
MAX_DIMENSIONS = 32  # numpy's own limit is 64; MNIST needs 3
CHUNK_BYTES = 1 << 20
TRAILING_CHECK_BYTES = 16 << 20
GZIP_SIGNATURE = b"\x1f\x8b"
DEFLATE_MAX_RATIO = 1032  # no deflate stream expands more (zlib's technical details), gzip's included

# What decompressing a damaged gzip or zip member can raise (BadGzipFile is an OSError).
BROKEN_COMPRESSION = (OSError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile)


def read_at_most(stream, limit):
    """Up to `limit` bytes from `stream`, read in chunks: memory follows the data, never a header's claim."""
    data = bytearray()
    while len(data) < limit:
        chunk = stream.read(min(CHUNK_BYTES, limit - len(data)))
        if not chunk:
            break
        data += chunk
    return data


def check_numpy_can_hold(shape, itemsize, where):
    """numpy refuses a shape whose nonzero sizes multiply past its index range, even holding nothing."""
    if math.prod(size for size in shape if size) * itemsize > np.iinfo(np.intp).max:
        raise DataError(f"{where}: the header declares the shape {shape}, beyond what numpy can index")


def read_idx_body(stream, path, file_size, can_hold, ndim=None, kind=None, expected_magic=None):
    """The array behind an IDX header, from an open stream of the file (decompressed if gzip'd).

    `file_size` is the raw file's size, to count trailing bytes (None for a gzip'd stream or a pipe);
    `can_hold` the most bytes the stream can yield (None: unknown), so a header that claims more is
    refused before anything is read.
    """
    head = read_at_most(stream, 4)
    if len(head) < 4:
        raise DataError(f"{path}: truncated: {len(head)} bytes, too short for an IDX header")
    magic = struct.unpack(">I", head)[0]
    rank = head[3]
    if head[:2] != b"\0\0" or head[2] != IDX_UBYTE or rank == 0:
        raise DataError(
            f"{path}: wrong magic number 0x{magic:08x}: not an IDX file of unsigned bytes "
            f"(expected 0x{IMAGES_MAGIC:08x} for images or 0x{LABELS_MAGIC:08x} for labels)"
        )
    # The rank is checked before the sizes are even read, so a file of the wrong kind costs nothing.
    if ndim is not None and rank != ndim:
        raise DataError(f"{path}: an IDX file of {rank} dimension(s), expected {kind} "
                        f"(magic 0x{expected_magic:08x})")
    if rank > MAX_DIMENSIONS:
        raise DataError(f"{path}: the IDX header declares {rank} dimensions; "
                        f"at most {MAX_DIMENSIONS} are read (MNIST files have 1 or 3)")
    dims = read_at_most(stream, 4 * rank)
    header_size = 4 + 4 * rank
    if len(dims) < 4 * rank:
        raise DataError(f"{path}: truncated inside the IDX header ({4 + len(dims)} bytes)")
    shape = struct.unpack(f">{rank}I", dims)
    count = math.prod(shape)  # a Python int: 32-bit sizes multiply without overflow
    expected = header_size + count
    if can_hold is not None and expected > can_hold:
        if file_size is None:
            raise DataError(f"{path}: truncated or broken gzip data: the header promises {shape} values "
                            f"({expected} bytes), more than its {can_hold // DEFLATE_MAX_RATIO} bytes "
                            "of gzip data can expand to")
        raise DataError(f"{path}: truncated: the header promises {shape} values ({expected} bytes) "
                        f"but the file holds {file_size} bytes")
    check_numpy_can_hold(shape, 1, path)
    # One byte more than the header declares is enough to tell trailing data from none.
    body = read_at_most(stream, count + 1)
    if len(body) < count:
        raise DataError(
            f"{path}: truncated: the header promises {shape} values "
            f"({expected} bytes) but the file holds {header_size + len(body)} bytes"
        )
    if len(body) > count:
        raise DataError(f"{path}: {count_trailing_bytes(stream, file_size, expected)} unexpected bytes "
                        f"after the {shape} values its header declares")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def count_trailing_bytes(stream, file_size, expected):
    """How many bytes follow the declared data: from the size of a raw file; for a gzip'd one by
    decompressing (and dropping) at most TRAILING_CHECK_BYTES more, which also lets a damaged
    stream fail its checksum instead of passing for trailing data."""
    if file_size is not None:
        return str(file_size - expected)
    # A gzip'd file, or a pipe
    trailing = 1  # the byte that showed there is more
    while trailing <= TRAILING_CHECK_BYTES:
        chunk = stream.read(CHUNK_BYTES)
        if not chunk:
            return str(trailing)
        trailing += len(chunk)
    return f"more than {TRAILING_CHECK_BYTES}"


def read_idx(path, ndim=None, kind=None, expected_magic=None):
    """Parse an IDX file of unsigned bytes (raw or gzip'd) into an array of the shape its header gives.

    With `ndim`, a file of another rank is refused from its header, before its body is read.
    """
    path = Path(path)
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise DataError(f"{path}: cannot read it ({error.strerror})") from None
    with handle:
        try:
            compressed = handle.read(2) == GZIP_SIGNATURE
            handle.seek(0)
            status = os.fstat(handle.fileno())
            file_size = status.st_size if stat.S_ISREG(status.st_mode) else None
            can_hold = None if file_size is None else file_size * (DEFLATE_MAX_RATIO if compressed else 1)
        except OSError as error:
            raise DataError(f"{path}: cannot read it ({error.strerror})") from None
        if not compressed:
            try:
                return read_idx_body(handle, path, file_size, can_hold, ndim, kind, expected_magic)
            except OSError as error:
                raise DataError(f"{path}: cannot read it ({error.strerror})") from None
        # Streamed: at most the header's size (plus one byte) is ever decompressed, whatever the file
        # expands to, and a header claiming more than the file could expand to is refused unread.
        try:
            with gzip.GzipFile(fileobj=handle, mode="rb") as stream:
                return read_idx_body(stream, path, None, can_hold, ndim, kind, expected_magic)
        except BROKEN_COMPRESSION as error:
            raise DataError(f"{path}: broken gzip data ({error})") from None


def check_image_layout(shape, dtype, where):
    if len(shape) != 3 or tuple(shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(
            f"{where}: images have shape {tuple(shape)}, expected (N, {IMAGE_SIZE}, {IMAGE_SIZE})"
        )
    if dtype != np.uint8:
        raise DataError(f"{where}: images are {dtype}, expected uint8 pixels 0-255")
    if shape[0] == 0:
        raise DataError(f"{where}: holds no images")


def check_label_layout(shape, dtype, where):
    if len(shape) != 1:
        raise DataError(f"{where}: labels have shape {tuple(shape)}, expected (N,)")
    if dtype.kind not in "iu":  # not timedelta64, which numpy counts as an integer type
        raise DataError(f"{where}: labels are {dtype}, expected integers 0-{NUM_CLASSES - 1}")


def check_images(images, where):
    check_image_layout(images.shape, images.dtype, where)
    return images


def check_labels(labels, where):
    check_label_layout(labels.shape, labels.dtype, where)
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        bad = labels[(labels < 0) | (labels >= NUM_CLASSES)][0]
        raise DataError(f"{where}: label {bad} is out of range, expected 0-{NUM_CLASSES - 1}")
    return labels.astype(np.uint8)


def check_pair(images, labels, images_where, labels_where):
    if len(images) != len(labels):
        raise DataError(
            f"{images_where} holds {len(images)} images but {labels_where} holds {len(labels)} labels"
        )


def load_idx_images(path):
    return check_images(read_idx(path, 3, "an image file", IMAGES_MAGIC), path)


def load_idx_labels(path):
    return check_labels(read_idx(path, 1, "a label file", LABELS_MAGIC), path)


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                      (2, 0): np.lib.format.read_array_header_2_0}


def read_npy_member(archive, member, where, check_layout):
    """One `.npy` member of an open zip: its header read and checked first, then its body, bounded."""
    with archive.open(member) as stream:
        try:
            version = np.lib.format.read_magic(stream)
            if version not in NPY_HEADER_READERS:
                raise DataError(f"{where}: .npy format version {version} is not read here")
            shape, fortran_order, dtype = NPY_HEADER_READERS[version](stream)
        except (DataError, *BROKEN_COMPRESSION):
            raise
        except Exception as error:  # noqa: BLE001
            # numpy parses the header text with ast and tokenize, which raise whatever garbage makes
            # them raise (ValueError, SyntaxError, tokenize.TokenError, RecursionError, ...).
            raise DataError(f"{where}: not a readable .npy array ({first_line(error)})") from None
        if dtype.hasobject:
            raise DataError(f"{where}: holds Python objects, which are never unpickled here")
        if any(size < 0 for size in shape):
            raise DataError(f"{where}: the header declares the impossible shape {shape}")
        check_layout(shape, dtype, where)
        check_numpy_can_hold(shape, dtype.itemsize, where)
        size = math.prod(shape) * dtype.itemsize
        if stream.tell() + size > member.file_size:  # the zip's declared size, which zipfile enforces
            raise DataError(f"{where}: truncated: the header promises {shape} {dtype} values "
                            f"({size} bytes) but the member holds {member.file_size} bytes in all")
        body = read_at_most(stream, size + 1)
        if len(body) < size:
            raise DataError(f"{where}: truncated: the header promises {shape} {dtype} values "
                            f"({size} bytes) but the member holds {len(body)} bytes")
        if len(body) > size:
            raise DataError(f"{where}: unexpected bytes after the {shape} {dtype} values its header declares")
    return np.frombuffer(body, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")


def load_npz(path):
    """Read a Keras-layout `mnist.npz` into (x_train, y_train, x_test, y_test), checked."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
            missing = [key for key in NPZ_KEYS if key not in members]
            if missing:
                raise DataError(
                    f"{path}: missing array(s) {', '.join(missing)}; expected {', '.join(NPZ_KEYS)}"
                )
            layouts = (check_image_layout, check_label_layout) * 2
            x_train, y_train, x_test, y_test = (
                read_npy_member(archive, members[key], f"{path} [{key}]", layout)
                for key, layout in zip(NPZ_KEYS, layouts)
            )
    except DataError:
        raise
    except (*BROKEN_COMPRESSION, ValueError, struct.error, RuntimeError, NotImplementedError) as error:
        # struct.error: a malformed zip record; RuntimeError: an encrypted member;
        # NotImplementedError: a compression method zipfile lacks.
        raise DataError(f"{path}: not a readable .npz archive ({first_line(error)})") from None
    y_train = check_labels(y_train, f"{path} [y_train]")
    y_test = check_labels(y_test, f"{path} [y_test]")
    check_pair(x_train, y_train, f"{path} [x_train]", "[y_train]")
    check_pair(x_test, y_test, f"{path} [x_test]", "[y_test]")
    return x_train, y_train, x_test, y_test
