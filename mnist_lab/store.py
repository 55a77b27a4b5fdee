"""The model store: listing, loading and writing the model folders under `saved_models/`.

A model folder is a TensorFlow SavedModel (`serving_default`: `image` float32 (None, 28, 28, 1)
in [0, 1] -> `probabilities` (None, 10)), with `model.keras`, `metadata.json` (a ModelRecord),
`history.csv` and `curves.png` beside it.

Writing is safe against kills: a writer holds the folder's lock (mnist_lab/lock.py), builds the
new folder in a hidden staging folder and swaps it in whole. Only writers clean up what a killed writer left; readers (evaluate, predict, serve) never
create, rename or delete anything here, so they work on a read-only models folder.
"""

import csv
import ctypes
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mnist_lab import plots
from mnist_lab.cli import counted
from mnist_lab.errors import ModelError, UserError, first_line
from mnist_lab.lock import is_locked
from mnist_lab.record import SERVING_INPUT, SERVING_OUTPUT, ModelRecord
from models import INPUT_SHAPE, NUM_CLASSES

# Reading


def model_folders(models_dir):
    """The SavedModel folders in `models_dir`, hidden staging and backup folders left out."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    return sorted(path.parent for path in models_dir.glob("*/saved_model.pb") if not path.parent.name.startswith("."))


def is_model_folder(path):
    return (Path(path) / "saved_model.pb").is_file() or (Path(path) / "metadata.json").is_file()


class SavedModelClassifier:
    """A SavedModel's `serving_default` signature, checked to take MNIST images, and its record."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.name = self.folder.name
        if not (self.folder / "saved_model.pb").is_file():
            raise ModelError(f"{self.name}: {self.folder} is not a SavedModel (no saved_model.pb)")
        try:
            self._loaded = tf.saved_model.load(str(self.folder))
        except Exception as error:  # TensorFlow raises many types for a damaged folder
            raise ModelError(f"{self.name}: cannot load the SavedModel in {self.folder} ({first_line(error)})") from None
        self._signature = self._loaded.signatures.get("serving_default")
        if self._signature is None:
            raise ModelError(f"{self.name}: the SavedModel has no serving_default signature")
        inputs = self._signature.structured_input_signature[1]
        expected = tf.TensorSpec((None, *INPUT_SHAPE), tf.float32)
        if len(inputs) != 1 or not all(spec.dtype == tf.float32
                                       and spec.shape.is_compatible_with(expected.shape)
                                       for spec in inputs.values()):
            found = ", ".join(f"{key} {spec.dtype.name} {spec.shape}" for key, spec in inputs.items())
            raise ModelError(f"{self.name}: its input does not fit MNIST: it takes {found or 'nothing'}, "
                             f"expected one float32 tensor of shape (None, 28, 28, 1)")
        self._input_name = next(iter(inputs))
        outputs = self._signature.structured_outputs
        self._output_name = SERVING_OUTPUT if SERVING_OUTPUT in outputs else next(iter(outputs))
        self.record = ModelRecord.load(self.folder)

    def predict(self, images, batch_size=1000):
        """Class probabilities (N, 10) for float32 images (N, 28, 28, 1) in [0, 1]."""
        try:
            batches = [self._signature(**{self._input_name: tf.constant(images[i:i + batch_size])})[self._output_name].numpy()
                       for i in range(0, len(images), batch_size)]
        except (tf.errors.OpError, ValueError, TypeError) as error:
            raise ModelError(f"{self.name}: failed on MNIST images ({first_line(error)})") from None
        probabilities = np.concatenate(batches)
        if probabilities.shape != (len(images), NUM_CLASSES):
            raise ModelError(f"{self.name}: its output has shape {probabilities.shape}, "
                             f"expected ({len(images)}, {NUM_CLASSES})")
        return probabilities

    def parameter_count(self):
        """The recorded count, else the SavedModel's variables counted (None if it exposes none)."""
        if self.record and self.record.parameters is not None:
            return self.record.parameters
        variables = getattr(self._loaded, "variables", None)
        return None if variables is None else int(sum(np.prod(variable.shape) for variable in variables))


