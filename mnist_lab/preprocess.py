"""Turn any picture of a digit into what MNIST digits look like, so a model can read it.

MNIST was made by scaling each digit to fit a 20x20 box (keeping its aspect ratio, anti-aliased)
and placing it in a 28x28 field with its centre of mass at the centre, white ink on black. Photos
and drawings differ in every respect, so `prepare_digit` redoes those steps:
greyscale -> light background detected and inverted -> contrast stretched -> cropped to the ink ->
longer side scaled to 20 pixels -> centre of mass placed at the centre of a 28x28 field.
`python predict.py` and `python serve.py` both use it.
"""

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from mnist_lab.errors import UserError

FIELD = 28  # MNIST's image size
BOX = 20  # MNIST scaled every digit to fit a 20x20 box
INK_THRESHOLD = 0.2  # fraction of full contrast above which a pixel counts as ink for cropping
MIN_CONTRAST = 0.08  # below this the picture holds no digit, only paper or noise
MAX_PIXELS = 25_000_000  # refuse decompression bombs long before memory runs out
WORKING_SIZE = 1024  # larger pictures are shrunk first: a digit needs no more, memory stays small


class ImageError(UserError):
    """A file that is not an image, cannot be decoded, or shows no digit."""


class ImageTooLarge(ImageError):
    """More pixels than MAX_PIXELS."""


def open_image(data, name="image"):
    """Decode bytes (PNG, JPEG, BMP, GIF, ...) into a PIL image, or raise ImageError."""
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_PIXELS:
            raise ImageTooLarge(f"{name}: {image.width}x{image.height} pixels is too large "
                                f"(at most {MAX_PIXELS:,} pixels)")
        image.draft("L", (WORKING_SIZE, WORKING_SIZE))  # JPEG decodes straight at a reduced size
        image.load()
        if max(image.size) > WORKING_SIZE:
            image.thumbnail((WORKING_SIZE, WORKING_SIZE), Image.Resampling.BOX)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file; use PNG, JPEG, BMP or GIF") from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ImageError(f"{name}: a damaged or unreadable image ({error}); use PNG, JPEG, BMP or GIF") from None
    return ImageOps.exif_transpose(image)  # phone photos store their rotation in EXIF


def to_grey(image):
    """Greyscale in [0, 1]. Transparent pixels become paper: the image is composited over the
    background colour that contrasts with its ink."""
    if image.mode in ("F", "I", "I;16", "I;16B", "I;16L"):  # float or 16/32-bit greyscale: scale to [0, 1]
        values = np.asarray(image, np.float32)
        low, high = float(values.min()), float(values.max())
        return (values - low) / (high - low) if high > low else np.zeros_like(values)
    image = image.convert("RGBA") if image.mode in ("P", "LA", "PA") or "transparency" in image.info else image
    if image.mode == "RGBA":
        alpha = np.asarray(image.getchannel("A"), np.float32) / 255
        colour = np.asarray(image.convert("L"), np.float32) / 255
        if alpha.min() < 1:
            ink = colour[alpha > 0.5]
            paper = 0.0 if ink.size and ink.mean() > 0.5 else 1.0  # light ink goes on dark paper
            return alpha * colour + (1 - alpha) * paper
        return colour
    return np.asarray(image.convert("L"), np.float32) / 255


def prepare_digit(image, name="image"):
    """A PIL image of one digit -> float32 (28, 28) in [0, 1], white ink on black, MNIST-style."""
    grey = to_grey(image)
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if np.median(border) > 0.5:  # light paper, dark ink: MNIST is the other way round
        grey = 1 - grey
    background = np.median(border) if np.median(border) <= 0.5 else 1 - np.median(border)
    contrast = np.percentile(grey, 99.9) - background  # a few hot pixels do not set the scale
    if contrast < MIN_CONTRAST:
        raise ImageError(f"{name}: no digit found (the image is blank or nearly uniform)")
    ink = np.clip((grey - background) / contrast, 0, 1)

    rows = np.flatnonzero((ink > INK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((ink > INK_THRESHOLD).any(axis=0))
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]

    height, width = ink.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    digit = Image.fromarray((ink * 255).astype(np.uint8)).resize(size, Image.Resampling.LANCZOS)
    digit = np.asarray(digit, np.float32) / 255

    # Place the digit so its centre of mass lands on the field's centre, as MNIST did.
    centre_y, centre_x = ndimage.center_of_mass(digit)
    top = int(round(FIELD / 2 - centre_y))
    left = int(round(FIELD / 2 - centre_x))
    field = np.zeros((FIELD, FIELD), np.float32)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + digit.shape[0], FIELD), min(left + digit.shape[1], FIELD)
    field[y0:y1, x0:x1] = digit[y0 - top:y1 - top, x0 - left:x1 - left]
    return np.clip(field, 0, 1)


def prepare_bytes(data, name="image"):
    """Encoded image bytes -> the (28, 28) model input."""
    return prepare_digit(open_image(data, name), name)
