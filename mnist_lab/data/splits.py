"""The split and the scaling that every trainer uses: train.py's pipeline, the NumPy net, the tuner and
benchmarks/screen.py. NumPy alone, so the screen uses them on a machine without TensorFlow."""

from dataclasses import dataclass

import numpy as np

from mnist_lab.config import VALIDATION_SIZE
from mnist_lab.errors import UserError


@dataclass(frozen=True)
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def make_splits(data, validation_size=VALIDATION_SIZE, subset=None, final_fit=False):
    """Hold out the last `validation_size` training images; `subset` keeps the first N of each part.
    `final_fit`: validation_size may be 0, holding out none (train.py's final fits)."""
    smallest = 0 if final_fit else 1
    if not smallest <= validation_size < len(data.x_train):
        raise UserError(
            f"--validation-size {validation_size}: must be between {smallest} and {len(data.x_train) - 1} "
            f"(the training set has {len(data.x_train)} images)"
        )
    cut = len(data.x_train) - validation_size
    splits = Splits(data.x_train[:cut], data.y_train[:cut], data.x_train[cut:], data.y_train[cut:],
                    data.x_test, data.y_test)
    if subset is None:
        return splits
    if subset > len(splits.x_train):
        raise UserError(f"--subset {subset}: more than the {len(splits.x_train)} training images; "
                        "use at most that many, or leave it out for all")
    # Smoke runs: a few training images, and a proportionate slice of validation and test.
    small = max(1, subset // 5)
    return Splits(splits.x_train[:subset], splits.y_train[:subset], splits.x_val[:small],
                  splits.y_val[:small], splits.x_test[:small], splits.y_test[:small])


def check_batch_size(batch_size, splits):
    if batch_size > len(splits.x_train):
        raise UserError(f"--batch-size {batch_size}: larger than the {len(splits.x_train)} "
                        "training images; use at most that many")


def to_model_input(images):
    """uint8 (N, 28, 28) pixels to float32 (N, 28, 28, 1) in [0, 1]: the input every model takes."""
    return (np.asarray(images, np.float32) / 255.0)[..., np.newaxis]
