"""A small residual network: a conv stem, three stages of residual blocks (2, 2, 1), global average pooling.

Each block adds its input back to the output of two 3x3 convolutions (He et al., 2016), so deeper
stacks train as easily as shallow ones; a block that halves the map or widens the channels
carries its input through a strided 1x1 convolution instead.
"""

import keras

from models.common import INPUT_SHAPE, NUM_CLASSES
from models.deep_cnn import conv_bn

STAGES = ((32, 2), (64, 2), (128, 1))  # (channels, blocks); each stage begins by halving the map
DROPOUT = 0.3


def residual_block(x, filters, strides=1):
    """conv-BN-ReLU, conv-BN, plus the (projected) input, then ReLU."""
    shortcut = x
    y = conv_bn(x, filters, 3, strides=strides, padding="same")
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    y = keras.layers.BatchNormalization()(y)
    if strides != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, strides=strides, use_bias=False)(x)
        shortcut = keras.layers.BatchNormalization()(shortcut)
    return keras.layers.Activation("relu")(keras.layers.Add()([y, shortcut]))


def build_resnet(input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES):
    inputs = keras.Input(shape=input_shape, name="image")
    x = conv_bn(inputs, STAGES[0][0], 3, padding="same")
    for filters, blocks in STAGES:  # 28x28 -> 14x14 -> 7x7 -> 4x4
        x = residual_block(x, filters, strides=2)
        for _ in range(blocks - 1):
            x = residual_block(x, filters)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(DROPOUT)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="resnet")
