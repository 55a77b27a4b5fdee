"""The web app behind `python serve.py`: a draw-a-digit page and a JSON prediction API.

    GET  /          the page: draw with mouse or finger, or upload an image
    POST /predict   an image (multipart upload or raw body) -> digit, probabilities, model, ms
    GET  /models    the trained models and which one is loaded
    GET  /health    liveness

The model is loaded once, when the app is made. Bad requests get a 4xx JSON `{"error": ...}`.
"""

import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException

from mnist_lab import store
from mnist_lab.config import MODELS_DIR
from mnist_lab.errors import first_line
from mnist_lab.predictor import DigitPredictor
from mnist_lab.preprocess import ImageError, ImageTooLarge
from mnist_lab.record import ModelRecord

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
PAGE = Path(__file__).with_name("static") / "index.html"


def error(status, message):
    return JSONResponse({"error": message}, status_code=status)


def too_large(size):
    return HTTPException(413, f"image too large: {size:,} bytes or more, at most {MAX_UPLOAD_BYTES:,}")


async def read_image(request):
    """The uploaded image's bytes, from a multipart form (first file) or the raw body."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES + 64 * 1024:
        raise too_large(int(declared))
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=1, max_fields=10, max_part_size=MAX_UPLOAD_BYTES + 1)
        except HTTPException as exc:
            if "maximum size" in str(exc.detail).lower():
                raise too_large(MAX_UPLOAD_BYTES + 1) from None
            raise
        uploads = [value for value in form.values() if hasattr(value, "read")]
        if not uploads:
            raise HTTPException(400, "no file in the form; send the image as a file field, e.g. image=@digit.png")
        data = await uploads[0].read()
    else:
        data = bytearray()
        async for chunk in request.stream():  # a body without Content-Length is cut off at the limit
            data += chunk
            if len(data) > MAX_UPLOAD_BYTES:
                raise too_large(len(data))
        data = bytes(data)
    if not data:
        raise HTTPException(400, "empty request; send an image as the body or as a multipart file")
    if len(data) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"image too large: {len(data):,} bytes, at most {MAX_UPLOAD_BYTES:,}")
    return data


def create_app(model_folder, models_dir=MODELS_DIR):
    predictor = DigitPredictor(model_folder)
    app = FastAPI(title="MNIST digit reader", docs_url=None, redoc_url=None)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected_error(request, exc):  # still JSON, so the page can show it
        return error(500, f"internal error ({type(exc).__name__}): {first_line(exc)}")

    @app.get("/")
    async def page():
        return FileResponse(PAGE, media_type="text/html")

    @app.post("/predict")
    async def predict(request: Request):
        start = time.perf_counter()
        data = await read_image(request)
        try:
            prediction = await run_in_threadpool(predictor.predict, data, "upload")
        except ImageTooLarge as exc:
            return error(413, str(exc).removeprefix("upload: "))
        except ImageError as exc:
            return error(415 if "no digit" not in str(exc) else 422, str(exc).removeprefix("upload: "))
        return {**prediction.to_dict(), "model": predictor.name,
                "milliseconds": round(1000 * (time.perf_counter() - start), 2),
                "seen": prediction.seen_png()}

    @app.get("/models")
    async def models():
        records = {folder.name: ModelRecord.load(folder) for folder in store.model_folders(models_dir)}
        found = [{"name": name, "test_accuracy": record.test_accuracy if record else None}
                 for name, record in records.items()]
        return {"loaded": predictor.name, "models": found}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": predictor.name}

    return app
