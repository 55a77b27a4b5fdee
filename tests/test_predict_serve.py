"""Your own digits: preprocessing, predict.py, the server and its page in a real browser.

A cnn trained briefly on real MNIST (about 98 %) reads the digits; tests that need it are skipped,
saying so, when MNIST is not cached (CI caches it first).
"""

import concurrent.futures
import contextlib
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest.mock
import zlib
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from mnist_lab import preprocess
from mnist_lab.data.splits import to_model_input
from mnist_lab.flags import free_port
from mnist_lab.predictor import PREFERRED_MODEL, UNSURE_BELOW, Prediction, choose_model, unsure_reason
from mnist_lab.preprocess import ImageError, ImageTooLarge, prepare_bytes
from mnist_lab.reader import SavedModelClassifier
from mnist_lab.serving import DECODERS
from mnist_lab.startup import run
from tests.conftest import ROOT

ARTIFACTS = ROOT / "reports" / "test_artifacts"
# (pen width, size) on the page's 280-pixel pad, whose pen is 18 pixels by default. Thin: a 4-pixel pen on a
# digit 190 pixels tall, 0.4 pixels once scaled to MNIST's 20; thick: 36 pixels on one half as tall, 5.5
# pixels. MNIST's strokes are 2-3 pixels; a cnn trained without handwriting augmentation reads the thick 3 as 8.
PENS = {"thin": (4, 1.0), "thick": (36, 0.5)}


@pytest.fixture(scope="session")
def digits_model(real_mnist, tmp_path_factory):
    """A models folder holding a cnn trained for 1 epoch on 20000 real digits, tested on all 10000."""
    from mnist_lab.config import TrainConfig
    from mnist_lab.training import train
    from tests.conftest import write_idx_dataset

    data_dir = write_idx_dataset(tmp_path_factory.mktemp("mnist"), real_mnist)
    models = tmp_path_factory.mktemp("models")
    train(TrainConfig(model="cnn", epochs=1, validation_size=40000, data_dir=str(data_dir),
                      output=str(models / "cnn"), verbose=0), log=lambda *_: None)
    return models


@pytest.fixture(scope="session")
def robust_model(digits_model, real_mnist_dir, tmp_path_factory):
    """A models folder holding robust_cnn trained with its recipe's augmentation for 2 epochs on 10000 real
    digits, beside digits_model's cnn."""
    from mnist_lab.config import TrainConfig
    from mnist_lab.training import train

    models = tmp_path_factory.mktemp("robust_models")
    shutil.copytree(digits_model / "cnn", models / "cnn")
    train(TrainConfig(model="robust_cnn", epochs=2, validation_size=50000, data_dir=str(real_mnist_dir),
                      output=str(models / "robust_cnn"), verbose=0), log=lambda *_: None)
    return models


@pytest.fixture(scope="session")
def constant_models(tmp_path_factory):
    """A models folder with two SavedModels that ignore the image: `undecided` answers 0.1 for every
    digit, `sure` answers 3 with probability 0.9996."""
    import keras

    from mnist_lab.writer import export_savedmodel

    models = tmp_path_factory.mktemp("constant_models")
    for name, bias in [("undecided", np.zeros(10)), ("sure", np.eye(10)[3] * 10)]:
        inputs = keras.Input((28, 28, 1), name="image")
        dense = keras.layers.Dense(10, activation="softmax", kernel_initializer="zeros",
                                   bias_initializer=keras.initializers.Constant(bias))
        export_savedmodel(keras.Model(inputs, dense(keras.layers.Flatten()(inputs))), models / name)
    return models


