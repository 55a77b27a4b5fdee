"""The `simple_cnn` architecture from scratch: conv 8@3x3 -> ReLU -> flatten -> dense 10 -> softmax.

Parameters live in a dict of NumPy arrays whose shapes and order are those of the Keras
`simple_cnn`'s weights, so `keras_weights(params)` is all it takes to move them across.
"""

import numpy as np

from scratch import layers

FILTERS = 8
KERNEL_SIZE = 3
IMAGE_SIZE = 28
NUM_CLASSES = 10
PARAM_NAMES = ("conv_kernel", "conv_bias", "dense_kernel", "dense_bias")  # Keras' weight order


def init_params(rng, image_size=IMAGE_SIZE, channels=1, filters=FILTERS, kernel_size=KERNEL_SIZE,
                num_classes=NUM_CLASSES):
    """Glorot-uniform kernels and zero biases, as Keras initializes them."""
    k = kernel_size
    features = (image_size - k + 1) ** 2 * filters
    return {
        "conv_kernel": layers.glorot_uniform(rng, (k, k, channels, filters), k * k * channels, k * k * filters),
        "conv_bias": np.zeros(filters, np.float32),
        "dense_kernel": layers.glorot_uniform(rng, (features, num_classes), features, num_classes),
        "dense_bias": np.zeros(num_classes, np.float32),
    }


def forward(params, images):
    """images (N, H, W, 1) in [0, 1] -> logits (N, 10), and the caches backward() needs."""
    conv, conv_cache = layers.conv2d_forward(images, params["conv_kernel"], params["conv_bias"])
    activated, relu_cache = layers.relu_forward(conv)
    flat, flat_cache = layers.flatten_forward(activated)
    logits, dense_cache = layers.dense_forward(flat, params["dense_kernel"], params["dense_bias"])
    return logits, (conv_cache, relu_cache, flat_cache, dense_cache)


def backward(d_logits, caches):
    """Gradients of the loss for every parameter (and the input images), from d loss / d logits."""
    conv_cache, relu_cache, flat_cache, dense_cache = caches
    d_flat, d_dense_kernel, d_dense_bias = layers.dense_backward(d_logits, dense_cache)
    d_activated = layers.flatten_backward(d_flat, flat_cache)
    d_conv = layers.relu_backward(d_activated, relu_cache)
    d_images, d_conv_kernel, d_conv_bias = layers.conv2d_backward(d_conv, conv_cache)
    grads = {"conv_kernel": d_conv_kernel, "conv_bias": d_conv_bias,
             "dense_kernel": d_dense_kernel, "dense_bias": d_dense_bias}
    return grads, d_images


def loss_and_grads(params, images, labels):
    """Mean cross-entropy of a batch and its gradient for every parameter."""
    logits, caches = forward(params, images)
    loss, d_logits = layers.softmax_cross_entropy(logits, labels)
    grads, _ = backward(d_logits, caches)
    return loss, grads, logits


def predict(params, images, batch_size=1000):
    """Class probabilities (N, 10)."""
    return np.concatenate([layers.softmax(forward(params, images[i:i + batch_size])[0])
                           for i in range(0, len(images), batch_size)])


def keras_weights(params):
    """The parameters in the order `keras.Model.set_weights` expects for `simple_cnn`."""
    return [params[name] for name in PARAM_NAMES]
