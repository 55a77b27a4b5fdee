"""The tf.data input pipeline: split, subset, scale to [0, 1], shuffle, batch, augment, prefetch.

Augmentation runs here, on whole batches inside `Dataset.map`, never inside a model: Keras'
random image layers act whenever `training=True`, so a model that held them would keep
distorting digits after export. Three kinds (a recipe's `augment`, see models/__init__.py):
`True`, gentle rotation, shift and zoom; `"wide"`, the same in wider ranges; `"handwriting"`, what
real writing has and MNIST lacks (`handwriting_distort`): thinner and thicker strokes, elastic
wobble, slant, scale, blur, noise.
"""

import numpy as np
import tensorflow as tf

from mnist_lab.data.geometry import (
    ELASTIC_GRID,
    ELASTIC_PIXELS,
    WIDE_ROTATION_DEGREES,
    WIDE_ZOOM_FRACTION,
    random_warp,
    sample_bilinear,
)
from models import HANDWRITING, WIDE

# Handwriting distortions, each drawn per image, in ranges set by eye on training digits (the strongest
# still reads as its digit): stroke thickness t in [THIN, THICK] (-1: one 3x3 erosion, 0: as written,
# 1: one 3x3 dilation, 2: two; fractions blend), elastic displacement (a smooth random field of
# strength up to twice geometry.ELASTIC_PIXELS), slant as a horizontal shear, scale and aspect, rotation,
# shift, a Gaussian blur (sigma 1) blended in with BLUR_PROBABILITY, pixel noise of standard deviation up to NOISE.
THIN, THICK = -0.8, 1.5
SLANT = 0.3  # shear: +-0.3 pixel sideways per pixel of height (about +-17 degrees)
SCALE = 0.12  # +-12 % in size, and the width +-12 % again against the height
HANDWRITING_ROTATION_DEGREES = 10
SHIFT_PIXELS = 2.0
BLUR_PROBABILITY = 0.3
NOISE = 0.06


def build_augmentation(seed=None, wide=False):
    """Random rotation, shift and zoom (geometry.random_warp); `wide`: Deotte's ranges."""
    if wide:
        return random_warp(WIDE_ROTATION_DEGREES, zoom=WIDE_ZOOM_FRACTION, seed=seed)
    return random_warp(seed=seed)


def _square_max(images):
    """The largest value of each pixel's 3x3 neighbourhood, as max_pool2d(images, 3, 1, "SAME") gives it:
    the maximum of shifted copies, rows then columns, which is several times faster on a CPU."""
    padded = tf.pad(images, [[0, 0], [1, 1], [0, 0], [0, 0]], constant_values=-np.inf)
    rows = tf.maximum(tf.maximum(padded[:, :-2], padded[:, 1:-1]), padded[:, 2:])
    padded = tf.pad(rows, [[0, 0], [0, 0], [1, 1], [0, 0]], constant_values=-np.inf)
    return tf.maximum(tf.maximum(padded[:, :, :-2], padded[:, :, 1:-1]), padded[:, :, 2:])


def dilate(images):
    """Strokes one pixel thicker on every side: the brightest pixel of each 3x3 neighbourhood."""
    return _square_max(images)


def erode(images):
    """Strokes one pixel thinner on every side: the darkest pixel of each 3x3 neighbourhood."""
    return -_square_max(-images)


def change_thickness(images, amount):
    """Strokes thinned (`amount` < 0, down to -1: one erosion) or thickened (up to 2: two dilations),
    per image; fractional amounts blend between the neighbouring steps. `amount`: shape (B,)."""
    amount = tf.reshape(amount, (-1, 1, 1, 1))
    thinner, thicker = erode(images), dilate(images)
    thickest = dilate(thicker)
    return tf.where(amount < 0, images + (-amount) * (thinner - images),
                    tf.where(amount < 1, images + amount * (thicker - images),
                             thicker + (amount - 1) * (thickest - thicker)))


def gaussian_blur(images, sigma=1.0, radius=2):
    """A Gaussian blur, one axis then the other, as weighted sums of shifted copies (zeros beyond the edge)."""
    weights = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma ** 2))
    weights /= weights.sum()
    for axis in (1, 2):
        padding = [[0, 0]] * 4
        padding[axis] = [radius, radius]
        padded = tf.pad(images, padding)
        end = tf.shape(padded)[axis] - 2 * radius
        images = tf.add_n([float(weight) * (padded[:, offset:offset + end] if axis == 1 else
                                            padded[:, :, offset:offset + end])
                           for offset, weight in enumerate(weights)])
    return images


