"""Training that resumes after a kill.

The writer names a backup folder beside each model folder (`ModelWriter.backup`, `.cnn.backup/`);
this module fills it: Keras' `BackupAndRestore` weights and optimizer state after every epoch, plus
this run's settings and per-epoch history, so the same command continues where a killed run
stopped. The writer removes it once the model is exported; `--fresh` removes it before training.
"""

import json
import shutil
import time
from pathlib import Path

import h5py
import keras

from mnist_lab.errors import UserError, first_line
from mnist_lab.text import write_json

RUN_FILE = "run.json"  # the settings of the run that made the backup
HISTORY_FILE = "history.json"  # per-epoch metrics and seconds, as far as the backup goes
KERAS_PROGRESS_FILE = "training_metadata.json"  # BackupAndRestore's own record of completed epochs
KERAS_WEIGHTS_FILE = "latest.weights.h5"  # and its weights and optimizer state; each has a previous copy, .bkp


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
        write_json({"history": self.history, "seconds": self.seconds}, self.path)


def prepare_backup(folder, settings, fresh, epochs, log=print):
    """Clear or check the backup; return (completed epochs, history so far, seconds so far).

    A backup made by different settings is never resumed silently: the user reruns the same
    command, or says --fresh. A damaged newest copy (a kill while Keras wrote it) gives way to the
    previous one; with no good copy left the run stops in one line.
    """
    folder = Path(folder)
    if fresh and folder.exists():
        shutil.rmtree(folder)
        log(f"--fresh: removed the interrupted run's backup {folder}")
    saved = check_backup(folder, settings)
    if saved is None:
        shutil.rmtree(folder, ignore_errors=True)  # nothing resumable: a kill before the first epoch
        folder.mkdir(parents=True)
        write_json(settings, folder / RUN_FILE)
        return 0, {}, []
    history, seconds = saved
    completed = usable_copy(folder, min(epochs, len(seconds)), log)
    return completed, {key: values[:completed] for key, values in history.items()}, seconds[:completed]


def check_backup(folder, settings):
    """(history, seconds) of the resumable backup in `folder` made with these `settings`; None if there is
    nothing to resume. A backup of other settings, or unreadable, is refused in one line. Writes nothing."""
    folder = Path(folder)
    settings = json.loads(json.dumps(settings))  # compare as saved: tuples come back as lists
    newest, previous = folder / KERAS_PROGRESS_FILE, folder / f"{KERAS_PROGRESS_FILE}.bkp"
    if not newest.is_file() and not previous.is_file():
        return None
    try:
        saved_settings = json.loads((folder / RUN_FILE).read_text())
        record = json.loads((folder / HISTORY_FILE).read_text())
        history, seconds = dict(record["history"]), list(record["seconds"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"{folder}: the interrupted run's backup is unreadable ({error}); "
                        "add --fresh to start over") from None
    check_same_settings(folder, saved_settings, settings)
    return history, seconds


def check_same_settings(folder, saved, settings):
    """Refuse, in one line naming what changed, a backup in `folder` made with `saved` settings, not these."""
    settings = json.loads(json.dumps(settings))  # compare as saved: tuples come back as lists
    if saved != settings:
        changed = ", ".join(f"{key} {saved.get(key)!r} -> {value!r}"
                            for key, value in settings.items() if saved.get(key) != value)
        raise UserError(f"{folder} holds an interrupted run with other settings ({changed}); "
                        "rerun that command to resume it, or add --fresh to start over")


def usable_copy(folder, most, log):
    """The epochs held by the newest good copy of Keras' backup, made the one Keras loads.

    A copy is good when its epoch record reads and lies within 1..`most` (the run's epochs, and
    the epochs our history holds), is not older than its weights, and its weights file reads to
    the end.
    """
    problems = []
    for suffix in ("", ".bkp"):
        progress, weights = folder / f"{KERAS_PROGRESS_FILE}{suffix}", folder / f"{KERAS_WEIGHTS_FILE}{suffix}"
        try:
            completed = json.loads(progress.read_text())["epoch"]
            if not isinstance(completed, int) or not 1 <= completed <= most:
                raise ValueError(f"it says epoch {completed!r}, outside 1-{most}")
            if weights.stat().st_mtime_ns > progress.stat().st_mtime_ns:  # Keras writes the weights first
                raise ValueError("its weights are newer than its epoch record: a kill between the two writes")
            read_weights(weights)
        except (OSError, ValueError, KeyError, TypeError) as error:
            problems.append(f"{progress.name}: {first_line(error)}")
            continue
        if suffix:
            shutil.copyfile(weights, folder / KERAS_WEIGHTS_FILE)
            shutil.copyfile(progress, folder / KERAS_PROGRESS_FILE)
            log(f"the backup's newest copy is damaged ({problems[0]}); resuming from the previous one")
        return completed
    raise UserError(f"{folder}: the interrupted run's backup is damaged ({'; '.join(problems)}); "
                    "add --fresh to start over")


def read_weights(path):
    """Read every array of a Keras weights file, so a file cut short fails here and not in Keras."""
    try:
        with h5py.File(path, "r") as weights:
            weights.visititems(lambda name, item: item[()] if isinstance(item, h5py.Dataset) else None)
    except OSError:
        raise
    except Exception as error:  # h5py raises assorted types for a damaged file
        raise OSError(f"{path.name} is damaged ({first_line(error)})") from None


def backup_callbacks(folder, history, seconds):
    """HistoryBackup first, then Keras' BackupAndRestore (kept after fit: we delete it after export)."""
    return [HistoryBackup(folder, history, seconds),
            keras.callbacks.BackupAndRestore(str(folder), double_checkpoint=True, delete_checkpoint=False)]
