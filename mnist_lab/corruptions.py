"""Corrupted MNIST test images: the fifteen corruptions of MNIST-C, made here in NumPy and SciPy.

    python evaluate.py --corruptions     # every model's accuracy under each one: reports/corruptions.md

MNIST-C (Mu & Gilmer 2019, "MNIST-C: A Robustness Benchmark for Computer Vision", the code at
github.com/google-research/mnist-c) applies each corruption once, at one severity, to the 10000 test
images. Here each corruption is a function (uint8 images (N, 28, 28), numpy Generator) -> uint8
images (N, 28, 28) at the severity MNIST-C's corruptions.py uses by default, with its parameters,
and `corrupt(name, images, seed)` gives the same images for the same seed. Nothing is downloaded,
so the images are not MNIST-C's files but the same families drawn afresh. Where they differ:

- glass blur: MNIST-C's Gaussian blur, through skimage with multichannel=True on a 2-D image,
  blurs vertically only; here it blurs both ways, as the corruption intends (sigma 0.7 px).
- motion blur: ImageMagick's one-sided Gaussian streak (radius 10, sigma 3, angle -45..45
  degrees), written out as a sum of shifted copies; edges repeat the border pixel.
- fog: MNIST-C crops the top-left 28x28 of a fresh 256x256 plasma fractal per image; here the
  same fractals (same wibble and decay) are cut into 81 tiles of 28x28 each, which is 81 times
  cheaper and, the fractal being the same everywhere, the same in distribution.
- canny edges: skimage's Canny (sigma 1, thresholds 0.1 and 0.2) with its sub-pixel
  non-maximum suppression replaced by the usual four-direction one.
- every result is rounded to uint8, as stored images are (MNIST-C keeps float32).
"""

import zlib

import numpy as np
from scipy import ndimage

from models.common import IMAGE_SIZE

SEED = 0
CENTRE = (IMAGE_SIZE - 1) / 2  # the point MNIST-C's affine corruptions keep fixed


def as_float(images):
    return np.asarray(images, np.float64) / 255


def as_uint8(pixels):
    """[0, 1] floats back to uint8 pixels, rounded."""
    return np.rint(np.clip(pixels, 0, 1) * 255).astype(np.uint8)


def blur(pixels, sigma):
    """Gaussian blur of each image (not across images); edges repeat, as skimage's default."""
    return ndimage.gaussian_filter(pixels, (0, sigma, sigma), mode="nearest")


def random_signs(rng, shape):
    return rng.choice([-1.0, 1.0], shape)


def per_image(a, b, c, d):
    """The (N, 2, 2) matrices [[a, b], [c, d]], from per-image values or constants."""
    return np.stack(np.broadcast_arrays(a, b, c, d), -1).reshape(-1, 2, 2)


