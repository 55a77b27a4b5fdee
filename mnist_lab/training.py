"""Train one registered model with its recipe, measure it once on the test set, and export it.

`train(config)` is what `python train.py` runs; the tests call it directly on tiny data.
"""

import csv
import dataclasses
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import keras
import numpy as np
import sklearn
import tensorflow as tf

from mnist_lab import export, plots
from mnist_lab.data import load_mnist
from mnist_lab.data.pipeline import VALIDATION_SIZE, make_dataset, make_splits
from mnist_lab.errors import UserError
from models import DEFAULT_MODEL, REGISTRY

DEFAULT_SEED = 42
MODELS_DIR = Path(export.MODELS_DIR)


@dataclass
class TrainConfig:
    """Everything a training run needs; None means "take it from the model's recipe"."""

    model: str = DEFAULT_MODEL
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    learning_rate: Optional[float] = None
    optimizer: Optional[str] = None
    schedule: Optional[str] = None
    augment: Optional[bool] = None
    seed: int = DEFAULT_SEED
    data_dir: Optional[str] = None
    output: Optional[str] = None
    subset: Optional[int] = None
    validation_size: int = VALIDATION_SIZE
    tensorboard: Optional[str] = None
    verbose: Optional[int] = None  # Keras' fit verbosity; None: a progress bar on a terminal, else a line per epoch

    def recipe(self):
        """The model's recipe with this run's overrides applied."""
        overrides = {field: getattr(self, field)
                     for field in ("epochs", "batch_size", "learning_rate", "optimizer", "schedule", "augment")
                     if getattr(self, field) is not None}
        return dataclasses.replace(REGISTRY[self.model].recipe, **overrides)

    def output_dir(self):
        return Path(self.output) if self.output else MODELS_DIR / self.model


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds of each epoch, training and validation included."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def make_optimizer(recipe, steps_per_epoch):
    learning_rate = recipe.learning_rate
    if recipe.schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            recipe.learning_rate, decay_steps=recipe.epochs * steps_per_epoch)
    if recipe.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)
    if recipe.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    return keras.optimizers.Adam(learning_rate)


def check_output_dir(output):
    """Refuse an --output that would clobber something that is not one of our models."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output}: exists and is a file, not a model folder")
    if output.is_dir() and any(output.iterdir()) and not export.is_model_folder(output):
        raise UserError(f"--output {output}: a non-empty folder that is not a saved model; "
                        "choose a new folder or an existing model's folder")
    export.check_writable_dir(output.parent, "--output")


def check_finite(history):
    for epoch, loss in enumerate(history.get("loss", []), start=1):
        if not math.isfinite(loss):
            raise UserError(f"training diverged: the loss became {loss} in epoch {epoch}; "
                            "nothing was exported; try a lower --learning-rate")


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment():
    return {
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                     "keras": keras.__version__, "numpy": np.__version__,
                     "scikit-learn": sklearn.__version__},
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "system": platform.platform()},
    }


def write_history(history, seconds, path):
    keys = list(history)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", *keys, "seconds"])
        for epoch in range(len(seconds)):
            writer.writerow([epoch + 1, *(f"{history[key][epoch]:.6g}" for key in keys),
                             f"{seconds[epoch]:.2f}"])


def provenance(data, splits, model):
    """The part of a model's metadata that says what it saw and where it was made."""
    return {
        "data": {
            "source": data.source,
            "checksum_status": data.checksum_status,
            "verified_mnist": data.verified,
            "fingerprint_sha256": data.fingerprint,
            "train_images": len(splits.x_train),
            "validation_images": len(splits.x_val),
            "test_images": len(splits.x_test),
        },
        "signature": {"name": "serving_default", "input": export.SERVING_INPUT,
                      "shape": [None, *model.input_shape[1:]], "output": export.SERVING_OUTPUT},
        **environment(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_model_folder(model, output, metadata, history, epoch_seconds):
    """SavedModel, model.keras, history, curves and metadata, swapped into `output` only when complete."""
    staging = export.staging_folder(output)
    try:
        export.export_savedmodel(model, staging)
        model.save(staging / "model.keras")
        write_history(history, epoch_seconds, staging / "history.csv")
        plots.training_curves(history, staging / "curves.png", title=metadata["model"])
        export.write_json(metadata, staging / export.METADATA_FILE)
        export.replace_folder(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def train(config, log=print):
    """Train, test once, export; return the metadata written beside the model."""
    if config.model not in REGISTRY:
        raise UserError(f"--model {config.model}: unknown; choose from {', '.join(sorted(REGISTRY))}")
    spec = REGISTRY[config.model]
    recipe = config.recipe()
    output = config.output_dir()
    export.recover_interrupted(output.parent, log)
    check_output_dir(output)
    if config.tensorboard:
        export.check_writable_dir(config.tensorboard, "--tensorboard")

    data = load_mnist(config.data_dir, log=log)
    splits = make_splits(data, config.validation_size, config.subset)
    log(f"{config.model}: {len(splits.x_train)} training, {len(splits.x_val)} validation, "
        f"{len(splits.x_test)} test images; recipe {recipe.to_dict()}")

    keras.utils.set_random_seed(config.seed)
    model = spec.build()
    steps_per_epoch = math.ceil(len(splits.x_train) / recipe.batch_size)
    model.compile(optimizer=make_optimizer(recipe, steps_per_epoch),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    train_ds = make_dataset(splits.x_train, splits.y_train, recipe.batch_size, shuffle=True,
                            augment=recipe.augment, seed=config.seed)
    val_ds = make_dataset(splits.x_val, splits.y_val, recipe.batch_size)

    timer = EpochTimer()
    callbacks = [timer]
    if config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(config.tensorboard))
    start = time.perf_counter()
    verbose = config.verbose if config.verbose is not None else (1 if sys.stdout.isatty() else 2)
    history = model.fit(train_ds, validation_data=val_ds, epochs=recipe.epochs,
                        callbacks=callbacks, verbose=verbose,
                        shuffle=False).history  # train_ds shuffles itself; Keras cannot shuffle a Dataset
    training_seconds = time.perf_counter() - start
    check_finite(history)

    # The one use of the test set: the final figure, after every choice is made.
    test_ds = make_dataset(splits.x_test, splits.y_test, 1000)
    test_loss, test_accuracy = model.evaluate(test_ds, verbose=0)

    metadata = {
        "model": config.model,
        "summary": spec.summary,
        "source": spec.source,
        "recipe": recipe.to_dict(),
        "flags": {key: value for key, value in dataclasses.asdict(config).items() if key != "verbose"},
        "parameters": model.count_params(),
        "epochs_run": len(timer.seconds),
        "training_seconds": round(training_seconds, 2),
        "seconds_per_epoch": round(training_seconds / max(1, len(timer.seconds)), 2),
        "validation_accuracy": round(float(history["val_accuracy"][-1]), 6),
        "test_accuracy": round(float(test_accuracy), 6),
        "test_loss": round(float(test_loss), 6),
        **provenance(data, splits, model),
    }
    write_model_folder(model, output, metadata, history, timer.seconds)

    log(f"{config.model}: test accuracy {100 * test_accuracy:.2f} % on {len(splits.x_test)} images, "
        f"trained {training_seconds:.1f} s ({len(timer.seconds)} epochs) -> {output}")
    return metadata