def encode(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def drawn_large(digit, ink=(20, 20, 20), paper=(255, 255, 255), size=(640, 480), at=(330, 40)):
    """An MNIST digit drawn 10x larger, dark on light paper, off-centre, in RGB."""
    big = Image.fromarray(digit).resize((280, 280), Image.Resampling.BICUBIC)
    alpha = np.asarray(big, np.float32)[..., None] / 255
    canvas = np.array(Image.new("RGB", size, paper), np.float32)
    region = canvas[at[1]:at[1] + 280, at[0]:at[0] + 280]
    canvas[at[1]:at[1] + 280, at[0]:at[0] + 280] = (1 - alpha) * region + alpha * np.array(ink, np.float32)
    return Image.fromarray(canvas.astype(np.uint8))


def alpha_drawing(digit):
    """Black ink on a transparent background, as a drawing app exports it."""
    big = np.asarray(Image.fromarray(digit).resize((200, 200), Image.Resampling.BICUBIC))
    rgba = np.zeros((300, 260, 4), np.uint8)
    rgba[60:260, 10:210, 3] = big
    return Image.fromarray(rgba, "RGBA")


VARIANTS = {
    "dark on white, RGB JPEG": lambda d: encode(drawn_large(d), "JPEG", quality=85),
    "light on dark, PNG": lambda d: encode(drawn_large(d, ink=(250, 250, 250), paper=(10, 10, 30)), "PNG"),
    "blue ink on cream, BMP": lambda d: encode(drawn_large(d, ink=(20, 40, 160), paper=(250, 245, 225)), "BMP"),
    "transparent background, PNG": lambda d: encode(alpha_drawing(d), "PNG"),
    "small greyscale GIF": lambda d: encode(Image.fromarray(255 - d).resize((56, 56)), "GIF"),
}


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_digit_comes_back_as_mnist_drew_it(real_mnist, digits_model, variant):
    _, _, x_test, y_test = real_mnist
    classifier = SavedModelClassifier(digits_model / "cnn")
    originals = x_test[:30]
    seen = np.stack([prepare_bytes(VARIANTS[variant](digit)) for digit in originals])
    distance = np.abs(seen - originals / 255).mean(axis=(1, 2))
    assert distance.max() < 0.1, distance  # two different MNIST digits are about 0.2 apart
    predicted_original = classifier.predict(to_model_input(originals)).argmax(axis=1)
    predicted_seen = classifier.predict(seen[..., None]).argmax(axis=1)
    correct = predicted_original == y_test[:30]
    assert correct.sum() >= 27
    np.testing.assert_array_equal(predicted_seen[correct], y_test[:30][correct])
    # What predict.py and serve.py answer from by default: model.onnx on ONNX Runtime, the same to 1e-5.
    from mnist_lab.reader import OnnxClassifier

    np.testing.assert_allclose(OnnxClassifier(digits_model / "cnn").predict(seen[..., None]),
                               classifier.predict(seen[..., None]), atol=1e-5)


def test_what_is_not_a_digit_is_named():
    with pytest.raises(ImageError, match="no digit found"):
        prepare_bytes(encode(Image.new("RGB", (100, 80), (240, 240, 240)), "PNG"))
    with pytest.raises(ImageError, match="not an image file"):
        prepare_bytes(b"%PDF-1.4 not an image")
    with pytest.raises(ImageError, match="damaged or unreadable"):
        prepare_bytes(encode(Image.new("RGB", (200, 200), "white"), "PNG")[:120])


def png_claiming(width, height):
    """A PNG whose header claims width x height but which holds a few bytes of pixels: decoding it fails,
    so refusing it for its size proves that the size was checked before any decoding."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(1000)))
            + chunk(b"IEND", b""))


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\nnewpath 14 4 moveto 14 24 lineto stroke\n%%EOF\n"


def test_the_size_is_checked_before_decoding():
    with pytest.raises(ImageError, match="damaged or unreadable"):
        prepare_bytes(png_claiming(100, 100))
    with pytest.raises(ImageTooLarge, match="5000x5000 pixels is too large \\(at most 16,000,000 pixels\\)"):
        prepare_bytes(png_claiming(5000, 5000))
    # Pillow's own bomb limit, before the format is known: both of ours are said (a JPEG may have more)
    with pytest.raises(ImageTooLarge, match="more than 178,956,970 pixels is too large \\(at most 16,000,000, or "
                                            "50,000,000 for a JPEG, pixels\\)"):
        prepare_bytes(png_claiming(20000, 10000))


def bar(mode="L", size=(60, 60)):
    """A dark vertical bar (a 1) on light paper."""
    picture = np.full(size[::-1], 250, np.uint8)
    picture[size[1] // 6:-size[1] // 6, size[0] // 2 - 2:size[0] // 2 + 2] = 10
    return Image.fromarray(picture).convert(mode)


def test_only_the_documented_formats_are_read():
    for fmt in preprocess.FORMATS:
        seen = prepare_bytes(encode(bar(), fmt))
        assert seen.max() > 0.9 and abs(ndimage.center_of_mass(seen)[1] - 14) < 1, fmt
    # EPS would run Ghostscript; it is refused before any plugin but the allowed ones looks at it.
    with pytest.raises(ImageError, match="not an image file in a format read here; use PNG, JPEG, BMP, GIF, TIFF or W"):
        prepare_bytes(EPS)
    with pytest.raises(ImageError, match="not an image file"):
        prepare_bytes(encode(bar(), "PCX"))


def float_tiff(values):
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(values, np.float32), "F").save(buffer, "TIFF")
    return buffer.getvalue()


def dotted_page():
    """A white 1000x1000 page with a black dot every 30 pixels: all zeros once scaled to 20 pixels."""
    page = np.full((1000, 1000), 255, np.uint8)
    page[::30, ::30] = 0
    return encode(Image.fromarray(page), "PNG")


def lab_tiff():
    lab = np.stack([np.asarray(bar()), np.full((60, 60), 128, np.uint8), np.full((60, 60), 128, np.uint8)], axis=-1)
    return encode(Image.fromarray(lab, "LAB"), "TIFF")


def with_special(value, everywhere=False):
    picture = np.asarray(bar(), np.float32) / 255
    if everywhere:
        picture[:] = value
    else:
        picture[3, 3] = value
    return float_tiff(picture)


# Images that decode, then once crashed a later step (a traceback in predict.py, 500 from the server):
# name -> (file, the one-line refusal expected, or None for a prepared 1).
DECODABLE = {
    "a dot every 30 px on a 1000x1000 page": (dotted_page, "no digit found \\(the marks are too thin or too far apart"),
    "a float TIFF with an inf pixel": (lambda: with_special(np.inf), None),
    "a float TIFF with a -inf pixel": (lambda: with_special(-np.inf), None),
    "a float TIFF with a NaN pixel": (lambda: with_special(np.nan), None),
    "a float TIFF of NaN only": (lambda: with_special(np.nan, everywhere=True), "no digit found \\(no pixel has a"),
    "a constant float TIFF": (lambda: with_special(0.5, everywhere=True), "no digit found"),
    "a LAB TIFF": (lab_tiff, None),
    "a 1x1 image": (lambda: encode(Image.new("L", (1, 1), 7), "PNG"), "no digit found"),
    "a 1x1000 image of a line": (lambda: encode(bar(size=(1, 1000)), "PNG"), None),
}


@pytest.mark.parametrize("case", sorted(DECODABLE))
def test_images_that_decode_are_prepared_or_refused_in_one_line(case):
    make, refusal = DECODABLE[case]
    if refusal:
        with pytest.raises(ImageError, match=refusal):
            prepare_bytes(make())
        return
    seen = prepare_bytes(make())
    assert seen.shape == (28, 28) and np.isfinite(seen).all() and seen.min() >= 0 and seen.max() <= 1
    assert seen.max() > 0.9 and abs(ndimage.center_of_mass(seen)[1] - 14) < 1, "the bar, centred"


@pytest.mark.parametrize("orientation, stored_as", [
    (3, Image.Transpose.ROTATE_180), (6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270),
    (2, Image.Transpose.FLIP_LEFT_RIGHT), (5, Image.Transpose.TRANSPOSE)])
def test_exif_orientation_is_applied(orientation, stored_as):
    upright = np.full((80, 60), 250, np.uint8)
    upright[10:70, 25:31] = 10  # an L: a stem and a foot to the right, so every rotation differs
    upright[62:70, 25:50] = 10
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = encode(Image.fromarray(upright).transpose(stored_as), "PNG", exif=exif.tobytes())
    np.testing.assert_allclose(prepare_bytes(stored), prepare_bytes(encode(Image.fromarray(upright), "PNG")), atol=1e-6)


def run_script(script, *args, stdin=None):
    """predict.py run in this process, through the run() that the script calls: its answers and
    one-line errors without seconds of TensorFlow start-up (test_cli.py starts the real process)."""
    import predict as predict_cli

    assert script == "predict.py"
    out, err = io.StringIO(), io.StringIO()
    piped = io.TextIOWrapper(io.BytesIO(stdin or b""))
    with unittest.mock.patch.object(sys, "stdin", piped), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        status = run(lambda: predict_cli.main([str(arg) for arg in args]))
    return subprocess.CompletedProcess([script, *args], status, out.getvalue(), err.getvalue())


@pytest.mark.slow
def test_predict_reads_good_files_and_names_bad_ones(real_mnist, digits_model, tmp_path):
    _, _, x_test, y_test = real_mnist
    good = tmp_path / "seven.jpg"
    good.write_bytes(VARIANTS["dark on white, RGB JPEG"](x_test[0]))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "blank.png").write_bytes(encode(Image.new("L", (64, 64), 255), "PNG"))
    done = run_script("predict.py", good, tmp_path / "notes.txt", tmp_path / "blank.png", tmp_path / "gone.png",
                      "/proc/self/mem", tmp_path, good, "--models-dir", digits_model, "--show-dir", tmp_path / "shown")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stdout.splitlines()[0].startswith("model: cnn (the conv net with the best test accuracy, ")
    assert done.stdout.splitlines()[0].endswith("), on onnx")
    assert f"{good}: {y_test[0]} (" in done.stdout and "top 3:" in done.stdout
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 5
    assert "notes.txt: not an image file" in errors[0] and "blank.png: no digit found" in errors[1]
    assert "gone.png: no such file" in errors[2] and "/proc/self/mem: cannot read it" in errors[3]
    assert f"{tmp_path}: a folder, not an image file" in errors[4]
    assert done.stdout.count(f"{good}: {y_test[0]} (") == 2, "the files after the bad ones are still read"
    assert (tmp_path / "shown" / "seven.png").stat().st_size > 0 and (tmp_path / "shown" / "seven_.png").is_file()

    as_json = run_script("predict.py", good, "--models-dir", digits_model, "--json", "--model", "cnn")
    record = json.loads(as_json.stdout)
    assert record["digit"] == y_test[0] and record["model"] == "cnn" and len(record["probabilities"]) == 10
    assert [entry["digit"] for entry in record["top3"]][0] == y_test[0]


@pytest.mark.slow
def test_predict_on_onnx_loads_no_tensorflow_and_agrees_with_the_savedmodel(real_mnist, digits_model, tmp_path):
    image = tmp_path / "seven.png"
    image.write_bytes(VARIANTS["light on dark, PNG"](real_mnist[2][0]))
    answers = {}
    for runtime in ("onnx", "savedmodel"):
        done = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "predict.py"), str(image), "--json",
                               "--models-dir", str(digits_model), "--runtime", runtime],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines()
                    if line.startswith("import time:")}
        if runtime == "onnx":  # (TensorFlow's import is hidden on the other path: its start-up lines are)
            assert "onnxruntime" in imported and "argparse" in imported, "the import log was read"
            assert not imported & {"tensorflow", "keras", "sklearn", "matplotlib"}, "the ONNX path needs none"
        answers[runtime] = json.loads(done.stdout)
    assert answers["onnx"]["runtime"] == "onnx" and answers["onnx"]["digit"] == answers["savedmodel"]["digit"]
    np.testing.assert_allclose(answers["onnx"]["probabilities"], answers["savedmodel"]["probabilities"], atol=1e-5)


@pytest.mark.slow
def test_predict_with_nothing_trained_says_what_to_run(tmp_path):
    image = tmp_path / "x.png"
    image.write_bytes(encode(Image.new("L", (8, 8)), "PNG"))
    done = run_script("predict.py", image, "--models-dir", tmp_path / "none")
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: no trained models in {tmp_path / 'none'}/; train one first, e.g. "
                                   "`python train.py --model cnn`, or run from the project's folder, or pass "
                                   "--models-dir")


def test_unsure_when_the_top_probability_is_low_or_no_digit_is_clear():
    digit = np.zeros((28, 28), np.float32)
    digit[4:24, 12:16] = 1.0  # a clear 1: 80 pixels of ink
    confident, torn = np.eye(10)[1] * 0.99 + 0.001, np.full(10, 0.02)
    torn[[1, 7]] = 0.42
    assert unsure_reason(confident, digit) is None
    assert unsure_reason(torn, digit) == f"top probability below {100 * UNSURE_BELOW:g} %"
    assert unsure_reason(confident, digit * 0.45).startswith("no clear digit")
    assert unsure_reason(confident, digit * 0.55) is None
    sure = Prediction(1, 0.99, confident.tolist(), digit, None).to_dict()
    unsure = Prediction(7, 0.42, torn.tolist(), digit, "top probability below 80 %").to_dict()
    assert (sure["unsure"], sure["unsure_reason"]) == (False, None)
    assert (unsure["unsure"], unsure["unsure_reason"]) == (True, "top probability below 80 %")


def fake_model(models_dir, name, test_accuracy, test_images=10_000):
    """A model folder as choose_model sees it: a saved_model.pb (empty) and a record."""
    from mnist_lab.record import ModelRecord

    folder = models_dir / name
    folder.mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"")
    ModelRecord(model=name, test_accuracy=test_accuracy, data={"test_images": test_images}).save(folder)


def test_the_robust_model_is_chosen_once_trained_then_conv_nets_and_a_named_model_still_wins(tmp_path):
    fake_model(tmp_path, "mlp", 0.990)
    assert choose_model(tmp_path) == (tmp_path / "mlp", "best test accuracy on the full test set, 99.00 %; "
                                      f"{PREFERRED_MODEL}, trained for photos and drawings, would answer them "
                                      f"better: `python train.py --model {PREFERRED_MODEL}`")
    fake_model(tmp_path, "mlp_tuned", 0.998)  # after a tuning search: an MLP, however accurate, is not for photos
    fake_model(tmp_path, "cnn", 0.990)
    fake_model(tmp_path, "deep_cnn", 0.997)
    for name, accuracy in [("hand_edited", 1.5), ("hand_edited_bool", True), ("hand_edited_huge", 1e308)]:
        fake_model(tmp_path, name, accuracy)  # none of these becomes the default
    assert choose_model(tmp_path)[0] == tmp_path / "deep_cnn"
    assert choose_model(tmp_path)[1].startswith("the conv net with the best test accuracy, 99.70 %; ")
    fake_model(tmp_path, f"{PREFERRED_MODEL}_subset2000", 0.999, test_images=400)  # a smoke run is not it
    assert choose_model(tmp_path)[0] == tmp_path / "deep_cnn"
    fake_model(tmp_path, PREFERRED_MODEL, 0.992)
    assert choose_model(tmp_path) == (tmp_path / PREFERRED_MODEL,
                                      "trained for photos and drawings, 99.20 % on the full test set")
    assert choose_model(tmp_path, "cnn") == (tmp_path / "cnn", "chosen with --model")
    assert PREFERRED_MODEL in __import__("models").REGISTRY


def test_the_server_says_when_the_model_is_unsure(constant_models):
    from fastapi.testclient import TestClient

    from mnist_lab.serving import create_app

    png = encode(bar(), "PNG")
    for name, unsure in [("undecided", True), ("sure", False)]:
        with TestClient(create_app(constant_models / name, constant_models)) as client:
            body = client.post("/predict", content=png).json()
        assert body["unsure"] is unsure, name
        assert body["unsure_reason"] == (f"top probability below {100 * UNSURE_BELOW:g} %" if unsure else None)


@pytest.mark.slow
def test_predict_says_when_it_is_unsure_in_text_and_json(constant_models, tmp_path):
    image = tmp_path / "one.png"
    image.write_bytes(encode(bar(), "PNG"))
    reason = f"top probability below {100 * UNSURE_BELOW:g} %"
    undecided = run_script("predict.py", image, "--models-dir", constant_models, "--model", "undecided")
    assert undecided.returncode == 0, undecided.stderr
    assert undecided.stdout.splitlines()[1].startswith(f"{image}: 0 (10.0 %, unsure: {reason})   top 3: ")
    sure = run_script("predict.py", image, "--models-dir", constant_models, "--model", "sure")
    assert sure.stdout.splitlines()[1].startswith(f"{image}: 3 (100.0 %)   top 3: 3 100.0 %")
    as_json = [json.loads(run_script("predict.py", image, "--models-dir", constant_models, "--model", name,
                                     "--json").stdout) for name in ("undecided", "sure")]
    assert [(record["unsure"], record["unsure_reason"]) for record in as_json] == [(True, reason), (False, None)]


@pytest.mark.slow
def test_predict_goes_on_after_images_that_once_crashed_it_and_reads_stdin(real_mnist, digits_model, tmp_path):
    _, _, x_test, y_test = real_mnist
    files = []
    for case in ["a dot every 30 px on a 1000x1000 page", "a float TIFF with an inf pixel", "a LAB TIFF",
                 "a float TIFF of NaN only"]:
        files.append(tmp_path / f"{len(files)}.{'png' if 'page' in case else 'tiff'}")
        files[-1].write_bytes(DECODABLE[case][0]())
    good = tmp_path / "seven.jpg"
    good.write_bytes(VARIANTS["dark on white, RGB JPEG"](x_test[0]))
    done = run_script("predict.py", *files, good, "-", "-", "--models-dir", digits_model,
                      stdin=VARIANTS["light on dark, PNG"](x_test[1]))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 3
    assert f"{files[0]}: no digit found" in errors[0] and f"{files[3]}: no digit found" in errors[1]
    assert errors[2] == "error: <stdin>: no image was piped in (e.g. `python predict.py - < digit.png`)"  # read once
    lines = done.stdout.splitlines()[1:]
    assert [line.split(":")[0] for line in lines] == [str(files[1]), str(files[2]), str(good), "<stdin>"]
    assert lines[2].startswith(f"{good}: {y_test[0]} (") and lines[3].startswith(f"<stdin>: {y_test[1]} (")


def foreign_model(folder, answer):
    """A SavedModel that answers `answer` (a number) for every class of every image."""
    import keras

    from mnist_lab.writer import export_savedmodel

    inputs = keras.Input((28, 28, 1))
    logits = keras.layers.Dense(10)(keras.layers.Flatten()(inputs))
    outputs = keras.layers.Lambda(lambda x: x * 0.0 + answer)(logits)
    export_savedmodel(keras.Model(inputs, outputs), folder)


@pytest.mark.slow
@pytest.mark.parametrize("answer, message", [
    (float("nan"), "the model answered NaN or infinity instead of probabilities (a diverged or damaged model); "
                   "retrain it, or choose another with --model"),
    (5.0, "its output is not class probabilities (values from 5 to 5, rows summing to 50-50); a model here must "
          "end in a softmax")], ids=["NaN, as a diverged model", "5.0 per class, as a foreign model's scores"])
def test_a_model_answering_anything_but_probabilities_is_one_line_never_a_figure(tmp_path, answer, message):
    foreign_model(tmp_path / "models" / "foreign", answer)
    image = tmp_path / "one.png"
    image.write_bytes(encode(bar(), "PNG"))
    done = run_script("predict.py", image, image, "--models-dir", tmp_path / "models", "--model", "foreign", "--json")
    assert done.returncode != 0 and "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr.strip().splitlines() == [f"error: foreign: {message}"]


@pytest.mark.slow
def test_a_default_model_that_will_not_load_gives_way_to_the_next(digits_model, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(digits_model / "cnn", models / "cnn")
    shutil.copytree(digits_model / "cnn", models / PREFERRED_MODEL)  # the first choice, then damaged
    (models / PREFERRED_MODEL / "model.onnx").write_bytes(b"cut short")
    image = tmp_path / "one.png"
    image.write_bytes(encode(bar(), "PNG"))
    done = run_script("predict.py", image, "--models-dir", models)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        f"warning: {PREFERRED_MODEL}: model.onnx is not the file exported with this model (damaged, or left from "
        f"another); `python -m mnist_lab.export {models / PREFERRED_MODEL}` writes it again from model.keras; "
        "trying cnn, the next choice"]
    assert done.stdout.startswith("model: cnn (the conv net with the best test accuracy, ")


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="a full disk is a tiny tmpfs: mounting one needs root (CI runs as root)")
def test_predict_show_on_a_full_disk_is_one_line_and_leaves_no_partial_file(real_mnist, digits_model, tmp_path):
    _, _, x_test, y_test = real_mnist
    good = tmp_path / "seven.jpg"
    good.write_bytes(VARIANTS["dark on white, RGB JPEG"](x_test[0]))
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], check=True)
    try:
        shown = disk / "shown"
        shown.mkdir()
        filler = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(filler, bytes(4096))
        except OSError:  # the disk is full
            pass
        finally:
            os.close(filler)
        done = run_script("predict.py", good, good, "--models-dir", digits_model, "--show-dir", shown)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert done.stdout.count(f"{good}: {y_test[0]} (") == 2, "both predictions are still printed"
        assert done.stderr.strip().splitlines() == [
            f"error: --show-dir {shown}: cannot write {name} (No space left on device); "
            "free some space or choose another --show-dir" for name in ["seven.png", "seven_.png"]]
        assert list(shown.iterdir()) == [], "no partial or empty PNG is left"
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@dataclass
class Served:
    url: str
    pid: int
    tmpdir: Path  # the server's TMPDIR: a request must leave nothing there


@contextlib.contextmanager
def serving(models_dir, folder, *flags):
    """`python serve.py` for real, on a free loopback port, with its log and TMPDIR in `folder`."""
    port = free_port()
    log = open(folder / "server.log", "w")  # a file: a pipe nobody reads could fill
    tmpdir = folder / "tmp"
    tmpdir.mkdir()
    process = subprocess.Popen([sys.executable, str(ROOT / "serve.py"), "--models-dir", str(models_dir),
                                "--port", str(port), *flags], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                               text=True, env={**os.environ, "TMPDIR": str(tmpdir)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, Path(log.name).read_text()
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.2)
        yield Served(url, process.pid, tmpdir)
    finally:  # a failed assertion or a skip inside the `with` must not leave a server running
        process.terminate()
        process.wait(timeout=30)
        log.close()
    assert "Traceback" not in Path(log.name).read_text(), "the server logged a crash"


@pytest.fixture(scope="module")
def served(digits_model, tmp_path_factory):
    with serving(digits_model, tmp_path_factory.mktemp("server")) as server:
        yield server


@pytest.fixture
def server(served):
    return served.url


class Watch:
    """A process's resident memory while a block runs (the kernel's peak, reset at the start, and samples)
    and every file it held open meanwhile."""

    def __init__(self, pid):
        self.pid = pid
        self.open_files = set()
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample)

    def status_mb(self, field):
        lines = Path(f"/proc/{self.pid}/status").read_text().splitlines()
        line = next(line for line in lines if line.startswith(field))
        return int(line.split()[1]) / 1024

    def _sample(self):
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self.status_mb("VmRSS:"))
            for fd in Path(f"/proc/{self.pid}/fd").iterdir():
                try:
                    self.open_files.add(os.readlink(fd))
                except OSError:  # closed meanwhile
                    pass
            self._stop.wait(0.01)

    def __enter__(self):
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current size
        self.before_mb = self.status_mb("VmRSS:")
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self.status_mb("VmHWM:"))

    @property
    def growth_mb(self):
        return self.peak_mb - self.before_mb


@pytest.mark.slow
def test_the_server_answers_on_onnx_runtime_without_tensorflow_in_its_memory(served):
    mapped = Path(f"/proc/{served.pid}/maps").read_text()
    assert "onnxruntime" in mapped and "tensorflow" not in mapped.lower() and "keras" not in mapped


@pytest.mark.slow
def test_the_endpoints_answer(server, real_mnist):
    _, _, x_test, y_test = real_mnist
    page = httpx.get(server)
    assert page.status_code == 200 and "<canvas" in page.text
    assert httpx.head(server).status_code == 200
    assert httpx.get(f"{server}/health").json() == {"status": "ok", "model": "cnn"}
    models = httpx.get(f"{server}/models").json()
    assert models["loaded"] == "cnn" and [m["name"] for m in models["models"]] == ["cnn"]

    jpeg = VARIANTS["dark on white, RGB JPEG"](x_test[1])
    for response in (httpx.post(f"{server}/predict", files={"image": ("two.jpg", jpeg, "image/jpeg")}),
                     httpx.post(f"{server}/predict", content=jpeg, headers={"content-type": "image/jpeg"})):
        assert response.status_code == 200
        body = response.json()
        assert body["digit"] == y_test[1] and body["model"] == "cnn" and body["milliseconds"] > 0
        assert len(body["probabilities"]) == 10 and body["seen"].startswith("data:image/png;base64,")


@pytest.mark.slow
@pytest.mark.parametrize("request_kwargs, status, message", [
    ({}, 400, "empty request"),
    ({"content": b"plain text, no image"}, 415, "not an image file"),
    ({"content": encode(Image.new("L", (50, 50), 255), "PNG")}, 422, "no digit found"),
    ({"content": b"\x89PNG" + bytes(6 * 1024 * 1024)}, 413, "image too large"),
    ({"files": {"image": ("big.png", b"\x89PNG" + bytes(6 * 1024 * 1024), "image/png")}}, 413, "image too large"),
    ({"content": (chunk for chunk in [bytes(1024 * 1024)] * 6)}, 413, "image too large"),  # no Content-Length
    ({"content": encode(Image.new("L", (6000, 5000), 255), "PNG")}, 413, "too large"),  # few bytes, many pixels
    ({"content": png_claiming(5000, 5000)}, 413, "5000x5000 pixels is too large"),  # refused before decoding
    ({"content": png_claiming(20000, 10000)}, 413, "more than 178,956,970 pixels is too large"),  # not "damaged"
    ({"content": EPS}, 415, "not an image file in a format read here; use PNG, JPEG, BMP, GIF, TIFF or WebP"),
    ({"content": dotted_page()}, 422, "no digit found"),
    ({"content": b"--x\r\n" + b'Content-Disposition: form-data; name="f"\r\n\r\nv\r\n--x\r\n' * 20,
      "headers": {"content-type": "multipart/form-data; boundary=x"}}, 400, "too many parts in the form"),
    ({"files": {"note": ("a.txt", b"", "text/plain")}, "data": {}}, 400, "empty request"),
    ({"content": b'--x\r\nContent-Disposition: form-data; name="field"\r\n\r\nvalue\r\n--x--\r\n',
      "headers": {"content-type": "multipart/form-data; boundary=x"}}, 400, "no file in the form"),
])
def test_bad_requests_get_a_4xx_json_error_and_the_server_keeps_serving(server, request_kwargs, status, message):
    response = httpx.post(f"{server}/predict", **request_kwargs)
    assert response.status_code == status and message in response.json()["error"]
    assert httpx.get(f"{server}/health").status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize("image", ["a float TIFF with an inf pixel", "a LAB TIFF"])
def test_images_that_once_gave_500_are_read(server, image):
    response = httpx.post(f"{server}/predict", content=DECODABLE[image][0]())
    assert response.status_code == 200 and response.json()["digit"] in range(10)


def chunked_upload(megabytes, multipart):
    """A body of `megabytes` MB sent in 1 MB chunks with no Content-Length, raw or as a form's file."""
    if multipart:
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n\r\n'
    for _ in range(megabytes):
        yield bytes(1024 * 1024)
    if multipart:
        yield b"\r\n--b--\r\n"


