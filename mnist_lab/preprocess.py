"""Turn any picture of a digit into what MNIST digits look like, so a model can read it.

MNIST was made by scaling each digit to fit a 20x20 box (keeping its aspect ratio, anti-aliased)
and placing it in a 28x28 field with its centre of mass at the centre, white ink on black. Photos
and drawings differ in every respect, so `prepare_digit` redoes those steps:
greyscale -> light or dark paper detected -> the paper's own brightness under the light estimated
and taken out, so shadows, gradients and vignetting are not ink -> contrast stretched -> cropped to
the digit (its marks near each other, not specks or smudges at the edge) -> longer side scaled to
20 pixels -> centre of mass placed at the centre of a 28x28 field.
`python predict.py` and `python serve.py` both use it. Whatever the bytes, the result is that
(28, 28) input or an ImageError, one line saying what is wrong. benchmarks/photo_sets.py renders the
photos (pens, papers, shadows) that tests/test_photos.py holds it to.
"""

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_lab.errors import UserError, first_line
from models.common import IMAGE_SIZE

BOX = 20  # MNIST scaled every digit to fit a 20x20 box
INK_THRESHOLD = 0.2  # fraction of full contrast above which a pixel counts as ink for cropping
MIN_CONTRAST = 0.08  # below this the picture holds no digit, only paper or noise
# The paper's brightness is the picture with every stroke filled in by a window wider than any stroke:
# half the picture's shorter side, after 3x3 specks (JPEG ringing beside strokes, grain) are taken out.
# It is estimated at most PAPER_SIZE pixels a side (its cost), and taken as even below MIN_PAPER_SIDE
# (a 1x1000 line has no room for light and shadow).
PAPER_WINDOW = 1 / 2
SPECK = 3
PAPER_SIZE = 128
MIN_PAPER_SIDE = 16
# Marks within REACH of the digit's size (at least NEAR of the picture's) are part of it: a 4 or a 5
# written in two strokes. Marks with less than MIN_PART of the largest mark's ink are specks. A mark
# touching the picture's edge (a smudge, the desk, a finger) counts EDGE_WEIGHT as much in choosing
# which mark is the digit, and must come EDGE_WEIGHT as near to join it.
REACH = 0.5
NEAR = 0.03
MIN_PART = 0.02
EDGE_WEIGHT = 0.25
# At most 4 bytes a pixel once decoded, so one decode stays under about 64 MB.
MAX_PIXELS = 16_000_000
# A JPEG decodes at 1/2 to 1/8 of its size (draft, below), so a 48-megapixel phone photo costs a few MB.
MAX_JPEG_PIXELS = 50_000_000
WORKING_SIZE = 1024  # larger pictures are shrunk first: a digit needs no more, memory stays small
# A picture this many times longer than it is wide (a strip: a line of a form, a scanned margin) is cut
# down to the stretch that holds ink before shrinking, which would otherwise leave a line of pixels.
STRIP_RATIO = 8
# Pillow's names for the formats read here. Any other (EPS runs Ghostscript, PDF, PSD, ...) is refused unread.
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
USE_FORMATS = "use PNG, JPEG, BMP, GIF, TIFF or WebP"

# Pillow warns about odd metadata and about sizes near its own bomb limit; we refuse far smaller images
# ourselves, and a warning on stderr would break predict.py's one line per file.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
warnings.filterwarnings("ignore", module=r"PIL\.")


class ImageError(UserError):
    """A file that is not an image, cannot be decoded, or shows no digit."""


class ImageTooLarge(ImageError):
    """More pixels than MAX_PIXELS."""


def too_large(name, pixels, limit=None):
    """`limit`: the one for this image's format; None where the format is not known yet (both are said)."""
    limits = f"{limit:,}" if limit else f"{MAX_PIXELS:,}, or {MAX_JPEG_PIXELS:,} for a JPEG,"
    return ImageTooLarge(f"{name}: {pixels} pixels is too large (at most {limits} pixels)")


def open_image(data, name="image"):
    """Decode bytes in one of FORMATS into a PIL image at most WORKING_SIZE a side, or raise ImageError.

    The size is checked from the header before any pixel is decoded, so a small file of huge
    dimensions costs nothing."""
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError:  # Pillow's own limit, far above ours
        raise too_large(name, f"more than {2 * Image.MAX_IMAGE_PIXELS:,}") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file in a format read here; {USE_FORMATS}") from None
    except Exception as error:  # a damaged header: Pillow's plugins raise many types
        raise ImageError(f"{name}: a damaged or unreadable image ({first_line(error)}); {USE_FORMATS}") from None
    limit = MAX_JPEG_PIXELS if image.format == "JPEG" else MAX_PIXELS
    if image.width * image.height > limit:
        raise too_large(name, f"{image.width}x{image.height}", limit)
    if image.width < 1 or image.height < 1:
        raise ImageError(f"{name}: a damaged image ({image.width}x{image.height} pixels); {USE_FORMATS}")
    try:
        image.draft("L", (WORKING_SIZE, WORKING_SIZE))  # JPEG decodes straight at a reduced size
        image.load()
        image = inked_stretch(image)
        if max(image.size) > WORKING_SIZE:
            image.thumbnail((WORKING_SIZE, WORKING_SIZE), Image.Resampling.BOX)
        return ImageOps.exif_transpose(image)  # phone photos store their rotation in EXIF
    except Image.DecompressionBombError:
        raise too_large(name, f"more than {2 * Image.MAX_IMAGE_PIXELS:,}") from None
    except Exception as error:  # damaged data: struct.error, EOFError, OSError, SyntaxError, ... from the decoders
        raise ImageError(f"{name}: a damaged or unreadable image ({first_line(error)}); {USE_FORMATS}") from None


