"""Neural-network layers in plain NumPy, each a forward and a backward function.

Shapes follow Keras' conventions so that weights move between the two unchanged: images are
NHWC (batch, height, width, channels), convolution kernels HWIO (height, width, in, out), dense
kernels (inputs, outputs). Every forward function returns its output and a `cache` of what its
backward function needs; every backward function takes the gradient of the loss with respect to
the output and returns the gradients with respect to the inputs and the parameters.
"""

import numpy as np


def glorot_uniform(rng, shape, fan_in, fan_out):
    """Weights ~ U(-l, l), l = sqrt(6 / (fan_in + fan_out)): Keras' default initializer."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)


def im2col(x, kh, kw):
    """(N, H, W, C) -> (N, H-kh+1, W-kw+1, kh*kw*C): each output pixel's receptive field as a row.

    A strided view picks every window without a Python loop; the row order (kh, kw, C) matches a
    HWIO kernel reshaped to (kh*kw*C, F), so a valid convolution becomes one matrix product.
    """
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # (N, H', W', C, kh, kw)
    n, out_h, out_w, channels = windows.shape[:4]
    return windows.transpose(0, 1, 2, 4, 5, 3).reshape(n, out_h, out_w, kh * kw * channels)


def conv2d_forward(x, kernel, bias):
    """Valid 2-D convolution (cross-correlation, stride 1): (N, H, W, C) -> (N, H', W', F)."""
    kh, kw, _, filters = kernel.shape
    columns = im2col(x, kh, kw)
    out = columns @ kernel.reshape(-1, filters) + bias
    return out, (x.shape, columns, kernel)


def conv2d_backward(d_out, cache):
    """d_out (N, H', W', F) -> (dx (N, H, W, C), d_kernel (kh, kw, C, F), d_bias (F,))."""
    x_shape, columns, kernel = cache
    kh, kw, channels, filters = kernel.shape
    out_h, out_w = d_out.shape[1:3]
    d_rows = d_out.reshape(-1, filters)
    d_kernel = (columns.reshape(-1, kh * kw * channels).T @ d_rows).reshape(kernel.shape)
    d_bias = d_rows.sum(axis=0)
    # Each window row's gradient goes back to the pixels it was cut from (col2im); the loop runs
    # over the kh*kw kernel offsets, every pixel at once.
    d_columns = (d_out @ kernel.reshape(-1, filters).T).reshape(-1, out_h, out_w, kh, kw, channels)
    dx = np.zeros(x_shape, dtype=d_out.dtype)
    for i in range(kh):
        for j in range(kw):
            dx[:, i:i + out_h, j:j + out_w, :] += d_columns[:, :, :, i, j, :]
    return dx, d_kernel, d_bias


def relu_forward(x):
    """max(x, 0), elementwise."""
    return np.maximum(x, 0), x > 0


def relu_backward(d_out, positive):
    """The gradient passes where the input was positive and stops elsewhere."""
    return d_out * positive


def flatten_forward(x):
    """(N, ...) -> (N, D) in C order, as Keras' Flatten does for channels-last maps."""
    return x.reshape(len(x), -1), x.shape


def flatten_backward(d_out, shape):
    return d_out.reshape(shape)


def dense_forward(x, kernel, bias):
    """x (N, D) @ kernel (D, M) + bias (M,) -> (N, M)."""
    return x @ kernel + bias, (x, kernel)


def dense_backward(d_out, cache):
    """d_out (N, M) -> (dx (N, D), d_kernel (D, M), d_bias (M,))."""
    x, kernel = cache
    return d_out @ kernel.T, x.T @ d_out, d_out.sum(axis=0)


def softmax(logits):
    """(N, K) scores -> (N, K) probabilities; the row maximum is subtracted so exp never overflows."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def softmax_cross_entropy(logits, labels):
    """Mean -log p(label) over the batch, and its gradient with respect to the logits.

    With softmax and cross-entropy together the gradient is simply (p - onehot) / N.
    """
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(len(labels))
    loss = -log_probs[rows, labels].mean()
    d_logits = np.exp(log_probs)
    d_logits[rows, labels] -= 1
    return loss, d_logits / len(labels)


class Adam:
    """Adam exactly as Keras 3 applies it (epsilon outside the square root, bias-corrected step)."""

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        self.learning_rate, self.beta_1, self.beta_2, self.epsilon = learning_rate, beta_1, beta_2, epsilon
        self.steps = 0
        self.m, self.v = {}, {}

    def step(self, params, grads):
        """Update every array in `params` in place from the matching gradient in `grads`."""
        self.steps += 1
        alpha = (self.learning_rate * np.sqrt(1 - self.beta_2 ** self.steps)
                 / (1 - self.beta_1 ** self.steps))
        for name, grad in grads.items():
            m = self.m.setdefault(name, np.zeros_like(grad))
            v = self.v.setdefault(name, np.zeros_like(grad))
            m += (grad - m) * (1 - self.beta_1)
            v += (grad * grad - v) * (1 - self.beta_2)
            params[name] -= (alpha * m / (np.sqrt(v) + self.epsilon)).astype(params[name].dtype)
