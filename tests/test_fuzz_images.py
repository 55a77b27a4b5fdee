"""Property tests for what users send: image preparation on generated images and files, and the
server's /predict on generated requests. The property: a prepared (28, 28) digit, or the project's
one-line error (ImageError; a 4xx JSON answer from the server), never another exception or a 5xx.

    python -m pytest tests/test_fuzz_images.py -q                        # the short 'ci' profile
    HYPOTHESIS_PROFILE=long python -m pytest tests/test_fuzz_images.py   # 2000 inputs a property

`--hypothesis-show-statistics` prints how many inputs each property tried and what became of them
(prepared or refused; each status code).
"""

import functools
import io
import re
import string

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from mnist_lab import preprocess
from mnist_lab.preprocess import ImageError
from tests.test_predict_serve import png_claiming

pytestmark = pytest.mark.filterwarnings("ignore:::PIL")  # Pillow's warnings about the damaged files made here

# Every mode Pillow can write in at least one of the formats read here (HSV and RGBa only as WebP).
MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV",
         "I", "F", "I;16", "I;16B")
CONTENTS = ("constant", "stroke", "sparse dots", "noise", "special values")
ORIENTATION = 0x0112  # the EXIF tag phones use to say how the picture is rotated


@functools.cache
def formats_for(mode):
    """The formats read here that can write `mode`."""
    writable = []
    for fmt in preprocess.FORMATS:
        try:
            Image.new(mode, (2, 2)).save(io.BytesIO(), fmt)
            writable.append(fmt)
        except (OSError, ValueError, KeyError):
            pass
    return tuple(writable)


