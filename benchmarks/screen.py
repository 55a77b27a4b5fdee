"""Screen changes to deep_cnn's recipe on the validation split, one (change, seed) per process.

    python benchmarks/screen.py --change width15 --seed 42            # here: Keras on TensorFlow
    KERAS_BACKEND=jax python benchmarks/screen.py --change base --seed 42 --train-npz train.npz
    python benchmarks/screen.py --add-model saved_models/resnet       # a model train.py trained, as a run
    python benchmarks/screen.py --add-model saved_models/resnet --views rotate5   # with test-time views
    python benchmarks/screen.py --score                               # each change's runs, and averaged
    python benchmarks/screen.py --score --groups 5                    # and averaged five at a time

Made for the GPU machine a session is sometimes lent. It has JAX but no TensorFlow, and no
TensorFlow wheel fits in what travels there, so train.py cannot run on it. This replays the recipe
with Keras alone and the package's own parts: the registry's deep_cnn recipe, its builder, the
split and scaling (mnist_lab/data/splits.py), the optimizer factory (mnist_lab/optimizers.py) and
the augmentation that train.py's pipeline runs (mnist_lab/data/geometry.py's random_warp), here
inside the model. On JAX that layer warps with gathers, because Keras' own image transform takes
0.4 s a batch on JAX's GPU backend, 140 times the network's step.

Only training images are read; the last 10000 are validation, as in train.py. `--train-npz` is a
file of them alone (arrays `x`, `y`), so the test set need not travel. Each run appends one JSON
line to --results, its validation probabilities included, so that `--score` can say what averaging
runs (an ensemble) gives. `--add-model` adds a model that train.py trained on the same split, so
that ensembles of other architectures are scored the same way. docs/accuracy.md shows how ten to
eighteen ran side by side on one GPU, and what they found.
"""

import argparse
import base64
import dataclasses
import json
import os
import sys
import time
from types import SimpleNamespace

import numpy as np

from mnist_lab.config import VALIDATION_SIZE
from mnist_lab.data.geometry import (
    ELASTIC_PIXELS,
    ROTATION_DEGREES,
    SHIFT_FRACTION,
    WIDE_ROTATION_DEGREES,
    WIDE_ZOOM_FRACTION,
    ZOOM_FRACTION,
    random_warp,
    warp,
)
from mnist_lab.data.splits import make_splits, to_model_input
from mnist_lab.errors import UserError
from mnist_lab.flags import ArgumentParser, positive_int, seed_number
from mnist_lab.startup import quiet_tensorflow_import
from models import REGISTRY

WIDE = dict(rotation=WIDE_ROTATION_DEGREES, zoom=WIDE_ZOOM_FRACTION)
CHANGES = {
    "base": {},
    "smooth": dict(smoothing=0.1),  # label smoothing
    "ema": dict(ema=0.999),  # weights averaged over about 1000 steps, swapped in at the end
    "wide": WIDE,  # Deotte's ranges (train.py --augment wide)
    "smooth_wide": dict(smoothing=0.1, **WIDE),
    "erase": dict(erase=0.5),  # Keras' RandomErasing(0.5): each image erased with a chance drawn from 0-50 %
    "width15": dict(width=1.5),  # every layer's filters x 1.5
    "width2": dict(width=2.0),
    "bag": dict(bag=0.8),  # Deotte's bagging: each run trains on its own random 80 % of the training split
    "elastic": dict(elastic=ELASTIC_PIXELS),  # robust_cnn's smooth random displacement, on top of the warp
    "elastic2": dict(elastic=2 * ELASTIC_PIXELS),  # the same, twice as strong
}


# Test-time augmentation for --add-model --views: each view besides the image itself, as (degrees, rows,
# columns, scale) for warp(). "shift1" is evaluate.py --tta's (a test keeps them equal).
ONE_PIXEL = [(0, -1, 0, 1), (0, 1, 0, 1), (0, 0, -1, 1), (0, 0, 1, 1)]
VIEW_SETS = {
    "none": [],
    "shift1": ONE_PIXEL,
    "shift1_diagonal": ONE_PIXEL + [(0, rows, columns, 1) for rows in (-1, 1) for columns in (-1, 1)],
    "shift2": [(0, 2 * rows, 2 * columns, 1) for _, rows, columns, _ in ONE_PIXEL],
    "rotate5": [(-5, 0, 0, 1), (5, 0, 0, 1)],
    "rotate10": [(degrees, 0, 0, 1) for degrees in (-10, -5, 5, 10)],
    "zoom10": [(0, 0, 0, 0.9), (0, 0, 0, 1.1)],
    "shift1_rotate5": ONE_PIXEL + [(-5, 0, 0, 1), (5, 0, 0, 1)],
}