@pytest.mark.slow
@pytest.mark.parametrize("multipart", [False, True], ids=["raw body", "multipart"])
def test_a_chunked_upload_is_cut_off_at_the_limit(served, multipart):
    """No Content-Length: the server counts bytes as they arrive, stops reading at the limit, and keeps
    nothing on disk (a form is parsed in memory)."""
    headers = {"content-type": "multipart/form-data; boundary=b"} if multipart else {}
    with Watch(served.pid) as watch:
        start = time.perf_counter()
        response = httpx.post(f"{served.url}/predict", content=chunked_upload(50, multipart), headers=headers,
                              timeout=30)
        seconds = time.perf_counter() - start
    print(f"\n50 MB chunked upload ({'multipart' if multipart else 'raw'}): 413 in {seconds:.2f} s, "
          f"server RSS {watch.before_mb:.0f} -> peak {watch.peak_mb:.0f} MB")
    assert response.status_code == 413 and "image too large" in response.json()["error"]
    assert seconds < 10
    assert watch.growth_mb < 30, f"the server grew by {watch.growth_mb:.0f} MB for a refused upload"
    assert not [name for name in watch.open_files if name.startswith(str(served.tmpdir)) or "(deleted)" in name]
    assert not any(served.tmpdir.iterdir())
    assert httpx.get(f"{served.url}/health").status_code == 200


