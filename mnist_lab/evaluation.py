"""Evaluate exported SavedModels on the MNIST test set: reports, plots, one comparison table.

`evaluate(config)` is what `python evaluate.py` runs, `evaluate_corruptions(config)` what
`python evaluate.py --corruptions` runs. Models are loaded through TensorFlow's SavedModel API,
exactly as a server would load them, not from their `.keras` files.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix, f1_score

from mnist_lab import plots, reader
from mnist_lab.config import MODELS_DIR
from mnist_lab.corruptions import CORRUPTIONS, SEED, corrupt
from mnist_lab.data import load_mnist
from mnist_lab.data.splits import to_model_input
from mnist_lab.errors import ModelError
from mnist_lab.flags import check_writable_dir
from mnist_lab.text import counted, write_json, write_text
from models import NUM_CLASSES

GRID_SIZE = 50  # test images shown in the predictions grid
WORST_SIZE = 30  # most confident mistakes shown
# Test-time augmentation: each image as given and moved one pixel up, down, left and right. Fixed
# in advance (not chosen on any data); MNIST digits are centred by their centre of mass, which a
# one-pixel shift barely disturbs.
TTA_SHIFTS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))


@dataclass
class EvalConfig:
    models_dir: str = str(MODELS_DIR)
    models: List[str] = field(default_factory=list)  # empty: every model in models_dir
    data_dir: Optional[str] = None
    reports_dir: str = "reports"
    batch_size: int = 1000
    tta: bool = False  # also report accuracy with test-time augmentation, beside the plain figure
    formats: bool = False  # also measure model.onnx and model.tflite on their runtimes, beside the SavedModel


def shift(images, rows, columns):
    """Images (N, H, W, C) moved by whole pixels; the uncovered border is background (0)."""
    moved = np.zeros_like(images)
    height, width = images.shape[1:3]
    moved[:, max(rows, 0):height + min(rows, 0), max(columns, 0):width + min(columns, 0)] = \
        images[:, max(-rows, 0):height + min(-rows, 0), max(-columns, 0):width + min(-columns, 0)]
    return moved


def tta_probabilities(predict, images, shifts=TTA_SHIFTS):
    """The mean of `predict`'s probabilities over shifted copies of the images."""
    return np.mean([predict(shift(images, rows, columns)) for rows, columns in shifts], axis=0)


def write_reports(name, images, labels, probabilities, report, matrix, folder):
    folder.mkdir(parents=True, exist_ok=True)
    predicted = probabilities.argmax(axis=1)
    write_text(f"{name} on {len(labels)} test images\n\n{report}\nconfusion matrix (rows: true, columns: predicted)\n"
               f"{np.array2string(matrix, max_line_width=200)}\n", folder / "classification_report.txt")
    plots.confusion_matrix(matrix, folder / "confusion_matrix.png", f"{name}: confusion matrix")

    shown = np.arange(min(GRID_SIZE, len(labels)))
    plots.image_grid(images[shown], [f"{labels[i]} → {predicted[i]}" for i in shown],
                     predicted[shown] != labels[shown], folder / "predictions.png",
                     f"{name}: first {len(shown)} test images (true → predicted, mistakes in red)")

    wrong = np.flatnonzero(predicted != labels)
    worst = wrong[np.argsort(-probabilities[wrong, predicted[wrong]])][:WORST_SIZE]
    plots.image_grid(images[worst], [f"#{i}: {labels[i]} → {predicted[i]} {probabilities[i, predicted[i]]:.2f}"
                                     for i in worst],
                     np.ones(len(worst), bool), folder / "mistakes.png",
                     f"{name}: the {len(worst)} most confident mistakes (#test index: true → predicted, probability)")


def open_classifier(folder, data, log=print):
    """The folder's SavedModel, with a note when its record says it was trained on other data than `data`."""
    classifier = reader.SavedModelClassifier(folder)
    record = classifier.record
    if record and record.fingerprint and record.fingerprint != data.fingerprint:
        log(f"note: {classifier.name} was trained on {record.data.get('source')}, not on {data.source}")
    return classifier


