"""Hyperparameter search for the MLP with keras-tuner: the space, the search, its report, the export.

`search(config)` is what `python tuning/search_mlp.py` runs; the tests call it on a small subset.
The space maps onto `models.mlp.build_mlp`'s arguments and `models.Recipe`'s fields: the tuned
model is the project's MLP with other settings, trained and exported by `training.train`.

State lives in keras-tuner's own project folder (`tuner_state/<project>/`), with `search.json`
beside it recording what search it holds, so the same command resumes it and a different one is
refused instead of silently mixing two searches. Distribution is keras-tuner's: a chief oracle
serving trials over gRPC to workers configured by the KERASTUNER_* environment variables.
"""

import csv
import functools
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import keras
import keras_tuner
import numpy as np
from scipy import stats

from mnist_lab import distributed, export, plots, resume
from mnist_lab.data import load_mnist
from mnist_lab.distributed import ORACLE_IP_ENV, ORACLE_PORT_ENV, TUNER_ID_ENV
from mnist_lab.data.pipeline import VALIDATION_SIZE, check_batch_size, make_dataset, make_splits
from mnist_lab.errors import UserError
from mnist_lab.training import DEFAULT_SEED, TrainConfig, build_and_compile, check_output_dir, train, trained_as
from models import OPTIMIZERS, ModelSpec, Recipe
from models.mlp import build_mlp

TUNERS = ("bayesian", "random", "hyperband")
DEFAULT_TUNER = "bayesian"
DEFAULT_MAX_TRIALS = 20
DEFAULT_EPOCHS = 15
DEFAULT_FINAL_EPOCHS = 30  # twice a trial: the chosen values, trained to convergence
STATE_DIR = "tuner_state"
PROJECT_NAME = "mlp"
MODEL_NAME = "mlp_tuned"
OBJECTIVE = "val_accuracy"
SEARCH_FILE = "search.json"  # what search the project folder holds
SECONDS_FILE = "seconds.json"  # per trial folder: the trial's wall time

# The space. Batch size and schedule stay fixed: cosine decay lets short trials converge, and the
# learning rate already covers what batch size would change.
MAX_HIDDEN_LAYERS = 3
UNITS = (128, 256, 512, 1024)
ACTIVATIONS = ("relu", "gelu", "swish", "tanh")
BATCH_SIZE = 128
SCHEDULE = "cosine"



@dataclass
class SearchConfig:
    tuner: str = DEFAULT_TUNER
    max_trials: Optional[int] = None  # None: DEFAULT_MAX_TRIALS; hyperband sets its own
    epochs: int = DEFAULT_EPOCHS  # per trial; hyperband's largest
    final_epochs: int = DEFAULT_FINAL_EPOCHS
    seed: int = DEFAULT_SEED
    data_dir: Optional[str] = None
    output: Optional[str] = None  # None: saved_models/mlp_tuned
    subset: Optional[int] = None
    validation_size: int = VALIDATION_SIZE
    directory: str = STATE_DIR
    project_name: str = PROJECT_NAME
    reports_dir: str = "reports"
    fresh: bool = False
    workers: int = 0
    port: int = 0  # 0: any free port
    worker_restarts: int = 2
    verbose: Optional[int] = None  # Keras' fit verbosity during trials; None: bar on a terminal, else a line per epoch

    @property
    def project_dir(self):
        return Path(self.directory) / self.project_name

    @property
    def trials(self):
        return self.max_trials or DEFAULT_MAX_TRIALS

    def output_dir(self):
        return Path(self.output) if self.output else Path(export.MODELS_DIR) / MODEL_NAME

    def reports_path(self):
        return Path(self.reports_dir) / "tuning" / self.project_name