def inked_stretch(image):
    """A long strip cut down to the stretch that holds ink, with a margin as wide as the strip; any other
    picture (or a strip without clear ink, or in a mode without a greyscale) as it is."""
    long_side, short_side = max(image.size), min(image.size)
    if long_side <= WORKING_SIZE or long_side < STRIP_RATIO * short_side or image.mode in ("F", "I", "LAB", "HSV"):
        return image
    grey = np.asarray(image.convert("L"))  # a byte a pixel: no copy larger than the decoded picture
    if image.width < image.height:
        grey = grey.T
    paper = int(np.median(grey[::max(1, grey.shape[0] // 64), ::max(1, grey.shape[1] // 4096)]))
    inked = np.flatnonzero((paper - grey.min(axis=0).astype(int) > 64) | (grey.max(axis=0).astype(int) - paper > 64))
    if not inked.size:
        return image
    first, last = max(0, inked[0] - short_side), min(long_side, inked[-1] + 1 + short_side)
    box = (first, 0, last, short_side) if image.width > image.height else (0, first, short_side, last)
    return image.crop(box)


def finite_to_unit(values, name):
    """Float or wide-integer pixels -> [0, 1]: NaN becomes the median, infinities the extremes."""
    finite = np.isfinite(values)
    if not finite.any():
        raise ImageError(f"{name}: no digit found (no pixel has a finite value)")
    low, high = values[finite].min(), values[finite].max()
    if high <= low:
        return np.zeros(values.shape, np.float32)
    values = np.where(np.isnan(values), np.median(values[finite]), np.clip(values, low, high))
    return ((values - low) / (high - low)).astype(np.float32)


def to_grey(image, name="image"):
    """Greyscale in [0, 1]. Transparent pixels become paper: the image is composited over the
    background colour that contrasts with its ink."""
    if image.mode in ("F", "I") or image.mode.startswith("I;16"):  # float or 16/32-bit greyscale
        return finite_to_unit(np.asarray(image, np.float64), name)
    if image.mode in ("LAB", "HSV"):  # Pillow cannot convert these to greyscale; lightness is one band
        return np.asarray(image.getchannel("L" if image.mode == "LAB" else "V"), np.float32) / 255
    try:
        if image.mode in ("P", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
            image = image.convert("RGBA")
        if image.mode == "RGBA":
            alpha = np.asarray(image.getchannel("A"), np.float32) / 255
            colour = np.asarray(image.convert("L"), np.float32) / 255
            if alpha.min() < 1:
                ink = colour[alpha > 0.5]
                paper = 0.0 if ink.size and ink.mean() > 0.5 else 1.0  # light ink goes on dark paper
                return alpha * colour + (1 - alpha) * paper
            return colour
        return np.asarray(image.convert("L"), np.float32) / 255
    except ValueError as error:  # a mode Pillow cannot convert
        raise ImageError(f"{name}: its colour mode {image.mode} cannot be read ({first_line(error)}); "
                         "save it as RGB or greyscale") from None


def paper_of(grey, light_paper):
    """The paper's brightness at each pixel, with the light that falls on it.

    A grey-level closing (opening on dark paper) fills in every stroke narrower than its window and
    keeps the rest: a straight shadow's edge, hard or soft, a gradient and vignetting come through
    as they are, so dividing by it leaves the ink alone. The page is continued past the picture's
    edges first: SciPy would continue only the intermediate result, which fills in the narrow end of
    a shadow cut off by the edge as if it were a stroke."""
    from scipy import ndimage  # on first use: importing SciPy takes half a second

    if min(grey.shape) < MIN_PAPER_SIDE:
        return np.full(grey.shape, np.median(border_of(grey)), np.float32)
    small = Image.fromarray(grey.astype(np.float32), "F")
    if max(grey.shape) > PAPER_SIZE:
        small.thumbnail((PAPER_SIZE, PAPER_SIZE), Image.Resampling.BOX)
    small = np.asarray(small)
    window = max(3, round(PAPER_WINDOW * min(small.shape)))
    fill, unspeck = ndimage.grey_closing, ndimage.grey_opening
    if not light_paper:
        fill, unspeck = unspeck, fill
    margin = window // 2 + 1
    paper = np.pad(unspeck(small, size=(SPECK, SPECK), mode="nearest"), margin, mode="edge")
    paper = fill(paper, size=(window, window), mode="nearest")[margin:-margin, margin:-margin]
    if paper.shape != grey.shape:
        paper = np.asarray(Image.fromarray(paper, "F").resize(grey.shape[::-1], Image.Resampling.BILINEAR))
    return paper


def border_of(grey):
    return np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])


def ink_of(grey, name):
    """Greyscale in [0, 1] -> ink in [0, 1] on paper at 0, whatever the paper's colour and the light."""
    # The paper is the border's usual shade. Light paper is the usual case, and uneven light can spread it
    # over more shades than its ink, so only a border in the darkest third of the picture's range is dark paper.
    low, high = grey.min(), grey.max()
    light_paper = np.median(border_of(grey)) - low > (high - low) / 3
    paper = paper_of(grey, light_paper)
    if light_paper:  # ink takes away a share of the light that reaches the paper, in shadow or not
        ink = (paper - grey) / np.maximum(paper, 1e-3)
    else:  # light ink on dark paper (chalk, a drawing app's white on black)
        ink = grey - paper
    # Ink starts above the paper's grain: the border is mostly paper, and its lower half, which no ink
    # reaches, measures the grain's spread (as a standard deviation) below its median.
    low, middle = np.percentile(border_of(ink), [16, 50])
    floor = middle + 2 * (middle - low)
    contrast = np.percentile(ink, 99.9) - floor  # a few hot pixels do not set the scale
    if contrast < MIN_CONTRAST:
        raise ImageError(f"{name}: no digit found (the image is blank or nearly uniform)")
    return np.clip((ink - floor) / contrast, 0, 1)


def digit_box(ink):
    """The rows and columns that hold the digit: the mark with the most ink, edge marks counting less,
    and every mark near it, grown until no other is near; specks and marks far away are left out."""
    from scipy import ndimage  # on first use: importing SciPy takes half a second

    marks, count = ndimage.label(ink > INK_THRESHOLD, structure=np.ones((3, 3)))
    boxes = np.array([(rows.start, rows.stop, cols.start, cols.stop) for rows, cols in ndimage.find_objects(marks)])
    mass = np.bincount(marks.ravel(), ink.ravel(), count + 1)[1:]
    at_edge = (boxes[:, 0] == 0) | (boxes[:, 1] == ink.shape[0]) | (boxes[:, 2] == 0) | (boxes[:, 3] == ink.shape[1])
    weight = np.where(at_edge, EDGE_WEIGHT, 1)
    seed = np.argmax(weight * mass)
    wanted = mass >= MIN_PART * mass[seed]
    box = boxes[seed]
    while True:
        top, bottom, left, right = box
        reach = max(REACH * max(bottom - top, right - left), NEAR * max(ink.shape))
        gap = np.maximum.reduce([boxes[:, 0] - bottom, top - boxes[:, 1], boxes[:, 2] - right, left - boxes[:, 3]])
        near = boxes[wanted & (gap <= reach * weight)]
        grown = np.array([near[:, 0].min(), near[:, 1].max(), near[:, 2].min(), near[:, 3].max()])
        if (grown == box).all():
            return slice(top, bottom), slice(left, right)
        box = grown


def prepare_digit(image, name="image"):
    """A PIL image of one digit -> float32 (28, 28) in [0, 1], white ink on black, MNIST-style."""
    from scipy import ndimage  # on first use: importing SciPy takes half a second

    ink = ink_of(to_grey(image, name), name)
    box = digit_box(ink)
    strongest = np.percentile(ink[box], 99.9)
    if strongest < 0.99:  # a darker mark left out set the contrast: the digit's own ink sets it, and its crop
        ink = np.clip(ink / max(strongest, INK_THRESHOLD), 0, 1)
        box = digit_box(ink)
    ink = ink[box]

    height, width = ink.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    digit = Image.fromarray((ink * 255).astype(np.uint8)).resize(size, Image.Resampling.LANCZOS)
    digit = np.asarray(digit, np.float32) / 255
    if not digit.any():  # ink too thin or too sparse to survive the scaling: dots far apart on a large page
        raise ImageError(f"{name}: no digit found (the marks are too thin or too far apart to show at {BOX} pixels)")

    # Place the digit so its centre of mass lands on the field's centre, as MNIST did.
    centre_y, centre_x = ndimage.center_of_mass(digit)
    top = int(round(IMAGE_SIZE / 2 - centre_y))
    left = int(round(IMAGE_SIZE / 2 - centre_x))
    field = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + digit.shape[0], IMAGE_SIZE), min(left + digit.shape[1], IMAGE_SIZE)
    field[y0:y1, x0:x1] = digit[y0 - top:y1 - top, x0 - left:x1 - left]
    return np.clip(field, 0, 1)


def prepare_bytes(data, name="image"):
    """Encoded image bytes -> the (28, 28) model input."""
    return prepare_digit(open_image(data, name), name)
