"""A model's record: the one definition of `metadata.json`, written beside every trained model.

`ModelRecord.create(...)` builds it at export, `ModelRecord.load(folder)` reads it back (older
folders too: fields they predate take their defaults), and `record.matches(config, spec, data)`
is the one answer to "was this folder trained as this config would train it now?".
"""

import json
import math
import os
import platform
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from mnist_lab.machine import cpu_name, native_bfloat16
from mnist_lab.text import write_json
from models import Recipe

METADATA_FILE = "metadata.json"
SERVING_INPUT = "image"
SERVING_OUTPUT = "probabilities"
FULL_TEST_SET = 10_000  # images in the official MNIST test set


@dataclass
class ModelRecord:
    """What a model is, how it was trained, what it scored, on what data and where."""

    model: str  # the folder's model name (a registry name, or e.g. deep_cnn_ensemble5)
    summary: str = ""
    source: str = ""  # where the architecture comes from and the figure it reports
    recipe: dict = field(default_factory=dict)  # a models.Recipe as a dict
    arguments: dict = field(default_factory=dict)  # builder keyword arguments beyond the registry's
    flags: dict = field(default_factory=dict)  # the run's config: seed, subset, validation_size, ...
    parameters: Optional[int] = None
    epochs_run: Optional[int] = None
    resumed_after_epoch: Optional[int] = None
    training_seconds: Optional[float] = None
    seconds_per_epoch: Optional[float] = None
    validation_accuracy: Optional[float] = None
    test_accuracy: Optional[float] = None
    test_loss: Optional[float] = None
    ensemble: Optional[dict] = None  # an ensemble: what it averages
    hyperparameters: Optional[dict] = None  # the tuned MLP: the search's values
    search: Optional[dict] = None  # the tuned MLP: what the search did
    formats: Optional[dict] = None  # the other formats beside the SavedModel: file, SHA-256, largest difference
    data: dict = field(default_factory=dict)  # source, checksum status, fingerprint, split sizes
    signature: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    machine: dict = field(default_factory=dict)
    created: str = ""

    @classmethod
    def create(cls, name, spec, config, model, data, splits, **figures):
        """The record of `model` (a keras.Model) trained as `config` and `spec` say, on `data` split as `splits`."""
        return cls(
            model=name, summary=spec.summary, source=spec.source, recipe=as_json(config.recipe(spec.recipe).to_dict()),
            arguments=as_json(spec.arguments), flags=as_json(config.flags()), parameters=model.count_params(),
            data={"source": data.source, "checksum_status": data.checksum_status, "verified_mnist": data.verified,
                  "fingerprint_sha256": data.fingerprint, "train_images": len(splits.x_train),
                  "validation_images": len(splits.x_val), "test_images": len(splits.x_test)},
            signature={"name": "serving_default", "input": SERVING_INPUT,
                       "shape": [None, *model.input_shape[1:]], "output": SERVING_OUTPUT},
            **environment(), created=datetime.now(timezone.utc).isoformat(timespec="seconds"), **figures)

    @classmethod
    def load(cls, folder):
        """The record in `folder`, or None when it has none, it cannot be read, or a field is not what the
        record holds (a record is data from disk: a hand-edited or damaged one must not crash a reader)."""
        try:
            values = json.loads((Path(folder) / METADATA_FILE).read_text())
        except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
            return None
        if not isinstance(values, dict) or not isinstance(values.get("model"), str):
            return None
        if "build_mlp_arguments" in values:  # the tuned MLP before records had `arguments`: built under its name
            values.setdefault("arguments", {**values["build_mlp_arguments"], "name": values["model"]})
        values = {key: value for key, value in values.items() if key in FIELD_KINDS}
        if not all(fits(value, FIELD_KINDS[key]) for key, value in values.items()):
            return None
        return cls(**values)

    def save(self, folder):
        write_json({key: value for key, value in asdict(self).items() if value is not None},
                   Path(folder) / METADATA_FILE)

    @property
    def seed(self):
        return self.flags.get("seed")

    @property
    def final_fit(self):
        """Trained on every training image, with no validation split (--validation-size 0)."""
        return self.data.get("validation_images") == 0

    @property
    def fingerprint(self):
        return self.data.get("fingerprint_sha256")

    def matches(self, config, spec, data):
        """Whether this is the model `config` would train from `spec` on `data` now, finished and tested."""
        return (self.model == config.output_name() and self.test_accuracy is not None
                and all(self.flags.get(key) == value for key, value in config.identity().items())
                and self.fingerprint == data.fingerprint
                and Recipe.from_dict(self.recipe) == config.recipe(spec.recipe)
                and as_json(self.arguments) == as_json(spec.arguments))


# What each field of metadata.json holds, checked when a record is loaded.
FIELD_KINDS = {
    "model": "str", "summary": "str", "source": "str", "recipe": "dict", "arguments": "dict", "flags": "dict",
    "parameters": "count", "epochs_run": "count", "resumed_after_epoch": "count", "training_seconds": "number",
    "seconds_per_epoch": "number", "validation_accuracy": "fraction", "test_accuracy": "fraction",
    "test_loss": "number", "ensemble": "optional dict", "hyperparameters": "optional dict",
    "search": "optional dict", "formats": "optional dict", "data": "dict", "signature": "dict",
    "versions": "dict", "machine": "dict", "created": "str",
}


def fits(value, kind):
    """Whether a loaded field is of its kind: a number is finite and not a boolean, a fraction within 0-1."""
    if kind.startswith("optional "):
        return value is None or fits(value, kind.removeprefix("optional "))
    if value is None:
        return kind not in ("str", "dict")
    if kind in ("number", "fraction", "count"):
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return number and (kind != "fraction" or 0 <= value <= 1) and (kind != "count" or value >= 0)
    return isinstance(value, {"str": str, "dict": dict}[kind])


def as_json(value):
    """`value` as it reads back from JSON (tuples become lists), for comparing with a loaded record."""
    return json.loads(json.dumps(value))


def environment():
    """The versions and the machine a model was made with."""
    import keras
    import numpy
    import sklearn
    import tensorflow

    return {
        "versions": {"python": platform.python_version(), "tensorflow": tensorflow.__version__,
                     "keras": keras.__version__, "numpy": numpy.__version__, "scikit-learn": sklearn.__version__},
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "native_bfloat16": native_bfloat16(),
                    "system": platform.platform()},
    }
