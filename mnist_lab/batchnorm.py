"""BatchNorm through TensorFlow's fused kernel while training, and Keras' own layer everywhere else.

On TensorFlow, Keras 3's BatchNormalization trains through separate ops: moments, subtract, multiply,
add, and their gradients. TensorFlow's fused kernel (oneDNN's where its kernels are on) does the same
work in one op each way, in about half the time on the AVX2 CPU measured (docs/speed.md).
`fuse_batch_norm` changes only how a layer trains: its weights, its saved config and its inference
path stay Keras' own, so a saved model is a plain Keras model and its SavedModel needs none of this
code.
"""

import keras
import tensorflow as tf

MIN_EPSILON = 1.001e-5  # the fused kernel raises a smaller epsilon to this


def fuse_batch_norm(model):
    """`model`, with each BatchNormalization over the channels of 4-D maps training through the fused kernel."""
    for layer in model.layers:
        if (type(layer) is keras.layers.BatchNormalization and len(layer.input.shape) == 4
                and layer.axis in (-1, 3) and layer.center and layer.scale and not layer.renorm
                and layer.epsilon >= MIN_EPSILON and not layer.synchronized and layer.variable_dtype == "float32"):
            layer.call = _fused_training(layer, layer.call)
    return model


def _fused_training(layer, keras_call):
    def call(inputs, training=None, mask=None):
        if not (training and layer.trainable) or mask is not None:
            return keras_call(inputs, training=training, mask=mask)
        # As Keras' layer: statistics in float32 whatever the compute precision.
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            tf.cast(inputs, "float32"), tf.cast(layer.gamma, "float32"), tf.cast(layer.beta, "float32"),
            epsilon=layer.epsilon, is_training=True)
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:3]), "float32")
        variance *= (count - 1) / count  # the kernel hands out the unbiased variance; Keras keeps the batch's own
        momentum = layer.momentum
        layer.moving_mean.assign(layer.moving_mean * momentum + mean * (1 - momentum))
        layer.moving_variance.assign(layer.moving_variance * momentum + variance * (1 - momentum))
        return tf.cast(outputs, layer.compute_dtype)

    return call
