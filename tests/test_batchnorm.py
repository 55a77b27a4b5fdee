"""BatchNorm through TensorFlow's fused kernel: it trains as Keras' layer does, and what it saves is Keras' own."""

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from mnist_lab.batchnorm import fuse_batch_norm
from mnist_lab.writer import export_savedmodel


def conv_bn_net(size=28):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 1))
    x = keras.layers.Conv2D(8, 3)(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))


def one_step(model, images, labels):
    """Training outputs, gradients (input's first) and the weights after one SGD step."""
    with tf.GradientTape() as tape:
        tape.watch(images)
        outputs = model(images, training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, outputs))
    gradients = tape.gradient(loss, [images, *model.trainable_variables])
    keras.optimizers.SGD(0.1).apply(gradients[1:], model.trainable_variables)
    return outputs, gradients, model.get_weights()


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_the_fused_layer_trains_as_keras_layer_does(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        # Small maps (16 x 3 x 3 values a channel), so that the variance's n - 1 against n shows (6 %).
        keras_net, fused_net = conv_bn_net(size=5), fuse_batch_norm(conv_bn_net(size=5))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    images = tf.random.normal((16, 5, 5, 1), seed=1) * 3 + 1
    labels = tf.constant(np.arange(16) % 4)
    outputs, gradients, weights = one_step(keras_net, images, labels)
    fused_outputs, fused_gradients, fused_weights = one_step(fused_net, images, labels)
    close = {"float32": 1e-5, "mixed_bfloat16": 2e-2}[policy]  # bfloat16 keeps 8 bits of mantissa
    np.testing.assert_allclose(fused_outputs, outputs, atol=close)
    # The conv's bias gradient is left out: before a BatchNorm it is 0 but for rounding, in both.
    for index, (fused, expected) in enumerate(zip(fused_gradients, gradients)):
        if index != 2:  # the input, the conv's kernel, its bias
            np.testing.assert_allclose(fused, expected, atol=close * float(tf.reduce_max(tf.abs(expected))))
    batch_norm = keras_net.layers[2]
    assert [w.name for w in batch_norm.weights] == [w.name for w in fused_net.layers[2].weights]
    for fused, expected in zip(fused_weights, weights):  # moving mean and variance included
        np.testing.assert_allclose(fused, expected, atol=close, rtol=close)
    # Inference is Keras' own path, on the moving statistics.
    np.testing.assert_allclose(fused_net(images, training=False), keras_net(images, training=False), atol=close)


def test_a_fused_net_saves_as_plain_keras_and_its_savedmodel_needs_no_project_code(tmp_path):
    net = fuse_batch_norm(conv_bn_net())
    images = np.random.default_rng(0).normal(size=(4, 28, 28, 1)).astype("float32")
    net.compile("adam", "sparse_categorical_crossentropy")
    net.fit(images, np.arange(4), epochs=2, verbose=0)
    net.save(tmp_path / "model.keras")
    export_savedmodel(net, tmp_path / "savedmodel")
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "expected.npy", net.predict(images, verbose=0))
    # A fresh interpreter in which the project cannot be imported.
    script = f"""
import sys
sys.modules["mnist_lab"] = sys.modules["models"] = None
import keras, numpy as np, tensorflow as tf
images, expected = np.load("{tmp_path}/images.npy"), np.load("{tmp_path}/expected.npy")
model = keras.saving.load_model("{tmp_path}/model.keras")
assert [type(layer).__name__ for layer in model.layers][2] == "BatchNormalization"
np.testing.assert_allclose(model.predict(images, verbose=0), expected, atol=1e-6)
served = tf.saved_model.load("{tmp_path}/savedmodel").signatures["serving_default"]
np.testing.assert_allclose(list(served(tf.constant(images)).values())[0], expected, atol=1e-6)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]
