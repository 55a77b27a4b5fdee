"""The NumPy training loop behind `python -m scratch.train`, and the export through the Keras twin."""

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from mnist_lab.data import load_mnist
from mnist_lab.data.splits import check_batch_size, make_splits, to_model_input
from mnist_lab.errors import UserError
from mnist_lab.record import ModelRecord
from mnist_lab.text import counted
from mnist_lab.resume import check_same_settings
from mnist_lab.training import run_settings
from mnist_lab.writer import ModelWriter
from scratch import layers, network
from scratch.train import NAME, SPEC


def train_scratch(config, data=None, log=print):
    """Train with NumPy, test once, export via Keras; return the model's record."""
    with ModelWriter(config.output_dir(), log) as writer:  # checks --output, then holds the lock throughout
        recipe = config.recipe(SPEC.recipe)
        epochs, batch_size, learning_rate = recipe.epochs, recipe.batch_size, recipe.learning_rate
        data = data or load_mnist(config.data_dir, log=log)
        splits = make_splits(data, config.validation_size, config.subset)
        check_batch_size(batch_size, splits)
        writer.check_replaceable(len(splits.x_train), epochs, config.replace)
        x_train, x_val = to_model_input(splits.x_train), to_model_input(splits.x_val)
        y_train, y_val = splits.y_train.astype(np.int64), splits.y_val.astype(np.int64)
        log(f"{NAME}: NumPy, {len(x_train)} training, {len(x_val)} validation images; "
            f"epochs {epochs}, batch {batch_size}, Adam {learning_rate}")

        rng = np.random.default_rng(config.seed)
        params = network.init_params(rng)
        optimizer = layers.Adam(learning_rate)
        history = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
        epoch_seconds = []
        settings = run_settings(config, SPEC, data)
        if config.fresh and writer.backup.exists():
            shutil.rmtree(writer.backup)
            log(f"--fresh: removed the interrupted run's backup {writer.backup}")
        completed = restore(writer.backup, settings, params, optimizer, rng, history, epoch_seconds)
        if completed:
            log(f"resuming from epoch {completed} of {epochs}: an interrupted run completed "
                f"{'it' if completed == 1 else f'epochs 1-{completed}'} (backup {writer.backup}); --fresh starts over")
        start = time.perf_counter() - sum(epoch_seconds)
        for epoch in range(completed + 1, epochs + 1):
            epoch_start = time.perf_counter()
            order = rng.permutation(len(x_train))
            loss_sum = correct = 0.0
            for first in range(0, len(order), batch_size):
                batch = order[first:first + batch_size]
                loss, grads, logits = network.loss_and_grads(params, x_train[batch], y_train[batch])
                optimizer.step(params, grads)
                if not np.isfinite(loss):
                    raise UserError(f"training diverged: the loss became {loss} in epoch {epoch}; "
                                    "nothing was exported; try a lower --learning-rate")
                loss_sum += loss * len(batch)
                correct += np.sum(logits.argmax(axis=1) == y_train[batch])
            val_probs = network.predict(params, x_val)
            history["loss"].append(float(loss_sum / len(order)))
            history["accuracy"].append(float(correct / len(order)))
            history["val_loss"].append(float(-np.log(val_probs[np.arange(len(y_val)), y_val] + 1e-12).mean()))
            history["val_accuracy"].append(float(np.mean(val_probs.argmax(axis=1) == y_val)))
            epoch_seconds.append(time.perf_counter() - epoch_start)
            log(f"epoch {epoch}/{epochs} - {epoch_seconds[-1]:.1f}s - loss: {history['loss'][-1]:.4f} - "
                f"accuracy: {history['accuracy'][-1]:.4f} - val_loss: {history['val_loss'][-1]:.4f} - "
                f"val_accuracy: {history['val_accuracy'][-1]:.4f}")
            back_up(writer.backup, settings, params, optimizer, rng, history, epoch_seconds)
        training_seconds = time.perf_counter() - start

        # The one use of the test set: the final figure.
        test_accuracy = float(np.mean(network.predict(params, to_model_input(splits.x_test)).argmax(axis=1) == splits.y_test))

        model = SPEC.build()
        model.set_weights(network.keras_weights(params))
        twin = model.predict(x_val[:256], verbose=0)
        if not np.allclose(twin, network.predict(params, x_val[:256]), atol=1e-5):
            raise RuntimeError("the Keras simple_cnn disagrees with the NumPy network on the same weights")

        record = ModelRecord.create(
            NAME, SPEC, config, model, data, splits, epochs_run=epochs, resumed_after_epoch=completed or None,
            training_seconds=round(training_seconds, 2),
            seconds_per_epoch=round(training_seconds / epochs, 2),
            validation_accuracy=round(history["val_accuracy"][-1], 6), test_accuracy=round(test_accuracy, 6))
        writer.write(model, record, history, epoch_seconds)
        log(f"{NAME}: test accuracy {100 * test_accuracy:.2f} % on {len(splits.x_test)} images, "
            f"trained {training_seconds:.1f} s ({counted(epochs, 'epoch')}, NumPy) -> {writer.output}")
        return record


BACKUP_FILE = "numpy_state.npz"  # in the writer's backup folder: weights, Adam's state, the generator, history


def back_up(folder, settings, params, optimizer, rng, history, epoch_seconds):
    """Everything the next epoch depends on, written whole after each epoch (a kill leaves the old file)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {"settings": settings, "steps": optimizer.steps, "rng": rng.bit_generator.state,
             "history": history, "seconds": epoch_seconds}
    arrays = {**{f"param.{k}": v for k, v in params.items()}, **{f"m.{k}": v for k, v in optimizer.m.items()},
              **{f"v.{k}": v for k, v in optimizer.v.items()}}
    partial = folder / f".{BACKUP_FILE}.partial-{os.getpid()}"
    with open(partial, "wb") as handle:
        np.savez(handle, state=np.array(json.dumps(state)), **arrays)
    os.replace(partial, folder / BACKUP_FILE)


def restore(folder, settings, params, optimizer, rng, history, epoch_seconds):
    """Load a killed run's backup into these objects; return the epochs it completed (0: none to resume).
    A backup of other settings, or one that does not read, is refused in one line."""
    path = Path(folder) / BACKUP_FILE
    if not path.is_file():
        return 0
    try:
        with np.load(path, allow_pickle=False) as saved:
            state = json.loads(saved["state"].item())
            arrays = {key: saved[key] for key in saved.files if key != "state"}
        check_same_settings(folder, state["settings"], settings)
        for name in params:
            params[name][...] = arrays[f"param.{name}"]
        optimizer.m = {key[2:]: value for key, value in arrays.items() if key.startswith("m.")}
        optimizer.v = {key[2:]: value for key, value in arrays.items() if key.startswith("v.")}
        optimizer.steps = state["steps"]
        rng.bit_generator.state = state["rng"]
        history.update(state["history"])
        epoch_seconds.extend(state["seconds"])
    except UserError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(f"{folder}: the interrupted run's backup is unreadable ({error}); add --fresh to start over") \
            from None
    return len(epoch_seconds)
