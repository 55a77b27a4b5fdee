"""Accuracy on photos of handwritten digits, and how well the unsure flag catches the mistakes.

    python benchmarks/photos.py                               # every trained model, 1500 photos per lighting
    python benchmarks/photos.py --model cnn robust_cnn --per-lighting 2000 --seed 0

Renders the first N MNIST validation digits (the last 10000 training images: never the test set, so
every choice made on these figures is made on validation data) as photos with benchmarks/photo_sets.py,
once per lighting (plain paper, a shadow, a light gradient; the same page under each light), and
prepares each as predict.py and serve.py do (mnist_lab/preprocess.py). For each model it measures
the accuracy per lighting, beside its accuracy on the 10000 MNIST validation digits themselves; a
photo in which preparation finds no digit counts as a mistake. It then measures the unsure flag
(mnist_lab/predictor.py) on all the photos: the fraction flagged, its precision (the flagged that
are mistakes) and recall (the mistakes that are flagged), and sweeps the two simple rules it could
use (a threshold on the top probability, or on the margin between the top two) so the threshold can
be chosen again. Prints the tables and writes reports/photos.md and reports/photos.json.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: benchmarks/ imports its own modules

from mnist_lab.flags import ArgumentParser, non_negative_int, positive_int  # noqa: E402
from mnist_lab.startup import quiet_tensorflow_import, run  # noqa: E402

quiet_tensorflow_import()

from mnist_lab import predictor, reader  # noqa: E402
from mnist_lab.config import MODELS_DIR  # noqa: E402
from mnist_lab.data import load_mnist  # noqa: E402
from mnist_lab.data.splits import make_splits, to_model_input  # noqa: E402
from mnist_lab.errors import UserError  # noqa: E402
from mnist_lab.flags import check_writable_dir  # noqa: E402
from mnist_lab.machine import cpu_name  # noqa: E402
from benchmarks.photo_sets import LIGHTINGS, photo_set  # noqa: E402
from mnist_lab.preprocess import ImageError, prepare_digit  # noqa: E402
from mnist_lab.record import ModelRecord  # noqa: E402

DEFAULT_PER_LIGHTING = 1500
# The thresholds swept for each rule; the flag is raised below the threshold.
TOP_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)
MARGIN_THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)


def prepared_photos(x_val, y_val, per_lighting, seed):
    """{lighting: (prepared (N, 28, 28) float32, labels, refused mask)} for the first `per_lighting`
    validation digits; a refused photo (no digit found) holds a blank image."""
    photos = {}
    for lighting in LIGHTINGS:
        pictures, labels = photo_set(x_val[:per_lighting], y_val[:per_lighting], seed=seed, lighting=lighting)
        seen = np.zeros((len(pictures), 28, 28), np.float32)
        refused = np.zeros(len(pictures), bool)
        for index, picture in enumerate(pictures):
            try:
                seen[index] = prepare_digit(Image.fromarray(picture), f"photo {index}")
            except ImageError:
                refused[index] = True
        photos[lighting] = (seen, labels, refused)
    return photos


def margins(probabilities):
    """Top probability minus the second, per row."""
    ordered = np.sort(probabilities, axis=1)
    return ordered[:, -1] - ordered[:, -2]


def flag_figures(flagged, wrong):
    """Fraction flagged, precision (flagged that are wrong) and recall (wrong that are flagged)."""
    caught = int(np.sum(flagged & wrong))
    return {"flagged": float(np.mean(flagged)), "precision": caught / max(int(np.sum(flagged)), 1),
            "recall": caught / max(int(np.sum(wrong)), 1), "errors": int(np.sum(wrong))}


def sweep(scores, wrong, thresholds):
    """The flag's figures for `scores` below each threshold, with F1 (precision and recall's harmonic mean)."""
    rows = []
    for threshold in thresholds:
        figures = flag_figures(scores < threshold, wrong)
        total = figures["precision"] + figures["recall"]
        rows.append({"threshold": threshold, **figures,
                     "f1": 2 * figures["precision"] * figures["recall"] / total if total else 0.0})
    return rows


def measure(folder, photos, splits):
    """One model's accuracies (MNIST validation, each lighting, all photos) and its unsure flag's figures."""
    classifier = reader.SavedModelClassifier(folder)
    row = {"model": classifier.name}
    row["mnist_validation"] = float(np.mean(classifier.predict(to_model_input(splits.x_val)).argmax(axis=1)
                                            == splits.y_val))
    probabilities, wrong, flagged, refused = [], [], [], []
    for lighting, (seen, labels, refusals) in photos.items():
        answers = classifier.predict(seen[..., np.newaxis])
        correct = (answers.argmax(axis=1) == labels) & ~refusals
        row[lighting] = float(np.mean(correct))
        probabilities.append(answers[~refusals])
        wrong.append(~correct[~refusals])
        flagged.append(np.array([predictor.unsure_reason(p, image) is not None
                                 for p, image in zip(answers[~refusals], seen[~refusals])]))
        refused.append(refusals)
    probabilities, wrong, flagged = np.concatenate(probabilities), np.concatenate(wrong), np.concatenate(flagged)
    refused = np.concatenate(refused)
    row["photos"] = float(1 - (np.sum(wrong) + np.sum(refused)) / len(refused))
    row["refused"] = int(np.sum(refused))
    row["unsure"] = flag_figures(flagged, wrong)  # among the photos that got an answer
    row["sweep"] = {"top_probability": sweep(probabilities.max(axis=1), wrong, TOP_THRESHOLDS),
                    "margin": sweep(margins(probabilities), wrong, MARGIN_THRESHOLDS)}
    return row


def percent(value):
    return f"{100 * value:.2f} %"


def accuracy_table(rows):
    lines = ["| model | MNIST validation | " + " | ".join(LIGHTINGS) + " | all photos | no digit found | "
             "unsure: flagged | precision | recall |",
             "|---|" + "---:|" * (len(LIGHTINGS) + 6)]
    for row in rows:
        unsure = row["unsure"]
        lines.append(f"| `{row['model']}` | {percent(row['mnist_validation'])} | "
                     + " | ".join(percent(row[lighting]) for lighting in LIGHTINGS)
                     + f" | {percent(row['photos'])} | {row['refused']} | {percent(unsure['flagged'])} | "
                       f"{percent(unsure['precision'])} | {percent(unsure['recall'])} |")
    return "\n".join(lines)


def sweep_table(row):
    lines = [f"`{row['model']}`, {row['unsure']['errors']} mistakes among the photos it answered:", "",
             "| rule | flag below | flagged | precision | recall | F1 |", "|---|---:|---:|---:|---:|---:|"]
    for rule, rows in row["sweep"].items():
        for entry in rows:
            lines.append(f"| {rule.replace('_', ' ')} | {entry['threshold']:g} | {percent(entry['flagged'])} | "
                         f"{percent(entry['precision'])} | {percent(entry['recall'])} | {entry['f1']:.3f} |")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-lighting", type=positive_int, default=DEFAULT_PER_LIGHTING, metavar="N",
                        help=f"photos per lighting, of the first N validation digits (default: {DEFAULT_PER_LIGHTING})")
    parser.add_argument("--model", nargs="+", action="extend", metavar="NAME",
                        help="model folders under --models-dir (default: every trained model)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the photos (default: 0)")
    parser.add_argument("--models-dir", default=str(MODELS_DIR),
                        help=f"where trained models are (default: {MODELS_DIR})")
    parser.add_argument("--data-dir", help="folder with MNIST IDX files or mnist.npz (default: the cache, as train.py)")
    parser.add_argument("--reports-dir", default="reports",
                        help="where photos.md and photos.json go (default: reports)")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    check_writable_dir(args.reports_dir, "--reports-dir")  # before minutes of rendering, not after
    models_dir = Path(args.models_dir)
    folders = [models_dir / name for name in args.model] if args.model else reader.model_folders(models_dir)
    missing = [folder.name for folder in folders if not reader.has_savedmodel(folder)]
    if missing or not folders:
        raise UserError(f"no trained model {', '.join(missing) or 'at all'} in {models_dir}/; train it first, "
                        f"e.g. `python train.py --model {missing[0] if missing else 'cnn'}`")
    splits = make_splits(load_mnist(args.data_dir))
    if args.per_lighting > len(splits.x_val):
        raise UserError(f"--per-lighting {args.per_lighting}: more than the {len(splits.x_val)} validation digits")
    start = time.perf_counter()
    photos = prepared_photos(splits.x_val, splits.y_val, args.per_lighting, args.seed)
    print(f"{len(LIGHTINGS)} x {args.per_lighting} photos rendered and prepared in {time.perf_counter() - start:.0f} s")
    trained_on_them = [folder.name for folder in folders if (record := ModelRecord.load(folder)) and record.final_fit]
    if trained_on_them:  # a final fit learnt the validation digits these photos are made of
        print(f"left out: {', '.join(trained_on_them)}, trained on the validation digits (--validation-size 0)")
    rows = [measure(folder, photos, splits) for folder in folders if folder.name not in trained_on_them]
    rule = (f"top probability below {predictor.UNSURE_BELOW:g}, no clear digit, or ink over "
            f"{predictor.WIDER_THAN:g} times as wide as tall")
    heading = (f"{len(LIGHTINGS)} x {args.per_lighting} photos of MNIST validation digits (seed {args.seed}); "
               f"unsure: {rule}.\n`python benchmarks/photos.py --per-lighting {args.per_lighting} --seed {args.seed}"
               f"{' --model ' + ' '.join(args.model) if args.model else ''}` on {cpu_name()}.")
    report = "\n\n".join([heading, accuracy_table(rows), "The two rules the flag could use:",
                          *(sweep_table(row) for row in rows)])
    reports_dir = Path(args.reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    (reports_dir / "photos.md").write_text(report + "\n")
    (reports_dir / "photos.json").write_text(json.dumps(
        {"per_lighting": args.per_lighting, "seed": args.seed, "unsure_below": predictor.UNSURE_BELOW,
         "cpu": cpu_name(), "models": rows}, indent=2) + "\n")
    print(f"\n{report}\n\nwritten to {reports_dir}/photos.md and photos.json")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
