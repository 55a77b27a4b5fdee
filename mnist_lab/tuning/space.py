"""The search space, mapped onto `models.mlp.build_mlp`'s arguments and `models.Recipe`'s fields,
and the HyperModel that builds and trains one trial with the project's builder and pipeline."""

import math

import keras
import keras_tuner

from mnist_lab.data.pipeline import make_dataset
from mnist_lab.training import build_and_compile
from mnist_lab.tuning import MODEL_NAME
from models import OPTIMIZERS, ModelSpec, Recipe

# Batch size and schedule stay fixed: cosine decay lets short trials converge, and the learning
# rate already covers what batch size would change.
MAX_HIDDEN_LAYERS = 3
UNITS = (128, 256, 512, 1024)
ACTIVATIONS = ("relu", "gelu", "swish", "tanh")
BATCH_SIZE = 128
SCHEDULE = "cosine"


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
    """The space as keras-tuner describes it, to tell whether a saved search used the same one."""
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
    return ModelSpec(builder="mlp:build_mlp", recipe=recipe_for(values, epochs), summary=f"MLP {describe(values)}",
                     source="keras-tuner search: tuning/search_mlp.py",
                     arguments={**mlp_arguments(values), "name": MODEL_NAME})


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
