"""The model registry: each `--model` name maps to its builder and its training recipe.

Every builder has the signature `build(input_shape=(28, 28, 1), num_classes=10)` and returns an
uncompiled functional `keras.Model` whose input is `image` (values in [0, 1]) and whose output is
10 class probabilities. A recipe's defaults reproduce the README figure for that model. Adding a
model is adding one entry here.

Builders are named, not imported: this module loads no Keras, so `--help` and flag errors answer
at once; a builder's module is imported when a model is built.
"""

import dataclasses
import importlib
from dataclasses import asdict, dataclass, field
from typing import Union

from models.common import INPUT_SHAPE, NUM_CLASSES

OPTIMIZERS = ("adam", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "one_cycle", "exponential")
HANDWRITING = "handwriting"
WIDE = "wide"
# False: none; True: random rotation, shift and zoom; "wide": the same with wider ranges (Deotte's);
# "handwriting": thinner and thicker strokes, elastic distortion, slant, scale, blur and noise as
# well (mnist_lab/data/pipeline.py)
NAMED_AUGMENTATIONS = (WIDE, HANDWRITING)  # what `train.py --augment NAME` takes
AUGMENTATIONS = (False, True, *NAMED_AUGMENTATIONS)


def check_augmentation(augment):
    """`augment` if it is one of AUGMENTATIONS, else a TypeError saying what is allowed."""
    if not (isinstance(augment, bool) or augment in NAMED_AUGMENTATIONS):
        raise TypeError(f"augment={augment!r}: expected one of {AUGMENTATIONS}")
    return augment


@dataclass(frozen=True)
class Recipe:
    """Training defaults for one model."""

    epochs: int
    batch_size: int
    learning_rate: float = 1e-3
    optimizer: str = "adam"  # one of OPTIMIZERS; sgd uses Nesterov momentum 0.9
    schedule: str = "constant"  # one of SCHEDULES; cosine decays to 0 over all training steps;
    # one_cycle rises to learning_rate over the first 30 % of steps, then falls to 0;
    # exponential multiplies it by 0.95 after every epoch
    augment: Union[bool, str] = False  # one of AUGMENTATIONS
    adam_betas: tuple = (0.9, 0.999)
    jit_compile: bool = False  # XLA-compile the training step
    # Training steps TensorFlow runs per call from Python: fewer round trips where a step takes milliseconds;
    # the batch-level callbacks (the NaN stop, Ctrl-C) act after each call. Speed alone: the same weights,
    # so not part of what a record or a backup is compared on.
    steps_per_execution: int = field(default=1, compare=False)
    mixed_bfloat16: bool = False  # compute in bfloat16, keep weights and the output in float32

    def __post_init__(self):
        check_augmentation(self.augment)

    def to_dict(self):
        """What the recipe trains, as a record keeps it: every field but those of speed alone."""
        return {name: value for name, value in asdict(self).items() if RECIPE_FIELDS[name].compare}

    @classmethod
    def from_dict(cls, values):
        """The Recipe a model record holds; fields it predates take their defaults. None if unreadable."""
        try:
            known = {key: value for key, value in values.items() if key in RECIPE_FIELDS}
            return cls(**{**known, "adam_betas": tuple(values.get("adam_betas", cls.adam_betas))})
        except (TypeError, AttributeError):
            return None

    def describe(self):
        """The recipe in words, for a log line or --help."""
        words = [f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}", f"batch {self.batch_size}",
                 f"{self.optimizer} {self.learning_rate:g}"]
        if self.schedule != "constant":
            words.append(self.schedule.replace("_", "-"))
        if self.augment:
            words.append({HANDWRITING: "handwriting augmentation", WIDE: "wide augmentation"}.get(self.augment,
                                                                                               "augmentation"))
        if self.adam_betas != Recipe.adam_betas:
            words.append(f"betas {self.adam_betas[0]:g}/{self.adam_betas[1]:g}")
        if self.mixed_bfloat16:
            words.append("bfloat16")
        if self.jit_compile:
            words.append("XLA")
        return ", ".join(words)


RECIPE_FIELDS = {recipe_field.name: recipe_field for recipe_field in dataclasses.fields(Recipe)}


@dataclass(frozen=True)
class ModelSpec:
    builder: str  # "module:function" inside models/
    recipe: Recipe
    summary: str
    source: str  # where the architecture comes from and the figure it reports
    arguments: dict = field(default_factory=dict)  # keyword arguments for the builder (the tuned MLP's sizes)

    def build(self):
        """The uncompiled model; its builder's module (and so Keras) is imported now."""
        module, _, function = self.builder.partition(":")
        return getattr(importlib.import_module(f"models.{module}"), function)(**self.arguments)


