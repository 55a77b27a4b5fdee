"""Train the from-scratch NumPy `simple_cnn` on MNIST and export it through its Keras twin.

    python -m scratch.train                  # writes saved_models/simple_cnn_scratch/

Same data, split and recipe as `python train.py --model simple_cnn` (Adam, batch 64, 5 epochs),
but every forward and backward pass is NumPy from `scratch/layers.py`. At the end the weights are
loaded into the registry's Keras `simple_cnn` and exported like any model, so `python evaluate.py`
reports the two side by side.
"""

import argparse
import dataclasses
import sys

from mnist_lab.config import SCRATCH_MODEL, TrainConfig
from mnist_lab.flags import ArgumentParser, add_run_flags, positive_float, positive_int
from mnist_lab.startup import quiet_tensorflow_import, run
from models import REGISTRY

NAME = SCRATCH_MODEL
SPEC = dataclasses.replace(
    REGISTRY["simple_cnn"], summary="simple_cnn trained from scratch in NumPy (scratch/), exported through its Keras twin")


def scratch_config(**flags):
    """A TrainConfig for the NumPy net: simple_cnn's recipe, and these flags."""
    return TrainConfig(model="simple_cnn", name=NAME, **flags)


def parse_args(argv=None):
    parser = ArgumentParser(prog="python -m scratch.train", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=positive_int, help="epochs (default: simple_cnn's recipe, 5)")
    parser.add_argument("--batch-size", type=positive_int, help="batch size (default: simple_cnn's recipe, 64)")
    parser.add_argument("--learning-rate", type=positive_float, help="Adam learning rate (default: simple_cnn's recipe, 0.001)")
    add_run_flags(parser, output_default=f"saved_models/{NAME}")
    parser.add_argument("--fresh", action="store_true",
                        help="discard an interrupted run's backup and start over (default: resume from it)")
    return parser.parse_args(argv)


def main(argv=None):
    config = scratch_config(**{key: value for key, value in vars(parse_args(argv)).items() if value is not None})
    quiet_tensorflow_import()  # Keras makes the split and the export; only now, so --help answers at once
    from scratch.training import train_scratch

    train_scratch(config)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
