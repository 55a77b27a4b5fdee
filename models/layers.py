"""BatchNormalization whose training step is one fused TensorFlow kernel.

Keras 3 computes BatchNormalization on TensorFlow from separate ops (moments, subtract, multiply,
add), and on a CPU that was 23 % of `deep_cnn`'s step (docs/speed.md). `FusedBatchNormalization`
computes the same thing, in training, with TensorFlow's FusedBatchNormV3 (what PyTorch's one
kernel does); inference and everything it does not cover go through Keras' own code. Same weights,
same moving statistics, so models trained with either load into the other.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="mnist_lab")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    def call(self, inputs, training=None, mask=None):
        fusable = (training and self.trainable and mask is None and self.scale and self.center and not self.renorm
                   and inputs.shape.rank == 4 and self.axis in (-1, 3) and inputs.dtype == tf.float32)
        if not fusable:
            return super().call(inputs, training=training, mask=mask)
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma, self.beta, epsilon=self.epsilon, data_format="NHWC", is_training=True)
        # The kernel returns the unbiased batch variance, for moving averages; Keras keeps the biased one.
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), variance.dtype)
        variance = variance * (count - 1) / count
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1 - self.momentum))
        return outputs