def pattern(content, size, rng):
    """A float64 (height, width) picture: the content asked for, special values included."""
    width, height = size
    if content == "constant":
        return np.full((height, width), rng.uniform(-2, 2))
    if content == "noise":
        return rng.uniform(-1, 2, (height, width))
    picture = np.full((height, width), float(rng.integers(0, 2)))  # light or dark paper
    ink = 1 - picture[0, 0]
    if content == "stroke":  # a bar of random place and thickness, roughly a 1
        x = rng.integers(0, width)
        picture[rng.integers(0, height):, x:x + 1 + rng.integers(0, 1 + width // 4)] = ink
    else:  # dots, up to one every few pixels, as on the 1000x1000 page that once gave NaN
        step = int(rng.integers(1, 40))
        picture[rng.integers(0, step)::step, rng.integers(0, step)::step] = ink
    if content == "special values":
        flat = picture.reshape(-1)
        flat[rng.integers(0, flat.size, 1 + flat.size // 50)] = rng.choice([np.nan, np.inf, -np.inf, 1e38, -1e38])
    return picture


def as_mode(picture, mode, rng):
    """The picture in `mode`, with random contrast per band (so bands differ)."""
    height, width = picture.shape
    if mode == "F":
        return Image.frombytes("F", (width, height), picture.astype(np.float32).tobytes())
    finite = np.nan_to_num(picture, nan=0.5, posinf=1, neginf=0).clip(0, 1)
    if mode == "I":
        return Image.frombytes("I", (width, height), (finite * rng.integers(1, 2**31 - 1)).astype(np.int32).tobytes())
    if mode.startswith("I;16"):
        values = (finite * rng.integers(1, 65535)).astype(">u2" if mode == "I;16B" else "<u2")
        return Image.frombytes(mode, (width, height), values.tobytes())
    bands = 1 if mode in ("1", "L", "P") else len(Image.new(mode, (1, 1)).getbands())
    scale, offset = rng.uniform(-255, 255, bands), rng.uniform(0, 255, bands)
    values = (finite[..., None] * scale + offset).clip(0, 255).astype(np.uint8)
    if mode == "1":
        return Image.frombytes("L", (width, height), values.tobytes()).convert("1")
    image = Image.frombytes(mode, (width, height), values.tobytes())
    if mode in ("P", "PA") and rng.integers(0, 2):
        image.putpalette(rng.integers(0, 256, 768).astype(np.uint8).tobytes())
    return image


sizes = st.tuples(st.integers(1, 40), st.integers(1, 40)) | st.tuples(st.integers(1, 1100), st.integers(1, 1100))


@st.composite
def encoded_images(draw, sizes=sizes):
    """Image files: every writable mode and content, in each format that can hold it, some with an EXIF
    orientation (valid or not), some truncated or with bytes changed."""
    mode = draw(st.sampled_from(MODES))
    fmt = draw(st.sampled_from(formats_for(mode)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    image = as_mode(pattern(draw(st.sampled_from(CONTENTS)), draw(sizes), rng), mode, rng)
    options = {}
    orientation = draw(st.none() | st.integers(0, 9) | st.just(65535))
    if orientation is not None and fmt in ("JPEG", "PNG", "TIFF", "WEBP"):
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        options["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    data = bytearray(buffer.getvalue())
    damage = draw(st.sampled_from(["none", "none", "none", "truncated", "bytes changed"]))
    if damage == "truncated":
        del data[draw(st.integers(0, len(data) - 1)):]
    elif damage == "bytes changed":
        for position in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)):
            data[position] = draw(st.integers(0, 255))
    return bytes(data)


def kind(message):
    """An error message without its particulars (sizes, names, details), to count errors by kind."""
    return re.split(r"[(;:'\"]", re.sub(r"[0-9][0-9,x]*", "N", message))[0].strip()


# Headers claiming any size PNG allows, so sizes past our limit and Pillow's are tried without making them.
claimed_sizes = st.builds(png_claiming, st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1))
image_files = st.one_of(encoded_images(), encoded_images(), encoded_images(), st.binary(max_size=4096), claimed_sizes)


# conftest's autouse fixtures (a seed, an empty Keras cache, no network) are harmless to share between inputs.
shared_fixtures = settings(suppress_health_check=[*settings.default.suppress_health_check,
                                                  HealthCheck.function_scoped_fixture])


@shared_fixtures
@given(image_files)
def test_any_image_file_is_prepared_or_refused_in_one_line(data):
    try:
        seen = preprocess.prepare_bytes(data, "fuzz")
    except ImageError as error:
        assert "\n" not in str(error) and str(error).startswith("fuzz: ")
        event("refused: " + kind(str(error).removeprefix("fuzz: ")))
        return
    assert seen.shape == (28, 28) and seen.dtype == np.float32
    assert np.isfinite(seen).all() and seen.min() >= 0 and seen.max() <= 1
    event("prepared")


# The server


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """serve.py's app, in process, on a tiny untrained model (the property is about requests, not accuracy),
    listening as on the default --host: requests must name a loopback host."""
    import keras
    from fastapi.testclient import TestClient

    from mnist_lab.serving import create_app
    from mnist_lab.writer import export_savedmodel

    inputs = keras.Input((28, 28, 1))
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs))
    folder = tmp_path_factory.mktemp("models") / "tiny"
    export_savedmodel(keras.Model(inputs, outputs), folder)
    with TestClient(create_app(folder, folder.parent, host="127.0.0.1"), base_url="http://127.0.0.1:8000",
                    raise_server_exceptions=False) as client:
        yield client


header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
small_images = encoded_images(st.tuples(st.integers(1, 64), st.integers(1, 64)))
payloads = small_images | st.binary(max_size=2048)


@st.composite
def multipart_bodies(draw):
    """(Content-Type, body) of a form: any number of parts, files or fields, well-formed or not."""
    boundary = draw(st.text(string.ascii_letters + string.digits + "'()+_,-./:=?", min_size=1, max_size=70))
    body = draw(st.just(b"") | st.binary(max_size=20))  # rarely a preamble (which browsers never send)
    for _ in range(draw(st.integers(0, 4))):
        disposition = "form-data"
        name = draw(st.none() | header_text)
        if name is not None:
            disposition += f'; name="{name}"'
        filename = draw(st.none() | header_text)
        if filename is not None:
            disposition += f'; filename="{filename}"'
        headers = f"Content-Disposition: {disposition}\r\n"
        if draw(st.booleans()):
            content_type = draw(st.sampled_from(["image/png", "application/octet-stream"]) | header_text)
            headers += f"Content-Type: {content_type}\r\n"
        body += f"--{boundary}\r\n{headers}\r\n".encode() + draw(payloads) + b"\r\n"
    body += draw(st.sampled_from([f"--{boundary}--\r\n", "", f"--{boundary}", "--", "garbage"])).encode()
    declared = draw(st.sampled_from([f"boundary={boundary}"] * 3 + [f'boundary="{boundary}"', "", "boundary=",
                                                                   "boundary=other"]))
    return f"multipart/form-data; {declared}".rstrip("; "), body


raw_requests = st.tuples(st.none() | st.sampled_from(["image/png", "image/jpeg", "application/octet-stream",
                                                      "application/x-www-form-urlencoded", "text/plain"]) | header_text,
                         payloads | st.just(b""))
hosts = st.one_of(st.none(), st.none(), st.none(),  # mostly the client's own Host header, which is allowed
                  st.sampled_from(["localhost", "127.0.0.1:8000", "[::1]:8000", "evil.example", "localhost:x", "[::1",
                                   "127.0.0.1.nip.io"]),
                  header_text)


@shared_fixtures
@given(multipart_bodies() | raw_requests, hosts,
       st.dictionaries(st.text(string.ascii_letters + "-", min_size=1, max_size=20), header_text, max_size=3))
def test_any_request_to_predict_gets_a_json_answer_below_500(client, request, host, extra_headers):
    content_type, body = request
    headers = {name: value for name, value in extra_headers.items()
               if name.lower() not in ("content-type", "content-length", "host", "transfer-encoding")}
    if content_type is not None:
        headers["content-type"] = content_type
    if host is not None:
        headers["host"] = host
    response = client.post("/predict", content=body, headers=headers)
    answer = response.json()
    assert response.status_code < 500, answer
    if response.status_code == 200:
        assert 0 <= answer["digit"] <= 9 and len(answer["probabilities"]) == 10
    else:
        assert "\n" not in answer["error"]
    event(f"{response.status_code}: " + ("a digit" if response.status_code == 200 else kind(answer["error"])))
