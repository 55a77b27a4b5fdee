"""The NumPy conv net is the Keras simple_cnn: same outputs, same gradients, same optimizer step.

Every comparison runs on identical weights and inputs; the reference is TensorFlow's automatic
differentiation, and a finite-difference check in float64 backs the hand-written backward passes.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from mnist_lab.reader import SavedModelClassifier
from models import REGISTRY
from scratch import layers, network
from scratch.train import scratch_config
from scratch.training import train_scratch


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.fixture
def twins(rng):
    """The NumPy parameters and a Keras simple_cnn holding exactly the same weights."""
    params = network.init_params(rng)
    params["conv_bias"] = rng.normal(0, 0.1, params["conv_bias"].shape).astype(np.float32)
    params["dense_bias"] = rng.normal(0, 0.1, params["dense_bias"].shape).astype(np.float32)
    model = REGISTRY["simple_cnn"].build()
    model.set_weights(network.keras_weights(params))
    return params, model


def test_parameters_have_the_keras_shapes(twins):
    params, model = twins
    assert [w.shape for w in network.keras_weights(params)] == [tuple(w.shape) for w in model.get_weights()]
    assert sum(p.size for p in params.values()) == model.count_params()


def test_forward_pass_equals_keras(twins, rng):
    params, model = twins
    images = rng.random((16, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(network.predict(params, images), model(images, training=False), atol=1e-6)


def test_every_gradient_equals_tensorflow_autodiff(twins, rng):
    params, model = twins
    images = rng.random((12, 28, 28, 1), dtype=np.float32)
    labels = rng.integers(0, 10, 12)

    loss, grads, _ = network.loss_and_grads(params, images, labels)
    _, caches = network.forward(params, images)
    _, d_logits = layers.softmax_cross_entropy(network.forward(params, images)[0], labels)
    _, d_images = network.backward(d_logits, caches)

    image_tensor = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(image_tensor)
        probabilities = model(image_tensor, training=False)
        tf_loss = -tf.reduce_mean(tf.math.log(tf.gather(probabilities, labels, batch_dims=1)))
    *tf_grads, tf_d_images = tape.gradient(tf_loss, [*model.trainable_weights, image_tensor])

    assert loss == pytest.approx(float(tf_loss), rel=1e-5)
    for name, tf_grad in zip(network.PARAM_NAMES, tf_grads):
        np.testing.assert_allclose(grads[name], tf_grad, rtol=1e-4, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(d_images, tf_d_images, rtol=1e-4, atol=1e-7, err_msg="input")


@pytest.mark.parametrize("kernel_shape", [(3, 3, 3, 4), (2, 4, 2, 5), (1, 1, 3, 2)])
def test_convolution_equals_tensorflow_with_several_channels(rng, kernel_shape):
    """The net has one input channel; the layer itself must hold for any, and any kernel shape."""
    x = rng.normal(size=(2, 7, 6, kernel_shape[2])).astype(np.float32)
    kernel = rng.normal(size=kernel_shape).astype(np.float32)
    bias = rng.normal(size=kernel_shape[3]).astype(np.float32)
    out, cache = layers.conv2d_forward(x, kernel, bias)
    d_out = rng.normal(size=out.shape).astype(np.float32)
    dx, d_kernel, d_bias = layers.conv2d_backward(d_out, cache)

    tx, tk, tb = (tf.constant(a) for a in (x, kernel, bias))
    with tf.GradientTape() as tape:
        tape.watch([tx, tk, tb])
        tf_out = tf.nn.conv2d(tx, tk, strides=1, padding="VALID") + tb
        objective = tf.reduce_sum(tf_out * d_out)  # its gradient w.r.t. tf_out is d_out
    np.testing.assert_allclose(out, tf_out, rtol=1e-5, atol=1e-5)
    for mine, theirs in zip((dx, d_kernel, d_bias), tape.gradient(objective, [tx, tk, tb])):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)


def test_backward_passes_match_finite_differences():
    """Central differences in float64 on a tiny net: 6x6 image, 2 filters, 3 classes."""
    rng = np.random.default_rng(3)
    params = {name: value.astype(np.float64) for name, value in
              network.init_params(rng, image_size=6, filters=2, num_classes=3).items()}
    params["conv_bias"] += rng.normal(0, 0.1, 2)  # move ReLU kinks off zero for a fair difference
    images = rng.random((4, 6, 6, 1))
    labels = np.array([0, 2, 1, 2])

    _, grads, _ = network.loss_and_grads(params, images, labels)
    step = 1e-6
    for name, value in params.items():
        numeric = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            original = value[index]
            value[index] = original + step
            plus = network.loss_and_grads(params, images, labels)[0]
            value[index] = original - step
            minus = network.loss_and_grads(params, images, labels)[0]
            value[index] = original
            numeric[index] = (plus - minus) / (2 * step)
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-5, atol=1e-8, err_msg=name)


def test_adam_steps_like_keras(rng):
    start = rng.normal(size=(5, 3)).astype(np.float32)
    gradients = [rng.normal(size=(5, 3)).astype(np.float32) for _ in range(4)]
    mine = {"w": start.copy()}
    adam = layers.Adam(learning_rate=0.01)
    variable = keras.Variable(start.copy())
    keras_adam = keras.optimizers.Adam(learning_rate=0.01)
    for gradient in gradients:
        adam.step(mine, {"w": gradient})
        keras_adam.apply_gradients([(tf.constant(gradient), variable)])
    np.testing.assert_allclose(mine["w"], variable.numpy(), rtol=1e-5, atol=1e-6)


def test_softmax_cross_entropy_is_stable_for_large_scores():
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]])
    loss, d_logits = layers.softmax_cross_entropy(logits, np.array([0, 1]))
    assert np.isfinite(loss) and loss == pytest.approx(np.log(3) / 2)
    np.testing.assert_allclose(d_logits.sum(axis=1), 0, atol=1e-12)


def test_scratch_training_exports_a_model_evaluate_can_load(tmp_path, synthetic_dir, synthetic_arrays):
    from mnist_lab.data.splits import to_model_input

    output = tmp_path / "models" / "simple_cnn_scratch"
    record = train_scratch(scratch_config(epochs=2, data_dir=str(synthetic_dir), validation_size=200,
                                          output=str(output)), log=lambda *_: None)
    assert record.test_accuracy > 0.9, "the synthetic digits are easy: a working net learns them"
    assert json.loads((output / "metadata.json").read_text())["model"] == "simple_cnn_scratch"
    images = to_model_input(synthetic_arrays[2][:64])
    served = SavedModelClassifier(output).predict(images)
    keras_model = keras.saving.load_model(output / "model.keras")
    np.testing.assert_allclose(served, keras_model(images, training=False), atol=1e-6)


@pytest.mark.slow
def test_scratch_training_learns_real_mnist(real_mnist, tmp_path):
    """Two epochs on 10000 real digits reach about 92 % validation, 91 % test; chance is 10 %."""
    from tests.conftest import write_idx_dataset

    data_dir = write_idx_dataset(tmp_path / "mnist", real_mnist)
    record = train_scratch(scratch_config(epochs=2, subset=10000, data_dir=str(data_dir),
                                          output=str(tmp_path / "scratch")), log=lambda *_: None)
    assert record.validation_accuracy > 0.85 and record.test_accuracy > 0.85


@pytest.mark.slow
def test_a_killed_scratch_run_resumes_where_it_stopped_and_ends_as_if_never_stopped(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT, synthetic_digits, write_idx_dataset

    rng = np.random.default_rng(1)
    data_dir = write_idx_dataset(tmp_path / "digits", (*synthetic_digits(3000, rng), *synthetic_digits(300, rng)))
    flags = dict(epochs=3, data_dir=str(data_dir), validation_size=500)
    whole = train_scratch(scratch_config(**flags, output=str(tmp_path / "whole")), log=lambda *_: None)

    output = tmp_path / "models" / "simple_cnn_scratch"
    command = [sys.executable, "-m", "scratch.train", "--epochs", "3", "--data-dir", str(data_dir),
               "--validation-size", "500", "--output", str(output)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    backup = output.parent / ".simple_cnn_scratch.backup" / "numpy_state.npz"
    deadline = time.monotonic() + 300
    while not backup.is_file():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no epoch was backed up in time"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not output.exists(), "a killed run exports nothing"

    lines = []
    resumed = train_scratch(scratch_config(**flags, output=str(output)), log=lines.append)
    assert any(line.startswith("resuming from epoch ") and " of 3" in line for line in lines), lines
    assert not any(line.startswith("epoch 1/3") for line in lines), "the completed epoch is not run again"
    assert resumed.resumed_after_epoch >= 1 and resumed.epochs_run == 3
    assert (resumed.test_accuracy, resumed.validation_accuracy) == (whole.test_accuracy, whole.validation_accuracy)
    np.testing.assert_array_equal(keras.saving.load_model(output / "model.keras").get_weights()[0],
                                  keras.saving.load_model(tmp_path / "whole" / "model.keras").get_weights()[0])
    assert not backup.parent.exists(), "the backup goes once the model is exported"