@pytest.mark.slow
def test_concurrent_large_images_are_decoded_a_few_at_a_time(served):
    """40 at once of the largest image allowed (4000x4000 RGBA, 70 KB as a PNG, 64 MB decoded and as much
    again while it is shrunk): at most DECODERS are decoded at a time, the others wait or get 503; memory
    stays bounded by that (before, these 40 took the server up by 4.4 GB)."""
    picture = np.full((3999, 3999, 4), 255, np.uint8)
    picture[800:3200, 1900:2100, :3] = 0
    large = encode(Image.fromarray(picture, "RGBA"), "PNG")
    assert len(large) < 100_000
    with Watch(served.pid) as watch, httpx.Client(timeout=60, limits=httpx.Limits(max_connections=40)) as client:
        with concurrent.futures.ThreadPoolExecutor(max_workers=40) as pool:
            responses = list(pool.map(lambda _: client.post(f"{served.url}/predict", content=large), range(40)))
    statuses = [response.status_code for response in responses]
    print(f"\n40 concurrent 4000x4000 images, {DECODERS} decoders: {statuses.count(200)} answered, "
          f"{statuses.count(503)} told 503; server RSS {watch.before_mb:.0f} -> peak {watch.peak_mb:.0f} MB")
    assert set(statuses) <= {200, 503} and statuses.count(200) >= DECODERS
    assert all(response.json()["digit"] == 1 for response in responses if response.status_code == 200)
    assert all(response.json()["error"].startswith("busy: ") for response in responses if response.status_code == 503)
    assert watch.growth_mb < 100 + 200 * DECODERS, f"the server grew by {watch.growth_mb:.0f} MB"
    assert httpx.post(f"{served.url}/predict", content=large, timeout=60).status_code == 200