def define_space(hp):
    """Register every hyperparameter of the search on `hp`.

    Units are drawn for all MAX_HIDDEN_LAYERS layers and those past `hidden_layers` ignored: keras-tuner
    1.4's conditional scopes print stray lines whenever a chief sends them to a worker.
    """
    hp.Int("hidden_layers", 1, MAX_HIDDEN_LAYERS)
    for layer in range(1, MAX_HIDDEN_LAYERS + 1):
        hp.Choice(f"units_{layer}", UNITS)
    hp.Choice("activation", ACTIVATIONS)
    hp.Float("dropout", 0.0, 0.5, step=0.1)
    hp.Boolean("batch_norm")
    hp.Float("learning_rate", 1e-4, 1e-2, sampling="log")
    hp.Choice("optimizer", OPTIMIZERS)
    hp.Boolean("augment")


def space_config():
    hp = keras_tuner.HyperParameters()
    define_space(hp)
    return hp.get_config()


def mlp_arguments(values):
    """The hyperparameter values as `build_mlp` keyword arguments."""
    hidden_units = tuple(values[f"units_{layer}"] for layer in range(1, values["hidden_layers"] + 1))
    return {"hidden_units": hidden_units, "activation": values["activation"],
            "dropout": round(values["dropout"], 2), "batch_norm": values["batch_norm"]}


def recipe_for(values, epochs):
    return Recipe(epochs=epochs, batch_size=BATCH_SIZE, learning_rate=values["learning_rate"],
                  optimizer=values["optimizer"], schedule=SCHEDULE, augment=values["augment"])


def describe(values):
    """One line: the architecture and recipe a set of values means."""
    arguments = mlp_arguments(values)
    return (f"{'-'.join(map(str, arguments['hidden_units']))} {arguments['activation']}, "
            f"dropout {arguments['dropout']:g}, batch norm {'on' if arguments['batch_norm'] else 'off'}, "
            f"{values['optimizer']} lr {values['learning_rate']:.2g}, augment {'on' if values['augment'] else 'off'}")


def tuned_spec(values, epochs):
    """The tuned MLP as a registry-style spec: `build_mlp` with the values, and their recipe."""
    return ModelSpec(build=functools.partial(build_mlp, **mlp_arguments(values), name=MODEL_NAME),
                     recipe=recipe_for(values, epochs), summary=f"MLP {describe(values)}",
                     source="keras-tuner search: tuning/search_mlp.py")


def search_values(values):
    """The values that shape the model: no keras-tuner `tuner/...` bookkeeping, no units of absent layers."""
    absent = {f"units_{layer}" for layer in range(values["hidden_layers"] + 1, MAX_HIDDEN_LAYERS + 1)}
    return {name: value for name, value in values.items() if not name.startswith("tuner/") and name not in absent}


class MlpHyperModel(keras_tuner.HyperModel):
    """Builds and trains one trial's MLP from the project's builder, recipe and pipeline."""

    def __init__(self, splits, epochs, seed, verbose):
        super().__init__(name="mlp")
        self.splits, self.epochs, self.seed, self.verbose = splits, epochs, seed, verbose

    def build(self, hp):
        define_space(hp)
        keras.utils.set_random_seed(self.seed)  # every trial starts from the same seed: only the values differ
        epochs = hp.values.get("tuner/epochs", self.epochs)  # hyperband gives each trial its own
        spec = tuned_spec(hp.values, epochs)
        return build_and_compile(spec, spec.recipe, math.ceil(len(self.splits.x_train) / BATCH_SIZE))

    def fit(self, hp, model, *args, epochs=None, initial_epoch=0, callbacks=None, **kwargs):
        splits = self.splits
        train_ds = make_dataset(splits.x_train, splits.y_train, BATCH_SIZE, shuffle=True,
                                augment=hp.get("augment"), seed=self.seed)
        val_ds = make_dataset(splits.x_val, splits.y_val, BATCH_SIZE)
        return model.fit(train_ds, validation_data=val_ds, epochs=epochs or self.epochs,
                         initial_epoch=initial_epoch, callbacks=callbacks, verbose=self.verbose, shuffle=False)


