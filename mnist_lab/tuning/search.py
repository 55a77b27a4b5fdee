"""Run or resume the search, then retrain the best values and export them: `search(config)`.

A project folder holds one search: `search.json` beside keras-tuner's state records its settings,
so the same command resumes it (with more --max-trials if asked) and a different one is refused
until --fresh discards it. Trials are chosen and ranked on the validation split; the best values
are then retrained by `training.train`, which tests them once and exports the model.
"""

import contextlib
import io
import json
import math
import os
import shutil
import sys
import time
import warnings

import keras_tuner
from keras_tuner.src import utils as keras_tuner_utils
from sklearn.exceptions import ConvergenceWarning

from mnist_lab.config import TrainConfig
from mnist_lab.data import load_mnist
from mnist_lab.data.splits import check_batch_size, make_splits
from mnist_lab.errors import UserError, first_line
from mnist_lab.reader import trained_as
from mnist_lab.text import counted, write_json
from mnist_lab.training import train
from mnist_lab.tuning import HYPERBAND_FACTOR, MODEL_NAME, OBJECTIVE, SEARCH_FILE
from mnist_lab.tuning.report import ReportingTuner, write_report
from mnist_lab.tuning.roles import Role, supervise
from mnist_lab.tuning.space import BATCH_SIZE, SCHEDULE, MlpHyperModel, describe, space_config, tuned_spec
from mnist_lab.writer import FolderLock, ModelWriter, check_writable_dir

# The Bayesian oracle's Gaussian process warns, two lines at a time, when a length scale reaches its
# bound: normal with a few trials, and not for the user (one line per trial).
warnings.filterwarnings("ignore", category=ConvergenceWarning)


class ReportingBayesianOptimization(ReportingTuner, keras_tuner.BayesianOptimization):
    """A Gaussian process proposes each trial from the finished ones."""


class ReportingRandomSearch(ReportingTuner, keras_tuner.RandomSearch):
    """Independent draws from the space."""


class ReportingHyperband(ReportingTuner, keras_tuner.Hyperband):
    """Many short trials, the best promoted to more epochs."""


TUNER_CLASSES = {"bayesian": ReportingBayesianOptimization, "random": ReportingRandomSearch,
                 "hyperband": ReportingHyperband}


def trial_budget(config):
    """The tuner's arguments that say how many trials it runs, and how long."""
    if config.tuner == "hyperband":
        return {"max_epochs": config.epochs, "factor": HYPERBAND_FACTOR}
    if config.tuner == "bayesian":
        # keras-tuner's default starts with 3 random trials per hyperparameter, more than a 20-trial
        # budget: a third random, then the Gaussian process.
        return {"max_trials": config.trials, "num_initial_points": max(2, math.ceil(config.trials / 3))}
    return {"max_trials": config.trials}


def make_tuner(config, hypermodel, role):
    with contextlib.redirect_stdout(io.StringIO()):  # keras-tuner's "Reloading Tuner from ...": search() says it
        tuner = TUNER_CLASSES[config.tuner](hypermodel=hypermodel, objective=OBJECTIVE, seed=config.seed,
                                            directory=config.directory, project_name=config.project_name,
                                            **trial_budget(config))
    if not role.is_worker and not tuner.oracle.trials and (config.project_dir / "oracle.json").is_file():
        # keras-tuner reloads a search only from this process's own tuner_<ID>.json: a search begun
        # in one process and continued by a chief (or the other way round) would start over.
        tuner.oracle.reload()
    return tuner


@contextlib.contextmanager
def state_written_whole():
    """While it lasts, keras-tuner writes its state files (oracle.json, tuner0.json, trial.json) whole
    or not at all: it writes them in place, and a kill mid-write left an empty file that no later
    run could read."""
    def save_json(path, obj):
        text = json.dumps(obj)
        partial = f"{path}.partial-{os.getpid()}"
        with open(partial, "w") as handle:
            handle.write(text)
        os.replace(partial, path)
        return text

    original = keras_tuner_utils.save_json
    keras_tuner_utils.save_json = save_json
    try:
        yield
    finally:
        keras_tuner_utils.save_json = original


