"""Every registered model builds, maps (N, 28, 28, 1) images to (N, 10) probabilities, and has its pinned size."""

import json

import keras
import numpy as np
import pytest

from models import INPUT_SHAPE, OPTIMIZERS, REGISTRY, SCHEDULES
from models.mlp import build_mlp

# Pinned parameter counts: a change here is a change of architecture, and the README table with it.
PARAMETERS = {
    "mlp": 266_610,
    "advanced_mlp": 570_122,
    "simple_cnn": 54_170,
    "cnn": 225_034,
    "cnn_dropout": 225_034,
    "lenet5": 61_706,
    "deep_cnn": 326_826,
    "fast_cnn": 215_194,
    "resnet": 403_498,
    "robust_cnn": 225_034,
}


def test_every_model_has_a_pinned_parameter_count():
    assert set(PARAMETERS) == set(REGISTRY)


def test_a_wider_deep_cnn_scales_every_layer():
    from models.deep_cnn import build_deep_cnn

    assert [build_deep_cnn(width=width).count_params() for width in (1, 1.5, 2)] == [326_826, 732_922, 1_300_810]


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_model_builds_and_outputs_probabilities(name):
    model = REGISTRY[name].build()
    assert isinstance(model, keras.Model) and model.name == name
    assert model.input_shape == (None, *INPUT_SHAPE)
    assert model.count_params() == PARAMETERS[name]

    images = np.random.default_rng(0).random((4, *INPUT_SHAPE), dtype=np.float32)
    probabilities = np.asarray(model(images, training=False))
    assert probabilities.shape == (4, 10)
    assert np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def all_layers(layer):
    """A layer and every layer nested in it, at any depth."""
    yield layer
    for inner in getattr(layer, "layers", None) or getattr(layer, "_layers", []):
        yield from all_layers(inner)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_model_holds_no_augmentation(name):
    """Random image layers act whenever training=True; an exported model must not contain any."""
    random_layers = [layer.name for layer in all_layers(REGISTRY[name].build())
                     if type(layer).__name__.startswith("Random")]
    assert random_layers == []


def test_the_augmentation_check_sees_nested_layers():
    from mnist_lab.data.pipeline import build_augmentation

    inputs = keras.Input((28, 28, 1))
    model = keras.Model(inputs, build_augmentation(0)(inputs))
    assert [type(layer).__name__ for layer in all_layers(model) if type(layer).__name__.startswith("Random")] == [
        "RandomWarp", "RandomRotation", "RandomTranslation", "RandomZoom"]


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_recipe_is_complete(name):
    recipe = REGISTRY[name].recipe
    assert recipe.epochs >= 1 and recipe.batch_size >= 1 and recipe.learning_rate > 0
    assert recipe.optimizer in OPTIMIZERS and recipe.schedule in SCHEDULES


def test_mlp_builder_takes_its_hyperparameters():
    model = build_mlp(hidden_units=(64, 32, 16), activation="tanh", dropout=0.2, batch_norm=True)
    layer_types = [type(layer).__name__ for layer in model.layers]
    assert layer_types.count("Dense") == 4
    assert layer_types.count("BatchNormalization") == 3
    assert layer_types.count("Dropout") == 3
    assert model.count_params() == (784 * 64 + 64 * 32 + 32 * 16 + 16 * 10 + 10  # weights, output bias
                                    + 4 * (64 + 32 + 16))  # BatchNorm: gamma, beta, mean, variance


def test_the_default_model_is_the_classic_cnn():
    from models import DEFAULT_MODEL

    assert DEFAULT_MODEL == "cnn"
    recipe = REGISTRY["cnn"].recipe
    assert (recipe.optimizer, recipe.batch_size, recipe.epochs) == ("adam", 64, 5)


def test_a_recipe_reads_as_words():
    from models import Recipe

    assert REGISTRY["cnn"].recipe.describe() == "5 epochs, batch 64, adam 0.001"
    assert REGISTRY["fast_cnn"].recipe.describe() == "1 epoch, batch 256, adam 0.01, one-cycle, betas 0.7/0.9, bfloat16"
    assert Recipe(epochs=2, batch_size=8, optimizer="sgd", schedule="cosine", augment=True,
                  jit_compile=True).describe() == "2 epochs, batch 8, sgd 0.001, cosine, augmentation, XLA"


def test_a_recipe_names_its_augmentation_and_refuses_unknown_ones():
    from models import Recipe

    assert Recipe(epochs=1, batch_size=8, augment="handwriting").describe() == \
        "1 epoch, batch 8, adam 0.001, handwriting augmentation"
    assert Recipe(epochs=1, batch_size=8, schedule="exponential", augment="wide").describe() == \
        "1 epoch, batch 8, adam 0.001, exponential, wide augmentation"
    for value in ("elastic", 1, None):
        with pytest.raises(TypeError, match="augment="):
            Recipe(epochs=1, batch_size=8, augment=value)


def test_records_of_every_augmentation_load():
    """metadata.json from before the third kind (true/false) and with it; what is not a kind is unreadable."""
    from models import Recipe

    for value in (False, True, "handwriting"):
        recipe = Recipe(epochs=3, batch_size=64, augment=value)
        assert Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe
    assert Recipe.from_dict({"epochs": 3, "batch_size": 64, "augment": "sideways"}) is None


def test_augment_flag_takes_handwriting():
    from mnist_lab.config import TrainConfig
    from train import parse_args

    flags = ([], ["--augment"], ["--augment", "handwriting"], ["--no-augment"])
    assert [parse_args(given).augment for given in flags] == [None, True, "handwriting", False]
    assert parse_args(["--augment", "--epochs", "2"]).epochs == 2, "a bare --augment takes no value"
    assert TrainConfig(model="cnn", augment="handwriting").recipe().augment == "handwriting"
    assert TrainConfig(model="robust_cnn", augment=False).recipe().augment is False


def test_the_robust_model_is_the_classic_cnn_trained_on_handwriting():
    from mnist_lab.predictor import PREFERRED_MODEL

    assert PREFERRED_MODEL == "robust_cnn" and REGISTRY["robust_cnn"].recipe.augment == "handwriting"
    robust, plain = REGISTRY["robust_cnn"].build(), REGISTRY["cnn"].build()
    assert [type(layer).__name__ for layer in robust.layers] == [type(layer).__name__ for layer in plain.layers]