def evaluate_folder(folder, data, config, log=print):
    """Evaluate one SavedModel folder; write its reports; return its row for the table."""
    classifier = open_classifier(folder, data, log)
    name, record = classifier.name, classifier.record

    images = to_model_input(data.x_test)
    classifier.predict(images[:config.batch_size], config.batch_size)  # warm-up: trace the graph once
    start = time.perf_counter()
    probabilities = classifier.predict(images, config.batch_size)
    seconds = time.perf_counter() - start

    labels = data.y_test
    predicted = probabilities.argmax(axis=1)
    report = classification_report(labels, predicted, labels=range(NUM_CLASSES), digits=4, zero_division=0)
    matrix = confusion_matrix(labels, predicted, labels=range(NUM_CLASSES))
    write_reports(name, data.x_test, labels, probabilities, report, matrix, Path(config.reports_dir) / name)

    row = {
        "model": name,
        "test_accuracy": float(np.mean(predicted == labels)),
        "macro_f1": float(f1_score(labels, predicted, average="macro", labels=range(NUM_CLASSES), zero_division=0)),
        "parameters": classifier.parameter_count(),
        "epochs": record.epochs_run if record else None,
        "training_seconds": record.training_seconds if record else None,
        "images_per_second": len(images) / seconds,
        "subset": record.flags.get("subset") if record else None,
    }
    line = f"{name}: test accuracy {100 * row['test_accuracy']:.2f} %, {int(np.sum(predicted != labels))} mistakes"
    if config.tta:
        augmented = tta_probabilities(lambda batch: classifier.predict(batch, config.batch_size), images)
        row["tta_accuracy"] = float(np.mean(augmented.argmax(axis=1) == labels))
        line += f", with test-time augmentation ({len(TTA_SHIFTS)} views) {100 * row['tta_accuracy']:.2f} %"
    if config.formats:
        line += "".join(measure_format(folder, runtime, images, labels, probabilities, config.batch_size, row)
                        for runtime in reader.FORMAT_FILES)
    log(f"{line}; report in {Path(config.reports_dir) / name}/\n{report}")
    return row


def measure_format(folder, runtime, images, labels, probabilities, batch_size, row):
    """`folder`'s file for `runtime` on the test set: its accuracy and its largest probability difference
    from the SavedModel's `probabilities`, into `row`; returns them in words for the model's line."""
    label = FORMAT_LABELS[runtime]
    try:
        answered = reader.load_classifier(folder, runtime).predict(images, batch_size)
    except ModelError as error:
        row[f"{runtime}_accuracy"] = row[f"{runtime}_difference"] = None
        return f"; {label}: {error}"
    row[f"{runtime}_accuracy"] = float(np.mean(answered.argmax(axis=1) == labels))
    row[f"{runtime}_difference"] = float(np.abs(answered - probabilities).max())
    return (f"; {label} {100 * row[f'{runtime}_accuracy']:.2f} %, largest probability difference "
            f"{row[f'{runtime}_difference']:.1g}")


FORMAT_LABELS = {"onnx": "ONNX", "litert": "LiteRT"}


def format_table(rows):
    """The comparison table, in Markdown (readable as plain text too); TTA and format columns if measured."""
    tta = any("tta_accuracy" in row for row in rows)
    formats = [runtime for runtime in reader.FORMAT_FILES if any(f"{runtime}_accuracy" in row for row in rows)]
    lines = ["| model | test accuracy |" + (" with TTA |" if tta else "")
             + "".join(f" {FORMAT_LABELS[runtime]} | {FORMAT_LABELS[runtime]} largest difference |"
                       for runtime in formats)
             + " macro F1 | parameters | epochs | training time | inference images/s |",
             "|---|---:|" + ("---:|" if tta else "") + "---:|---:|" * len(formats) + "---:|---:|---:|---:|---:|"]
    for row in sorted(rows, key=lambda r: -r["test_accuracy"]):
        model = row["model"] + (f" (smoke run: --subset {row['subset']})" if row.get("subset") else "")
        trained = f"{row['training_seconds']:.0f} s" if row["training_seconds"] is not None else "?"
        augmented = f" {100 * row['tta_accuracy']:.2f} % |" if tta else ""
        parameters = f"{row['parameters']:,}" if row["parameters"] is not None else "?"
        augmented += "".join(" - | - |" if row.get(f"{runtime}_accuracy") is None else
                             f" {100 * row[f'{runtime}_accuracy']:.2f} % | {row[f'{runtime}_difference']:.1g} |"
                             for runtime in formats)
        lines.append(f"| {model} | {100 * row['test_accuracy']:.2f} % |{augmented} {row['macro_f1']:.4f} | "
                     f"{parameters} | {row['epochs'] or '?'} | {trained} | {row['images_per_second']:,.0f} |")
    return "\n".join(lines)


def evaluate(config, data=None, log=print):
    """Evaluate every requested model; a broken one is skipped and the rest still evaluated.

    `data` is MNIST as loaded (None: load it now). Returns (rows, failures): the table rows and
    one message per model that could not be evaluated.
    """
    folders = reader.find_model_folders(config.models_dir, config.models)
    check_writable_dir(config.reports_dir, "--reports-dir")  # before the data loads: a bad flag fails at once
    data = data or load_mnist(config.data_dir, log=log)
    rows, failures = [], [] if config.models else reader.set_aside_notes(config.models_dir)
    log(f"evaluating {counted(len(folders), 'model')} on {len(data.y_test)} test images")
    for folder in folders:
        log(f"{folder.name}: loading its SavedModel and predicting")
        try:
            rows.append(evaluate_folder(folder, data, config, log))
        except ModelError as error:
            failures.append(str(error))
    if rows:
        table = format_table(rows)
        reports = Path(config.reports_dir)
        reports.mkdir(parents=True, exist_ok=True)
        write_text(f"Test set: {len(data.y_test)} images from {data.source}\n\n{table}\n", reports / "summary.md")
        log(f"\n{table}\n\nreports written to {reports}/")
    return rows, failures


