"""What a training run is told: one config object from the command line to the functions, and the
names of the folders it writes (`output_dir`) and reads back (`folder_parts`, `train_hint`).

Nothing here imports TensorFlow, so an entry point checks its flags before TensorFlow loads.
"""

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from mnist_lab.errors import UserError
from models import DEFAULT_MODEL, REGISTRY

MODELS_DIR = Path("saved_models")
PROJECT_DIR = Path(__file__).resolve().parents[1]  # where saved_models/ is when run from the project's folder
REQUEST_SECONDS = 20  # how long serve.py gives a connection to send a whole request (--request-timeout)
MEMBERS_DIR = MODELS_DIR / "members"  # the seeds of `train.py --seeds/--ensemble`, not models of their own
DEFAULT_SEED = 42
VALIDATION_SIZE = 10_000  # the classic 50000/10000 split: the last 10000 training images
FINAL_FIT = "_full"  # the folder suffix of a model trained on every training image (--validation-size 0)


# The two models that train.py does not train, and the commands that do
TUNED_MODEL, SCRATCH_MODEL = "mlp_tuned", "simple_cnn_scratch"
OTHER_TRAINERS = {TUNED_MODEL: "python tuning/search_mlp.py", SCRATCH_MODEL: "python -m scratch.train"}


def train_hint(folder_name):
    """How to train what a default output folder holds, for error messages."""
    name, subset, final_fit = folder_parts(folder_name)
    data = f" --subset {subset}" if subset else ""  # the flags output_dir() wrote into the name
    final_fit = " --validation-size 0" if final_fit else ""
    ensemble = re.fullmatch(r"(.+)_ensemble(\d+)", name)
    if ensemble and ensemble[1] in REGISTRY:
        return f"train it with `python train.py --model {ensemble[1]} --ensemble {ensemble[2]}{data}{final_fit}`"
    if name in OTHER_TRAINERS:
        return f"train it with `{OTHER_TRAINERS[name]}{data}`"
    if name in REGISTRY:
        return f"train it with `python train.py --model {name}{data}{final_fit}`"
    return "`python train.py --help` lists the models it trains"


def folder_parts(folder_name):
    """A default output folder's name taken apart as output_dir() put it together: what it holds, its
    --subset (or None) and whether it is a final fit (--validation-size 0):
    "deep_cnn_ensemble2_subset1000_full" -> ("deep_cnn_ensemble2", 1000, True)."""
    name = folder_name.removesuffix(FINAL_FIT)
    subset = re.search(r"_subset(\d+)$", name)
    if subset:
        return name[:subset.start()], int(subset[1]), name != folder_name
    return name, None, name != folder_name


@dataclass
class TrainConfig:
    """Everything a training run needs; None means "take it from the model's recipe"."""

    model: str = DEFAULT_MODEL  # a registry key: the architecture and its recipe
    name: Optional[str] = None  # what the folder and record are called when not `model` (mlp_tuned, cnn_ensemble5)
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    learning_rate: Optional[float] = None
    optimizer: Optional[str] = None
    schedule: Optional[str] = None
    augment: Optional[Union[bool, str]] = None  # False, True, "wide" or "handwriting" (models.AUGMENTATIONS)
    seed: int = DEFAULT_SEED
    data_dir: Optional[str] = None
    output: Optional[str] = None
    subset: Optional[int] = None
    validation_size: int = VALIDATION_SIZE
    tensorboard: Optional[str] = None
    fresh: bool = False  # discard an interrupted run's backup instead of resuming it
    replace: bool = False  # replace a model trained on more images or epochs than this run
    deterministic: bool = False  # bit-identical results for the same seed, at some cost in speed
    verbose: Optional[int] = None  # Keras' fit verbosity; None: a progress bar on a terminal, else a line per epoch

    def __post_init__(self):
        if self.model not in REGISTRY:
            raise UserError(f"--model {self.model}: unknown; choose from {', '.join(sorted(REGISTRY))}")

    def spec(self):
        return REGISTRY[self.model]

    def output_name(self):
        """What the folder and its record are called: `name`, else the model's."""
        return self.name or self.model

    def recipe(self, base=None):
        """The model's recipe (or `base`) with this run's overrides applied."""
        overrides = {field: getattr(self, field)
                     for field in ("epochs", "batch_size", "learning_rate", "optimizer", "schedule", "augment")
                     if getattr(self, field) is not None}
        return dataclasses.replace(base or REGISTRY[self.model].recipe, **overrides)

    def output_dir(self):
        """--output, else saved_models/<model>/; a smoke run on --subset N gets <model>_subsetN/ of its own,
        a final fit (--validation-size 0) <model>_full/, so neither replaces the model of the split."""
        if self.output:
            return Path(self.output)
        return MODELS_DIR / (self.output_name() + (f"_subset{self.subset}" if self.subset else "")
                             + (FINAL_FIT if self.validation_size == 0 else ""))

    def flags(self):
        """The config as a model's record keeps it."""
        return {key: value for key, value in dataclasses.asdict(self).items() if key not in ("verbose", "replace", "name")}

    def identity(self):
        """The flags besides the recipe that make two runs train the same model."""
        return {"seed": self.seed, "subset": self.subset, "validation_size": self.validation_size}
