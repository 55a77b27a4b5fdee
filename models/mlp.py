"""Multilayer perceptrons: the 300-100 net of LeCun et al. (1998) and a deeper regularized one."""

import keras

from models.common import INPUT_SHAPE, NUM_CLASSES


def build_mlp(input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES, *, hidden_units=(300, 100),
              activation="relu", dropout=0.0, batch_norm=False, name="mlp"):
    """Flatten, then per hidden layer Dense (-> BatchNorm) -> activation (-> Dropout), then softmax.

    The keyword arguments are the MLP's hyperparameters; the tuner maps its search space onto them.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Flatten()(inputs)
    for units in hidden_units:
        # With BatchNorm the Dense bias is redundant: BN's offset does the same job.
        x = keras.layers.Dense(units, use_bias=not batch_norm)(x)
        if batch_norm:
            x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Activation(activation)(x)
        if dropout:
            x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


def build_advanced_mlp(input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES):
    """Three wider hidden layers (512-256-128) with BatchNormalization and Dropout."""
    return build_mlp(input_shape, num_classes, hidden_units=(512, 256, 128), dropout=0.3,
                     batch_norm=True, name="advanced_mlp")
