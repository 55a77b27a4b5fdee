"""One recipe over several seeds: the spread of its test accuracy, and an ensemble of the seeds.

    python train.py --model deep_cnn --seeds 3      # seeds 42, 43, 44: mean, std, min, max
    python train.py --model deep_cnn --ensemble 5   # seeds 42-46 averaged: saved_models/deep_cnn_ensemble5/

Each seed is an ordinary trained model in saved_models/members/<model>/seed-<N>/ (<model>_full/ for
final fits on all training images, --validation-size 0). A model trained
earlier with the same recipe, seed, split and data is reused (the one in saved_models/<model>/
too), so `--seeds 3` then `--ensemble 5` trains 5 models, not 8. The members are fixed by their
seeds before any is trained: nothing about an ensemble is chosen on the test set.
"""

import dataclasses
import statistics
from pathlib import Path

import keras
import numpy as np

from mnist_lab.config import MEMBERS_DIR
from mnist_lab.data import load_mnist
from mnist_lab.data.splits import make_splits, to_model_input
from mnist_lab.errors import UserError
from mnist_lab.reader import trained_as
from mnist_lab.record import SERVING_INPUT, SERVING_OUTPUT, ModelRecord, environment
from mnist_lab.text import write_json
from mnist_lab.training import check_trainable, train
from mnist_lab.writer import ModelWriter, check_free_space
from models import INPUT_SHAPE


def member_dir(config, seed):
    """saved_models/members/<model>/seed-S/ (<model>_subsetN/ for a smoke run, <model>_full/ for final fits)."""
    return MEMBERS_DIR / dataclasses.replace(config, output=None).output_dir().name / f"seed-{seed}"


def ensemble_name(model, count):
    return f"{model}_ensemble{count}"


def trained_before(member, data):
    """(folder, record) of `member` (a recipe and seed) if trained before, in its member folder or as the
    model itself, with the same recipe, split and data; else None."""
    for folder in (Path(member.output), dataclasses.replace(member, output=None).output_dir()):
        record = trained_as(folder, member, member.spec(), data)
        if record:
            return folder, record
    return None


def train_members(config, count, data, log, reuse=True):
    """(folder, record) of each of `count` seeds from config.seed on: found if trained before (and `reuse`),
    else trained now; every member to train is checked before the first one trains."""
    members = [dataclasses.replace(config, seed=config.seed + index, output=str(member_dir(config, config.seed + index)))
               for index in range(count)]
    found = [reuse and trained_before(member, data) for member in members]
    for member, earlier in zip(members, found):
        if not earlier:
            check_trainable(member, data)
    trained = []
    for member, earlier in zip(members, found):
        if earlier:
            folder, record = earlier
            log(f"seed {member.seed}: trained before, same recipe, split and data: {folder} "
                f"(test accuracy {100 * record.test_accuracy:.2f} %)")
        else:
            log(f"seed {member.seed}: training {config.model} -> {member.output}")
            folder, record = Path(member.output), train(member, data, log)
        trained.append((folder, record))
    return trained


def spread(values):
    values = [float(value) for value in values]
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def seeds_summary(model, members):
    """Mean, std (sample), min and max over the members' figures, and where each member is."""
    records = [record for _, record in members]
    return {
        "model": model,
        "seeds": [record.seed for record in records],
        "test_accuracy": spread(record.test_accuracy for record in records),
        "validation_accuracy": spread(record.validation_accuracy for record in records)
        if all(record.validation_accuracy is not None for record in records) else None,  # None: final fits
        "training_seconds": spread(record.training_seconds for record in records),
        "seconds_per_epoch": spread(record.seconds_per_epoch for record in records),
        "epochs": records[0].epochs_run,
        "parameters": records[0].parameters,
        "recipe": records[0].recipe,
        "members": [{"seed": record.seed, "folder": str(folder), "test_accuracy": record.test_accuracy,
                     "validation_accuracy": record.validation_accuracy} for folder, record in members],
        **environment(),
    }


def percent(fraction):
    return "-" if fraction is None else f"{100 * fraction:.2f} %"  # a final fit has no validation figure


