"""Writing a trained model to `saved_models/<model>/` so that nothing good is ever half-replaced.

The folder is a TensorFlow SavedModel (`serving_default`: `image` float32 (None, 28, 28, 1) in
[0, 1] -> `probabilities` (None, 10)), with `model.keras`, `metadata.json`, `history.csv` and
`curves.png` beside it. Everything is written to a hidden temporary folder first, then swapped in.
"""

import ctypes
import json
import os
import shutil
from pathlib import Path

import keras
import tensorflow as tf

from mnist_lab.errors import UserError
from models import INPUT_SHAPE

MODELS_DIR = "saved_models"
SERVING_INPUT = "image"
SERVING_OUTPUT = "probabilities"
METADATA_FILE = "metadata.json"
MEMBERS_DIR = "members"  # inside MODELS_DIR: the seeds of `train.py --seeds/--ensemble`, not models of their own


def export_savedmodel(model, path):
    """Export `model` as a SavedModel whose `serving_default` signature takes `image`."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serving_default",
        fn=lambda image: {SERVING_OUTPUT: model(image, training=False)},
        input_signature=[tf.TensorSpec((None, *INPUT_SHAPE), tf.float32, name=SERVING_INPUT)],
    )
    archive.write_out(str(path), verbose=False)


def is_model_folder(path):
    return (Path(path) / "saved_model.pb").is_file() or (Path(path) / METADATA_FILE).is_file()


def check_writable_dir(folder, flag):
    """Create `folder` if needed and prove we can write in it, before any real work is done."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UserError(f"{flag} {folder}: cannot write there ({error.strerror})") from None


def model_folders(models_dir):
    """The SavedModel folders in `models_dir`, hidden staging and backup folders left out."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    return sorted(path.parent for path in models_dir.glob("*/saved_model.pb") if not path.parent.name.startswith("."))


def recover_interrupted(models_dir, log=print, own=None):
    """Undo what a killed export left in `models_dir`.

    A model set aside for a swap that never finished (`.cnn.old-PID`) goes back to its place if
    that place is empty; staging folders of dead runs are removed. A run counts as dead when
    nobody holds its model's lock (`own` is the model whose lock this process already holds).
    """
    from mnist_lab import resume

    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return
    for leftover in sorted(models_dir.glob(".*.*-*")):
        name, _, tag = leftover.name[1:].rpartition(".")
        kind, _, pid = tag.partition("-")
        target = models_dir / name
        if kind not in ("old", "tmp") or not pid.isdigit() or (name != own and resume.is_locked(target)):
            continue
        if kind == "old" and not target.exists():
            os.rename(leftover, target)
            log(f"recovered {target}: an earlier export was interrupted while replacing it")
        else:
            shutil.rmtree(leftover, ignore_errors=True)


def staging_folder(output):
    """A fresh hidden folder beside `output` (same filesystem, so the final rename is atomic)."""
    output = Path(output)
    staging = output.parent / f".{output.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def exchange(a, b):
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_cwd, rename_exchange = -100, 2
    return renameat2(at_cwd, os.fsencode(str(a)), at_cwd, os.fsencode(str(b)), rename_exchange) == 0


def replace_folder(new, final):
    """Put the complete folder `new` at `final`; the old one is removed only after the swap.

    Where the kernel can exchange the two folders atomically there is no moment without a model
    at `final`; elsewhere the old one is renamed aside first, and `recover_interrupted` puts it
    back if the process dies between the two renames.
    """
    new, final = Path(new), Path(final)
    if final.exists() and exchange(new, final):
        shutil.rmtree(new)  # `new` now holds the previous model
        return
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.rename(final, old)
    os.rename(new, final)
    if old is not None:
        shutil.rmtree(old)


def write_json(data, path):
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_metadata(folder):
    """A model folder's metadata.json as a dict, or {} when it is missing or unreadable."""
    try:
        return json.loads((Path(folder) / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return {}