def check_state_files(config):
    """Refuse, in one line, a search whose keras-tuner state cannot be read (written before the above)."""
    for path in sorted([*config.project_dir.glob("*.json"), *config.project_dir.glob("trial_*/trial.json")]):
        try:
            json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise UserError(f"{path}: keras-tuner's state is damaged ({first_line(error)}), so the search cannot "
                            f"resume from it; --fresh starts it afresh (move {config.project_dir} aside first to "
                            "keep what its trials recorded)") from None


def search_settings(config, data):
    """What must match for a search to be resumed rather than started afresh (max trials may grow)."""
    return {"tuner": config.tuner, "space": space_config(), "epochs": config.epochs,
            "batch_size": BATCH_SIZE, "schedule": SCHEDULE, "seed": config.seed, "subset": config.subset,
            "validation_size": config.validation_size, "data": data.fingerprint}


def check_settings(config, settings):
    """Refuse to resume a project folder that holds a different search."""
    path = config.project_dir / SEARCH_FILE
    if not config.project_dir.exists():
        return
    if not path.is_file():
        raise UserError(f"{config.project_dir}: exists but holds no search of this script ({SEARCH_FILE} "
                        "is missing); give another --project-name or --directory, or --fresh to replace it")
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: unreadable ({error}); --fresh discards the search") from None
    changed = [key for key in settings if saved.get(key) != settings[key]]
    if changed:
        what = ", ".join(f"{key} {saved.get(key)} -> {settings[key]}" if key not in ("space", "data")
                         else f"the {'search space' if key == 'space' else 'dataset'}" for key in changed)
        raise UserError(f"{config.project_dir} holds a search with other settings ({what}); run with --fresh "
                        "to discard it and start afresh, or give another --project-name")


def prepare_state(config, data, log):
    """Check the project folder against this search (search() proved it writable); --fresh discards it first."""
    settings = search_settings(config, data)
    if config.fresh and config.project_dir.exists():
        log(f"--fresh: discarding the search in {config.project_dir}")
        shutil.rmtree(config.project_dir)
    check_settings(config, settings)
    check_state_files(config)
    config.project_dir.mkdir(parents=True, exist_ok=True)
    write_json(settings, config.project_dir / SEARCH_FILE)


def load_splits(config, log):
    """MNIST, loaded once for the whole command, and the splits the trials train and validate on."""
    data = load_mnist(config.data_dir, log=log)
    splits = make_splits(data, config.validation_size, config.subset)
    check_batch_size(BATCH_SIZE, splits)
    return data, splits


def run_trials(config, splits, role):
    """This process's part of the search: all of it, or a chief's or a worker's share."""
    # Off a terminal (a log, a supervisor's pipe), Keras says nothing inside a trial: a line per trial.
    verbose = config.verbose if config.verbose is not None else (1 if sys.stdout.isatty() else 0)
    tuner = make_tuner(config, MlpHyperModel(splits, config.epochs, config.seed, verbose), role)
    tuner.planned_trials = None if config.tuner == "hyperband" else config.trials
    if not role.is_worker and tuner.oracle.trials:  # a worker's oracle is the chief's, over gRPC
        done = sum(trial.status == "COMPLETED" for trial in tuner.oracle.trials.values())
        planned = (f"{done} of {tuner.planned_trials} trials finished, {max(0, tuner.planned_trials - done)} to go"
                   if tuner.planned_trials else counted(done, "trial") + " finished")
        print(f"resuming the search in {config.project_dir}: {planned}; an unfinished one runs again", flush=True)
    tuner.search(verbose=0)  # keras-tuner's multi-line display off: ReportingTuner prints a line per trial
    return tuner


