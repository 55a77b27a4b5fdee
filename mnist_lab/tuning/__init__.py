"""Hyperparameter search for the MLP with keras-tuner: what a search is told, and its constants.

`python tuning/search_mlp.py` (or `python -m mnist_lab.tuning`) runs `search.search(config)`; the
tests call it on a small subset. The tuned model is the project's MLP (`models.mlp.build_mlp`)
with other settings, trained and exported by `training.train`. One job per module:

    space.py    the space, and the HyperModel that builds and trains one trial
    search.py   the tuner, resuming a search or refusing a different one, the retrain and export
    report.py   the line per trial, the trial tables, the influence statistics, the plot
    roles.py    keras-tuner's distributed roles, and `--workers N`: a chief and N workers here

State lives in keras-tuner's own project folder (`tuner_state/<project>/`), with `search.json`
beside it recording what search it holds, so the same command resumes it and a different one is
refused instead of silently mixing two searches.

This module imports no TensorFlow, Keras or keras-tuner: `--help` and flag errors answer at once.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from mnist_lab.config import DEFAULT_SEED, MODELS_DIR, TUNED_MODEL, VALIDATION_SIZE
from mnist_lab.errors import UserError

TUNERS = ("bayesian", "random", "hyperband")
DEFAULT_TUNER = "bayesian"
DEFAULT_MAX_TRIALS = 20
DEFAULT_EPOCHS = 15
DEFAULT_FINAL_EPOCHS = 30  # twice a trial: the chosen values, trained to convergence
DEFAULT_WORKER_RESTARTS = 2
HYPERBAND_FACTOR = 3
STATE_DIR = "tuner_state"
REPORTS_DIR = "reports"
PROJECT_NAME = "mlp"
MODEL_NAME = TUNED_MODEL
OBJECTIVE = "val_accuracy"
SEARCH_FILE = "search.json"  # what search the project folder holds
SECONDS_FILE = "seconds.json"  # per trial folder: the trial's wall time


@dataclass
class SearchConfig:
    """Everything a search needs, as `tuning/search_mlp.py`'s flags give it."""

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
    project_name: Optional[str] = None  # None: PROJECT_NAME, or PROJECT_NAME_subsetN for a smoke run
    reports_dir: str = REPORTS_DIR
    fresh: bool = False
    replace: bool = False  # let the retrain replace a model trained on more images or epochs
    workers: int = 0
    port: int = 0  # 0: any free port
    worker_restarts: int = DEFAULT_WORKER_RESTARTS
    verbose: Optional[int] = None  # Keras' fit verbosity during trials; None: bar on a terminal, else none

    def __post_init__(self):
        if self.project_name is None:  # a smoke run's search must not mix with (or discard) the real one
            self.project_name = f"{PROJECT_NAME}_subset{self.subset}" if self.subset else PROJECT_NAME

    @property
    def project_dir(self):
        return Path(self.directory) / self.project_name

    @property
    def trials(self):
        return self.max_trials or DEFAULT_MAX_TRIALS

    def output_dir(self):
        if self.output:
            return Path(self.output)
        return MODELS_DIR / (f"{MODEL_NAME}_subset{self.subset}" if self.subset else MODEL_NAME)

    def reports_path(self):
        return Path(self.reports_dir) / "tuning" / self.project_name

    def check(self):
        """Refuse values and combinations that cannot work, before anything heavy is loaded."""
        if self.tuner not in TUNERS:
            raise UserError(f"--tuner {self.tuner}: unknown; choose from {', '.join(TUNERS)}")
        if self.tuner == "hyperband" and self.max_trials is not None:
            raise UserError("--max-trials does not apply to --tuner hyperband, which sets its trials from "
                            f"--epochs (its largest number of epochs) and a reduction factor of {HYPERBAND_FACTOR}; "
                            "leave it out")
        for flag, value, least in (("--max-trials", self.max_trials or 1, 1), ("--epochs", self.epochs, 1),
                                   ("--final-epochs", self.final_epochs, 1), ("--workers", self.workers, 0)):
            if value < least:
                raise UserError(f"{flag} {value}: must be a whole number >= {least}")
