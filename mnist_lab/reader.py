"""Reading the model folders under `saved_models/`: which are there, and loading one.

A model folder is a TensorFlow SavedModel (`serving_default`: `image` float32 (None, 28, 28, 1)
in [0, 1] -> `probabilities` (None, 10)), with `model.keras`, `metadata.json` (a ModelRecord),
`history.csv` and `curves.png` beside it. Only mnist_lab/writer.py writes them; readers (evaluate,
predict, serve) never create, rename or delete anything here, so they work on a read-only folder.
Hidden folders (`.cnn.backup`, `.cnn.tmp-PID`, ...) are the writer's, and no model.
"""

import fcntl
import os
import shlex
import time
from pathlib import Path

import numpy as np

from mnist_lab.config import MEMBERS_DIR, train_hint
from mnist_lab.data.sources import sha256_file
from mnist_lab.errors import ModelError, UserError, first_line
from mnist_lab.record import SERVING_OUTPUT, ModelRecord
from models import INPUT_SHAPE, NUM_CLASSES


# The other formats every model folder holds beside its SavedModel, each for its own runtime
# (docs/deployment.md): ONNX for ONNX Runtime, LiteRT (TensorFlow Lite's successor) for ai-edge-litert.
FORMAT_FILES = {"onnx": "model.onnx", "litert": "model.tflite"}


def sibling(folder, kind, pid=None):
    """The hidden sibling of `folder` of this kind: lock, backup, tmp (staging) or old (set aside)."""
    folder = Path(folder)
    return folder.parent / (f".{folder.name}.{kind}" + (f"-{pid}" if pid is not None else ""))


def parse_sibling(path):
    """(folder, kind, pid) of a hidden `.NAME.KIND-PID` sibling, else None."""
    name, _, tag = Path(path).name[1:].rpartition(".")
    kind, _, pid = tag.partition("-")
    if not Path(path).name.startswith(".") or kind not in ("tmp", "old") or not pid.isdigit():
        return None
    return Path(path).parent / name, kind, int(pid)


def is_locked(folder):
    """Whether some process holds the lock on this folder right now."""
    try:
        handle = open(sibling(folder, "lock"))
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False


def set_aside_notes(models_dir, name=None):
    """A line on each model (or just `name`) that a writer set aside for a swap and that was not put back
    (`.cnn.old-PID`, its writer dead and `cnn/` gone), with the command that puts it back: readers
    do not rename."""
    notes = []
    for leftover in sorted(Path(models_dir).glob(".*.old-*")):
        parsed = parse_sibling(leftover)
        if parsed and not parsed[0].exists() and (name is None or parsed[0].name == name) and not is_locked(parsed[0]):
            notes.append(f"{parsed[0].name} was set aside by an interrupted export and not put back: "
                         f"`mv {shlex.quote(str(leftover))} {shlex.quote(str(parsed[0]))}` puts it back "
                         f"(as any train.py run writing to {models_dir} does)")
    return notes


def has_savedmodel(folder):
    """Whether `folder` holds a SavedModel: the one test of "a trained model is here"."""
    return (Path(folder) / "saved_model.pb").is_file()


