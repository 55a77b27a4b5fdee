"""The NumPy training loop behind `python -m scratch.train`, and the export through the Keras twin."""

import time

import numpy as np

from mnist_lab.data import load_mnist
from mnist_lab.data.splits import check_batch_size, make_splits, to_model_input
from mnist_lab.errors import UserError
from mnist_lab.record import ModelRecord
from mnist_lab.text import counted
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
        start = time.perf_counter()
        for epoch in range(1, epochs + 1):
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
            history["loss"].append(loss_sum / len(order))
            history["accuracy"].append(correct / len(order))
            history["val_loss"].append(float(-np.log(val_probs[np.arange(len(y_val)), y_val] + 1e-12).mean()))
            history["val_accuracy"].append(float(np.mean(val_probs.argmax(axis=1) == y_val)))
            epoch_seconds.append(time.perf_counter() - epoch_start)
            log(f"epoch {epoch}/{epochs} - {epoch_seconds[-1]:.1f}s - loss: {history['loss'][-1]:.4f} - "
                f"accuracy: {history['accuracy'][-1]:.4f} - val_loss: {history['val_loss'][-1]:.4f} - "
                f"val_accuracy: {history['val_accuracy'][-1]:.4f}")
        training_seconds = time.perf_counter() - start

        # The one use of the test set: the final figure.
        test_accuracy = float(np.mean(network.predict(params, to_model_input(splits.x_test)).argmax(axis=1) == splits.y_test))

        model = SPEC.build()
        model.set_weights(network.keras_weights(params))
        twin = model.predict(x_val[:256], verbose=0)
        if not np.allclose(twin, network.predict(params, x_val[:256]), atol=1e-5):
            raise RuntimeError("the Keras simple_cnn disagrees with the NumPy network on the same weights")

        record = ModelRecord.create(
            NAME, SPEC, config, model, data, splits, epochs_run=epochs, training_seconds=round(training_seconds, 2),
            seconds_per_epoch=round(training_seconds / epochs, 2),
            validation_accuracy=round(history["val_accuracy"][-1], 6), test_accuracy=round(test_accuracy, 6))
        writer.write(model, record, history, epoch_seconds)
        log(f"{NAME}: test accuracy {100 * test_accuracy:.2f} % on {len(splits.x_test)} images, "
            f"trained {training_seconds:.1f} s ({counted(epochs, 'epoch')}, NumPy) -> {writer.output}")
        return record
