"""LeNet-5 (LeCun et al., 1998), with tanh units and average-pooling subsampling as published."""

import keras

from models.common import INPUT_SHAPE, NUM_CLASSES


def build_lenet5(input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES):
    """C1 6@5x5, S2, C3 16@5x5, S4, F5 120, F6 84, 10 outputs.

    The paper padded digits to 32x32; "same" padding on C1 gives the same 28x28 C1 maps.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Conv2D(6, 5, padding="same", activation="tanh", name="c1")(inputs)
    x = keras.layers.AveragePooling2D(2, name="s2")(x)
    x = keras.layers.Conv2D(16, 5, activation="tanh", name="c3")(x)
    x = keras.layers.AveragePooling2D(2, name="s4")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(120, activation="tanh", name="f5")(x)
    x = keras.layers.Dense(84, activation="tanh", name="f6")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="lenet5")