def format_seeds(summary):
    test = summary["test_accuracy"]
    lines = [f"{summary['model']} over {len(summary['seeds'])} seeds: test accuracy mean {100 * test['mean']:.2f} % "
             f"± {100 * test['std']:.2f} (sample std), min {100 * test['min']:.2f} %, max {100 * test['max']:.2f} %",
             "", "| seed | validation accuracy | test accuracy | model |", "|---:|---:|---:|---|"]
    lines += [f"| {member['seed']} | {percent(member['validation_accuracy'])} | {percent(member['test_accuracy'])} "
              f"| {member['folder']} |" for member in summary["members"]]
    return "\n".join(lines)


def run_seeds(config, count, data=None, reports_dir="reports", log=print, reuse=True):
    """Train (or reuse) `count` seeds from config.seed on; report and return their spread."""
    data = data or load_mnist(config.data_dir, log=log)
    summary = seeds_summary(config.model, train_members(config, count, data, log, reuse))
    folder, name = Path(reports_dir) / "seeds", member_dir(config, config.seed).parent.name  # deep_cnn, deep_cnn_full
    folder.mkdir(parents=True, exist_ok=True)
    write_json(summary, folder / f"{name}.json")
    text = format_seeds(summary)
    (folder / f"{name}.md").write_text(text + "\n")
    log(f"\n{text}\n\nwritten to {folder}/{name}.json and .md")
    return summary


def average_model(members, name):
    """One functional model: `image` in, the mean of the members' probabilities out."""
    inputs = keras.Input(shape=INPUT_SHAPE, name=SERVING_INPUT)
    outputs = []
    for index, member in enumerate(members):
        member.name = f"member_{index}"  # nested models need names of their own
        outputs.append(member(inputs))
    probabilities = keras.layers.Average(name=SERVING_OUTPUT)(outputs)
    return keras.Model(inputs, probabilities, name=name)


def accuracy(model, images, labels):
    probabilities = model.predict(to_model_input(images), batch_size=1000, verbose=0)
    return float(np.mean(probabilities.argmax(axis=1) == labels))


def ensemble_config(config, count):
    """The config whose record an ensemble of `count` seeds from config.seed carries."""
    return dataclasses.replace(config, name=ensemble_name(config.model, count))


def run_ensemble(config, count, data=None, log=print):
    """Train (or reuse) `count` seeds, average them into one model, test it once, export it."""
    if count < 2:
        raise UserError(f"--ensemble {count}: an ensemble needs at least 2 members")
    ensemble = ensemble_config(config, count)
    with ModelWriter(ensemble.output_dir(), log) as writer:  # held while the members train, too
        data = data or load_mnist(config.data_dir, log=log)
        splits = make_splits(data, config.validation_size, config.subset, final_fit=True)
        writer.check_replaceable(len(splits.x_train), config.recipe().epochs, config.replace)
        check_free_space(writer.output, count * config.spec().build().count_params())  # before any member trains
        members = train_members(dataclasses.replace(config, output=None), count, data, log)
        model = average_model([keras.saving.load_model(folder / "model.keras", compile=False)
                               for folder, _ in members], ensemble.output_name())
        validation_accuracy = accuracy(model, splits.x_val, splits.y_val) if len(splits.x_val) else None
        test_accuracy = accuracy(model, splits.x_test, splits.y_test)  # the one use of the test set
        summary = seeds_summary(config.model, members)
        spec = dataclasses.replace(config.spec(), summary=f"mean probabilities of {count} {config.model} models "
                                                          f"(seeds {summary['seeds'][0]}-{summary['seeds'][-1]})")
        record = ModelRecord.create(
            ensemble.output_name(), spec, ensemble, model, data, splits,
            ensemble={"of": config.model, "members": summary["members"],
                      "member_test_accuracy": summary["test_accuracy"]},
            epochs_run=summary["epochs"],
            training_seconds=round(sum(record.training_seconds for _, record in members), 2),
            seconds_per_epoch=round(summary["seconds_per_epoch"]["mean"], 2),
            validation_accuracy=None if validation_accuracy is None else round(validation_accuracy, 6),
            test_accuracy=round(test_accuracy, 6))
        writer.write(model, record)
    member_figures = summary["test_accuracy"]
    log(f"{writer.output.name}: test accuracy {100 * test_accuracy:.2f} % on {len(splits.x_test)} images (its "
        f"members {100 * member_figures['min']:.2f}-{100 * member_figures['max']:.2f} %) -> {writer.output}")
    return record