class ReportingTuner:
    """Mixed into a keras-tuner Tuner: times each trial and prints one line when it ends."""

    def run_trial(self, trial, *args, **kwargs):
        start = time.perf_counter()
        results = super().run_trial(trial, *args, **kwargs)
        seconds = time.perf_counter() - start
        export.write_json({"seconds": round(seconds, 2)}, Path(self.get_trial_dir(trial.trial_id)) / SECONDS_FILE)
        return results

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        ended = self.oracle.get_trial(trial.trial_id)
        best = self.oracle.get_best_trials(1)
        score = f"{OBJECTIVE} {ended.score:.4f}" if ended.score is not None else ended.status.lower()
        best_so_far = f"{best[0].score:.4f}" if best and best[0].score is not None else "none yet"
        seconds = read_seconds(Path(self.get_trial_dir(trial.trial_id)))
        print(f"trial {trial.trial_id}: {score} in {seconds if seconds is not None else '?'} s "
              f"(best so far {best_so_far}) | {describe(search_values(ended.hyperparameters.values))}",
              flush=True)


def make_tuner(config, hypermodel):
    base = {"bayesian": keras_tuner.BayesianOptimization, "random": keras_tuner.RandomSearch,
            "hyperband": keras_tuner.Hyperband}[config.tuner]
    tuner_class = type(f"Reporting{base.__name__}", (ReportingTuner, base), {})
    if config.tuner == "hyperband":
        budget = {"max_epochs": config.epochs, "factor": 3}
    elif config.tuner == "bayesian":
        # keras-tuner's default starts with 3 random trials per hyperparameter, more than a 20-trial
        # budget: a third random, then the Gaussian process.
        budget = {"max_trials": config.trials, "num_initial_points": max(2, math.ceil(config.trials / 3))}
    else:
        budget = {"max_trials": config.trials}
    tuner = tuner_class(hypermodel=hypermodel, objective=OBJECTIVE, seed=config.seed, directory=config.directory,
                        project_name=config.project_name, **budget)
    if not is_worker(distributed_role()) and not tuner.oracle.trials and (config.project_dir / "oracle.json").is_file():
        # keras-tuner reloads a search only from this process's own tuner_<ID>.json: a search begun
        # in one process and continued by a chief (or the other way round) would start over.
        tuner.oracle.reload()
    return tuner


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


def read_seconds(trial_dir):
    try:
        return json.loads((trial_dir / SECONDS_FILE).read_text())["seconds"]
    except (OSError, ValueError, KeyError):
        return None


def trial_rows(tuner):
    """One dict per trial in start order: id, status, objective, best epoch, seconds, values."""
    rows = []
    for trial in sorted(tuner.oracle.trials.values(), key=lambda trial: int(trial.trial_id)):
        rows.append({"trial": trial.trial_id, "status": trial.status.lower(), OBJECTIVE: trial.score,
                     "best_epoch": None if trial.best_step is None else int(trial.best_step) + 1,
                     "seconds": read_seconds(Path(tuner.get_trial_dir(trial.trial_id))),
                     "values": search_values(trial.hyperparameters.values)})
    return rows


def influence(rows, least=5):
    """Hyperparameters ranked by how much of the objective's spread they explain, in [0, 1].

    A number with many distinct values: Spearman's rank correlation squared (a monotonic trend);
    anything else: epsilon squared, the share of variance between its values' groups. Both are
    corrected for what chance alone would explain with that many trials and groups. Needs `least` finished trials with the
    hyperparameter, and at least 3 more than it has distinct values.
    """
    scored = [row for row in rows if row[OBJECTIVE] is not None]
    ranking = {}
    for name in sorted({name for row in scored for name in row["values"]}):
        pairs = [(row["values"][name], row[OBJECTIVE]) for row in scored if name in row["values"]]
        values, objective = [value for value, _ in pairs], np.array([score for _, score in pairs])
        levels = set(values)
        if len(pairs) < least or len(levels) < 2 or objective.std() == 0:
            continue
        if isinstance(values[0], float) and len(levels) > 3:
            squared = float(stats.spearmanr(values, objective).statistic ** 2)
            ranking[name] = max(0.0, 1 - (1 - squared) * (len(pairs) - 1) / (len(pairs) - 2))  # adjusted, as below
            continue
        if len(pairs) - len(levels) < 3:
            continue  # too few trials per value to tell an effect from chance
        total = ((objective - objective.mean()) ** 2).sum()
        groups = [objective[[value == level for value in values]] for level in levels]
        between = sum(len(group) * (group.mean() - objective.mean()) ** 2 for group in groups)
        within_mean_square = (total - between) / (len(pairs) - len(levels)) if len(pairs) > len(levels) else total
        ranking[name] = max(0.0, float((between - (len(levels) - 1) * within_mean_square) / total))
    return sorted(ranking.items(), key=lambda item: -item[1])


