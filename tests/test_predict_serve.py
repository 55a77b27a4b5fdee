"""Your own digits: preprocessing, predict.py, the server and its page in a real browser.

A cnn trained briefly on real MNIST (about 98 %) reads the digits; tests that need it are skipped,
saying so, when MNIST is not cached (CI caches it first).
"""

import concurrent.futures
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from mnist_lab.cli import free_port
from mnist_lab.data.pipeline import to_model_input
from mnist_lab.preprocess import ImageError, prepare_bytes
from mnist_lab.store import SavedModelClassifier
from tests.conftest import ROOT

ARTIFACTS = ROOT / "reports" / "test_artifacts"


@pytest.fixture(scope="session")
def digits_model(real_mnist, tmp_path_factory):
    """A models folder holding a cnn trained for 2 epochs on 20000 real digits, tested on all 10000."""
    from mnist_lab.config import TrainConfig
    from mnist_lab.training import train
    from tests.conftest import write_idx_dataset

    data_dir = write_idx_dataset(tmp_path_factory.mktemp("mnist"), real_mnist)
    models = tmp_path_factory.mktemp("models")
    train(TrainConfig(model="cnn", epochs=2, validation_size=40000, data_dir=str(data_dir),
                      output=str(models / "cnn"), verbose=0), log=lambda *_: None)
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


def test_what_is_not_a_digit_is_named():
    with pytest.raises(ImageError, match="no digit found"):
        prepare_bytes(encode(Image.new("RGB", (100, 80), (240, 240, 240)), "PNG"))
    with pytest.raises(ImageError, match="not an image file"):
        prepare_bytes(b"%PDF-1.4 not an image")
    with pytest.raises(ImageError, match="damaged or unreadable"):
        prepare_bytes(encode(Image.new("RGB", (200, 200), "white"), "PNG")[:120])


def run_script(*args):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_predict_reads_good_files_and_names_bad_ones(real_mnist, digits_model, tmp_path):
    _, _, x_test, y_test = real_mnist
    good = tmp_path / "seven.jpg"
    good.write_bytes(VARIANTS["dark on white, RGB JPEG"](x_test[0]))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "blank.png").write_bytes(encode(Image.new("L", (64, 64), 255), "PNG"))
    done = run_script("predict.py", good, tmp_path / "notes.txt", tmp_path / "blank.png", tmp_path / "gone.png",
                      "/proc/self/mem", tmp_path, good, "--models-dir", digits_model, "--show", tmp_path / "shown")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stdout.splitlines()[0].startswith("model: cnn (best test accuracy on the full test set, ")
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
def test_predict_with_nothing_trained_says_what_to_run(tmp_path):
    image = tmp_path / "x.png"
    image.write_bytes(encode(Image.new("L", (8, 8)), "PNG"))
    done = run_script("predict.py", image, "--models-dir", tmp_path / "none")
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: no trained models in {tmp_path / 'none'}/; train one first, e.g. `python train.py --model cnn`"


@pytest.fixture(scope="module")
def server(digits_model, tmp_path_factory):
    """`python serve.py` for real, on a free loopback port."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("server") / "server.log", "w")  # a file: a pipe nobody reads could fill
    process = subprocess.Popen([sys.executable, str(ROOT / "serve.py"), "--models-dir", str(digits_model),
                                "--port", str(port)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert process.poll() is None, Path(log.name).read_text()
        assert time.monotonic() < deadline, "the server did not come up"
        time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(timeout=30)
    log.close()
    assert "Traceback" not in Path(log.name).read_text(), "the server logged a crash"


@pytest.mark.slow
def test_the_endpoints_answer(server, real_mnist):
    _, _, x_test, y_test = real_mnist
    page = httpx.get(server)
    assert page.status_code == 200 and "<canvas" in page.text
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
    ({"files": {"note": ("a.txt", b"", "text/plain")}, "data": {}}, 400, "empty request"),
    ({"content": b'--x\r\nContent-Disposition: form-data; name="field"\r\n\r\nvalue\r\n--x--\r\n',
      "headers": {"content-type": "multipart/form-data; boundary=x"}}, 400, "no file in the form"),
])
def test_bad_requests_get_a_4xx_json_error_and_the_server_keeps_serving(server, request_kwargs, status, message):
    response = httpx.post(f"{server}/predict", **request_kwargs)
    assert response.status_code == status and message in response.json()["error"]
    assert httpx.get(f"{server}/health").status_code == 200


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


@pytest.mark.slow
def test_drawing_on_the_page_shows_the_right_digit(server):
    """Headless Chromium draws a 1 and a 7 with mouse events; the page must read them."""
    if not chromium_path():
        message = "Debian's chromium is not installed (apt-get install chromium); .ci/run installs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    strokes = {"1": [(140, 40), (140, 240)], "7": [(70, 60), (210, 60), (150, 240)]}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 900, "height": 560})
            page.goto(server)
            page.wait_for_function("document.getElementById('model').textContent === 'model: cnn'", timeout=10_000)
            assert not page.locator("#seen").is_visible() and page.locator("#unseen").is_visible(), \
                "before any drawing, an empty square, not a broken image"
            page.screenshot(path=str(ARTIFACTS / "page_before_drawing.png"))
            box = page.locator("#pad").bounding_box()
            for digit, points in strokes.items():
                page.click("#clear")
                page.mouse.move(box["x"] + points[0][0], box["y"] + points[0][1])
                page.mouse.down()
                for (x0, y0), (x1, y1) in zip(points, points[1:]):
                    for step in range(1, 21):
                        page.mouse.move(box["x"] + x0 + (x1 - x0) * step / 20, box["y"] + y0 + (y1 - y0) * step / 20)
                page.mouse.up()  # sends the finished drawing; the page is busy until its answer is shown
                page.wait_for_function("document.body.dataset.prediction !== undefined && !document.body.dataset.busy",
                                       timeout=30_000)
                page.screenshot(path=str(ARTIFACTS / f"page_drew_{digit}.png"))
                assert page.locator("#digit").inner_text() == digit
                assert page.locator("#seen").get_attribute("src").startswith("data:image/png")
                assert page.locator("#seen").is_visible() and not page.locator("#unseen").is_visible()
        finally:
            browser.close()
