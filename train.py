"""Train one MNIST model with its recipe and export it as a SavedModel.

    python train.py --model cnn            # writes saved_models/cnn/
    python train.py --model lenet5 --epochs 3 --subset 2000
    python train.py --model cnn --augment handwriting --output saved_models/cnn_handwriting
    python train.py --model deep_cnn --seeds 3      # seeds 42-44: mean, std, min, max test accuracy
    python train.py --model deep_cnn --ensemble 5   # seeds 42-46 averaged into saved_models/deep_cnn_ensemble5/

Flags left out take the model's recipe (see models/__init__.py); each is below, and docs/training.md explains them.
"""

import argparse
import sys

from mnist_lab.config import TrainConfig, train_hint
from mnist_lab.errors import UserError
from mnist_lab.flags import ArgumentParser, add_run_flags, positive_float, positive_int, whole_number
from mnist_lab.startup import quiet_tensorflow_import, run
from models import DEFAULT_MODEL, NAMED_AUGMENTATIONS, OPTIMIZERS, REGISTRY, SCHEDULES


def augmentation(text):
    """--augment's optional value: a bare --augment is rotation, shift and zoom."""
    if text not in NAMED_AUGMENTATIONS:
        raise argparse.ArgumentTypeError(f"expected nothing or one of {', '.join(NAMED_AUGMENTATIONS)}, got {text!r}")
    return text


def registry_model(text):
    """--model: a registry name; a name the README's table shows but another command trains says which."""
    if text in REGISTRY:
        return text
    hint = train_hint(text)
    if hint.startswith("train it with"):
        raise argparse.ArgumentTypeError(f"{text} is not an architecture but a trained model: {hint}")
    raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(sorted(REGISTRY))})")


def parse_args(argv=None):
    recipes = "\n".join(f"  {name:<13} {spec.recipe.describe()}" for name, spec in sorted(REGISTRY.items()))
    parser = ArgumentParser(description=__doc__, epilog=f"recipes (the defaults per model):\n{recipes}",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, type=registry_model, metavar=f"{{{','.join(sorted(REGISTRY))}}}",
                        help=f"architecture to train (default: {DEFAULT_MODEL})")
    parser.add_argument("--epochs", type=positive_int, help="epochs (default: the model's recipe)")
    parser.add_argument("--batch-size", type=positive_int, help="batch size (default: the model's recipe)")
    parser.add_argument("--learning-rate", type=positive_float,
                        help="initial learning rate (default: the model's recipe)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, help="optimizer (default: the model's recipe)")
    parser.add_argument("--schedule", choices=SCHEDULES,
                        help="learning-rate schedule; cosine decays to 0 over the run, exponential by 0.95 an epoch "
                             "(default: the model's recipe)")
    parser.add_argument("--augment", nargs="?", const=True, type=augmentation,
                        metavar=f"{{{','.join(NAMED_AUGMENTATIONS)}}}",
                        help="random rotation/shift/zoom of training images; `--augment wide` in wider ranges "
                             "(15 degrees, zoom 0.15); `--augment handwriting` also makes "
                             "strokes thinner and thicker, distorts, slants, scales, blurs and adds noise "
                             "(default: the model's recipe)")
    parser.add_argument("--no-augment", dest="augment", action="store_const", const=False, default=None,
                        help="no augmentation (default: the model's recipe)")
    add_run_flags(parser, output_default="saved_models/<model>", final_fit=True)
    parser.add_argument("--tensorboard", metavar="DIR", help="also write TensorBoard logs to DIR (default: off)")
    parser.add_argument("--fresh", action="store_true",
                        help="start over instead of resuming an interrupted run of the same command (default: resume)")
    several = parser.add_mutually_exclusive_group()
    several.add_argument("--seeds", type=whole_number(2), metavar="N",
                         help="train N seeds from --seed on into saved_models/members/<model>/seed-<S>/ "
                              "(members/<model>_full/ with --validation-size 0; reusing any trained before) and "
                              "report mean, std, min and max test accuracy in reports/seeds/ (default: one run)")
    several.add_argument("--ensemble", type=whole_number(2), metavar="K",
                         help="train K seeds likewise and export one model averaging their probabilities, "
                              "to saved_models/<model>_ensemble<K>/ (<model>_ensemble<K>_full/ with --validation-size "
                              "0) or --output (default: no ensemble)")
    parser.add_argument("--deterministic", action="store_true",
                        help="bit-identical weights and metrics for the same --seed on the same machine; slower (default: off)")
    return parser.parse_args(argv)


def main(argv=None):
    args = vars(parse_args(argv))
    seeds, ensemble = args.pop("seeds"), args.pop("ensemble")
    config = TrainConfig(**args)
    if seeds and config.output:
        raise UserError("--output does not apply to --seeds: seed S goes to saved_models/members/<model>/seed-S/")
    quiet_tensorflow_import()  # only now: --help and flag errors answer without it
    from mnist_lab.ensemble import run_ensemble, run_seeds
    from mnist_lab.training import train

    if seeds:
        run_seeds(config, seeds)
    elif ensemble:
        run_ensemble(config, ensemble)
    else:
        train(config)
    return 0


if __name__ == "__main__":
    sys.exit(run(main, sigterm_stops=True))