def warp(images, matrices, offsets=(0.0, 0.0)):
    """Each image resampled (bilinear, black outside) at `matrices @ (p - CENTRE) + CENTRE + offsets`
    for every output pixel p = (row, column): skimage's warp with an inverse map, as MNIST-C uses it.
    `matrices` (2, 2) or (N, 2, 2), `offsets` (2,) or (N, 2)."""
    count = len(images)
    grid = np.indices((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float64).reshape(2, -1) - CENTRE
    matrices = np.broadcast_to(matrices, (count, 2, 2))
    offsets = np.broadcast_to(np.asarray(offsets, np.float64), (count, 2))
    source = matrices @ grid + CENTRE + offsets[:, :, None]  # (N, 2, 784): input (row, column) per pixel
    index = np.broadcast_to(np.arange(count, dtype=np.float64)[:, None], (count, IMAGE_SIZE * IMAGE_SIZE))
    # The image index is a whole number, so linear interpolation along it picks that image alone.
    warped = ndimage.map_coordinates(as_float(images), [index, source[:, 0], source[:, 1]], order=1,
                                     mode="grid-constant", cval=0.0)
    return as_uint8(warped.reshape(images.shape))


def line(c0, r0, c1, r1):
    """MNIST-C's line from (column c0, row r0) to (c1, r1), c0 < c1, per image: intensity 1 on it,
    fading to 0 at 2.3 pixels above and below it, nothing left of c0 or right of c1. (N, 28, 28)."""
    c0, r0, c1, r1 = (np.reshape(np.asarray(v, np.float64), (-1, 1, 1)) for v in (c0, r0, c1, r1))
    columns, rows = np.arange(IMAGE_SIZE, dtype=np.float64), np.arange(IMAGE_SIZE, dtype=np.float64)[:, None]
    height = (r1 - r0) / (c1 - c0) * (columns - c0) + r0
    distance = np.minimum(np.abs(rows - height), 2.3 - 1e-10)
    intensity = np.clip(np.log(1 - distance / 2.3) + 1, 0, 1)
    return np.where((columns >= np.floor(c0)) & (columns < np.ceil(c1)), intensity, 0.0)


def plasma_tiles(count, rng, decay, size=256):
    """`count` 28x28 tiles of diamond-square height maps in [0, 1], MNIST-C's plasma_fractal."""
    per_map = (size // IMAGE_SIZE) ** 2
    maps = np.zeros((-(-count // per_map), size, size))
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2

        def wibbled(total):  # the mean of four neighbours, plus noise of width wibble squared
            return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

        corners = maps[:, ::step, ::step]
        squares = corners + np.roll(corners, -1, axis=1)
        maps[:, half::step, half::step] = wibbled(squares + np.roll(squares, -1, axis=2))
        centres = maps[:, half::step, half::step]
        maps[:, ::step, half::step] = wibbled(centres + np.roll(centres, 1, axis=1)
                                              + corners + np.roll(corners, -1, axis=2))
        maps[:, half::step, ::step] = wibbled(centres + np.roll(centres, 1, axis=2)
                                              + corners + np.roll(corners, -1, axis=1))
        step, wibble = half, wibble / decay
    maps -= maps.min(axis=(1, 2), keepdims=True)
    maps /= maps.max(axis=(1, 2), keepdims=True)
    side = size // IMAGE_SIZE
    tiles = maps[:, :side * IMAGE_SIZE, :side * IMAGE_SIZE].reshape(-1, side, IMAGE_SIZE, side, IMAGE_SIZE).transpose(0, 1, 3, 2, 4)
    return tiles.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)[:count]


# The corruptions, each at MNIST-C's severity, in the order of MNIST-C's CORRUPTIONS list.

def shot_noise(images, rng):
    """Poisson noise with 3 photons for a white pixel (MNIST-C severity 5)."""
    return as_uint8(rng.poisson(as_float(images) * 3) / 3)


def impulse_noise(images, rng):
    """Salt and pepper: 17 % of the pixels set to black or white, half each (severity 4)."""
    flipped = rng.random(images.shape) < 0.17
    salt = rng.random(images.shape) < 0.5
    return np.where(flipped, np.where(salt, 255, 0), images).astype(np.uint8)


def glass_blur(images, rng, sigma=0.7, reach=1, passes=2):
    """Blur, shuffle pixels locally, blur again (severity 1)."""
    pixels = (blur(as_float(images), sigma) * 255).astype(np.uint8)  # truncated, as MNIST-C does
    every = np.arange(len(images))
    # MNIST-C's swaps run one pixel at a time, so a value can travel on; that order is kept, and the
    # loop runs over positions only, all images at once.
    for _ in range(passes):
        for row in range(IMAGE_SIZE - reach, reach, -1):
            for column in range(IMAGE_SIZE - reach, reach, -1):
                chosen = every[rng.random(len(images)) < 0.5]
                d_row, d_column = rng.integers(-reach, reach, (2, len(chosen)))  # as randint: -1 or 0
                other = (chosen, row + d_row, column + d_column)
                pixels[chosen, row, column], pixels[other] = pixels[other], pixels[chosen, row, column]
    return as_uint8(blur(pixels / 255, sigma))


def motion_blur(images, rng, radius=10, sigma=3.0):
    """A streak 2 * radius + 1 pixels long, one-sided Gaussian weights, angle -45..45 degrees (severity 1)."""
    angle = np.deg2rad(rng.uniform(-45, 45, len(images)))[:, None, None]
    steps = np.arange(2 * radius + 1)
    weights = np.exp(-steps ** 2 / (2 * sigma ** 2))
    index, rows, columns = np.ogrid[:len(images), :IMAGE_SIZE, :IMAGE_SIZE]
    streak = np.zeros(images.shape)
    for step, weight in zip(steps, weights / weights.sum()):
        moved_rows = np.clip(rows + np.rint(step * np.sin(angle)).astype(int), 0, IMAGE_SIZE - 1)
        moved_columns = np.clip(columns + np.rint(step * np.cos(angle)).astype(int), 0, IMAGE_SIZE - 1)
        streak += weight * images[index, moved_rows, moved_columns]
    return as_uint8(streak / 255)


def shear(images, rng, angle=0.4):
    """Sheared sideways by an angle of 0.4 radians either way, about the centre (severity 2)."""
    turn = angle * random_signs(rng, len(images))
    return warp(images, per_image(np.cos(turn), 0, -np.sin(turn), 1))


def scale(images, rng):
    """Shrunk to 70 % about the centre (severity 3)."""
    return warp(images, np.eye(2) / 0.7)


def rotate(images, rng, angle=0.4):
    """Rotated by 0.4 radians (23 degrees) either way, about the centre (severity 2)."""
    turn = angle * random_signs(rng, len(images))
    return warp(images, per_image(np.cos(turn), np.sin(turn), -np.sin(turn), np.cos(turn)))


def brightness(images, rng):
    """Value + 0.5 in HSV, which for grey pixels is every pixel + 0.5 (severity 5)."""
    return as_uint8(as_float(images) + 0.5)


def translate(images, rng, distance=3):
    """Moved 3 pixels up or down and 3 left or right (severity 3)."""
    return warp(images, np.eye(2), distance * random_signs(rng, (len(images), 2)))


def stripe(images, rng):
    """The 7 columns at each side inverted."""
    striped = images.copy()
    striped[:, :, :7] = 255 - images[:, :, :7]
    striped[:, :, IMAGE_SIZE - 7:] = 255 - images[:, :, IMAGE_SIZE - 7:]
    return striped


def fog(images, rng, strength=3.0, decay=1.4):
    """Plasma-fractal fog added at 3 times the digit's brightness, then rescaled (severity 5)."""
    pixels = as_float(images)
    peak = pixels.max(axis=(1, 2), keepdims=True)
    return as_uint8((pixels + strength * plasma_tiles(len(images), rng, decay)) * peak / (peak + strength))


def spatter(images, rng):
    """Blobs of mud-grey (63) from thresholded blurred noise, over the digit (severity 4)."""
    liquid = blur(rng.normal(0.65, 0.3, images.shape), 1.0)
    mud = blur((liquid > 0.65).astype(np.float64), 1.5)
    mud[mud < 0.8] = 0
    return as_uint8(as_float(images) * (1 - mud) + 63 / 255 * mud)


def dotted_line(images, rng):
    """A line across the image from a random row on the left to one on the right, in dashes of 2 pixels."""
    rows = rng.integers(0, IMAGE_SIZE - 1, (2, len(images)))
    dashes = line(0, rows[0], IMAGE_SIZE - 1, rows[1])
    dashes[:, :, np.arange(IMAGE_SIZE) // 2 % 2 == 0] = 0
    return as_uint8(as_float(images) + dashes)


def zigzag(images, rng, tooth=2.0):
    """A zigzag of 2-pixel teeth from column 2 to 25, tilted by up to 5 rows."""
    c0, c1, count = 2, 25, len(images)
    r0 = rng.integers(0, IMAGE_SIZE - 1, count)
    r1 = r0 + rng.integers(-5, 5, count)
    theta = np.arctan((r1 - r0) / (c1 - c0))
    length = (c1 - c0) / np.cos(theta)
    teeth = int((length.min() - tooth) // (2 * tooth)) + 1  # the same for every tilt up to 5 rows
    # The corners along the zigzag's own axis, from 0 to its length, then turned by theta.
    ends = (2 * np.arange(teeth) + 1) * tooth
    sides = (-1.0) ** np.arange(teeth) * tooth
    closing = sides[-1] / (2 * (length - 2 * tooth * (length // (2 * tooth))))  # MNIST-C's last point, as it is
    along = np.column_stack([np.zeros(count), np.broadcast_to(ends, (count, teeth)), length])
    across = np.column_stack([np.zeros(count), np.broadcast_to(sides, (count, teeth)), closing])
    cos, sin = np.cos(theta)[:, None], np.sin(theta)[:, None]
    columns, rows = cos * along - sin * across + c0, sin * along + cos * across + r0[:, None]
    drawn = sum(line(columns[:, i - 1], rows[:, i - 1], columns[:, i], rows[:, i]) for i in range(1, teeth + 2))
    return as_uint8(as_float(images) + drawn)


def canny_edges(images, rng, sigma=1.0, low=0.1, high=0.2):
    """The digit's edges (Canny), white on black."""
    smooth = blur(as_float(images), sigma)
    # Sobel by hand: ndimage.sobel would also smooth across the stack, mixing neighbouring images.
    d_row = ndimage.correlate1d(ndimage.correlate1d(smooth, [-1, 0, 1], axis=1), [1, 2, 1], axis=2)
    d_column = ndimage.correlate1d(ndimage.correlate1d(smooth, [-1, 0, 1], axis=2), [1, 2, 1], axis=1)
    magnitude = np.hypot(d_row, d_column)
    magnitude[:, [0, -1], :] = magnitude[:, :, [0, -1]] = 0  # skimage leaves the border out
    # Non-maximum suppression: keep a pixel only if no neighbour along its gradient is stronger.
    sector = np.rint(np.rad2deg(np.arctan2(d_row, d_column)) % 180 / 45).astype(int) % 4
    padded = np.pad(magnitude, ((0, 0), (1, 1), (1, 1)))
    peak = np.zeros(images.shape, bool)
    for k, (dr, dc) in enumerate([(0, 1), (1, 1), (1, 0), (1, -1)]):
        ahead = padded[:, 1 + dr:IMAGE_SIZE + 1 + dr, 1 + dc:IMAGE_SIZE + 1 + dc]
        behind = padded[:, 1 - dr:IMAGE_SIZE + 1 - dr, 1 - dc:IMAGE_SIZE + 1 - dc]
        peak |= (sector == k) & (magnitude >= ahead) & (magnitude >= behind)
    # Hysteresis: weak edges count only when connected, within their own image, to a strong one.
    weak = peak & (magnitude > low)
    labels, _ = ndimage.label(weak, structure=np.pad(np.ones((1, 3, 3)), ((1, 1), (0, 0), (0, 0))))
    edges = np.isin(labels, np.unique(labels[peak & (magnitude > high)])) & weak
    return (edges * 255).astype(np.uint8)


CORRUPTIONS = {corruption.__name__: corruption for corruption in (
    shot_noise, impulse_noise, glass_blur, motion_blur, shear, scale, rotate, brightness, translate,
    stripe, fog, spatter, dotted_line, zigzag, canny_edges)}


def corrupt(name, images, seed=SEED):
    """`images` (uint8, N x 28 x 28) under corruption `name`: the same images for the same seed."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; one of {', '.join(CORRUPTIONS)}")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"expected uint8 images of shape (N, {IMAGE_SIZE}, {IMAGE_SIZE}), got {images.dtype} {images.shape}")
    # A stream of its own for each corruption, keyed by its name, not its place in the list.
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    return CORRUPTIONS[name](images, rng)
