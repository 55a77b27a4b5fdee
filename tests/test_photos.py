"""Photos of digits (mnist_lab/photos.py) and what mnist_lab/preprocess.py makes of them.

prepare_digit must read a digit in shadow, under a gradient, in any pen on any paper as it reads the
same page photographed perfectly; keep a digit written in two strokes whole; and never crop to a
speck or a smudge at the picture's edge. The photos are drawn from MNIST's validation digits (the
last 10000 training images), never from its test images.
"""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnist_lab.config import VALIDATION_SIZE
from benchmarks.photo_sets import LIGHTINGS, SIDES, photo_set, render_photo
from mnist_lab.preprocess import prepare_digit

PHOTOS_PER_LIGHTING = 50
# Bounds on prepare_digit(photo) against prepare_digit(the same page photographed perfectly): the mean
# absolute pixel difference over the 28x28 field (two different MNIST digits are about 0.2 apart) and
# the overlap (intersection over union) of their ink (> 0.3). Measured on these photos: mean 0.026,
# 0.038 and 0.029 in plain light, shadow and gradient, 95th percentile 0.07 to 0.08, overlap 0.81 to
# 0.87. The preparation that assumed even paper (git show 6429cf1:mnist_lab/preprocess.py) gave
# 0.160, 0.23 and 0.26 in shadow, 0.147, 0.22 and 0.16 under a gradient; it passed in plain light.
MEAN_DIFFERENCE = 0.05
DIFFERENCE_95TH_PERCENTILE = 0.12
MEAN_OVERLAP = 0.7
INK = 0.3


@pytest.fixture(scope="module")
def validation_digits(real_mnist):
    x_train, y_train, _, _ = real_mnist
    return x_train[-VALIDATION_SIZE:], y_train[-VALIDATION_SIZE:]


def prepared(page):
    return prepare_digit(Image.fromarray(page))


def photo_and_perfect(digit, seed, lighting):
    """A photo of `digit` and the same page photographed perfectly (black on even white, nothing else)."""
    return (render_photo(digit, np.random.default_rng(seed), lighting),
            render_photo(digit, np.random.default_rng(seed), lighting, clean=True))


@pytest.mark.parametrize("lighting", LIGHTINGS)
def test_photos_in_any_light_come_back_as_the_perfect_photo_does(validation_digits, lighting):
    x_val, _ = validation_digits
    differences, overlaps = [], []
    for index in range(PHOTOS_PER_LIGHTING):
        photo, perfect = photo_and_perfect(x_val[index], index, lighting)
        seen, expected = prepared(photo), prepared(perfect)
        differences.append(np.abs(seen - expected).mean())
        ink, expected_ink = seen > INK, expected > INK
        overlaps.append((ink & expected_ink).sum() / (ink | expected_ink).sum())
    summary = (f"{lighting}: mean difference {np.mean(differences):.3f}, 95th percentile "
               f"{np.percentile(differences, 95):.3f}, mean overlap {np.mean(overlaps):.3f}")
    print(summary)
    assert np.mean(differences) <= MEAN_DIFFERENCE, summary
    assert np.percentile(differences, 95) <= DIFFERENCE_95TH_PERCENTILE, summary
    assert np.mean(overlaps) >= MEAN_OVERLAP, summary


def four(joined):
    """A 4 as MNIST holds it (white on black, 28x28): a stroke down and across, and a stem to its right.
    Written in two strokes, the crossbar stops 3 pixels short of the stem; `joined`, it reaches it."""
    image = Image.new("L", (28, 28), 0)
    draw = ImageDraw.Draw(image)
    draw.line([(10, 4), (7, 16), (18 if joined else 13, 16)], fill=255, width=3)
    draw.line([(18, 4), (18, 24)], fill=255, width=3)
    return np.asarray(image)


@pytest.mark.parametrize("lighting", LIGHTINGS)
def test_a_four_written_in_two_strokes_keeps_both(lighting):
    """Its strokes are two marks; were only the larger kept, the crop would be that stroke alone, scaled up:
    0.13 to 0.21 apart from the whole 4 in this test."""
    for seed in range(10):
        split = prepared(render_photo(four(joined=False), np.random.default_rng(seed), lighting))
        joined = prepared(render_photo(four(joined=True), np.random.default_rng(seed), lighting))
        # 0.01 for most: the 3 missing pixels of crossbar; up to 0.08 where they move the centre of mass.
        assert np.abs(split - joined).mean() < 0.1, seed