def format_value(value):
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def write_trial_tables(rows, folder):
    """trials.csv and trials.md: every trial with its values, objective and seconds."""
    names = sorted({name for row in rows for name in row["values"]})
    header = ["trial", "status", OBJECTIVE, "best_epoch", "seconds", *names]
    table = [[row["trial"], row["status"], "" if row[OBJECTIVE] is None else f"{row[OBJECTIVE]:.4f}",
              row["best_epoch"] or "", row["seconds"] if row["seconds"] is not None else "",
              *(format_value(row["values"][name]) if name in row["values"] else "" for name in names)]
             for row in rows]
    with open(folder / "trials.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(table)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, line)) + " |" for line in table]
    (folder / "trials.md").write_text("\n".join(lines) + "\n")


def write_report(tuner, config, folder, log):
    """keras-tuner's summary, the trial tables and the plot; returns the trial rows."""
    rows = trial_rows(tuner)
    folder.mkdir(parents=True, exist_ok=True)
    tuner.results_summary(num_trials=3)
    write_trial_tables(rows, folder)
    ranking = influence(rows)
    plots.search_results(rows, OBJECTIVE, [name for name, _ in ranking[:2]], folder / "search.png",
                         f"{config.tuner} search, {len(rows)} trials")
    log(f"hyperparameters by influence on {OBJECTIVE}: "
        + (", ".join(f"{name} {share:.2f}" for name, share in ranking) or "too few trials to tell"))
    log(f"trial table and plot written to {folder}/ (trials.csv, trials.md, search.png)")
    return rows


def prepare_state(config, data, log):
    """Check the project folder against this search (check_config proved it writable); --fresh discards it first."""
    settings = search_settings(config, data)
    if config.fresh and config.project_dir.exists():
        log(f"--fresh: discarding the search in {config.project_dir}")
        shutil.rmtree(config.project_dir)
    check_settings(config, settings)
    config.project_dir.mkdir(parents=True, exist_ok=True)
    export.write_json(settings, config.project_dir / SEARCH_FILE)


def load_splits(config, log):
    data = load_mnist(config.data_dir, log=log)
    splits = make_splits(data, config.validation_size, config.subset)
    check_batch_size(BATCH_SIZE, splits)
    return data, splits


def check_config(config):
    if config.tuner not in TUNERS:
        raise UserError(f"--tuner {config.tuner}: unknown; choose from {', '.join(TUNERS)}")
    if config.tuner == "hyperband" and config.max_trials is not None:
        raise UserError("--max-trials does not apply to --tuner hyperband, which sets its trials from --epochs "
                        "(its largest number of epochs) and a reduction factor of 3; leave it out")
    for flag, value, least in (("--max-trials", config.max_trials or 1, 1), ("--epochs", config.epochs, 1),
                               ("--final-epochs", config.final_epochs, 1), ("--workers", config.workers, 0)):
        if value < least:
            raise UserError(f"{flag} {value}: must be a whole number >= {least}")
    export.check_writable_dir(config.directory, "--directory")
    export.check_writable_dir(config.reports_dir, "--reports-dir")
    check_output_dir(config.output_dir())  # now, not after the search


def run_trials(config, splits, log):
    """This process's part of the search: all of it, or a chief's or a worker's share."""
    verbose = config.verbose if config.verbose is not None else (1 if os.isatty(1) else 2)
    tuner = make_tuner(config, MlpHyperModel(splits, config.epochs, config.seed, verbose))
    tuner.search(verbose=0)  # keras-tuner's multi-line display off: ReportingTuner prints a line per trial
    return tuner


def finish(config, data, splits, search_seconds, log):
    """Report every trial, retrain the best values on the training split, test once, export."""
    tuner = make_tuner(config, MlpHyperModel(splits, config.epochs, config.seed, verbose=0))
    rows = write_report(tuner, config, config.reports_path(), log)
    completed = [row for row in rows if row[OBJECTIVE] is not None]
    if not completed:
        raise UserError(f"no trial of {config.project_dir} completed; nothing to export; run the same command "
                        "to resume the search")
    best = max(completed, key=lambda row: row[OBJECTIVE])
    values = best["values"]
    log(f"best: trial {best['trial']}, {OBJECTIVE} {best[OBJECTIVE]:.4f}: {describe(values)}; retraining it "
        f"for {config.final_epochs} epoch(s) on the training split")
    search = {"tuner": config.tuner, "trials": len(rows), "completed_trials": len(completed),
              "epochs_per_trial": config.epochs, "best_trial": best["trial"],
              "best_trial_val_accuracy": round(best[OBJECTIVE], 6),
              "trial_seconds_total": round(sum(row["seconds"] or 0 for row in rows), 1),
              "search_seconds_this_run": round(search_seconds, 1),
              "project": str(config.project_dir)}
    # fresh: a retrain killed midway starts over (minutes), rather than refusing a backup made for
    # other values with advice (--fresh) that would discard the search itself.
    train_config = TrainConfig(model=MODEL_NAME, seed=config.seed, data_dir=config.data_dir,
                               output=str(config.output_dir()), subset=config.subset,
                               validation_size=config.validation_size, verbose=config.verbose, fresh=True)
    spec = tuned_spec(values, config.final_epochs)
    exported = exported_metadata(train_config, spec, data, values)
    if exported:
        log(f"{train_config.output} already holds these values retrained for {config.final_epochs} epochs "
            f"(test accuracy {100 * exported['test_accuracy']:.2f} %); nothing to retrain")
        return exported
    return train(train_config, log, spec=spec,
                 extra_metadata={"hyperparameters": values, "build_mlp_arguments": mlp_arguments(values),
                                 "search": search})


def exported_metadata(train_config, spec, data, values):
    """The metadata of the model already exported from these values and settings, else None."""
    output = train_config.output_dir()
    if not (output / "saved_model.pb").is_file():
        return None
    metadata = export.read_metadata(output)
    same = metadata.get("hyperparameters") == values and trained_as(metadata, train_config, spec.recipe,
                                                                     data.fingerprint)
    return metadata if same else None


def distributed_role():
    """None when not distributed, else this process's keras-tuner ID ("chief" or a worker's)."""
    return os.environ.get(TUNER_ID_ENV) if ORACLE_IP_ENV in os.environ else None


def is_chief(role):
    return role is not None and "chief" in role  # keras-tuner's own test


def is_worker(role):
    return role is not None and not is_chief(role)


def search(config, log=print):
    """Run (or resume) the search in this process, then report, retrain and export.

    Under keras-tuner's distributed mode (KERASTUNER_* set) a worker runs trials and returns; a
    chief serves them and then reports and exports, unless `--workers` started it, in which case
    the process that started it does.
    """
    check_config(config)
    role = distributed_role()
    if is_chief(role):
        distributed.check_port(os.environ[ORACLE_IP_ENV], os.environ.get(ORACLE_PORT_ENV, ""))
    elif role is None and config.workers and config.port:
        distributed.check_port(distributed.LOOPBACK, config.port)  # before --fresh discards anything
    data, splits = load_splits(config, log)
    if is_worker(role) or (is_chief(role) and os.environ.get(distributed.SUPERVISED_ENV)):
        if (config.project_dir / SEARCH_FILE).is_file():  # a worker sharing the chief's folder: same search?
            check_settings(config, search_settings(config, data))
        run_trials(config, splits, log)
        return None
    with resume.OutputLock(config.project_dir, flag="--project-name"):
        prepare_state(config, data, log)
        start = time.perf_counter()
        if config.workers and role is None:
            distributed.supervise(config, log)
        else:
            run_trials(config, splits, log)
        seconds = time.perf_counter() - start
        log(f"search: {seconds:.0f} s in this run")
        return finish(config, data, splits, seconds, log)