def raw_request(url, path, host):
    """One request written by hand, with exactly the Host header a browser would send (None: no Host,
    which HTTP/1.0 allows)."""
    port = int(url.rsplit(":", 1)[1])
    lines = [f"GET {path} HTTP/1.0" if host is None else f"GET {path} HTTP/1.1"]
    lines += [] if host is None else [f"Host: {host}"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(("\r\n".join(lines + ["Connection: close", "", ""])).encode())
        response = b""
        while chunk := connection.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.slow
def test_only_requests_addressed_to_this_machine_are_answered(server):
    """DNS rebinding: a page at evil.example whose name is made to resolve to 127.0.0.1 sends its own name."""
    port = server.rsplit(":", 1)[1]
    for host in ["localhost", f"localhost:{port}", "127.0.0.1", f"127.0.0.1:{port}", f"[::1]:{port}"]:
        status, body = raw_request(server, "/health", host)
        assert status == 200 and json.loads(body) == {"status": "ok", "model": "cnn"}, host
    for host in ["evil.example", f"evil.example:{port}", f"127.0.0.1.nip.io:{port}", "localhost.evil.example", None]:
        status, body = raw_request(server, "/health", host)
        assert status == 400 and "refused: this server listens on a loopback address" in json.loads(body)["error"], host
    for path in ["/openapi.json", "/docs", "/redoc"]:
        assert raw_request(server, path, "localhost")[0] == 404, path


@pytest.mark.slow
def test_a_wrong_method_is_405(server):
    response = httpx.get(f"{server}/predict")
    assert response.status_code == 405 and "error" in response.json()


@pytest.mark.slow
def test_200_concurrent_predictions_are_all_answered_correctly(server, real_mnist, digits_model):
    """Correct: each answer is the model's own prediction for those bytes, made without the server."""
    _, _, x_test, _ = real_mnist
    images = [VARIANTS["dark on white, RGB JPEG"](x_test[i]) for i in range(20)]
    direct = SavedModelClassifier(digits_model / "cnn")
    expected = [int(direct.predict(prepare_bytes(image)[None, :, :, None]).argmax()) for image in images]
    with httpx.Client(limits=httpx.Limits(max_connections=50), timeout=60) as client:
        def one(i):
            start = time.perf_counter()
            response = client.post(f"{server}/predict", content=images[i % 20])
            return i, response.status_code, response.json().get("digit"), time.perf_counter() - start

        with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:  # at most 50 in flight
            results = list(pool.map(one, range(200)))
    assert all(status == 200 for _, status, _, _ in results)
    assert [digit for _, _, digit, _ in results] == [expected[i % 20] for i in range(200)]
    latencies = np.array([seconds for *_, seconds in results]) * 1000
    print(f"\n200 requests, 50 in flight: p50 {np.percentile(latencies, 50):.1f} ms, p99 {np.percentile(latencies, 99):.1f} ms")


def chromium_path():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def browser_page(url, model):
    """Headless Chromium on the page at `url`, once it names `model`; skipped (failed in CI) without Chromium."""
    if not chromium_path():
        message = "Debian's chromium is not installed (apt-get install chromium); .ci/run installs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 900, "height": 560})
            page.goto(url)
            page.wait_for_function(f"document.getElementById('model').textContent === 'model: {model}'", timeout=10_000)
            yield page
        finally:
            browser.close()


def arc(x, y, width, height, start, end, points):
    """Points along an ellipse's arc centred on (x, y), from `start` to `end` degrees (clockwise on screen)."""
    angles = np.radians(np.linspace(start, end, points))
    return [(x + width * np.cos(angle), y + height * np.sin(angle)) for angle in angles]


STROKES = {"1": [(140, 40), (140, 240)], "7": [(70, 60), (210, 60), (150, 240)],
           "3": arc(140, 88, 50, 45, 200, 450, 14) + arc(140, 183, 55, 52, -90, 150, 14),
           "5": [(200, 45), (100, 45), (92, 130)] + arc(140, 180, 60, 55, -120, 140, 16)}


def draw(page, points, pen=None, size=1.0):
    """Clear the pad, draw a polyline through `points` with mouse events (with the pen's width set to
    `pen` pixels, if given, and the drawing shrunk by `size` about the pad's centre), and wait for the
    page to show its answer."""
    page.click("#clear")
    if pen is not None:
        page.locator("#pen").evaluate("(slider, width) => { slider.value = width; }", pen)
    points = [(140 + (x - 140) * size, 140 + (y - 140) * size) for x, y in points]
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + points[0][0], box["y"] + points[0][1])
    page.mouse.down()
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        for step in range(1, 21):
            page.mouse.move(box["x"] + x0 + (x1 - x0) * step / 20, box["y"] + y0 + (y1 - y0) * step / 20)
    page.mouse.up()  # sends the finished drawing; the page is busy until its answer is shown
    page.wait_for_function("document.body.dataset.prediction !== undefined && !document.body.dataset.busy",
                           timeout=30_000)


