"""Fetch, verify and cache MNIST: `python -m mnist_lab.data [--data-dir DIR]`."""

import sys

from mnist_lab.data.sources import load_mnist
from mnist_lab.flags import ArgumentParser
from mnist_lab.startup import quiet_tensorflow_import, run


def main(argv=None):
    parser = ArgumentParser(prog="python -m mnist_lab.data", description=__doc__)
    parser.add_argument("--data-dir", help="folder with the four IDX files or mnist.npz (default: the Keras cache, then the network sources)")
    args = parser.parse_args(argv)
    quiet_tensorflow_import()  # keras.datasets is one of the sources
    data = load_mnist(args.data_dir)
    print(f"MNIST ready: train {data.x_train.shape}, test {data.x_test.shape}, from {data.source}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
