"""The strongest single model: stacked 3x3 convolutions with BatchNormalization and dropout.

Two blocks of conv-conv-strided conv (the strided 5x5 conv is a learned pooling), a 4x4 conv that
sees the whole remaining map, then softmax. Trained with augmentation and a decaying learning rate.
"""

import keras

from models.common import INPUT_SHAPE, NUM_CLASSES

DROPOUT = 0.4


def conv_bn(x, filters, kernel_size, strides=1, padding="valid"):
    """Conv (no bias: BatchNorm's offset replaces it) -> BatchNorm -> ReLU."""
    x = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.Activation("relu")(x)


def build_deep_cnn(input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES, width=1.0):
    """`width` scales every layer's filters (32, 64, 128); benchmarks/screen.py tried 1.5 and 2."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for filters in (round(32 * width), round(64 * width)):
        x = conv_bn(x, filters, 3)
        x = conv_bn(x, filters, 3)
        x = conv_bn(x, filters, 5, strides=2, padding="same")
        x = keras.layers.Dropout(DROPOUT)(x)
    x = conv_bn(x, round(128 * width), 4)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(DROPOUT)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="deep_cnn")
