"""The tf.data input pipeline: split, subset, scale to [0, 1], shuffle, batch, augment, prefetch.

Augmentation runs here, on whole batches inside `Dataset.map`, never inside a model: Keras'
random image layers act whenever `training=True`, so a model that held them would keep
distorting digits after export.
"""

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from mnist_lab.config import VALIDATION_SIZE
from mnist_lab.errors import UserError

# Gentle distortions a handwritten digit survives; fill_mode="constant" keeps the background black.
ROTATION_DEGREES = 10
SHIFT_FRACTION = 0.1
ZOOM_FRACTION = 0.1


@dataclass(frozen=True)
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def make_splits(data, validation_size=VALIDATION_SIZE, subset=None):
    """Hold out the last `validation_size` training images; `subset` keeps the first N of each part."""
    if not 0 < validation_size < len(data.x_train):
        raise UserError(
            f"--validation-size {validation_size}: must be between 1 and {len(data.x_train) - 1} "
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


def build_augmentation(seed=None):
    """Random rotation, shift and zoom, as Keras layers that run on batches in tf.data."""
    # Each layer gets its own seed so their random draws are not correlated.
    seeds = [None] * 3 if seed is None else [seed, seed + 1, seed + 2]
    return keras.Sequential(
        [
            keras.layers.RandomRotation(ROTATION_DEGREES / 360, fill_mode="constant", seed=seeds[0]),
            keras.layers.RandomTranslation(SHIFT_FRACTION, SHIFT_FRACTION, fill_mode="constant", seed=seeds[1]),
            keras.layers.RandomZoom(ZOOM_FRACTION, fill_mode="constant", seed=seeds[2]),
        ],
        name="augmentation",
    )


def make_dataset(images, labels, batch_size, shuffle=False, augment=False, seed=None, deterministic=False):
    """Batches of (float32 (B, 28, 28, 1) in [0, 1], uint8 labels), optionally shuffled and augmented.

    `deterministic` runs augmentation on one batch at a time: in a parallel map the seeded random
    layers would hand out their random draws in whatever order the threads happen to run.
    """
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(
        lambda x, y: (tf.cast(x, tf.float32)[..., tf.newaxis] / 255.0, y),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    if augment:
        augmentation = build_augmentation(seed)
        dataset = dataset.map(
            lambda x, y: (augmentation(x, training=True), y),
            num_parallel_calls=None if deterministic else tf.data.AUTOTUNE,
        )
    return dataset.prefetch(tf.data.AUTOTUNE)