def corruption_row(folder, data, corrupted, config, log=print):
    """One model's accuracy on the clean test images and on each corrupted copy of them."""
    classifier = open_classifier(folder, data, log)
    name, record = classifier.name, classifier.record

    def accuracy(images):
        predicted = classifier.predict(to_model_input(images), config.batch_size).argmax(axis=1)
        return float(np.mean(predicted == data.y_test))

    accuracies = {corruption: accuracy(images) for corruption, images in corrupted.items()}
    errors = {corruption: 1 - value for corruption, value in accuracies.items()}
    worst = max(errors, key=errors.get)
    row = {"model": name, "clean_accuracy": accuracy(data.x_test), "accuracy": accuracies,
           "mean_corruption_error": float(np.mean(list(errors.values()))), "worst": worst,
           "subset": record.flags.get("subset") if record else None}
    log(f"{name}: clean accuracy {100 * row['clean_accuracy']:.2f} %, mean corruption error "
        f"{100 * row['mean_corruption_error']:.2f} %, worst {worst} ({100 * errors[worst]:.2f} % error)")
    return row


def format_corruption_table(rows):
    """Rows models (most robust first), columns clean, each corruption and mCE, in Markdown."""
    names = list(CORRUPTIONS)
    lines = ["| model | clean | " + " | ".join(names) + " | mCE |", "|---|" + "---:|" * (len(names) + 2)]
    for row in sorted(rows, key=lambda r: r["mean_corruption_error"]):
        model = row["model"] + (f" (smoke run: --subset {row['subset']})" if row.get("subset") else "")
        cells = [row["clean_accuracy"], *(row["accuracy"][name] for name in names)]
        lines.append(f"| {model} | " + " | ".join(f"{100 * cell:.2f}" for cell in cells)
                     + f" | {100 * row['mean_corruption_error']:.2f} |")
    return "\n".join(lines)


def evaluate_corruptions(config, data=None, log=print):
    """Every requested model on the clean test set and under each of MNIST-C's corruptions.

    Writes corruptions.md (the table) and corruptions.json in config.reports_dir. The mean
    corruption error (mCE) is the plain mean of the error rates over the corruptions, as MNIST-C
    reports it; ImageNet-C's CE, normalised by AlexNet's errors, has no counterpart here.
    Returns (rows, failures), as evaluate() does.
    """
    folders = reader.find_model_folders(config.models_dir, config.models)
    check_writable_dir(config.reports_dir, "--reports-dir")  # before the data loads: a bad flag fails at once
    data = data or load_mnist(config.data_dir, log=log)
    start = time.perf_counter()
    corrupted = {name: corrupt(name, data.x_test, SEED) for name in CORRUPTIONS}  # once, for every model
    log(f"{len(data.y_test)} test images corrupted {counted(len(corrupted), 'way')} (seed {SEED}) in "
        f"{time.perf_counter() - start:.0f} s; evaluating {counted(len(folders), 'model')} on each")
    rows, failures = [], [] if config.models else reader.set_aside_notes(config.models_dir)
    for folder in folders:
        try:
            rows.append(corruption_row(folder, data, corrupted, config, log))
        except ModelError as error:
            failures.append(str(error))
    if rows:
        table = format_corruption_table(rows)
        reports = Path(config.reports_dir)
        write_text(f"Accuracy (%) on the {len(data.y_test)} test images from {data.source}, clean and under each of "
                   f"{len(corrupted)} corruptions after MNIST-C (mnist_lab/corruptions.py, seed {SEED}); mCE: mean "
                   f"corruption error (%), the plain mean of the {len(corrupted)} error rates, lower is better. "
                   f"Written by `python evaluate.py --corruptions`.\n\n{table}\n", reports / "corruptions.md")
        summary = {"test_images": len(data.y_test), "data_source": data.source, "seed": SEED,
                   "corruptions": list(corrupted),
                   "mean_corruption_error": "plain mean of the error rates over the corruptions (MNIST-C's "
                                            "mean error, not ImageNet-C's AlexNet-normalised CE)",
                   "models": sorted(rows, key=lambda r: r["mean_corruption_error"])}
        write_json(summary, reports / "corruptions.json")
        log(f"\n{table}\n\nwritten to {reports / 'corruptions.md'} and {reports / 'corruptions.json'}")
    return rows, failures
