"""Render MNIST digits as photos of a digit written on paper: seeded, deterministic, NumPy and Pillow only.

A digit people photograph is not an MNIST digit: it is a pen's colour on tinted, textured paper, any
size and anywhere on the page, slanted, thin or bold, blurred, JPEG-compressed, and lit unevenly.
`render_photo` draws one such photo from one 28x28 MNIST digit; `photo_set` draws one per digit.
tests/test_photos.py uses them to check that mnist_lab/preprocess.py turns photos back into the
digit; they also make a realistic validation set from the MNIST validation digits (the last 10000
training images, see mnist_lab/data/pipeline.py make_splits). Never render the test images: every
choice made on photos would then be made on the test set.

    from mnist_lab.data import load_mnist
    from mnist_lab.data.splits import make_splits
    from benchmarks.photo_sets import photo_set
    splits = make_splits(load_mnist())
    photos, labels = photo_set(splits.x_val[:1000], splits.y_val[:1000], seed=0, lighting="mixed")
    # photos: a list of uint8 (height, width, 3) RGB arrays, 96 to 200 pixels a side;
    # Image.fromarray(photo) is what predict.py or the server would have been sent.
"""

import io

import numpy as np
from PIL import Image
from scipy import ndimage

# "plain": even light, mild vignetting at most; "shadow": part of the page (a corner or a side) in a
# hard- or soft-edged shadow 30-70 % darker; "gradient": light falling off across the page.
LIGHTINGS = ("plain", "shadow", "gradient")
MIXED = "mixed"  # photo_set only: each photo's lighting drawn at random from LIGHTINGS
SIDES = (96, 200)  # the page's height and width, each drawn from this range (pixels)
PAPERS = {"white": (246, 246, 242), "cream": (244, 234, 208), "grey": (204, 204, 198),
          "light blue": (216, 228, 246)}
PENS = {"blue": (28, 46, 150), "black": (22, 22, 28), "dark grey": (72, 72, 78), "red": (176, 32, 44)}


