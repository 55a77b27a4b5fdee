"""Screen changes to deep_cnn's recipe on the validation split, one (change, seed) per process.

    python benchmarks/screen.py --change width15 --seed 42            # here: Keras on TensorFlow
    KERAS_BACKEND=jax python benchmarks/screen.py --change base --seed 42 --train-npz train.npz

Made for the GPU machine a session is sometimes lent. It has JAX but no TensorFlow, and no
TensorFlow wheel fits in what travels there, so train.py cannot run on it. This replays the recipe
with Keras alone: the registry's deep_cnn recipe (epochs, batch, Adam, cosine decay), the project's
builder, and pipeline.py's augmentation (rotation, then shift, then zoom, each one bilinear
resampling with a black outside). The augmentation is written with gathers because Keras' own
random image layers take 0.4 s a batch on JAX's GPU backend, 140 times the network's step.

Only training images are read; the last 10000 are validation, as in train.py. `--train-npz` is a
file of them alone (arrays `x`, `y`), so the test set need not travel. Each run appends one JSON
line to --results; docs/accuracy.md shows how ten ran side by side on one GPU, and what they found.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

from mnist_lab.cli import ArgumentParser, positive_int
from mnist_lab.config import VALIDATION_SIZE
from mnist_lab.errors import UserError
from models import REGISTRY

# pipeline.py's ranges, copied because pipeline.py imports TensorFlow (a test keeps them equal)
ROTATION_DEGREES, SHIFT_FRACTION, ZOOM_FRACTION = 10, 0.1, 0.1
WIDE_ROTATION_DEGREES, WIDE_ZOOM_FRACTION = 15, 0.15
WIDE = dict(rotation=WIDE_ROTATION_DEGREES, zoom=WIDE_ZOOM_FRACTION)
CHANGES = {
    "base": {},
    "smooth": dict(smoothing=0.1),  # label smoothing
    "ema": dict(ema=0.999),  # weights averaged over about 1000 steps, swapped in at the end
    "wide": WIDE,  # Deotte's ranges (train.py --augment wide)
    "smooth_wide": dict(smoothing=0.1, **WIDE),
    "erase": dict(erase=0.5),  # half the digits get a black rectangle of 2-15 % of the image
    "width15": dict(width=1.5),  # every layer's filters x 1.5
    "width2": dict(width=2.0),
}


def sample(images, rows, cols):
    """images (B, 28, 28, 1) read bilinearly at float positions `rows`, `cols` (B, 28, 28); black outside."""
    from keras import ops

    size = images.shape[1]
    framed = size + 2
    flat = ops.reshape(ops.pad(images[..., 0], [[0, 0], [1, 1], [1, 1]]), (-1,))  # a black frame
    rows, cols = ops.clip(rows + 1, 0, framed - 1), ops.clip(cols + 1, 0, framed - 1)
    top, left = ops.floor(rows), ops.floor(cols)
    down, right = rows - top, cols - left
    top, left = ops.cast(top, "int32"), ops.cast(left, "int32")
    bottom, far = ops.minimum(top + 1, framed - 1), ops.minimum(left + 1, framed - 1)
    start = ops.reshape(ops.arange(ops.shape(images)[0], dtype="int32") * framed * framed, (-1, 1, 1))

    def at(r, c):
        return ops.take(flat, start + r * framed + c)

    return (at(top, left) * (1 - down) * (1 - right) + at(top, far) * (1 - down) * right
            + at(bottom, left) * down * (1 - right) + at(bottom, far) * down * right)[..., None]


def make_distort_layer(degrees, shift, zoom, seed):
    import keras
    from keras import ops

    class Distort(keras.layers.Layer):
        """Random rotation, then shift, then zoom, while training; the identity otherwise."""

        def __init__(self):
            super().__init__(name="distort")
            self.generator = keras.random.SeedGenerator(seed)

        def call(self, images, training=False):
            if not training:
                return images
            size = images.shape[1]
            draw = keras.random.uniform((ops.shape(images)[0], 4), -1.0, 1.0, seed=self.generator)
            angle, dy, dx, scale = (draw[:, i, None, None] for i in range(4))
            grid = np.arange(size, dtype="float32") - (size - 1) / 2
            y, x = grid[None, :, None] + 0 * grid[None, None, :], grid[None, None, :] + 0 * grid[None, :, None]
            middle = (size - 1) / 2
            cos, sin = ops.cos(angle * np.radians(degrees)), ops.sin(angle * np.radians(degrees))
            images = sample(images, cos * y - sin * x + middle, sin * y + cos * x + middle)
            images = sample(images, y + middle - dy * shift * size, x + middle - dx * shift * size)
            return sample(images, y * (1 + scale * zoom) + middle, x * (1 + scale * zoom) + middle)

    return Distort()


def screen(change, seed, x_train, y_train, epochs=None, validation_size=VALIDATION_SIZE):
    """Train deep_cnn's recipe with `change` on all but the last `validation_size` images; its row."""
    import keras

    from models.deep_cnn import build_deep_cnn

    recipe = REGISTRY["deep_cnn"].recipe
    c = {**dict(rotation=ROTATION_DEGREES, zoom=ZOOM_FRACTION, smoothing=0.0, ema=0.0, width=1.0, erase=0.0),
         **CHANGES[change]}
    epochs = epochs or recipe.epochs
    x = (np.asarray(x_train, "float32") / 255.0)[..., None]
    y = keras.utils.to_categorical(y_train, 10)
    cut = len(x) - validation_size
    keras.utils.set_random_seed(seed)
    net = build_deep_cnn(width=c["width"])
    inputs = keras.Input(net.input_shape[1:])
    distorted = make_distort_layer(c["rotation"], SHIFT_FRACTION, c["zoom"], seed)(inputs)
    if c["erase"]:
        distorted = keras.layers.RandomErasing(c["erase"], scale=(0.02, 0.15), fill_value=0.0,
                                               value_range=(0, 1), seed=seed + 3)(distorted)
    model = keras.Model(inputs, net(distorted))
    steps = -(-cut // recipe.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(recipe.learning_rate, decay_steps=epochs * steps)
    optimizer = keras.optimizers.Adam(schedule, use_ema=c["ema"] > 0, ema_momentum=c["ema"] or 0.99)
    model.compile(optimizer, keras.losses.CategoricalCrossentropy(label_smoothing=c["smoothing"]),
                  metrics=["categorical_accuracy"])
    start = time.perf_counter()
    history = model.fit(x[:cut], y[:cut], batch_size=recipe.batch_size, epochs=epochs,
                        validation_data=(x[cut:], y[cut:]), verbose=2).history
    seconds = time.perf_counter() - start
    # Where ema > 0, fit has swapped the averaged weights in by now: score them, not the last epoch's.
    predicted = net.predict(x[cut:], batch_size=1000, verbose=0).argmax(1)
    return dict(change=change, seed=seed, epochs=epochs,
                val_accuracy=float(np.mean(predicted == np.asarray(y_train)[cut:])),
                val_loss=history["val_loss"][-1], mean_last5=float(np.mean(history["val_categorical_accuracy"][-5:])),
                params=net.count_params(), seconds=round(seconds, 1), backend=keras.backend.backend())


def main(argv=None):
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--change", required=True, choices=sorted(CHANGES),
                        help="what differs from the recipe (required)")
    parser.add_argument("--seed", type=int, required=True, help="the run's seed (required)")
    parser.add_argument("--results", default="reports/screen.jsonl",
                        help="the file each run appends its JSON line to (default: reports/screen.jsonl)")
    parser.add_argument("--train-npz", help="a .npz of the 60000 training images (x) and labels (y) alone "
                                            "(default: MNIST as train.py finds it)")
    parser.add_argument("--epochs", type=positive_int, help="fewer epochs, for a smoke run (default: the recipe's)")
    args = parser.parse_args(argv)
    if args.train_npz:
        try:
            arrays = np.load(args.train_npz)
            x_train, y_train = arrays["x"], arrays["y"]
        except (OSError, ValueError, KeyError) as error:
            raise UserError(f"--train-npz {args.train_npz}: not a .npz with arrays x and y ({error})") from None
    else:
        from mnist_lab.data import load_mnist

        data = load_mnist()
        x_train, y_train = data.x_train, data.y_train
    row = screen(args.change, args.seed, x_train, y_train, args.epochs)
    os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
    with open(args.results, "a") as results:
        results.write(json.dumps(row) + "\n")
    print(f"{row['change']} seed {row['seed']}: validation accuracy {100 * row['val_accuracy']:.2f} % "
          f"after {row['epochs']} epochs in {row['seconds']:.0f} s ({row['backend']})")
    return 0


if __name__ == "__main__":
    from mnist_lab.cli import run

    sys.exit(run(main))