@pytest.mark.slow
def test_drawing_on_the_page_shows_the_right_digit(server):
    """Headless Chromium draws a 1 and a 7 with mouse events; the page must read them."""
    with browser_page(server, "cnn") as page:
        assert not page.locator("#seen").is_visible() and page.locator("#unseen").is_visible(), \
            "before any drawing, an empty square, not a broken image"
        page.screenshot(path=str(ARTIFACTS / "page_before_drawing.png"))
        for digit in ("1", "7"):
            draw(page, STROKES[digit])
            page.screenshot(path=str(ARTIFACTS / f"page_drew_{digit}.png"))
            assert page.locator("#digit").inner_text() == digit
            assert page.locator("#seen").get_attribute("src").startswith("data:image/png")
            assert page.locator("#seen").is_visible() and not page.locator("#unseen").is_visible()


@pytest.fixture(scope="module")
def robust_served(robust_model, tmp_path_factory):
    """serve.py with no --model over a folder holding cnn and robust_cnn: it must choose robust_cnn."""
    with serving(robust_model, tmp_path_factory.mktemp("robust_server")) as server:
        yield server


@pytest.mark.slow
@pytest.mark.parametrize("pen", sorted(PENS))
def test_the_robust_model_reads_thin_and_thick_strokes_on_the_page(robust_served, pen):
    width, size = PENS[pen]
    with browser_page(robust_served.url, "robust_cnn") as page:
        for digit in ("3", "5"):
            draw(page, STROKES[digit], width, size)
            page.screenshot(path=str(ARTIFACTS / f"page_robust_{pen}_{digit}.png"))
            assert page.locator("#digit").inner_text() == digit, f"{pen} pen"


