"""Readers for the MNIST file formats: IDX (gzip'd or raw) and the Keras `mnist.npz`.

Every reader checks what it reads (magic number, sizes, image shape, label range) and raises a
DataError that names the file and the problem, so a broken download never reaches training.
"""

import gzip
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from mnist_lab.errors import DataError

IMAGE_SIZE = 28
NUM_CLASSES = 10
IDX_UBYTE = 0x08
IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


def read_bytes(path):
    """The file's bytes, gunzipped when the file starts with the gzip signature."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read it ({error.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"{path}: broken gzip data ({error})") from None
    return raw


def read_idx(path):
    """Parse an IDX file of unsigned bytes into an array of the shape its header gives."""
    raw = read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path}: truncated: {len(raw)} bytes, too short for an IDX header")
    magic = struct.unpack(">I", raw[:4])[0]
    ndim = raw[3]
    if raw[:2] != b"\0\0" or raw[2] != IDX_UBYTE or ndim == 0:
        raise DataError(
            f"{path}: wrong magic number 0x{magic:08x}: not an IDX file of unsigned bytes "
            f"(expected 0x{IMAGES_MAGIC:08x} for images or 0x{LABELS_MAGIC:08x} for labels)"
        )
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(f"{path}: truncated inside the IDX header ({len(raw)} bytes)")
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    expected = header_size + int(np.prod(shape, dtype=np.int64))
    if len(raw) < expected:
        raise DataError(
            f"{path}: truncated: the header promises {shape} values "
            f"({expected} bytes) but the file holds {len(raw)} bytes"
        )
    if len(raw) > expected:
        raise DataError(
            f"{path}: {len(raw) - expected} unexpected bytes after the {shape} values its header declares"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


def check_images(images, where):
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(
            f"{where}: images have shape {images.shape}, expected (N, {IMAGE_SIZE}, {IMAGE_SIZE})"
        )
    if images.dtype != np.uint8:
        raise DataError(f"{where}: images are {images.dtype}, expected uint8 pixels 0-255")
    if len(images) == 0:
        raise DataError(f"{where}: holds no images")
    return images


def check_labels(labels, where):
    if labels.ndim != 1:
        raise DataError(f"{where}: labels have shape {labels.shape}, expected (N,)")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: labels are {labels.dtype}, expected integers 0-{NUM_CLASSES - 1}")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        bad = labels[(labels < 0) | (labels >= NUM_CLASSES)][0]
        raise DataError(f"{where}: label {bad} is out of range, expected 0-{NUM_CLASSES - 1}")
    return labels.astype(np.uint8)


def check_pair(images, labels, images_where, labels_where):
    if len(images) != len(labels):
        raise DataError(
            f"{images_where} holds {len(images)} images but {labels_where} holds {len(labels)} labels"
        )


def read_idx_of_rank(path, ndim, kind, magic):
    array = read_idx(path)
    if array.ndim != ndim:
        raise DataError(f"{path}: an IDX file of {array.ndim} dimension(s), expected {kind} "
                        f"(magic 0x{magic:08x})")
    return array


def load_idx_images(path):
    return check_images(read_idx_of_rank(path, 3, "an image file", IMAGES_MAGIC), path)


def load_idx_labels(path):
    return check_labels(read_idx_of_rank(path, 1, "a label file", LABELS_MAGIC), path)


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_npz(path):
    """Read a Keras-layout `mnist.npz` into (x_train, y_train, x_test, y_test), checked."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise DataError(
                    f"{path}: missing array(s) {', '.join(missing)}; expected {', '.join(NPZ_KEYS)}"
                )
            x_train, y_train, x_test, y_test = (archive[key] for key in NPZ_KEYS)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable .npz archive ({error})") from None
    check_images(x_train, f"{path} [x_train]")
    check_images(x_test, f"{path} [x_test]")
    y_train = check_labels(y_train, f"{path} [y_train]")
    y_test = check_labels(y_test, f"{path} [y_test]")
    check_pair(x_train, y_train, f"{path} [x_train]", "[y_train]")
    check_pair(x_test, y_test, f"{path} [x_test]", "[y_test]")
    return x_train, y_train, x_test, y_test
