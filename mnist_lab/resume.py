"""Surviving interruptions: one writer per model folder, and training that resumes after a kill.

Beside each model folder `saved_models/cnn/` live two hidden companions, never inside it:
- `.cnn.lock`: held (flock) by the run writing that folder; the kernel releases it when the process
  dies, however it dies, so a killed run never leaves a stale lock.
- `.cnn.backup/`: Keras' `BackupAndRestore` weights and optimizer state after every epoch, plus this
  run's settings and per-epoch history, so the same command continues where a killed run stopped.
  It is removed once the model is exported; `--fresh` removes it before training.
"""

import fcntl
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import keras

from mnist_lab.errors import UserError

RUN_FILE = "run.json"  # the settings of the run that made the backup
HISTORY_FILE = "history.json"  # per-epoch metrics and seconds, as far as the backup goes
KERAS_PROGRESS_FILE = "training_metadata.json"  # BackupAndRestore's own record of completed epochs


def lock_path(output):
    return output.parent / f".{output.name}.lock"


def backup_dir(output):
    return output.parent / f".{output.name}.backup"


class OutputLock:
    """An exclusive, non-blocking lock on a model folder for the length of a `with` block."""

    def __init__(self, output, flag="--output"):
        self.output = Path(output)
        self.path = lock_path(self.output)
        self.flag = flag  # the flag that chooses another folder, for the message

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a+")
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._handle.seek(0)
            holder = self._handle.read().strip() or "another process"
            self._handle.close()
            raise UserError(f"{self.output} is being written by another run ({holder}); wait for it "
                            f"to finish or choose another {self.flag}") from None
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                           f"{shlex.join([os.path.basename(sys.executable), *sys.argv])}")
        self._handle.flush()
        return self

    def __exit__(self, *exc):
        self._handle.close()  # closing releases the flock


def is_locked(output):
    """Whether some process holds the lock on this model folder right now."""
    path = lock_path(Path(output))
    if not path.is_file():
        return False
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


class HistoryBackup(keras.callbacks.Callback):
    """Keeps every epoch's metrics and seconds in the backup folder as training goes.

    Listed before BackupAndRestore, so its record is never behind the weights; on resume the
    record is cut back to the epochs the weights hold.
    """

    def __init__(self, folder, history, seconds):
        super().__init__()
        self.path = Path(folder) / HISTORY_FILE
        self.history, self.seconds = history, seconds

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically({"history": self.history, "seconds": self.seconds}, self.path)


def write_json_atomically(data, path):
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data))
    os.replace(partial, path)


def prepare_backup(folder, settings, fresh, log=print):
    """Clear or check the backup; return (completed epochs, history so far, seconds so far).

    A backup made by different settings is never resumed silently: the user reruns the same
    command, or says --fresh.
    """
    folder = Path(folder)
    settings = json.loads(json.dumps(settings))  # compare as saved: tuples come back as lists
    if fresh and folder.exists():
        shutil.rmtree(folder)
        log(f"--fresh: removed the interrupted run's backup {folder}")
    progress = folder / KERAS_PROGRESS_FILE
    if not progress.is_file():
        shutil.rmtree(folder, ignore_errors=True)  # nothing resumable: a kill before the first epoch
        folder.mkdir(parents=True)
        write_json_atomically(settings, folder / RUN_FILE)
        return 0, {}, []
    try:
        saved_settings = json.loads((folder / RUN_FILE).read_text())
        completed = int(read_progress(progress)["epoch"])
        record = json.loads((folder / HISTORY_FILE).read_text())
        history, seconds = dict(record["history"]), list(record["seconds"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"{folder}: the interrupted run's backup is unreadable ({error}); "
                        "add --fresh to start over") from None
    if saved_settings != settings:
        changed = ", ".join(f"{key} {saved_settings.get(key)!r} -> {value!r}"
                            for key, value in settings.items() if saved_settings.get(key) != value)
        raise UserError(f"{folder} holds an interrupted run with other settings ({changed}); "
                        "rerun that command to resume it, or add --fresh to start over")
    return completed, {key: values[:completed] for key, values in history.items()}, seconds[:completed]


def read_progress(path):
    """BackupAndRestore's epoch record, or its previous copy if a kill cut the newest one short."""
    try:
        return json.loads(path.read_text())
    except ValueError:
        return json.loads(Path(f"{path}.bkp").read_text())


def backup_callbacks(folder, history, seconds):
    """HistoryBackup first, then Keras' BackupAndRestore (kept after fit: we delete it after export)."""
    return [HistoryBackup(folder, history, seconds),
            keras.callbacks.BackupAndRestore(str(folder), double_checkpoint=True, delete_checkpoint=False)]
