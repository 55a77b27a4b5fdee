"""The one augmentation of rotation, shift and zoom: its ranges, its random draws and its warp.

Written with `keras.ops` and no TensorFlow, so that the pipeline (on TensorFlow, in tf.data) and
benchmarks/screen.py (on JAX, inside the model, on a GPU machine without TensorFlow) run the same
layer, `random_warp`. It draws each image's angle, shift and zoom from Keras' own RandomRotation,
RandomTranslation and RandomZoom layers (so a seed gives the draws those layers gave), and warps
with gathers (`sample_bilinear`), which are fast on a GPU, where Keras' image transform is not.
Keras is imported only when a layer is made, so that reading the ranges starts no backend.
"""

# Gentle distortions a handwritten digit survives (augment=True)
ROTATION_DEGREES = 10
SHIFT_FRACTION = 0.1
ZOOM_FRACTION = 0.1
# "wide": the ranges of Chris Deotte's Kaggle study of this architecture (rotation 15 degrees, zoom 0.15)
WIDE_ROTATION_DEGREES = 15
WIDE_ZOOM_FRACTION = 0.15
# Elastic distortion (pipeline.handwriting_distort): a smooth random displacement field, of standard
# deviation up to twice ELASTIC_PIXELS, random on an ELASTIC_GRID x ELASTIC_GRID grid and smoothly
# interpolated: wobbles of about 7 pixels
ELASTIC_PIXELS = 0.5
ELASTIC_GRID = 4


def sample_bilinear(images, rows, cols):
    """images (B, H, W, 1) read at float positions rows, cols (B, H, W), bilinearly; 0 outside."""
    from keras import ops

    height, width = ops.shape(images)[1] + 2, ops.shape(images)[2] + 2  # with a black frame: what lies outside reads 0
    pixels = ops.reshape(ops.pad(images[..., 0], [[0, 0], [1, 1], [1, 1]]), (-1,))
    rows, cols = ops.clip(rows + 1, 0, height - 1), ops.clip(cols + 1, 0, width - 1)  # beyond: the frame
    top, left = ops.floor(rows), ops.floor(cols)
    down, right = rows - top, cols - left
    top, left = ops.cast(top, "int32"), ops.cast(left, "int32")
    bottom, far = ops.minimum(top + 1, height - 1), ops.minimum(left + 1, width - 1)
    first = ops.reshape(ops.arange(ops.shape(images)[0], dtype="int32") * height * width, (-1, 1, 1))  # each image's

    def at(row, col):
        return ops.take(pixels, first + row * width + col)

    sampled = ((1 - down) * ((1 - right) * at(top, left) + right * at(top, far))
               + down * ((1 - right) * at(bottom, left) + right * at(bottom, far)))
    return sampled[..., None]


def warp(images, radians, dy, dx, scale, field=None):
    """Each image rotated by `radians`, then shifted by `dy`, `dx` pixels, then zoomed out by `scale`
    (sampled `scale` times as far from the centre), each step one bilinear resampling as Keras' layers
    do it. The four are per image, shape (B,). `field` (B, H, W, 2), if given, moves where the last
    step reads each pixel by that many rows and columns (an elastic distortion)."""
    import numpy as np
    from keras import ops

    middle = (images.shape[1] - 1) / 2
    grid = np.arange(images.shape[1], dtype="float32") - middle
    y, x = (axis[None] for axis in np.meshgrid(grid, grid, indexing="ij"))
    radians, dy, dx, scale = (ops.reshape(value, (-1, 1, 1)) for value in (radians, dy, dx, scale))
    cos, sin = ops.cos(radians), ops.sin(radians)
    images = sample_bilinear(images, cos * y - sin * x + middle, sin * y + cos * x + middle)
    images = sample_bilinear(images, y + middle - dy, x + middle - dx)
    rows, cols = y * scale + middle, x * scale + middle
    if field is not None:
        rows, cols = rows + field[..., 0], cols + field[..., 1]
    return sample_bilinear(images, rows, cols)


def random_warp(degrees=ROTATION_DEGREES, shift=SHIFT_FRACTION, zoom=ZOOM_FRACTION, seed=None, elastic=0.0):
    """A layer that, while training, rotates each image within +-`degrees`, shifts it within +-`shift` of
    its size and zooms it within 1 +- `zoom`, and passes it through otherwise. The three draws come from
    Keras' RandomRotation, RandomTranslation and RandomZoom, seeded `seed`, `seed` + 1 and `seed` + 2.
    `elastic` > 0 adds a smooth random displacement (the screen's): a random field on a coarse grid,
    smoothly resized, of strength drawn per image from 0 to twice `elastic` pixels."""
    import keras
    import numpy as np
    from keras import ops

    seeds = [None] * 4 if seed is None else [seed, seed + 1, seed + 2, seed + 3]

    class RandomWarp(keras.layers.Layer):
        def __init__(self):
            super().__init__(name="augmentation")
            # fill_mode="constant" keeps the background black, as the warp's sampler does.
            self.rotation = keras.layers.RandomRotation(degrees / 360, fill_mode="constant", seed=seeds[0])
            self.translation = keras.layers.RandomTranslation(shift, shift, fill_mode="constant", seed=seeds[1])
            self.zoom = keras.layers.RandomZoom(zoom, fill_mode="constant", seed=seeds[2])
            self.generator = keras.random.SeedGenerator(seeds[3]) if elastic else None

        def build(self, input_shape):
            for layer in (self.rotation, self.translation, self.zoom):
                layer.build(input_shape)

        def call(self, images, training=False):
            if not training:
                return images
            steps = [(layer, layer.get_random_transformation(images)) for layer in
                     (self.rotation, self.translation, self.zoom)]
            if keras.backend.backend() == "tensorflow" and not elastic:
                # TensorFlow's fused image transform: four times the gathers' speed on a CPU, in tf.data.
                for layer, drawn in steps:
                    images = layer.transform_images(images, drawn, training=True)
                return images
            (_, rotation), (_, translation), (_, zooming) = steps
            angle = rotation["angle"]  # degrees, in Keras' sense
            shifts = translation["translations"]  # pixels: columns, rows
            scale = zooming["height_zoom"][:, 0]
            field = None
            if elastic:
                size, count = images.shape[1], ops.shape(images)[0]
                coarse = keras.random.normal((count, ELASTIC_GRID, ELASTIC_GRID, 2), seed=self.generator)
                strength = keras.random.uniform((count, 1, 1, 1), 0.0, 2 * elastic, seed=self.generator)
                field = ops.image.resize(coarse, (size, size), interpolation="bicubic") * strength
            return warp(images, -angle * np.pi / 180, shifts[:, 1], shifts[:, 0], scale, field)

        def compute_output_shape(self, input_shape):
            return input_shape

    return RandomWarp()
