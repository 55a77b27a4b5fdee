"""Predict the digit in your own images with a trained model.

    python predict.py my_digit.png photo.jpg
    python predict.py scan.png --model lenet5 --json
    python predict.py drawing.gif --show          # also writes reports/predict/drawing.png
    curl -s https://example.org/7.png | python predict.py -   # - reads the image from stdin

Up to 16 million pixels (a JPEG, 50 million: phone photos), RGB, grey or with alpha, dark ink on
light paper or the reverse: each image is prepared the way MNIST digits were (see
mnist_lab/preprocess.py). A file that cannot be read or predicted gets one line on stderr and the
others are still predicted; the exit status is then 1. An answer the model is unsure of says so and why, "7 (52.1 %, unsure: top probability below
80 %)", and in JSON `"unsure": true` with `"unsure_reason"` (see mnist_lab/predictor.py).
"""

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from mnist_lab.config import MODELS_DIR
from mnist_lab.errors import UserError
from mnist_lab.flags import ArgumentParser, add_model_flags
from mnist_lab.startup import printable, run

SHOW_DIR = "reports/predict"
STDIN = "-"


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files (PNG, JPEG, BMP, GIF, TIFF or WebP); - reads one from stdin")
    add_model_flags(parser, MODELS_DIR)
    parser.add_argument("--json", action="store_true", help="print one JSON object per image (default: text)")
    parser.add_argument("--show", action="store_true",
                        help="write a PNG per image of what the model saw beside its prediction (default: off)")
    parser.add_argument("--show-dir", metavar="DIR",
                        help=f"where --show writes (giving it implies --show; default: {SHOW_DIR})")
    args = parser.parse_args(argv)
    if args.show and not args.show_dir:
        args.show_dir = SHOW_DIR
    return args


def read_image(argument):
    """(name, bytes) of a file, or of stdin for `-`."""
    if argument == STDIN:
        try:
            data = sys.stdin.buffer.read()
        except (AttributeError, OSError) as error:  # no stdin at all, or one that cannot be read
            raise UserError(f"<stdin>: cannot read it ({getattr(error, 'strerror', None) or error})") from None
        if not data:
            raise UserError("<stdin>: no image was piped in (e.g. `python predict.py - < digit.png`)")
        return "<stdin>", data
    path = Path(argument)
    if not path.is_file():
        raise UserError(f"{path}: {'a folder, not an image file' if path.is_dir() else 'no such file'}")
    try:
        return str(path), path.read_bytes()
    except OSError as error:
        raise UserError(f"{path}: cannot read it ({error.strerror})") from None


def write_shown(plots, prediction, path, title):
    """The --show figure, written under a temporary name and renamed: a failed write (a full disk)
    leaves no partial file and is one line."""
    partial = path.with_name(f".{path.stem}.{os.getpid()}.partial.png")
    try:
        plots.seen_and_probabilities(prediction.seen, prediction.probabilities, partial, title)
        os.replace(partial, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise UserError(f"--show-dir {path.parent}: cannot write {path.name} ({error.strerror or error}); "
                        "free some space or choose another --show-dir") from None


def main(argv=None):
    args = parse_args(argv)
    from mnist_lab.flags import check_writable_dir
    from mnist_lab.predictor import load_predictor, ranked_models

    ranked_models(args.models_dir, args.model)  # a mistyped --model, or no model, answers before any image is read
    if args.show_dir:
        check_writable_dir(args.show_dir, "--show-dir")
    from mnist_lab import preprocess

    images, failed = [], 0
    for argument in args.images:  # read and prepared first: a missing file or a non-image needs no model to say so
        try:
            name, data = read_image(argument)
            images.append((argument, name, preprocess.prepare_bytes(data, name)))
        except UserError as error:
            print(f"error: {printable(str(error))}", file=sys.stderr)
            failed += 1
    if not images:
        return 1
    predictor, reason, runtime, note = load_predictor(args.models_dir, args.model, args.runtime,
                                                      warn=lambda line: print(printable(line), file=sys.stderr))
    if args.show_dir:
        from mnist_lab import plots  # Matplotlib, only for --show
    if not args.json:
        print(printable(f"model: {predictor.name} ({reason}), on {runtime}{note}"))
    shown_names = set()
    for argument, name, seen in images:
        try:
            prediction = predictor.predict_prepared(seen)
            if args.json:  # allow_nan=False: a NaN can never make the line invalid JSON
                print(json.dumps({"file": name, "model": predictor.name, "model_chosen": reason, "runtime": runtime,
                                  **prediction.to_dict()}, allow_nan=False))
            else:
                top = ", ".join(f"{d} {100 * p:.1f} %" for d, p in prediction.top())
                unsure = f", unsure: {prediction.unsure}" if prediction.unsure else ""
                print(printable(f"{name}: {prediction.digit} ({100 * prediction.probability:.1f} %{unsure})   "
                                f"top 3: {top}"))
            if args.show_dir:
                stem = "stdin" if argument == STDIN else Path(argument).stem
                while stem in shown_names:  # a/7.png and b/7.jpg must not overwrite each other
                    stem += "_"
                shown_names.add(stem)
                shown = Path(args.show_dir) / f"{stem}.png"
                write_shown(plots, prediction, shown, f"{Path(name).name}: {prediction.digit} ({predictor.name})")
                if not args.json:
                    print(printable(f"  as the model saw it: {shown}"))
        except UserError as error:
            print(f"error: {printable(str(error))}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run(main))
