"""The one writer: everything that creates, replaces or cleans up a model folder under `saved_models/`.

Train, the ensemble, the NumPy net and the tuner's final fit all write through `ModelWriter`:

    with ModelWriter(config.output_dir(), log) as writer:    # checks --output, locks, recovers a dead run
        data = load_mnist(...)
        writer.check_replaceable(len(splits.x_train), epochs, config.replace)
        ...                                                  # train; resume from writer.backup
        writer.write(model, record, history, epoch_seconds)  # stage, then swap in whole

Beside a model folder `cnn/` this module, and nothing else, makes the hidden siblings (named by
reader.sibling): `.cnn.lock` (the one-writer lock, a flock that the kernel releases however the
process ends), `.cnn.backup` (a training run's per-epoch backup, mnist_lab/resume.py), `.cnn.tmp-PID`
(the new folder being staged) and `.cnn.old-PID` (the previous folder, set aside where the kernel
cannot swap two folders atomically). Readers never create, rename or delete any of them.
"""

import csv
import ctypes
import errno
import fcntl
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mnist_lab import plots
from mnist_lab.errors import ModelError, UserError, first_line
from mnist_lab.flags import check_writable_dir
from mnist_lab.data.sources import sha256_file
from mnist_lab.reader import FORMAT_FILES, has_savedmodel, is_locked, load_classifier, parse_sibling, sibling
from mnist_lab.record import SERVING_INPUT, SERVING_OUTPUT, ModelRecord
from mnist_lab.startup import native_output_hidden
from mnist_lab.text import counted
from models import INPUT_SHAPE


# Checks that need no lock: made before any work, so a bad flag fails at once


def check_output_dir(output, flag="--output"):
    """Refuse an --output that would clobber something that is not one of our models."""
    output = Path(output)
    if output.is_symlink():  # the swap would move the link, not the folder it names
        target = os.readlink(output)
        raise UserError(f"{flag} {output}: a symbolic link (to {target}{'' if output.exists() else ', which does not exist'}); "
                        "give the folder itself")
    if output.exists() and not output.is_dir():
        raise UserError(f"{flag} {output}: exists and is a file, not a model folder")
    if output.is_dir() and any(output.iterdir()) and not ((output / "saved_model.pb").is_file()
                                                         or (output / "metadata.json").is_file()):
        raise UserError(f"{flag} {output}: a non-empty folder that is not a saved model; "
                        "choose a new folder or an existing model's folder")
    check_writable_dir(output.parent, flag)


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


# The lock


class FolderLock:
    """An exclusive, non-blocking lock on a folder for the length of a `with` block.

    The lock file names its holder while held and is removed when the block ends.
    """

    def __init__(self, folder, flag="--output"):
        self.folder = Path(folder)
        self.path = sibling(self.folder, "lock")
        self.flag = flag  # the flag that chooses another folder, for the message

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            self._handle = open(self.path, "a+")
            try:
                fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._handle.seek(0)
                holder = self._handle.read().strip() or "another process"
                self._handle.close()
                raise UserError(f"{self.folder} is being written by another run ({holder}); wait for it "
                                f"to finish or choose another {self.flag}") from None
            try:  # the holder before us may have removed the file we opened: then lock the new one
                if os.stat(self.path).st_ino == os.fstat(self._handle.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            self._handle.close()
        self._handle.truncate(0)
        self._handle.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                           f"{shlex.join([os.path.basename(sys.executable), *sys.argv])}")
        self._handle.flush()
        return self

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)  # while still held: nobody can lock the file we remove
        self._handle.close()  # closing releases the flock


# The writer


