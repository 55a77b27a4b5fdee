"""The tf.data pipeline: the validation split, batch shapes and value range, and both augmentations."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from mnist_lab.data import Mnist
from mnist_lab.data.geometry import sample_bilinear
from mnist_lab.data.pipeline import change_thickness, dilate, erode, gaussian_blur, make_dataset
from mnist_lab.data.splits import make_splits, to_model_input
from mnist_lab.errors import UserError


@pytest.fixture
def data(synthetic_arrays):
    return Mnist(*synthetic_arrays, source="synthetic", verified=False)


def test_validation_is_the_last_part_of_the_training_set(data):
    splits = make_splits(data, validation_size=200)
    np.testing.assert_array_equal(splits.x_train, data.x_train[:1000])
    np.testing.assert_array_equal(splits.x_val, data.x_train[1000:])
    np.testing.assert_array_equal(splits.y_val, data.y_train[1000:])
    np.testing.assert_array_equal(splits.x_test, data.x_test)


def test_subset_keeps_a_proportionate_slice(data):
    splits = make_splits(data, validation_size=200, subset=100)
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (100, 20, 20)


@pytest.mark.parametrize("size", [-1, 1200, 5000])
def test_validation_size_must_leave_training_images(data, size):
    with pytest.raises(UserError, match="--validation-size"):
        make_splits(data, validation_size=size)


def test_validation_size_0_trains_on_every_image(data):
    with pytest.raises(UserError, match="--validation-size 0: must be between 1 and"):
        make_splits(data, validation_size=0)  # the NumPy net and the tuner need a validation split
    splits = make_splits(data, validation_size=0, final_fit=True)
    assert (len(splits.x_train), len(splits.x_val), len(splits.x_test)) == (len(data.x_train), 0, len(data.x_test))


def test_batches_are_float_images_in_unit_range(data):
    batches = list(make_dataset(data.x_test, data.y_test, batch_size=128))
    assert [len(x) for x, _ in batches] == [128, 128, 44]
    images, labels = batches[0]
    assert images.shape == (128, 28, 28, 1) and images.dtype.name == "float32"
    assert float(np.min(images)) == 0.0 and float(np.max(images)) == 1.0
    np.testing.assert_allclose(images.numpy(), to_model_input(data.x_test[:128]))
    np.testing.assert_array_equal(labels.numpy(), data.y_test[:128])


def test_shuffling_keeps_every_pair_together(data):
    (images, labels), = make_dataset(data.x_test, data.y_test, batch_size=300, shuffle=True, seed=1)
    order = np.argsort([hash(x.tobytes()) for x in images.numpy()])
    expected = np.argsort([hash(x.tobytes()) for x in to_model_input(data.x_test)])
    np.testing.assert_array_equal(labels.numpy()[order], data.y_test[expected])
    assert not np.array_equal(labels.numpy(), data.y_test), "the order changed"


def test_augmentation_changes_images_only_when_on(data):
    plain = to_model_input(data.x_test[:64])
    (off, _), = make_dataset(data.x_test[:64], data.y_test[:64], batch_size=64, augment=False)
    (on, _), = make_dataset(data.x_test[:64], data.y_test[:64], batch_size=64, augment=True, seed=3)
    np.testing.assert_array_equal(off.numpy(), plain)
    changed = np.abs(on.numpy() - plain).reshape(64, -1).max(axis=1) > 0.1
    assert changed.mean() > 0.9
    assert on.shape == plain.shape and float(np.min(on)) >= 0.0 and float(np.max(on)) <= 1.0 + 1e-6


def test_wide_augmentation_moves_digits_further(data):
    """`augment="wide"` (rotation 15 degrees, zoom 0.15) against the default (10 degrees, 0.1), same draws."""
    plain = to_model_input(data.x_test[:64])
    moved = {}
    for augment in (True, "wide"):
        (batch, _), = make_dataset(data.x_test[:64], data.y_test[:64], batch_size=64, augment=augment, seed=3,
                                   deterministic=True)
        moved[augment] = float(np.abs(batch.numpy() - plain).mean())
        assert float(np.min(batch)) >= 0.0 and float(np.max(batch)) <= 1.0 + 1e-6
    assert moved["wide"] > moved[True] > 0  # equal if "wide" were ignored: the draws are the same


def test_augmentation_fills_with_black():
    """fill_mode="constant": pixels moved in from outside are background (0), not copies of the edge."""
    white = np.full((32, 28, 28), 255, np.uint8)
    (on, _), = make_dataset(white, np.zeros(32, np.uint8), batch_size=32, augment=True, seed=5)
    black_fraction = (on.numpy() < 0.01).reshape(32, -1).mean(axis=1)
    assert np.mean(black_fraction > 0.01) > 0.8


# Handwriting augmentation: what real writing has and MNIST lacks.

def ink_pixels(images):
    return int(np.sum(np.asarray(images) > 0.5))


def test_handwriting_batches_are_float_images_in_unit_range(data):
    batches = list(make_dataset(data.x_test, data.y_test, batch_size=128, augment="handwriting", seed=1))
    assert [len(x) for x, _ in batches] == [128, 128, 44]
    images, labels = batches[0]
    assert images.shape == (128, 28, 28, 1) and images.dtype.name == "float32"
    assert float(np.min(images)) >= 0.0 and float(np.max(images)) <= 1.0
    np.testing.assert_array_equal(labels.numpy(), data.y_test[:128])
    plain = to_model_input(data.x_test[:128])
    assert (np.abs(images.numpy() - plain).reshape(128, -1).max(axis=1) > 0.1).mean() > 0.9, "nearly all changed"


def test_handwriting_augmentation_is_the_same_for_the_same_seed_and_new_each_epoch(data):
    def epochs(seed, count=2):
        dataset = make_dataset(data.x_test, data.y_test, batch_size=100, shuffle=True, augment="handwriting", seed=seed)
        return [np.concatenate([x.numpy() for x, _ in dataset]) for _ in range(count)]

    keras.utils.set_random_seed(0)
    first = epochs(7)
    keras.utils.set_random_seed(0)
    again = epochs(7)
    keras.utils.set_random_seed(0)
    other = epochs(8, count=1)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.allclose(first[0], first[1]), "each epoch draws new distortions"
    assert not np.allclose(first[0], other[0])


def test_handwriting_distortions_are_the_same_in_a_parallel_map(data):
    """Stateless random ops keyed by the batch's seed: the threads' order does not matter."""
    keras.utils.set_random_seed(0)
    parallel = np.concatenate([x.numpy() for x, _ in make_dataset(data.x_test, data.y_test, 50, augment="handwriting",
                                                                  seed=2)])
    keras.utils.set_random_seed(0)
    one_at_a_time = np.concatenate([x.numpy() for x, _ in make_dataset(
        data.x_test, data.y_test, 50, augment="handwriting", seed=2, deterministic=True)])
    np.testing.assert_array_equal(parallel, one_at_a_time)


@pytest.fixture
def strokes():
    """Ten digit-like strokes: rings and bars 2-3 pixels wide, as MNIST's are."""
    rows, cols = np.mgrid[0:28, 0:28]
    images = np.zeros((10, 28, 28, 1), np.float32)
    for index in range(10):
        radius = 5 + index % 4
        ring = np.abs(np.hypot(rows - 14, cols - 14 + index % 3) - radius) < 1.3
        images[index, ..., 0] = ring
        images[index, 4:24, 13 + index % 3:15 + index % 3, 0] = 1.0
    return images