def render_photo(digit, rng, lighting="plain", clean=False):
    """One photo of `digit` (uint8 28x28, white on black as in MNIST) as a uint8 (height, width, 3) RGB array.

    Args:
        digit: one MNIST image.
        rng: a numpy Generator; the same seed gives the same photo.
        lighting: one of LIGHTINGS.
        clean: the same page (digit size, place, slant and stroke) in black on even white paper, with
            no texture, light, blur, noise or JPEG: what a perfect photo of it would show. The same rng
            seed gives the same page with clean=True or False, and whatever the lighting.
    """
    digit = np.asarray(digit)
    if digit.shape != (28, 28) or digit.dtype != np.uint8 or not digit.any():
        raise ValueError(f"render_photo takes one 28x28 uint8 MNIST digit with some ink, not an array of "
                         f"shape {digit.shape} and type {digit.dtype}")
    if lighting not in LIGHTINGS:
        raise ValueError(f"lighting {lighting!r}: use one of {', '.join(LIGHTINGS)}")
    height, width = (int(side) for side in rng.integers(SIDES[0], SIDES[1] + 1, 2))
    ink = place(written(digit, rng, min(height, width)), height, width, rng)
    # Every draw is made whether or not it is used, so `clean` and `lighting` change nothing else.
    paper = np.array(PAPERS[rng.choice(list(PAPERS))]) + rng.integers(-6, 7, 3)
    pen = np.array(PENS[rng.choice(list(PENS))]) + rng.integers(-15, 16, 3)
    opacity = rng.uniform(0.65, 1.0) * (1 - rng.uniform(0, 0.25) * smooth_noise((height, width), 4, rng))
    texture = rng.uniform(1, 5) * smooth_noise((height, width), rng.uniform(0.7, 2.5), rng, centred=True)
    light = lit(lighting, (height, width), rng)
    blur, grain, quality = rng.uniform(0, 1.2), rng.uniform(1, 4), int(rng.integers(35, 96))
    if clean:
        return np.repeat(np.round(255 * (1 - ink))[..., None], 3, axis=2).astype(np.uint8)

    ink = (ink * opacity)[..., None]
    page = (paper + texture[..., None]) * (1 - ink) + pen * ink
    page = ndimage.gaussian_filter(page * light[..., None], (blur, blur, 0))
    page = np.clip(page + rng.normal(0, grain, page.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(page).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def photo_set(images, labels, seed=0, lighting="plain"):
    """Photos of `images` (uint8, (N, 28, 28)) -> (list of N RGB uint8 arrays, labels as an array).

    Photo i depends only on (seed, i) and the lighting, so the first photos of a longer set are the
    photos of a shorter one. `lighting` is one of LIGHTINGS, or "mixed" for one drawn per photo."""
    if lighting not in (*LIGHTINGS, MIXED):
        raise ValueError(f"lighting {lighting!r}: use one of {', '.join(LIGHTINGS)} or {MIXED}")
    photos = []
    for index, digit in enumerate(images):
        chosen = lighting
        if lighting == MIXED:  # drawn apart from the photo's own draws, so its page is the same as unmixed
            chosen = LIGHTINGS[np.random.default_rng((seed, index, 1)).integers(len(LIGHTINGS))]
        photos.append(render_photo(digit, np.random.default_rng((seed, index)), chosen))
    return photos, np.asarray(labels)


def written(digit, rng, page_side):
    """The digit as a pen would write it: ink coverage in [0, 1], slanted, scaled so that the slanted
    digit's longer side is 35-75 % of the page's shorter side, with thinner or bolder strokes and crisp edges."""
    rows = np.flatnonzero(digit.any(axis=1))
    cols = np.flatnonzero(digit.any(axis=0))
    digit = digit[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    slant = rng.uniform(-0.3, 0.3)  # x moves by slant * y: italic handwriting
    slanted_width = digit.shape[1] + abs(slant) * digit.shape[0]
    scale = rng.uniform(0.35, 0.75) * page_side / max(digit.shape[0], slanted_width)
    size = (max(1, round(digit.shape[1] * scale)), max(1, round(digit.shape[0] * scale)))
    ink = np.asarray(Image.fromarray(digit).resize(size, Image.Resampling.BICUBIC), np.float32) / 255

    height, width = ink.shape
    widened = width + int(np.ceil(abs(slant) * height))
    # affine_transform maps each output (row, col) to the input (row, col + slant * (row - centre) - shift).
    shift = (widened - width) / 2
    ink = ndimage.affine_transform(ink, [[1, 0], [slant, 1]], offset=(0, -slant * height / 2 - shift),
                                   output_shape=(height, widened), order=1)

    # A pen is thinner or bolder than MNIST's strokes by up to half an MNIST pixel on each side.
    radius = rng.uniform(-0.25, 0.5) * scale
    footprint = 2 * int(round(abs(radius))) + 1
    if footprint > 1:
        ink = (ndimage.grey_dilation if radius > 0 else ndimage.grey_erosion)(ink, size=(footprint, footprint))
    # MNIST's upscaled edges are soft ramps; a pen's are sharp, a pixel or two wide.
    return np.clip((ink - 0.5) * rng.uniform(2, 4) + 0.5, 0, 1)


def place(ink, height, width, rng):
    """The ink on a (height, width) page, anywhere that keeps it whole and off the page's edge."""
    margin = max(2, round(0.04 * min(height, width)))  # written() keeps the digit within 75 % of a side
    top = int(rng.integers(margin, height - margin - ink.shape[0] + 1))
    left = int(rng.integers(margin, width - margin - ink.shape[1] + 1))
    page = np.zeros((height, width), np.float32)
    page[top:top + ink.shape[0], left:left + ink.shape[1]] = ink
    return page


def smooth_noise(shape, sigma, rng, centred=False):
    """Smooth random variation at a scale of `sigma` pixels: in [0, 1], or about -1 to 1 when `centred`."""
    noise = ndimage.gaussian_filter(rng.normal(size=shape), sigma)
    noise /= max(noise.std(), 1e-6) * 3
    return noise if centred else np.clip(noise + 0.5, 0, 1)


def lit(lighting, shape, rng):
    """The light falling on each pixel, 1 for full light: a camera's mild vignetting times the lighting's own."""
    height, width = shape
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    centre = rng.uniform(0.3, 0.7, 2) * (height, width) / max(height, width)
    light = 1 - rng.uniform(0, 0.15) * ((y - centre[0]) ** 2 + (x - centre[1]) ** 2) / 0.5
    light *= rng.uniform(0.85, 1.05)  # exposure
    angle = rng.uniform(0, 2 * np.pi)
    along = x * np.cos(angle) + y * np.sin(angle)  # distance across the page in a random direction
    covered = rng.uniform(0.15, 0.45)  # the shadow's share of the page
    edge = (1.5 / max(height, width)) if rng.random() < 0.5 else rng.uniform(0.03, 0.12)  # hard or soft
    darkening, falloff, curve = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.65), rng.uniform(0.7, 1.5)
    if lighting == "shadow":
        start = np.quantile(along, 1 - covered)
        light *= 1 - darkening * np.clip((along - start) / edge + 0.5, 0, 1)
    elif lighting == "gradient":
        ramp = (along - along.min()) / (along.max() - along.min())
        light *= 1 - falloff * ramp ** curve
    return light