@pytest.mark.slow
def test_the_page_says_when_the_model_is_unsure(constant_models, tmp_path):
    with serving(constant_models, tmp_path, "--model", "undecided") as server, \
            browser_page(server.url, "undecided") as page:
        draw(page, STROKES["1"])
        reason = f"top probability below {100 * UNSURE_BELOW:g} %"
        assert page.locator("#unsure").inner_text() == f"unsure: {reason}"
        assert page.evaluate("document.body.dataset.unsure") == reason
        page.click("#clear")
        assert page.locator("#unsure").inner_text() == "" and page.evaluate("document.body.dataset.unsure") is None


def test_a_48_megapixel_phone_photo_is_read():
    """A JPEG decodes at a reduced size, so phone photos far above the other formats' limit are read."""
    import tracemalloc

    photo = Image.new("L", (8000, 6000), 235)
    photo.paste(0, (3800, 2500, 4200, 3700))  # a thick "1"
    data = encode(photo, "JPEG", quality=80)
    tracemalloc.start()
    seen = prepare_bytes(data, "photo.jpg")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seen.shape == (28, 28) and seen.max() > 0.9
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MB"


def test_a_form_is_read_whatever_the_case_of_its_type_and_with_an_rfc_5987_file_name(tmp_path):
    from fastapi.testclient import TestClient

    from mnist_lab.serving import create_app
    from mnist_lab.writer import export_savedmodel
    from models import REGISTRY

    model = REGISTRY["simple_cnn"].build()
    export_savedmodel(model, tmp_path / "simple_cnn")
    drawn = Image.new("L", (40, 40), 255)
    drawn.paste(0, (18, 6, 22, 34))
    png = encode(drawn, "PNG")
    body = (b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename*=UTF-8''%E2%9C%8F.png\r\n"
            b"Content-Type: image/png\r\n\r\n" + png + b"\r\n--b--\r\n")
    with TestClient(create_app(tmp_path / "simple_cnn", tmp_path)) as client:
        for content_type in ("multipart/form-data; boundary=b", "Multipart/Form-Data; boundary=b"):
            response = client.post("/predict", content=body, headers={"content-type": content_type})
            assert response.status_code == 200, response.text
            assert 0 <= response.json()["digit"] <= 9