def visible_folders(models_dir):
    """The folders in `models_dir` but the writer's hidden ones (.cnn.backup, .cnn.tmp-PID, ...), sorted."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    return sorted(folder for folder in models_dir.iterdir() if folder.is_dir() and not folder.name.startswith("."))


def model_folders(models_dir):
    """The SavedModel folders in `models_dir`."""
    return [folder for folder in visible_folders(models_dir) if has_savedmodel(folder)]


def find_model_folders(models_dir, names=()):
    """The folders evaluate.py evaluates: `names` under `models_dir`, else every model folder there (a
    folder that is not one is reported when it fails to load)."""
    models_dir = Path(models_dir)
    hint = "train one first, e.g. `python train.py --model cnn`"
    if not models_dir.is_dir():
        raise UserError(f"--models-dir {models_dir}: no such folder ({models_dir.resolve()}); {hint}, or run from "
                        "the project's folder, or pass --models-dir")
    if names:
        folders = [models_dir / name for name in names]
        missing = [folder.name for folder in folders if not folder.is_dir()]
        if missing:
            available = [folder.name for folder in visible_folders(models_dir)]
            raise UserError(f"no trained model {', '.join(missing)} in {models_dir}/ "
                            f"(found: {', '.join(available) or 'none'}); {train_hint(missing[0])}"
                            + "".join(f"; {note}" for name in missing for note in set_aside_notes(models_dir, name)))
        return folders
    # members/ and folders that hold models (experiments/ in docs/accuracy.md) are not models; any
    # other folder is one, and is reported if it does not load.
    folders = [folder for folder in visible_folders(models_dir)
               if folder.name != MEMBERS_DIR.name and not model_folders(folder)]
    if not folders:
        raise UserError(f"no trained models in {models_dir.resolve()}/; {hint}"
                        + "".join(f"; {note}" for note in set_aside_notes(models_dir)))
    return folders


def trained_as(folder, config, spec, data):
    """The record of `folder` if it holds what `config` would train from `spec` on `data` today, finished
    and tested (SavedModel and model.keras both there), else None: "was this already trained this way?"."""
    record = ModelRecord.load(folder)
    if record and has_savedmodel(folder) and (Path(folder) / "model.keras").is_file() and record.matches(config, spec, data):
        return record
    return None


class SavedModelClassifier:
    """A SavedModel's `serving_default` signature, checked to take MNIST images, and its record."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.name = self.folder.name
        read_whole(self.folder, self._load)

    def _load(self, path):
        import tensorflow as tf

        if not has_savedmodel(path):
            raise ModelError(f"{self.name}: {self.folder} is not a SavedModel (no saved_model.pb)")
        try:
            self._loaded = tf.saved_model.load(str(path))
        except Exception as error:  # TensorFlow raises many types for a damaged folder
            raise ModelError(f"{self.name}: cannot load the SavedModel in {self.folder} "
                             f"({first_line(error).replace(str(path), str(self.folder))})") from None
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
        self.record = ModelRecord.load(path)

    def predict(self, images, batch_size=1000):
        """Class probabilities (N, 10) for float32 images (N, 28, 28, 1) in [0, 1]."""
        import tensorflow as tf

        try:
            batches = [self._signature(**{self._input_name: tf.constant(images[i:i + batch_size])})[self._output_name].numpy()
                       for i in range(0, len(images), batch_size)]
        except (tf.errors.OpError, ValueError, TypeError) as error:
            raise ModelError(f"{self.name}: failed on MNIST images ({first_line(error)})") from None
        return checked_output(self.name, np.concatenate(batches), len(images))

    def parameter_count(self):
        """The recorded count, else the SavedModel's variables counted (None if it exposes none)."""
        if self.record and self.record.parameters is not None:
            return self.record.parameters
        variables = getattr(self._loaded, "variables", None)
        return None if variables is None else int(sum(np.prod(variable.shape) for variable in variables))


def format_file(folder, runtime, formats, within=None):
    """The path of `folder`'s file for `runtime` (onnx, litert), checked against the SHA-256 in `formats`
    (its record's): a damaged file, or one left from another model, is refused in one line, never used.
    `within`: the path to read `folder` by (read_whole's)."""
    folder = Path(folder)
    path = Path(within or folder) / FORMAT_FILES[runtime]
    hint = f"`python -m mnist_lab.export {folder}` writes it again from model.keras"
    if not path.is_file():
        raise ModelError(f"{folder.name}: no {path.name} in {folder}; {hint}")
    recorded = (formats or {}).get(runtime) or {}
    if "sha256" not in recorded:
        raise ModelError(f"{folder.name}: {path.name} is not in its metadata.json, so it cannot be checked; {hint}")
    if sha256_file(path) != recorded["sha256"]:
        raise ModelError(f"{folder.name}: {path.name} is not the file exported with this model (damaged, or "
                         f"left from another); {hint}")
    return path


class OnnxClassifier:
    """A model's model.onnx on ONNX Runtime: no TensorFlow, no Keras."""

    def __init__(self, folder, formats=None):
        # Without this, ONNX Runtime's telemetry keeps a session file in $TMPDIR; nothing here is sent or kept.
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        import onnxruntime

        self.folder, self.name = Path(folder), Path(folder).name
        read_whole(self.folder, lambda path: self._load(onnxruntime, path, formats))
        (self._input,) = self._session.get_inputs()

    def _load(self, onnxruntime, within, formats):
        self.record = ModelRecord.load(within)
        path = format_file(self.folder, "onnx", formats or (self.record and self.record.formats), within)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: its notices are not for the user
        # One thread: an MNIST net needs no more, and idle workers spinning for work took the cores that
        # decode the images (a served request's p50 was 2.5 ms slower with ONNX Runtime's default).
        options.intra_op_num_threads = 1
        try:
            self._session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own types for a file it cannot read
            raise ModelError(f"{self.name}: cannot load {self.folder / path.name} ({first_line(error)})") from None

    def predict(self, images, batch_size=1000):
        """Class probabilities (N, 10) for float32 images (N, 28, 28, 1) in [0, 1]."""
        batches = [self._session.run(None, {self._input.name: np.asarray(images[i:i + batch_size], np.float32)})[0]
                   for i in range(0, len(images), batch_size)]
        return checked_output(self.name, np.concatenate(batches), len(images))

    def parameter_count(self):
        return self.record.parameters if self.record else None


