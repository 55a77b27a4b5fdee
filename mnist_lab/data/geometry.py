"""Where augmentation reads each pixel from: the warps' ranges, and bilinear resampling.

Written with `keras.ops` and no TensorFlow, so that the pipeline (on TensorFlow, in tf.data) and
benchmarks/screen.py (on JAX, on a GPU machine without TensorFlow) share one sampler and one set of
ranges. Keras is imported only when sampling, so that reading the ranges starts no backend.
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
