"""MNIST acquisition (`sources`, `idx`) and the tf.data input pipeline (`pipeline`).

`python -m mnist_lab.data [--data-dir DIR]` resolves, verifies and caches MNIST, then says where
it came from; the tests and CI run it first so the real dataset is at hand offline.
"""

from mnist_lab.data.sources import Mnist, load_mnist

__all__ = ["Mnist", "load_mnist"]