def finish(config, data, splits, search_seconds, role, writer, log):
    """Report every trial, retrain the best values on the training split, test once, export through
    `writer`, the output's writer that the search holds.

    Returns the exported model's record.
    """
    tuner = make_tuner(config, MlpHyperModel(splits, config.epochs, config.seed, verbose=0), role)
    rows = write_report(tuner, config, log)
    completed = [row for row in rows if row[OBJECTIVE] is not None]
    if not completed:
        raise UserError(f"no trial of {config.project_dir} completed; nothing to export; run the same command "
                        "to resume the search")
    best = max(completed, key=lambda row: row[OBJECTIVE])
    values = best["values"]
    log(f"best: trial {best['trial']}, {OBJECTIVE} {best[OBJECTIVE]:.4f}: {describe(values)}; retraining it "
        f"for {counted(config.final_epochs, 'epoch')} on the training split")
    # fresh: a retrain killed midway starts over (minutes), rather than refusing a backup made for
    # other values with advice (--fresh) that would discard the search itself.
    train_config = TrainConfig(model="mlp", name=MODEL_NAME, seed=config.seed, data_dir=config.data_dir,
                               output=str(config.output_dir()), subset=config.subset,
                               validation_size=config.validation_size, verbose=config.verbose, fresh=True,
                               replace=config.replace)
    spec = tuned_spec(values, config.final_epochs)
    # The spec's arguments carry the layer sizes and its recipe the rest of the values: `matches`
    # compares them all.
    exported = trained_as(writer.output, train_config, spec, data)
    if exported:
        log(f"{writer.output} already holds these values retrained for {config.final_epochs} epochs "
            f"(test accuracy {100 * exported.test_accuracy:.2f} %); nothing to retrain")
        return exported
    search_record = {"tuner": config.tuner, "trials": len(rows), "completed_trials": len(completed),
                     "epochs_per_trial": config.epochs, "best_trial": best["trial"],
                     "best_trial_val_accuracy": round(best[OBJECTIVE], 6),
                     "trial_seconds_total": round(sum(row["seconds"] or 0 for row in rows), 1),
                     "search_seconds_this_run": round(search_seconds, 1),
                     "project": str(config.project_dir)}
    return train(train_config, data, log, spec=spec, writer=writer, hyperparameters=values, search=search_record)


def search(config, log=print, argv=None):
    """Run (or resume) the search in this process, then report, retrain and export.

    Under keras-tuner's distributed mode (KERASTUNER_* set) a worker runs trials and returns None;
    a chief serves them and then reports and exports, unless `--workers` started it, in which case
    the process that started it does. `argv` is the command line `config` came from: `--workers`
    starts the chief and the workers with it.
    """
    config.check()
    role = Role.from_environment()
    if role.supervises(config) and argv is None:
        raise ValueError("search(config) with workers needs argv, the flags to start the chief and workers with")
    # Prove now, not after the search, that the state, the reports and the model can be written.
    check_writable_dir(config.directory, "--directory")
    check_writable_dir(config.reports_dir, "--reports-dir")
    writer = ModelWriter(config.output_dir(), log) if role.finishes else None
    role.check_port(config)  # before --fresh discards anything
    if not role.finishes:
        data, splits = load_splits(config, log)
        if (config.project_dir / SEARCH_FILE).is_file():  # a worker sharing the chief's folder: same search?
            check_settings(config, search_settings(config, data))
        with state_written_whole():
            run_trials(config, splits, role)
        return None
    # The model's writer first, for the whole search: a second writer of it is refused now, not after every trial.
    with writer, FolderLock(config.project_dir, flag="--project-name"), state_written_whole():
        data, splits = load_splits(config, log)
        writer.check_replaceable(len(splits.x_train), config.final_epochs, config.replace)
        prepare_state(config, data, log)
        trials = ("hyperband's trials, of up to" if config.tuner == "hyperband"
                  else f"{counted(config.trials, f'{config.tuner} trial')} of")
        log(f"plan: {trials} {counted(config.epochs, 'epoch')} on {len(splits.x_train)} images (scored on "
            f"{len(splits.x_val)} validation images), then the best values retrained for "
            f"{counted(config.final_epochs, 'epoch')}, tested once and exported to {writer.output}")
        start = time.perf_counter()
        if role.supervises(config):
            supervise(config, argv, log)
        else:
            run_trials(config, splits, role)
        seconds = time.perf_counter() - start
        log(f"search: {seconds:.0f} s in this run")
        return finish(config, data, splits, seconds, role, writer, log)