class ModelWriter:
    """The one way to write a model folder: its output checked at once, its lock held for the whole
    `with` block (taken before any work), a dead run's leftovers undone, a better model guarded,
    and the new folder staged and swapped in whole.

    Entering a writer that is already entered does nothing more: the tuner takes its output's writer
    before the search, and the final fit it runs writes through that same writer.
    """

    def __init__(self, output, log=print):
        self.output = Path(output)
        self.log = log
        self.backup = sibling(self.output, "backup")
        self._depth = 0
        self._checked = None
        check_output_dir(self.output)

    def __enter__(self):
        if self._depth == 0:
            self._lock = FolderLock(self.output).__enter__()
            try:
                recover_interrupted(self.output.parent, self.log, own=self.output)
            except BaseException:
                self._lock.__exit__(None, None, None)
                raise
        self._depth += 1
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0:
            self._lock.__exit__(*exc)

    def check_replaceable(self, train_images, epochs, replace=False):
        """Refuse to replace a model trained on more images or for more epochs than this run will be."""
        if self._checked == (train_images, epochs, replace):
            return
        record = ModelRecord.load(self.output)
        if not replace and record is not None and has_savedmodel(self.output):
            trained_images, trained_epochs = record.data.get("train_images") or 0, record.epochs_run or 0
            if trained_images > train_images or trained_epochs > epochs:
                accuracy = (f", test accuracy {100 * record.test_accuracy:.2f} %"
                            if record.test_accuracy is not None else "")
                raise UserError(f"{self.output} holds {record.model} trained on {trained_images} images for "
                                f"{counted(trained_epochs, 'epoch')}{accuracy}; this run would replace it with "
                                f"{train_images} images and {counted(epochs, 'epoch')}: add --replace to do so, "
                                "or choose another --output")
        self._checked = (train_images, epochs, replace)

    def write(self, model, record, history=None, epoch_seconds=None):
        """SavedModel, model.keras, history, curves and record, swapped into the output only when complete;
        then the run's backup goes (only now: a kill during the export still resumes)."""
        def fill(staging):
            export_savedmodel(model, staging)
            model.save(staging / "model.keras")
            record.formats = export_formats(model, staging, self.log)
            if history is not None:
                write_history(history, epoch_seconds, staging / "history.csv")
                plots.training_curves(history, staging / "curves.png", title=record.model)
            record.save(staging)

        self._swap_in(fill)
        shutil.rmtree(self.backup, ignore_errors=True)

    def add_formats(self, model):
        """model.onnx and model.tflite written anew into the existing folder (one trained before they
        were, or whose files are damaged) from `model`, its model.keras; staged and swapped like any
        write. Returns the folder's updated record."""
        def fill(staging):
            shutil.copytree(self.output, staging, symlinks=True, dirs_exist_ok=True)
            record = ModelRecord.load(staging)
            record.formats = export_formats(model, staging, self.log)
            record.save(staging)
            return record

        return self._swap_in(fill)

    def _swap_in(self, fill):
        """`fill` a staging folder, then swap it in whole and return what `fill` returned; on any failure
        the staging folder goes and the model in place is untouched."""
        assert self._depth, "called inside the writer's `with` block, holding the lock"
        staging = sibling(self.output, "tmp", os.getpid())
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            filled = fill(staging)
            replace_folder(staging, self.output)
        except BaseException as error:
            shutil.rmtree(staging, ignore_errors=True)
            if disk_full(error):  # TensorFlow's writers say so in a ResourceExhaustedError, Python's in OSError
                free = shutil.disk_usage(self.output.parent).free
                raise UserError(f"cannot write {self.output}: its disk is full ({free / 2**20:.1f} MB free); "
                                f"{'the model in place is untouched; ' if self.output.exists() else ''}"
                                "free some space and run the same command again") from None
            raise
        return filled


def disk_full(error):
    return ((isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT))
            or (isinstance(error, tf.errors.ResourceExhaustedError) and "No space left" in str(error)))


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


# A format whose probabilities differ from Keras' by more than this on the probe images is not written.
FORMAT_TOLERANCE = 1e-4


def export_formats(model, folder, log=print):
    """model.onnx and model.tflite (LiteRT) beside the SavedModel, by Keras' own `model.export`, each
    loaded back on its own runtime and compared with Keras on probe images; returns what the record
    keeps of each: its file, SHA-256 and largest probability difference (or why it was not written)."""
    probe = np.random.default_rng(0).random((32, *INPUT_SHAPE)).astype(np.float32)
    expected = np.asarray(model(probe, training=False), np.float32)
    formats = {}
    for runtime, name in FORMAT_FILES.items():
        path = Path(folder) / name
        try:
            with native_output_hidden(stdout=True):  # the converters' and runtimes' notices
                model.export(str(path), format=runtime, verbose=False)
                formats[runtime] = {"file": name, "sha256": sha256_file(path)}
                answered = load_classifier(folder, runtime, formats).predict(probe)
            difference = float(np.abs(answered - expected).max())
        except (ModelError, ValueError, TypeError, RuntimeError, NotImplementedError, ImportError) as error:
            path.unlink(missing_ok=True)
            formats[runtime] = {"error": first_line(error)}
            log(f"{Path(folder).name}: no {name}: the {runtime} export failed ({first_line(error)})")
            continue
        if not difference <= FORMAT_TOLERANCE:
            path.unlink()
            formats[runtime] = {"error": f"its probabilities differ from Keras' by {difference:.2g}"}
            log(f"{Path(folder).name}: no {name}: its probabilities differ from Keras' by {difference:.2g}")
            continue
        formats[runtime]["max_difference"] = difference
    return formats


def write_history(history, seconds, path):
    keys = list(history)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", *keys, "seconds"])
        for epoch in range(len(seconds)):
            writer.writerow([epoch + 1, *(f"{history[key][epoch]:.6g}" for key in keys),
                             f"{seconds[epoch]:.2f}"])


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
        old = sibling(final, "old", os.getpid())
        os.rename(final, old)
    os.rename(new, final)
    if old is not None:
        shutil.rmtree(old)


def recover_interrupted(models_dir, log=print, own=None):
    """Undo what a killed writer left in `models_dir`; only writers call this.

    A model set aside for a swap that never finished (`.cnn.old-PID`) goes back to its place if
    that place is empty; staging folders of dead runs are removed. A run counts as dead when
    nobody holds its model's lock (`own` is the folder whose lock this process already holds).
    """
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return
    for leftover in sorted(models_dir.glob(".*.*-*")):
        parsed = parse_sibling(leftover)
        if parsed is None:
            continue
        target, kind, _ = parsed
        if (own is None or target != Path(own)) and is_locked(target):
            continue
        if kind == "old" and not target.exists():
            os.rename(leftover, target)
            log(f"recovered {target}: an earlier export was interrupted while replacing it")
        else:
            shutil.rmtree(leftover, ignore_errors=True)