REGISTRY = {
    "mlp": ModelSpec(
        "mlp:build_mlp", Recipe(epochs=8, batch_size=128),  # validation loss is lowest at epoch 8
        "Dense 300-100, ReLU",
        "LeCun et al. 1998: 2.95-3.05 % error (96.95-97.05 %)",
    ),
    "advanced_mlp": ModelSpec(
        "mlp:build_advanced_mlp", Recipe(epochs=20, batch_size=128),
        "Dense 512-256-128 with BatchNorm and Dropout 0.3",
        "MNIST Classification Project: no figure reported",
    ),
    "simple_cnn": ModelSpec(
        "cnn:build_simple_cnn", Recipe(epochs=5, batch_size=64),
        "one conv layer (8 filters 3x3), ReLU, softmax",
        "Simple-Conv-Net-from-Scratch: ~97 %",
    ),
    "cnn": ModelSpec(
        # 16 steps a call: whole epochs 8 % faster for cnn, 16 % for lenet5 (docs/speed.md), the same figures.
        "cnn:build_cnn", Recipe(epochs=5, batch_size=64, steps_per_execution=16),
        "the classic CNN: Conv 32 3x3, MaxPool, Conv 64 3x3, MaxPool, Dense 128; Adam, batch 64",
        "Convolutional Neural Network (CNN) on MNIST: ~98.9 %",
    ),
    "cnn_dropout": ModelSpec(
        "cnn:build_cnn_dropout", Recipe(epochs=10, batch_size=96),
        "the classic CNN with Dropout 0.25 after each pooling and 0.5 before the output; Adam, batch 96",
        "MNIST Neural Network for Digit Classification: no figure reported",
    ),
    "lenet5": ModelSpec(
        # Validation: 98.47 % with a constant 1e-3, batch 128, 15 epochs; 98.73 % with batch 64, 2e-3
        # and cosine decay over 20 epochs; 99.13 % adding augmentation (this recipe).
        "lenet5:build_lenet5", Recipe(epochs=20, batch_size=64, learning_rate=2e-3, schedule="cosine", augment=True,
                                     steps_per_execution=16),
        "LeNet-5: C1 6@5x5, S2, C3 16@5x5, S4, F5 120, F6 84; tanh, average pooling; augmentation, cosine decay",
        "MNIST Classification Project: 98.96 %; LeCun et al. 1998: 0.95 % error (99.05 %)",
    ),
    "fast_cnn": ModelSpec(
        "fast_cnn:build_fast_cnn",
        # Validation, 2 seeds each: bfloat16 98.86-98.97 % in 2.8-3.1 s; float32 98.88-98.96 % in 3.8 s;
        # XLA 98.96-98.99 % but 10-11 s with compilation; batch 512 98.59-98.64 %.
        Recipe(epochs=1, batch_size=256, learning_rate=0.01, schedule="one_cycle", adam_betas=(0.7, 0.9),
               mixed_bfloat16=True),
        "Conv 24 5x5, MaxPool, Conv 32 3x3, MaxPool, Dense 256; one epoch, one-cycle lr to 0.01, bfloat16",
        "the one-epoch recipe: 99 % test",
    ),
    "deep_cnn": ModelSpec(
        "deep_cnn:build_deep_cnn",
        Recipe(epochs=20, batch_size=128, learning_rate=2e-3, schedule="cosine", augment=True),
        "7 conv layers (3x3, strided 5x5) with BatchNorm and Dropout 0.4; augmentation; Adam 2e-3, cosine decay",
        "aim: ≥ 99.70 %, mean of 5 seeds or more; Deotte's study of this network: 99.64 % mean of 1500 nets",
    ),
    "resnet": ModelSpec(
        "resnet:build_resnet",
        Recipe(epochs=15, batch_size=128, learning_rate=2e-3, schedule="cosine", augment=True),
        "residual network: conv stem, 5 residual blocks (32, 32, 64, 64, 128 filters), global average pooling; augmentation",
        "He et al. 2016 (residual learning); no MNIST figure",
    ),
    "robust_cnn": ModelSpec(
        # Chosen on the validation digits and 3 x 1500 photos of them (benchmarks/photos.py): with
        # cnn_dropout's layers, 99.17 % on MNIST validation and 98.93 / 98.13 / 98.93 % on photos on plain
        # paper / in shadow / in a light gradient; without dropout (this recipe) 99.30 % and 99.67 / 98.20 / 99.53 %.
        "cnn:build_robust_cnn",
        Recipe(epochs=12, batch_size=96, learning_rate=2e-3, schedule="cosine", augment="handwriting"),
        "the classic CNN trained on handwriting-like distortions (stroke thickness, elastic, slant, scale, "
        "blur, noise) for photos and drawings",
        "aim: ≥ 99 % on photos of digits on plain paper, ≥ 95 % in shadow or uneven light (docs/your-digits.md)",
    ),
}

DEFAULT_MODEL = "cnn"

__all__ = ["AUGMENTATIONS", "DEFAULT_MODEL", "HANDWRITING", "INPUT_SHAPE", "NAMED_AUGMENTATIONS", "NUM_CLASSES",
           "OPTIMIZERS", "REGISTRY", "SCHEDULES", "WIDE", "ModelSpec", "Recipe", "check_augmentation"]