def test_thickness_thickens_and_thins(strokes):
    images = tf.constant(strokes)
    plain = ink_pixels(images)
    np.testing.assert_array_equal(dilate(images), tf.nn.max_pool2d(images, 3, 1, "SAME"))
    np.testing.assert_array_equal(erode(images), -tf.nn.max_pool2d(-images, 3, 1, "SAME"))
    by_amount = [ink_pixels(change_thickness(images, tf.fill((len(strokes),), amount)))
                 for amount in (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)]
    assert by_amount == sorted(by_amount) and by_amount[2] == plain
    assert by_amount[0] < 0.6 * plain and by_amount[4] > 1.5 * plain and by_amount[6] > by_amount[4]
    np.testing.assert_array_equal(change_thickness(images, tf.ones(len(strokes))), dilate(images))
    np.testing.assert_array_equal(change_thickness(images, -tf.ones(len(strokes))), erode(images))


def test_bilinear_sampling_matches_scipy():
    rng = np.random.default_rng(0)
    images = rng.random((3, 28, 28, 1)).astype(np.float32)
    rows, cols = (rng.uniform(-3, 31, (3, 28, 28)).astype(np.float32) for _ in range(2))
    sampled = sample_bilinear(tf.constant(images), tf.constant(rows), tf.constant(cols)).numpy()
    expected = np.stack([ndimage.map_coordinates(image[..., 0], [r, c], order=1, mode="grid-constant")
                         for image, r, c in zip(images, rows, cols)])
    np.testing.assert_allclose(sampled[..., 0], expected, atol=1e-5)
    grid_rows, grid_cols = (np.stack([grid] * 3) for grid in np.mgrid[0:28, 0:28].astype(np.float32))
    same = sample_bilinear(tf.constant(images), tf.constant(grid_rows), tf.constant(grid_cols))
    np.testing.assert_allclose(same, images, atol=1e-6)


def test_blur_is_a_gaussian():
    image = np.zeros((1, 28, 28, 1), np.float32)
    image[0, 14, 14, 0] = 1.0
    blurred = gaussian_blur(tf.constant(image)).numpy()[0, ..., 0]
    expected = ndimage.gaussian_filter(image[0, ..., 0], 1.0, truncate=2.0, mode="constant")
    np.testing.assert_allclose(blurred, expected, atol=1e-6)
    assert blurred.sum() == pytest.approx(1.0, abs=1e-5)


def test_an_unknown_augmentation_is_refused_by_the_recipe_that_names_it():
    from models import Recipe

    with pytest.raises(TypeError, match="augment='elastic'"):
        Recipe(epochs=1, batch_size=8, augment="elastic")


def test_the_warp_that_runs_on_jax_equals_the_keras_transform_that_runs_on_tensorflow():
    """random_warp transforms with Keras' kernel on TensorFlow and with gathers elsewhere (the screen on
    JAX): each step of the gathers equals the Keras layer whose draw it replays, its range pinned to one value."""
    import keras

    from mnist_lab.data.geometry import random_warp, warp

    images = np.random.default_rng(0).random((2, 28, 28, 1)).astype("float32")

    def each(value):
        return np.full(2, value, "float32")

    for warped, layer in [
        (warp(images, each(np.radians(10)), each(0), each(0), each(1)),
         keras.layers.RandomRotation((-10 / 360, -10 / 360), fill_mode="constant")),
        (warp(images, each(0), each(2.8), each(-2.8), each(1)),
         keras.layers.RandomTranslation((0.1, 0.1), (-0.1, -0.1), fill_mode="constant")),
        (warp(images, each(0), each(0), each(0), each(1.1)),
         keras.layers.RandomZoom((0.1, 0.1), fill_mode="constant")),
    ]:
        np.testing.assert_allclose(warped, layer(images, training=True), atol=1e-5)
    distort = random_warp(seed=1)
    assert np.abs(np.asarray(distort(images, training=True)) - images).max() > 0.5
    np.testing.assert_array_equal(distort(images, training=False), images)
