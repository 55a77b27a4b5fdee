"""Convolutional nets: one conv layer, the classic two-conv CNN (also as robust_cnn, trained on
handwriting-like distortions), and the same with dropout."""

import keras

from models.common import INPUT_SHAPE, NUM_CLASSES


def build_simple_cnn(input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES):
    """One 3x3 convolution with 8 filters, ReLU, then a softmax layer over the feature maps."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="simple_cnn")


def _two_conv_cnn(input_shape, num_classes, conv_dropout, dense_dropout, name):
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for filters in (32, 64):
        x = keras.layers.Conv2D(filters, 3, activation="relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)
        if conv_dropout:
            x = keras.layers.Dropout(conv_dropout)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    if dense_dropout:
        x = keras.layers.Dropout(dense_dropout)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


def build_cnn(input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES):
    """Conv 32 3x3, MaxPool, Conv 64 3x3, MaxPool, Dense 128, softmax: the classic MNIST CNN."""
    return _two_conv_cnn(input_shape, num_classes, conv_dropout=0.0, dense_dropout=0.0, name="cnn")


def build_cnn_dropout(input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES):
    """The classic CNN with Dropout(0.25) after each pooling and Dropout(0.5) before the output."""
    return _two_conv_cnn(input_shape, num_classes, conv_dropout=0.25, dense_dropout=0.5,
                         name="cnn_dropout")


def build_robust_cnn(input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES):
    """The classic CNN under a name of its own: its recipe trains it for photos and drawings."""
    return _two_conv_cnn(input_shape, num_classes, conv_dropout=0.0, dense_dropout=0.0, name="robust_cnn")