class LiteRTClassifier:
    """A model's LiteRT file (model.tflite) on ai-edge-litert's interpreter: no TensorFlow, no Keras."""

    def __init__(self, folder, formats=None):
        from ai_edge_litert.interpreter import Interpreter

        self.folder, self.name = Path(folder), Path(folder).name
        read_whole(self.folder, lambda within: self._load(Interpreter, within, formats))

    def _load(self, Interpreter, within, formats):
        self.record = ModelRecord.load(within)
        path = format_file(self.folder, "litert", formats or (self.record and self.record.formats), within)
        try:
            self._interpreter = Interpreter(model_path=str(path))
        except Exception as error:  # the interpreter raises ValueError or RuntimeError for a bad file
            raise ModelError(f"{self.name}: cannot load {self.folder / path.name} ({first_line(error)})") from None
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._batch = None

    def predict(self, images, batch_size=1000):
        """Class probabilities (N, 10) for float32 images (N, 28, 28, 1) in [0, 1]."""
        batches = []
        for first in range(0, len(images), batch_size):
            batch = np.asarray(images[first:first + batch_size], np.float32)
            if len(batch) != self._batch:  # the file has a dynamic batch; the interpreter a fixed one at a time
                self._interpreter.resize_tensor_input(self._input, batch.shape)
                self._interpreter.allocate_tensors()
                self._batch = len(batch)
            self._interpreter.set_tensor(self._input, batch)
            self._interpreter.invoke()
            batches.append(self._interpreter.get_tensor(self._output).copy())
        return checked_output(self.name, np.concatenate(batches), len(images))

    def parameter_count(self):
        return self.record.parameters if self.record else None


def checked_output(name, probabilities, count):
    """The model's answer if it is class probabilities: (count, 10), each row within [0, 1] and summing to 1;
    a foreign model answering scores, or a damaged one answering NaN, is a ModelError."""
    if probabilities.shape != (count, NUM_CLASSES):
        raise ModelError(f"{name}: its output has shape {probabilities.shape}, expected ({count}, {NUM_CLASSES})")
    if not np.isfinite(probabilities).all():
        raise ModelError(f"{name}: the model answered NaN or infinity instead of probabilities (a diverged or "
                         "damaged model); retrain it, or choose another with --model")
    sums = probabilities.sum(axis=1)
    if probabilities.min() < -PROBABILITY_SLACK or probabilities.max() > 1 + PROBABILITY_SLACK or \
            np.abs(sums - 1).max() > PROBABILITY_SLACK:
        raise ModelError(f"{name}: its output is not class probabilities (values from {probabilities.min():.3g} to "
                         f"{probabilities.max():.3g}, rows summing to {sums.min():.3g}-{sums.max():.3g}); a model "
                         "here must end in a softmax")
    return probabilities


# How far float32 rounding (and bfloat16 models) may take a softmax from [0, 1] and a sum of 1.
PROBABILITY_SLACK = 1e-2


def read_whole(folder, read, attempts=5):
    """`read(path)` with every file from one and the same `folder`, even while a writer swaps a new folder
    in: `path` names the folder by a descriptor held open (Linux's /proc/self/fd), so a swap cannot
    mix two models; a read during which the folder was replaced (the writer then removes the old
    one's files, perhaps under the read) is done again on the new one. Nothing is written."""
    folder = Path(folder)
    for attempt in range(attempts):
        try:
            descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            if attempt + 1 < attempts and not folder.exists():  # between the renames of a non-atomic swap
                time.sleep(0.05)
                continue
            return read(folder)  # says what is wrong with it
        try:
            pinned = Path(f"/proc/self/fd/{descriptor}")
            try:
                read(pinned if pinned.is_dir() else folder)  # no /proc: the folder as named
            except ModelError:
                if attempt + 1 == attempts or same_folder(folder, descriptor):
                    raise  # the folder did not change: the fault is its own
                continue
            if attempt + 1 == attempts or same_folder(folder, descriptor):
                return  # else it was replaced while read (a file may have gone under the read): read the new one
        finally:
            os.close(descriptor)


def same_folder(folder, descriptor):
    try:
        now, held = os.stat(folder), os.fstat(descriptor)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def load_classifier(folder, runtime="savedmodel", formats=None):
    """The model in `folder` on `runtime`: savedmodel (TensorFlow), onnx (ONNX Runtime) or litert; `formats`:
    the format files' record, when it is not yet in the folder's metadata.json (at export)."""
    if runtime == "savedmodel":
        return SavedModelClassifier(folder)
    return {"onnx": OnnxClassifier, "litert": LiteRTClassifier}[runtime](folder, formats)