def handwriting_distort(images, seed):
    """A batch (B, 28, 28, 1) in [0, 1] distorted the ways handwriting varies, each image its own way.

    `seed`: two integers; the same seed gives the same distortions (stateless random ops)."""
    count, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 13)

    def uniform(index, low, high):  # one value per image
        return tf.random.stateless_uniform((count,), seeds[index], low, high)

    images = change_thickness(images, uniform(0, THIN, THICK))

    # One sampling grid: where each output pixel is read from, by an affine map (rotation, slant,
    # scale, shift) about the centre plus a smooth random displacement (elastic distortion).
    angle = uniform(1, -1.0, 1.0) * HANDWRITING_ROTATION_DEGREES * np.pi / 180
    slant = uniform(2, -SLANT, SLANT)
    scale = 1 + uniform(3, -SCALE, SCALE)
    row_scale = scale * (1 + uniform(4, -SCALE, SCALE))
    shift_rows, shift_cols = uniform(5, -SHIFT_PIXELS, SHIFT_PIXELS), uniform(6, -SHIFT_PIXELS, SHIFT_PIXELS)
    centre_row = (tf.cast(height, tf.float32) - 1) / 2
    centre_col = (tf.cast(width, tf.float32) - 1) / 2
    grid_rows, grid_cols = tf.meshgrid(tf.range(height, dtype=tf.float32) - centre_row,
                                       tf.range(width, dtype=tf.float32) - centre_col, indexing="ij")

    def per_image(values):
        return values[:, None, None]

    cos, sin = per_image(tf.cos(angle)), per_image(tf.sin(angle))
    rotated_cols = cos * grid_cols - sin * grid_rows
    rotated_rows = sin * grid_cols + cos * grid_rows
    source_cols = (rotated_cols + per_image(slant) * rotated_rows) / per_image(scale)
    source_rows = rotated_rows / per_image(row_scale)

    coarse = tf.random.stateless_normal((count, ELASTIC_GRID, ELASTIC_GRID, 2), seeds[7])
    field = tf.image.resize(coarse, (height, width), method="bicubic")
    field *= per_image(uniform(8, 0.0, 2 * ELASTIC_PIXELS))[..., None]  # strength varies: mean ELASTIC_PIXELS
    source_rows += centre_row + per_image(shift_rows) + field[..., 0]
    source_cols += centre_col + per_image(shift_cols) + field[..., 1]
    images = sample_bilinear(images, source_rows, source_cols)

    blur = tf.where(uniform(9, 0.0, 1.0) < BLUR_PROBABILITY, uniform(10, 0.0, 1.0), 0.0)
    images += tf.reshape(blur, (-1, 1, 1, 1)) * (gaussian_blur(images) - images)
    noise = tf.random.stateless_normal(tf.shape(images), seeds[12]) * tf.reshape(uniform(11, 0.0, NOISE), (-1, 1, 1, 1))
    return tf.clip_by_value(images + noise, 0.0, 1.0)


def make_dataset(images, labels, batch_size, shuffle=False, augment=False, seed=None, deterministic=False):
    """Batches of (float32 (B, 28, 28, 1) in [0, 1], uint8 labels), optionally shuffled and augmented.

    `augment`: False, True (rotation, shift, zoom), "wide" (the same, wider) or "handwriting"
    (`handwriting_distort`).
    `deterministic` runs augmentation on one batch at a time: in a parallel map the seeded random
    layers would hand out their random draws in whatever order the threads happen to run.
    (Handwriting distortions draw from stateless ops keyed by a seeded per-batch stream, so they
    are the same in any order.)
    """
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(
        lambda x, y: (tf.cast(x, tf.float32)[..., tf.newaxis] / 255.0, y),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    if augment == HANDWRITING:
        # One seed per batch from a seeded stream that changes every epoch, reproducibly.
        batch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        dataset = tf.data.Dataset.zip(dataset, batch_seeds).map(
            lambda batch, batch_seed: (handwriting_distort(batch[0], batch_seed), batch[1]),
            num_parallel_calls=None if deterministic else tf.data.AUTOTUNE,  # the same draws either way (a test checks)
        )
    elif augment:
        augmentation = build_augmentation(seed, wide=augment == WIDE)
        dataset = dataset.map(
            lambda x, y: (augmentation(x, training=True), y),
            num_parallel_calls=None if deterministic else tf.data.AUTOTUNE,
        )
    return dataset.prefetch(tf.data.AUTOTUNE)