def marks_away_from(page):
    """Where a speck (a corner), a smudge (along an edge: the desk, a finger) and a dot (on the paper) go:
    the edge of the page farthest from the digit, and halfway between it and the digit."""
    height, width = page.shape[:2]
    rows, cols = np.nonzero(page[..., 0] < 128)
    gaps = {"top": rows.min(), "bottom": height - 1 - rows.max(), "left": cols.min(), "right": width - 1 - cols.max()}
    side = max(gaps, key=gaps.get)
    length = height if side in ("left", "right") else width
    edge = slice(0, 4) if side in ("top", "left") else slice(-4, None)
    halfway = gaps[side] // 2 if side in ("top", "left") else -gaps[side] // 2
    along = [slice(0, 4), slice(length * 3 // 8, length * 5 // 8), slice(length // 2, length // 2 + 2)]
    across = [edge, edge, slice(halfway, halfway + 2)]
    if side in ("top", "bottom"):
        return list(zip(across, along))  # (rows, columns) of each mark
    return list(zip(along, across))


@pytest.mark.parametrize("lighting", ["plain", "shadow"])
def test_specks_and_smudges_far_from_the_digit_do_not_move_the_crop(validation_digits, lighting):
    x_val, _ = validation_digits
    for index in range(10):
        photo, perfect = photo_and_perfect(x_val[index], index, lighting)
        for kind, page in (("photo", photo), ("perfect", perfect)):
            dirty = page.copy()
            for rows, cols in marks_away_from(perfect):
                dirty[rows, cols] = page.min(axis=(0, 1))  # the page's darkest ink
            assert np.abs(prepared(dirty) - prepared(page)).mean() < 0.01, (index, kind)


def test_a_speck_alone_with_a_thin_digit_is_not_the_digit():
    """A thin 1 and a blot as heavy as it at the picture's edge: the edge counts against the blot."""
    page = np.full((120, 160), 245, np.uint8)
    page[20:100, 78:80] = 30  # a thin 1: 160 pixels of ink
    page[0:8, 140:160] = 30  # a blot of the same ink at the top edge
    seen = prepare_digit(Image.fromarray(page))
    alone = page.copy()
    alone[0:8, 140:160] = 245
    np.testing.assert_array_equal(seen, prepare_digit(Image.fromarray(alone)))


def test_photos_are_deterministic_and_varied(validation_digits):
    x_val, y_val = validation_digits
    photos, labels = photo_set(x_val[:12], y_val[:12], seed=3, lighting="shadow")
    again, _ = photo_set(x_val[:12], y_val[:12], seed=3, lighting="shadow")
    longer, _ = photo_set(x_val[:20], y_val[:20], seed=3, lighting="shadow")
    other, _ = photo_set(x_val[:12], y_val[:12], seed=4, lighting="shadow")
    np.testing.assert_array_equal(labels, y_val[:12])
    for index, photo in enumerate(photos):
        assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3
        assert SIDES[0] <= photo.shape[0] <= SIDES[1] and SIDES[0] <= photo.shape[1] <= SIDES[1]
        np.testing.assert_array_equal(photo, again[index])
        np.testing.assert_array_equal(photo, longer[index])  # photo i depends only on (seed, i)
        np.testing.assert_array_equal(photo, render_photo(x_val[index], np.random.default_rng((3, index)), "shadow"))
        assert photo.shape != other[index].shape or not np.array_equal(photo, other[index])

    # The page is the same whatever the lighting, and the digit is whole, off the edge and not always centred.
    centres = []
    for index in range(30):
        pages = [render_photo(x_val[index], np.random.default_rng(index), lighting, clean=True)
                 for lighting in LIGHTINGS]
        assert all(np.array_equal(pages[0], page) for page in pages[1:])
        ink = pages[0][..., 0] < 128
        assert not (ink[0].any() or ink[-1].any() or ink[:, 0].any() or ink[:, -1].any())
        rows, cols = np.nonzero(ink)
        centres.append((rows.mean() / ink.shape[0], cols.mean() / ink.shape[1]))
    assert np.std(centres, axis=0).min() > 0.05, "the digit's place varies"

    mixed, _ = photo_set(x_val[:12], y_val[:12], seed=3, lighting="mixed")
    assert sum(np.array_equal(photo, mixed_photo) for photo, mixed_photo in zip(photos, mixed)) in range(1, 12)


def test_pens_and_papers_are_of_several_colours_and_bad_arguments_are_named():
    digit = four(joined=True)
    pens, papers = set(), set()
    for seed in range(40):
        photo, perfect = photo_and_perfect(digit, seed, "plain")
        red, _, blue = photo[perfect[..., 0] < 128].mean(axis=0)
        pens.add("blue" if blue - red > 40 else "red" if red - blue > 40 else "black or grey")
        red, _, blue = np.median(photo[perfect[..., 0] == 255], axis=0)
        papers.add("light blue" if blue - red > 15 else "cream" if red - blue > 20 else "white or grey")
    assert pens == {"blue", "red", "black or grey"} and papers == {"light blue", "cream", "white or grey"}

    with pytest.raises(ValueError, match="lighting 'dark': use one of plain, shadow, gradient"):
        render_photo(digit, np.random.default_rng(0), "dark")
    with pytest.raises(ValueError, match="one 28x28 uint8 MNIST digit with some ink, not an array of shape \\(2, 28"):
        render_photo(np.stack([digit, digit]), np.random.default_rng(0))
    with pytest.raises(ValueError, match="not an array of shape \\(28, 28\\) and type float64"):
        render_photo(digit / 255, np.random.default_rng(0))
    with pytest.raises(ValueError, match="or mixed"):
        photo_set([digit], [4], lighting="dark")