def training_rows(count, fraction, seed):
    """The rows of the `count` training images a run trains on: all of them, or for bagging its own
    random `fraction` of them, drawn by its seed. In order, so that a run without bagging is unchanged."""
    return np.sort(np.random.default_rng(seed).permutation(count)[:round(fraction * count)])


def screen(change, seed, x_train, y_train, epochs=None, validation_size=VALIDATION_SIZE):
    """Train deep_cnn's recipe with `change` on all but the last `validation_size` images; its row."""
    import keras

    from mnist_lab.optimizers import make_optimizer
    from models.deep_cnn import build_deep_cnn

    recipe = REGISTRY["deep_cnn"].recipe
    settings = dict(rotation=ROTATION_DEGREES, zoom=ZOOM_FRACTION, smoothing=0.0, ema=0.0, width=1.0, erase=0.0,
                    bag=1.0, elastic=0.0)
    settings.update(CHANGES[change])
    epochs = epochs or recipe.epochs
    if len(x_train) <= validation_size:
        raise UserError(f"{len(x_train)} training images: the screen needs more than the {validation_size} "
                        "it holds out for validation")
    splits = make_splits(SimpleNamespace(x_train=x_train, y_train=y_train, x_test=x_train[:0], y_test=y_train[:0]),
                         validation_size)
    keras.utils.set_random_seed(seed)
    rows = training_rows(len(splits.x_train), settings["bag"], seed)
    x_fit, y_fit = to_model_input(splits.x_train)[rows], keras.utils.to_categorical(splits.y_train[rows], 10)
    x_val, y_val = to_model_input(splits.x_val), keras.utils.to_categorical(splits.y_val, 10)
    net = build_deep_cnn(width=settings["width"])
    inputs = keras.Input(net.input_shape[1:])
    distorted = random_warp(settings["rotation"], SHIFT_FRACTION, settings["zoom"], seed,
                            settings["elastic"])(inputs)
    if settings["erase"]:
        distorted = keras.layers.RandomErasing(settings["erase"], scale=(0.02, 0.15), fill_value=0.0,
                                               value_range=(0, 1), seed=seed + 3)(distorted)
    model = keras.Model(inputs, net(distorted))
    recipe = dataclasses.replace(recipe, epochs=epochs)
    optimizer = make_optimizer(recipe, -(-len(rows) // recipe.batch_size), use_ema=settings["ema"] > 0,
                               ema_momentum=settings["ema"] or 0.99)
    model.compile(optimizer, keras.losses.CategoricalCrossentropy(label_smoothing=settings["smoothing"]),
                  metrics=["categorical_accuracy"])
    start = time.perf_counter()
    history = model.fit(x_fit, y_fit, batch_size=recipe.batch_size, epochs=epochs,
                        validation_data=(x_val, y_val), verbose=2).history
    seconds = time.perf_counter() - start
    # Where ema > 0, fit has swapped the averaged weights in by now: score them, not the last epoch's.
    probabilities = net.predict(x_val, batch_size=1000, verbose=0)
    return dict(change=change, seed=seed, epochs=epochs,
                val_accuracy=accuracy(probabilities, splits.y_val),
                val_loss=history["val_loss"][-1], mean_last5=float(np.mean(history["val_categorical_accuracy"][-5:])),
                params=net.count_params(), seconds=round(seconds, 1), backend=keras.backend.backend(),
                val_probabilities=encode(probabilities))


def view(images, degrees, rows, columns, scale):
    """The images as one test-time view: rotated, shifted and scaled as warp() does, the same for each."""
    def each(value):
        return np.full(len(images), value, "float32")

    return np.asarray(warp(images, each(np.radians(degrees)), each(rows), each(columns), each(scale)))


def added_record(folder):
    """The record of an --add-model folder, read before the data loads: a wrong folder answers at once."""
    from mnist_lab.record import ModelRecord

    record = ModelRecord.load(folder)
    if record is None:
        raise UserError(f"--add-model {folder}: no trained model there (no metadata.json that this project "
                        "wrote and that reads whole)")
    return record


def trained_model_row(folder, record, x_train, y_train, view_set="none", validation_size=VALIDATION_SIZE):
    """A SavedModel that train.py trained on the split (`record`: its record), as one more run: its model's
    name for a change. `view_set`: a VIEW_SETS name; its probabilities are then the mean over the image
    and those views."""
    quiet_tensorflow_import()
    from mnist_lab.reader import SavedModelClassifier

    trained_on, held_out = record.data.get("train_images"), record.data.get("validation_images")
    if held_out != validation_size or trained_on is None or trained_on + held_out != len(x_train):
        raise UserError(f"--add-model {folder}: trained on {trained_on} images with {held_out} held out; only a "
                        f"model trained on all but the last {validation_size} of these {len(x_train)} can be "
                        "scored on them")
    model, images = SavedModelClassifier(folder), to_model_input(x_train[-validation_size:])
    views = [images] + [view(images, *each) for each in VIEW_SETS[view_set]]
    probabilities = np.mean([model.predict(seen) for seen in views], axis=0)
    return dict(change=record.model, seed=record.flags.get("seed"), folder=str(folder), views=view_set,
                val_accuracy=accuracy(probabilities, np.asarray(y_train)[-validation_size:]),
                val_probabilities=encode(probabilities))


def accuracy(probabilities, labels):
    """The fraction of images whose most probable class is their label."""
    return float(np.mean(np.asarray(probabilities).argmax(1) == labels))


def encode(probabilities):
    """(N, 10) probabilities as float16 in base64: 270 kB a run in the JSON line, one file to bring back."""
    return base64.b64encode(np.asarray(probabilities, "float16").tobytes()).decode("ascii")


def decode(text):
    return np.frombuffer(base64.b64decode(text), "float16").reshape(-1, 10).astype("float32")


def score(rows, y_val, group_size=None):
    """One line per change: its runs' mean validation accuracy, that of their averaged probabilities,
    and how many digits every run misses and half of them or more; then every run averaged together,
    where there are several changes. `group_size` K: below each change, its runs in order of seed
    averaged K at a time (a last group of fewer is left out)."""
    groups = {}
    for row in rows:
        groups.setdefault(row["change"], []).append(row)
    if len(groups) > 1:
        groups["all of them"] = rows
    lines = []
    for name, members in groups.items():
        members = sorted(members, key=lambda row: (row.get("seed") is None, row.get("seed") or 0))
        probabilities = [decode(row["val_probabilities"]) for row in members]
        if any(len(p) != len(y_val) for p in probabilities):
            raise UserError(f"{name}: a run has probabilities for other than the {len(y_val)} validation images")
        wrong = np.array([p.argmax(1) != y_val for p in probabilities])
        averaged = accuracy(np.mean(probabilities, axis=0), y_val)
        lines.append(f"{name}: {len(members)} run{'s' * (len(members) > 1)}, {100 * (1 - wrong.mean()):.2f} % on "
                     f"average, {100 * averaged:.2f} % averaged into one; {wrong.all(axis=0).sum()} digits missed "
                     f"by every run, {(wrong.mean(axis=0) >= 0.5).sum()} by half or more")
        if group_size and name != "all of them":
            for start in range(0, len(members) - group_size + 1, group_size):
                group = probabilities[start:start + group_size]
                first, last = members[start].get("seed"), members[start + group_size - 1].get("seed")
                lines.append(f"  seeds {first}-{last}: {100 * accuracy(np.mean(group, axis=0), y_val):.2f} % "
                             "averaged into one")
    return lines


def unique_runs(rows):
    """The last row of each run (change, seed, model folder, views): a file appended to twice counts each once."""
    return list({(row["change"], row.get("seed"), row.get("folder"), row.get("views")): row for row in rows}.values())


def read_rows(path):
    """The runs in a --results file that kept their probabilities."""
    try:
        with open(path) as results:
            rows = [json.loads(line) for line in results if line.strip()]
    except (OSError, ValueError) as error:
        raise UserError(f"--results {path}: cannot read its runs ({error})") from None
    rows = [row for row in rows if isinstance(row, dict) and "val_probabilities" in row]
    for row in rows:
        fields = {"change": str, "val_probabilities": str, "seed": (int, type(None)), "folder": (str, type(None)),
                  "views": (str, type(None))}
        wrong = [name for name, kinds in fields.items() if not isinstance(row.get(name), kinds)]
        if not wrong:
            try:
                decode(row["val_probabilities"])
            except ValueError:  # binascii.Error is one: not base64, or not a whole number of rows of 10
                wrong = ["val_probabilities"]
        if wrong:
            raise UserError(f"--results {path}: a run's {', '.join(wrong)} is not what this script writes "
                            f"(change {str(row.get('change'))[:40]!r}, seed {str(row.get('seed'))[:20]}); "
                            "remove that line or choose another --results")
    rows = unique_runs(rows)
    if not rows:
        raise UserError(f"--results {path}: no run with validation probabilities to score; run some first")
    return rows


def load_training(train_npz):
    """The training images and labels: from `train_npz`, else MNIST as train.py finds it."""
    if not train_npz:
        from mnist_lab.data import load_mnist

        data = load_mnist()
        return data.x_train, data.y_train
    try:
        arrays = np.load(train_npz)
        return arrays["x"], arrays["y"]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
        raise UserError(f"--train-npz {train_npz}: not a .npz with arrays x and y ({error})") from None


def main(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--change", choices=sorted(CHANGES), help="what differs from the recipe (required to train)")
    parser.add_argument("--seed", type=seed_number, help="the run's seed (required to train)")
    parser.add_argument("--score", action="store_true",
                        help="train nothing; score the runs in --results, one change at a time and averaged")
    parser.add_argument("--results", default="reports/screen.jsonl",
                        help="the file each run appends its JSON line to (default: reports/screen.jsonl)")
    parser.add_argument("--train-npz", help="a .npz of the 60000 training images (x) and labels (y) alone "
                                            "(default: MNIST as train.py finds it)")
    parser.add_argument("--add-model", metavar="FOLDER",
                        help="train nothing; add a model that train.py trained on the split, such as "
                             "saved_models/resnet, to --results as one more run named by its model (default: none)")
    parser.add_argument("--views", choices=list(VIEW_SETS), default="none",
                        help="with --add-model: average its probabilities over the image and these views "
                             "(test-time augmentation; shift1 is evaluate.py --tta's) (default: none)")
    parser.add_argument("--groups", type=positive_int, metavar="K",
                        help="with --score: also each change's runs, in order of seed, averaged K at a time "
                             "(default: all of them only)")
    parser.add_argument("--epochs", type=positive_int, help="fewer epochs, for a smoke run (default: the recipe's)")
    args = parser.parse_args(argv)
    if not (args.score or args.add_model) and (args.change is None or args.seed is None):
        parser.error("--change and --seed are needed to train a run (or --score to score the runs, "
                     "or --add-model to add one)")
    if args.score:
        rows = read_rows(args.results)
        y_val = np.asarray(load_training(args.train_npz)[1])[-VALIDATION_SIZE:]
        print("\n".join(score(rows, y_val, args.groups)))
        return 0
    record = args.add_model and added_record(args.add_model)
    x_train, y_train = load_training(args.train_npz)
    if args.add_model:
        row = trained_model_row(args.add_model, record, x_train, y_train, args.views)
    else:
        if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
            quiet_tensorflow_import()
        row = screen(args.change, args.seed, x_train, y_train, args.epochs)
    os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
    with open(args.results, "a") as results:
        results.write(json.dumps(row) + "\n")
    how = (f"from {args.add_model}" if args.add_model else
           f"after {row['epochs']} epochs in {row['seconds']:.0f} s ({row['backend']})")
    print(f"{row['change']} seed {row['seed']}: validation accuracy {100 * row['val_accuracy']:.2f} % {how}")
    return 0


if __name__ == "__main__":
    from mnist_lab.startup import run

    sys.exit(run(main))
