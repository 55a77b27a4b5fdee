"""The tf.data pipeline: the validation split, batch shapes and value range, and augmentation."""

import numpy as np
import pytest

from mnist_lab.data import Mnist
from mnist_lab.data.pipeline import make_dataset, make_splits, to_model_input
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


@pytest.mark.parametrize("size", [0, 1200, 5000])
def test_validation_size_must_leave_training_images(data, size):
    with pytest.raises(UserError, match="--validation-size"):
        make_splits(data, validation_size=size)


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


def test_augmentation_fills_with_black():
    """fill_mode="constant": pixels moved in from outside are background (0), not copies of the edge."""
    white = np.full((32, 28, 28), 255, np.uint8)
    (on, _), = make_dataset(white, np.zeros(32, np.uint8), batch_size=32, augment=True, seed=5)
    black_fraction = (on.numpy() < 0.01).reshape(32, -1).mean(axis=1)
    assert np.mean(black_fraction > 0.01) > 0.8