# Writing


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


def check_output_dir(output):
    """Refuse an --output that would clobber something that is not one of our models."""
    output = Path(output)
    if output.is_symlink():  # the swap would move the link, not the folder it names
        target = os.readlink(output)
        raise UserError(f"--output {output}: a symbolic link (to {target}{'' if output.exists() else ', which does not exist'}); "
                        "give the folder itself")
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output}: exists and is a file, not a model folder")
    if output.is_dir() and any(output.iterdir()) and not is_model_folder(output):
        raise UserError(f"--output {output}: a non-empty folder that is not a saved model; "
                        "choose a new folder or an existing model's folder")
    check_writable_dir(output.parent, "--output")


def check_replaceable(output, train_images, epochs, replace=False):
    """Refuse to replace a model trained on more images or for more epochs than this run will be."""
    record = ModelRecord.load(output)
    if replace or record is None or not (Path(output) / "saved_model.pb").is_file():
        return
    trained_images, trained_epochs = record.data.get("train_images") or 0, record.epochs_run or 0
    if trained_images > train_images or trained_epochs > epochs:
        accuracy = f", test accuracy {100 * record.test_accuracy:.2f} %" if record.test_accuracy is not None else ""
        raise UserError(f"{output} holds {record.model} trained on {trained_images} images for "
                        f"{counted(trained_epochs, 'epoch')}{accuracy}; this run would replace it with "
                        f"{train_images} images and {counted(epochs, 'epoch')}: add --replace to do so, "
                        "or choose another --output")


def check_free_space(output, parameters):
    """Refuse, before training, a disk too full for the backup and the export.

    h5py crashes the process (SIGSEGV) when the disk fills while Keras writes the backup, so this
    is checked up front: weights and Adam's two slots, twice (backup and its previous copy), in
    model.keras and the SavedModel: about 40 bytes a parameter, plus graphs and plots.
    """
    needed = 40 * parameters + 8 * 2**20
    free = shutil.disk_usage(Path(output).parent).free
    if free < needed:
        raise UserError(f"--output {output}: {free / 2**20:.1f} MB free on its disk, and this run needs about "
                        f"{needed / 2**20:.0f} MB (backup, SavedModel, model.keras); free some space or choose "
                        "another --output")


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


def write_history(history, seconds, path):
    keys = list(history)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", *keys, "seconds"])
        for epoch in range(len(seconds)):
            writer.writerow([epoch + 1, *(f"{history[key][epoch]:.6g}" for key in keys),
                             f"{seconds[epoch]:.2f}"])


def write_model_folder(model, output, record, history=None, epoch_seconds=None):
    """SavedModel, model.keras, history, curves and record, swapped into `output` only when complete.

    The caller holds `output`'s lock (mnist_lab.lock.OutputLock).
    """
    staging = output.parent / f".{output.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        export_savedmodel(model, staging)
        model.save(staging / "model.keras")
        if history is not None:
            write_history(history, epoch_seconds, staging / "history.csv")
            plots.training_curves(history, staging / "curves.png", title=record.model)
        record.save(staging)
        replace_folder(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


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


def recover_interrupted(models_dir, log=print, own=None):
    """Undo what a killed writer left in `models_dir`; only writers call this.

    A model set aside for a swap that never finished (`.cnn.old-PID`) goes back to its place if
    that place is empty; staging folders of dead runs are removed. A run counts as dead when
    nobody holds its model's lock (`own` is the model whose lock this process already holds).
    """
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return
    for leftover in sorted(models_dir.glob(".*.*-*")):
        name, _, tag = leftover.name[1:].rpartition(".")
        kind, _, pid = tag.partition("-")
        target = models_dir / name
        if kind not in ("old", "tmp") or not pid.isdigit() or (name != own and is_locked(target)):
            continue
        if kind == "old" and not target.exists():
            os.rename(leftover, target)
            log(f"recovered {target}: an earlier export was interrupted while replacing it")
        else:
            shutil.rmtree(leftover, ignore_errors=True)
