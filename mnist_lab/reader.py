"""Reading the model folders under `saved_models/`: which are there, and loading one.

A model folder is a TensorFlow SavedModel (`serving_default`: `image` float32 (None, 28, 28, 1)
in [0, 1] -> `probabilities` (None, 10)), with `model.keras`, `metadata.json` (a ModelRecord),
`history.csv` and `curves.png` beside it. Only mnist_lab/writer.py writes them; readers (evaluate,
predict, serve) never create, rename or delete anything here, so they work on a read-only folder.
Hidden folders (`.cnn.backup`, `.cnn.tmp-PID`, ...) are the writer's, and no model.
"""

from pathlib import Path

import numpy as np
import tensorflow as tf

from mnist_lab.errors import ModelError, first_line
from mnist_lab.record import SERVING_OUTPUT, ModelRecord
from models import INPUT_SHAPE, NUM_CLASSES


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
        if not has_savedmodel(self.folder):
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
