"""Train the from-scratch NumPy `simple_cnn` on MNIST and export it through its Keras twin.

    python -m scratch.train                  # writes saved_models/simple_cnn_scratch/

Same data, split and recipe as `python train.py --model simple_cnn` (Adam, batch 64, 5 epochs),
but every forward and backward pass is NumPy from `scratch/layers.py`. At the end the weights are
loaded into the registry's Keras `simple_cnn` and exported like any model, so `python evaluate.py`
reports the two side by side.
"""

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from mnist_lab.cli import ArgumentParser, positive_float, positive_int, quiet_tensorflow_import, run

quiet_tensorflow_import()  # Keras is needed for the data split and the export at the end

import numpy as np  # noqa: E402

from mnist_lab import export  # noqa: E402
from mnist_lab.data import load_mnist  # noqa: E402
from mnist_lab.data.pipeline import VALIDATION_SIZE, check_batch_size, make_splits, to_model_input  # noqa: E402
from mnist_lab.errors import UserError  # noqa: E402
from mnist_lab.resume import OutputLock  # noqa: E402
from mnist_lab.training import (DEFAULT_SEED, add_run_flags, check_output_dir, provenance,  # noqa: E402
                                write_model_folder)
from models import REGISTRY  # noqa: E402
from scratch import layers, network  # noqa: E402

NAME = "simple_cnn_scratch"


@dataclass
class ScratchConfig:
    epochs: Optional[int] = None  # None: the Keras simple_cnn's recipe
    batch_size: Optional[int] = None
    learning_rate: Optional[float] = None
    seed: int = DEFAULT_SEED
    data_dir: Optional[str] = None
    output: Optional[str] = None
    subset: Optional[int] = None
    validation_size: int = VALIDATION_SIZE


def train_scratch(config, log=print):
    """Train with NumPy, test once, export via Keras; return the metadata written."""
    recipe = REGISTRY["simple_cnn"].recipe
    epochs = config.epochs or recipe.epochs
    batch_size = config.batch_size or recipe.batch_size
    learning_rate = config.learning_rate or recipe.learning_rate
    output = Path(config.output or Path(export.MODELS_DIR) / NAME)
    check_output_dir(output)

    data = load_mnist(config.data_dir, log=log)
    splits = make_splits(data, config.validation_size, config.subset)
    check_batch_size(batch_size, splits)
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

    model = REGISTRY["simple_cnn"].build()
    model.set_weights(network.keras_weights(params))
    twin = model.predict(x_val[:256], verbose=0)
    if not np.allclose(twin, network.predict(params, x_val[:256]), atol=1e-5):
        raise RuntimeError("the Keras simple_cnn disagrees with the NumPy network on the same weights")

    metadata = {
        "model": NAME,
        "summary": "simple_cnn trained from scratch in NumPy (scratch/), exported through its Keras twin",
        "source": "reference 001: ~97 %",
        "recipe": {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
                   "optimizer": "adam (NumPy)", "schedule": "constant", "augment": False},
        "flags": asdict(config),
        "parameters": int(sum(value.size for value in params.values())),
        "epochs_run": epochs,
        "training_seconds": round(training_seconds, 2),
        "seconds_per_epoch": round(training_seconds / epochs, 2),
        "validation_accuracy": round(history["val_accuracy"][-1], 6),
        "test_accuracy": round(test_accuracy, 6),
        **provenance(data, splits, model),
    }
    with OutputLock(output):
        export.recover_interrupted(output.parent, log, own=output.name)
        write_model_folder(model, output, metadata, history, epoch_seconds)
    log(f"{NAME}: test accuracy {100 * test_accuracy:.2f} % on {len(splits.x_test)} images, "
        f"trained {training_seconds:.1f} s ({epochs} epochs, NumPy) -> {output}")
    return metadata


def parse_args(argv=None):
    parser = ArgumentParser(prog="python -m scratch.train", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=positive_int, help="epochs (default: simple_cnn's recipe, 5)")
    parser.add_argument("--batch-size", type=positive_int, help="batch size (default: simple_cnn's recipe, 64)")
    parser.add_argument("--learning-rate", type=positive_float, help="Adam learning rate (default: simple_cnn's recipe, 0.001)")
    add_run_flags(parser, output_default=f"saved_models/{NAME}")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    train_scratch(ScratchConfig(**vars(args)))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