def closed_by_server(connection):
    """Whether the server has closed `connection` (a read returns b"" or fails)."""
    connection.setblocking(False)
    try:
        return connection.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


@pytest.mark.slow
def test_slow_and_idle_connections_are_closed_at_their_deadline_and_the_server_still_answers(digits_model, tmp_path):
    with serving(digits_model, tmp_path, "--request-timeout", "2") as served:
        port = int(served.url.rsplit(":", 1)[1])
        idle, trickling = [], []
        for _ in range(100):
            idle.append(socket.create_connection(("127.0.0.1", port)))
            trickling.append(socket.create_connection(("127.0.0.1", port)))
            trickling[-1].sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n")
        answered = httpx.get(f"{served.url}/health", timeout=5)  # a prompt client is answered meanwhile
        assert answered.status_code == 200
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            for connection in trickling:  # a byte of the body now and then: never the whole request
                with contextlib.suppress(OSError):
                    connection.send(b"x")
            time.sleep(0.5)
        still_open = [connection for connection in idle + trickling if not closed_by_server(connection)]
        assert still_open == [], f"{len(still_open)} of 200 connections still open after 6 s"
        assert httpx.get(f"{served.url}/health", timeout=5).status_code == 200
        for connection in idle + trickling:
            connection.close()


@pytest.mark.slow
def test_names_the_terminal_cannot_show_or_that_hold_escapes_are_printed_escaped(digits_model, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(digits_model / "cnn", models / "\x1b[31mred")  # a folder named to recolour the terminal
    image = tmp_path / "chiffre_é.png"
    image.write_bytes(encode(bar(), "PNG"))
    done = subprocess.run([sys.executable, str(ROOT / "predict.py"), str(image), "--models-dir", str(models),
                           "--model", "\x1b[31mred"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONIOENCODING": "ascii"})
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "\x1b" not in done.stdout and done.stdout.startswith("model: \\x1b[31mred (chosen with --model)")
    assert done.stdout.splitlines()[1].startswith(f"{str(image)[:-len('é.png')]}\\xe9.png: ")


@pytest.mark.parametrize("across", [True, False], ids=["a 20000x20 strip", "a 20x20000 column"])
def test_a_digit_in_a_long_strip_is_found_not_called_blank(real_mnist, across):
    """Shrinking a 20000x20 strip to 1024 pixels long would leave a line of pixels: the strip is first cut
    down to the stretch that holds ink, so the digit is prepared as it would be on a small card."""
    digit = np.asarray(Image.fromarray(255 - real_mnist[0][0]).resize((20, 20)))  # dark on light, 20 px tall
    strip, card = np.full((20, 20000), 255, np.uint8), np.full((20, 60), 255, np.uint8)
    strip[:, 12000:12020], card[:, 20:40] = digit, digit
    if not across:
        strip, card = strip.T.copy(), card.T.copy()
    seen = prepare_bytes(encode(Image.fromarray(strip), "PNG"), "strip")
    np.testing.assert_allclose(seen, prepare_bytes(encode(Image.fromarray(card), "PNG")), atol=1e-6)


@pytest.mark.parametrize("kept", [0.95, 0.7, 0.4, 0.1])
def test_a_truncated_jpeg_is_called_damaged(kept):
    page = np.full((2000, 3000), 250, np.uint8)
    page[600:1400, 1400:1500] = 20  # a 1, big enough that the JPEG decodes at a reduced size
    for progressive in (False, True):
        data = encode(Image.fromarray(page), "JPEG", quality=90, progressive=progressive)
        with pytest.raises(ImageError, match="a damaged or unreadable image"):
            prepare_bytes(data[:int(len(data) * kept)], "cut.jpg")


def test_digits_written_side_by_side_are_unsure_and_one_digit_is_not(real_mnist):
    x_train = real_mnist[0]
    confident = np.eye(10)[3] * 0.99 + 0.001
    pair = np.concatenate([x_train[0], x_train[1]], axis=1)  # a 5 and a 0 side by side, as written in a row
    page = Image.fromarray(255 - np.pad(pair, 20)).resize((4 * (pair.shape[1] + 40), 4 * 68))
    seen = prepare_bytes(encode(page, "PNG"))
    assert unsure_reason(confident, seen) == "the ink is much wider than one digit: several side by side?"
    alone = Image.fromarray(255 - np.pad(x_train[0], 20)).resize((272, 272))
    assert unsure_reason(confident, prepare_bytes(encode(alone, "PNG"))) is None
