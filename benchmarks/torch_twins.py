"""PyTorch twins of the registry's conv models, for `benchmarks/speed.py --vs-pytorch`.

Each twin has the same layers, shapes and parameter count as its Keras model (BatchNorm with
Keras' momentum and epsilon), trains with the same optimizer, batch size and augmentation, and
draws its batches from tensors already in memory, as tf.data does. It answers one question: how
long PyTorch takes for the same training work on the same CPU. PyTorch is an optional extra
(`pip install -r requirements-bench.txt`), imported only by this file.
"""

import math
import time

import torch
from torch import nn
from torch.nn import functional as F

from mnist_lab.data.geometry import ROTATION_DEGREES, SHIFT_FRACTION, ZOOM_FRACTION


def conv_bn(in_channels, out_channels, kernel_size, stride=1, padding=0):
    """Keras' conv_bn: conv without bias, BatchNorm (momentum 0.99 in Keras is 0.01 here), ReLU."""
    return [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False),
            nn.BatchNorm2d(out_channels, eps=1e-3, momentum=0.01), nn.ReLU()]


def two_conv_cnn(conv_dropout=0.0, dense_dropout=0.0):
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(conv_dropout),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(conv_dropout),
        nn.Flatten(), nn.Linear(64 * 5 * 5, 128), nn.ReLU(), nn.Dropout(dense_dropout), nn.Linear(128, 10))


def lenet5():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10))


def fast_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 24, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(24, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 5 * 5, 256), nn.ReLU(), nn.Linear(256, 10))


def deep_cnn(dropout=0.4):
    layers, channels = [], 1
    for filters in (32, 64):
        layers += conv_bn(channels, filters, 3) + conv_bn(filters, filters, 3)
        layers += conv_bn(filters, filters, 5, stride=2, padding=2) + [nn.Dropout(dropout)]
        channels = filters
    layers += conv_bn(64, 128, 4) + [nn.Flatten(), nn.Dropout(dropout), nn.Linear(128, 10)]
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    def __init__(self, in_channels, filters, stride=1):
        super().__init__()
        self.body = nn.Sequential(*conv_bn(in_channels, filters, 3, stride, 1),
                                  nn.Conv2d(filters, filters, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(filters, eps=1e-3, momentum=0.01))
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != filters:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, filters, 1, stride, bias=False),
                                          nn.BatchNorm2d(filters, eps=1e-3, momentum=0.01))

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


def resnet(stages=((32, 2), (64, 2), (128, 1)), dropout=0.3):
    layers, channels = conv_bn(1, stages[0][0], 3, padding=1), stages[0][0]
    for filters, blocks in stages:
        layers.append(ResidualBlock(channels, filters, stride=2))
        layers += [ResidualBlock(filters, filters) for _ in range(blocks - 1)]
        channels = filters
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, 10)]
    return nn.Sequential(*layers)


TWINS = {
    "cnn": two_conv_cnn,
    "cnn_dropout": lambda: two_conv_cnn(conv_dropout=0.25, dense_dropout=0.5),
    "lenet5": lenet5,
    "fast_cnn": fast_cnn,
    "deep_cnn": deep_cnn,
    "resnet": resnet,
}

# The settings tried for each twin; its figure is the fastest. bfloat16 autocast is timed only where the
# CPU computes bfloat16 natively (speed.py asks machine.native_bfloat16, as train.py does for Keras).
SETTINGS = {
    "float32": {"channels_last": False, "bfloat16": False},
    "float32, channels_last": {"channels_last": True, "bfloat16": False},
    "bf16 autocast, channels_last": {"channels_last": True, "bfloat16": True},
}


def parameter_count(name):
    return sum(p.numel() for p in TWINS[name]().parameters())


def augment(x, generator):
    """The tf.data augmentation's distortions (rotation, shift, zoom, black fill) as one affine warp a batch."""
    n = x.shape[0]
    uniform = lambda limit: (torch.rand(n, generator=generator) * 2 - 1) * limit  # noqa: E731
    angle = uniform(math.radians(ROTATION_DEGREES))
    scale = 1 + uniform(ZOOM_FRACTION)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, uniform(2 * SHIFT_FRACTION)], 1),
                         torch.stack([sin, cos, uniform(2 * SHIFT_FRACTION)], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)


def train_seconds(name, recipe, images, labels, n_images, channels_last=False, bfloat16=False, seed=0):
    """Seconds to train the twin on `n_images` (whole batches) from uint8 (N, 28, 28) arrays, after a warm-up."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = TWINS[name]()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format).train()
    betas = recipe.adam_betas or (0.9, 0.999)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.learning_rate, betas=betas, eps=1e-7)
    x_all = torch.from_numpy(images)
    y_all = torch.from_numpy(labels).long()
    batch = recipe.batch_size

    def step(indices):
        x = x_all[indices].unsqueeze(1).float().div_(255.0)
        if recipe.augment:
            x = augment(x, generator)
        x = x.contiguous(memory_format=memory_format)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bfloat16):
            loss = F.cross_entropy(model(x), y_all[indices])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    order = torch.randperm(len(x_all), generator=generator)
    for i in range(3):  # warm-up: oneDNN picks its kernels and allocates on the first steps
        step(order[i * batch:(i + 1) * batch])
    steps = max(1, n_images // batch)
    start = time.perf_counter()
    for i in range(steps):
        at = (i * batch) % (len(x_all) - batch + 1)
        step(order[at:at + batch])
    return time.perf_counter() - start, steps * batch
