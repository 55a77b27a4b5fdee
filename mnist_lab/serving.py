"""The web app behind `python serve.py`: a draw-a-digit page and a JSON prediction API.

    GET  /          the page: draw with mouse or finger, or upload an image
    POST /predict   an image (multipart upload or raw body) -> digit, probabilities, unsure (and why), model, ms
    GET  /models    the trained models and which one is loaded
    GET  /health    liveness

The model is loaded once, when the app is made. Bad requests get a 4xx JSON `{"error": ...}`.
What one request may cost is bounded whatever it sends: the body is counted as it streams in and
refused past the limit (with or without Content-Length), a form is parsed in memory (nothing goes
to a temporary file), and a few images are decoded at a time (503 when the wait is too long). A
connection that takes longer than its deadline to send a whole request is closed (RequestDeadline).
"""

import asyncio
import ipaddress
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import H11Protocol

from mnist_lab import preprocess, reader
from mnist_lab.config import MODELS_DIR, REQUEST_SECONDS
from mnist_lab.errors import ModelError, first_line
from mnist_lab.predictor import DigitPredictor
from mnist_lab.preprocess import ImageError, ImageTooLarge
from mnist_lab.record import ModelRecord

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
FORM_ALLOWANCE = 64 * 1024  # a multipart body's boundaries, headers and small fields around the image
MAX_FORM_PARTS = 16
# A decode holds up to MAX_PIXELS * 4 bytes (64 MB), twice that while Pillow shrinks an image with alpha:
# a few at once bound the memory, the rest wait. They run on threads of their own, so the memory a
# thread's allocator keeps after a decode is kept by those few threads only, not by every worker thread.
DECODERS = min(4, os.cpu_count() or 1)
DECODE_WAIT_SECONDS = 5  # an image waits this long for a decoder, then gets 503
PAGE = Path(__file__).with_name("static") / "index.html"


class RequestDeadline(H11Protocol):
    """uvicorn's HTTP/1.1 connection, with a deadline: from connecting, and again from each answer, a
    client has `request_seconds` to send a whole request (headers and body), else the connection is
    closed. So slow or idle clients cannot hold the server's connections however many they open;
    uvicorn alone closes only idle ones, and only after a first answer."""

    request_seconds = REQUEST_SECONDS

    def connection_made(self, transport):
        super().connection_made(transport)
        self._deadline = self.loop.call_later(self.request_seconds, self._expire)

    def on_response_complete(self):
        super().on_response_complete()
        self._deadline.cancel()
        self._deadline = self.loop.call_later(self.request_seconds, self._expire)

    def connection_lost(self, exc):
        self._deadline.cancel()
        super().connection_lost(exc)

    def _expire(self):
        waiting = self.cycle is None or self.cycle.more_body or self.cycle.response_complete
        if waiting and not self.transport.is_closing():  # else a whole request is being answered
            self.transport.close()


def error(status, message, headers=None):
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def too_large(size):
    # Connection: close, so the server stops reading the rest of an upload it has refused.
    return HTTPException(413, f"image too large: {size:,} bytes or more, at most {MAX_UPLOAD_BYTES:,}",
                         headers={"Connection": "close"})


async def read_body(request, limit):
    """The request body, counted as it streams in: past `limit` bytes the rest is never read."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large(int(declared))
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large(len(body))
    except ClientDisconnect:
        raise HTTPException(400, "the client disconnected before the end of the body") from None
    return body


def first_file(body, content_type):
    """The first file part of a multipart/form-data body, parsed in memory."""
    _, options = parse_options_header(content_type)
    if not options.get(b"boundary"):
        raise HTTPException(400, "a multipart body without a boundary in its Content-Type")
    part = {"headers": [], "field": b"", "value": b"", "is_file": False, "data": None}
    found = []
    count = 0

    def on_part_begin():
        nonlocal count
        count += 1
        if count > MAX_FORM_PARTS:
            raise HTTPException(400, f"too many parts in the form (at most {MAX_FORM_PARTS}); send one image file")
        part.update(headers=[], field=b"", value=b"", is_file=False, data=None)

    def on_header_field(data, start, end):
        part["field"] += data[start:end]

    def on_header_value(data, start, end):
        part["value"] += data[start:end]

    def on_header_end():
        part["headers"].append((part["field"].lower(), part["value"]))
        part.update(field=b"", value=b"")

    def on_headers_finished():
        disposition = dict(part["headers"]).get(b"content-disposition", b"")
        # filename= or RFC 5987's filename*= (which parse_options_header drops)
        part["is_file"] = re.search(rb";\s*filename\*?\s*=", disposition, re.IGNORECASE) is not None and not found
        part["data"] = bytearray() if part["is_file"] else None

    def on_part_data(data, start, end):
        if part["data"] is not None:  # only the first file is kept; other fields are skipped
            part["data"] += data[start:end]

    def on_part_end():
        if part["is_file"]:
            found.append(part["data"])

    callbacks = {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                 "on_header_value": on_header_value, "on_header_end": on_header_end,
                 "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
                 "on_part_end": on_part_end}
    try:
        parser = MultipartParser(options[b"boundary"], callbacks)
        parser.write(bytes(body))
        parser.finalize()
    except FormParserError as exc:
        raise HTTPException(400, f"a malformed multipart body ({first_line(exc)})") from None
    if not found:
        raise HTTPException(400, "no file in the form; send the image as a file field, e.g. image=@digit.png")
    return found[0]


async def read_image(request):
    """The uploaded image's bytes, from a multipart form (first file) or the raw body."""
    if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):  # case-insensitive
        data = first_file(await read_body(request, MAX_UPLOAD_BYTES + FORM_ALLOWANCE),
                          request.headers["content-type"])
    else:
        data = await read_body(request, MAX_UPLOAD_BYTES)
    if not data:
        raise HTTPException(400, "empty request; send an image as the body or as a multipart file")
    if len(data) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"image too large: {len(data):,} bytes, at most {MAX_UPLOAD_BYTES:,}")
    return bytes(data)


def names_this_machine(host_header):
    """Whether a Host header (any port) names the loopback interface: localhost, 127.x.x.x or [::1]."""
    host = host_header.strip().lower()
    if host.startswith("["):
        host, bracket, port = host[1:].partition("]")
        if not bracket or (port and not (port.startswith(":") and port[1:].isdigit())):
            return False
    else:
        host, colon, port = host.partition(":")
        if colon and not port.isdigit():
            return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LoopbackHostsOnly:
    """Refuse requests whose Host header names anything but this machine.

    A server on 127.0.0.1 is still reachable from a browser: a web page whose own name is made to
    resolve to 127.0.0.1 (DNS rebinding) could read its answers. Such requests carry that page's name
    in their Host header, so they are refused with 400."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if not names_this_machine(host):
                response = error(400, f"Host header {host[:100]!r} refused: this server listens on a loopback "
                                 "address and answers only requests addressed to localhost, 127.0.0.1 or [::1]",
                                 headers={"Connection": "close"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(model, models_dir=MODELS_DIR, host=None, runtime="savedmodel"):
    """The app answering with `model`: a DigitPredictor, or a model folder to load on `runtime`. `host` is
    the address it will listen on: if it is a loopback address, requests addressed (Host header) to
    any other name are refused."""
    predictor = model if isinstance(model, DigitPredictor) else DigitPredictor(model, runtime)
    app = FastAPI(title="MNIST digit reader", docs_url=None, redoc_url=None, openapi_url=None)
    if host is not None and names_this_machine(host if ":" not in host else f"[{host}]"):
        app.add_middleware(LoopbackHostsOnly)
    decode_slots = anyio.Semaphore(DECODERS)
    decoding_threads = ThreadPoolExecutor(DECODERS, thread_name_prefix="decode")

    async def prepare(data):
        with anyio.move_on_after(DECODE_WAIT_SECONDS) as waiting:
            await decode_slots.acquire()
        if waiting.cancelled_caught:
            raise HTTPException(503, f"busy: {DECODERS} images are being decoded and more are waiting; "
                                     "try again in a few seconds")
        try:
            return await asyncio.get_running_loop().run_in_executor(decoding_threads, preprocess.prepare_bytes,
                                                                    data, "upload")
        finally:
            decode_slots.release()

    @app.exception_handler(HTTPException)
    async def http_error(request, exc):
        return error(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def unexpected_error(request, exc):  # still JSON, so the page can show it
        return error(500, f"internal error ({type(exc).__name__}): {first_line(exc)}")

    @app.api_route("/", methods=["GET", "HEAD"])  # HEAD: what a link checker or a load balancer asks
    async def page():
        return FileResponse(PAGE, media_type="text/html")

    @app.post("/predict")
    async def predict(request: Request):
        start = time.perf_counter()
        data = await read_image(request)
        try:
            seen = await prepare(data)
            prediction = await run_in_threadpool(predictor.predict_prepared, seen)
        except ImageTooLarge as exc:
            return error(413, str(exc).removeprefix("upload: "))
        except ImageError as exc:
            return error(415 if "no digit" not in str(exc) else 422, str(exc).removeprefix("upload: "))
        except ModelError as exc:
            return error(500, str(exc).removeprefix("upload: "))
        return {**prediction.to_dict(), "model": predictor.name,
                "milliseconds": round(1000 * (time.perf_counter() - start), 2),
                "seen": prediction.seen_png()}

    @app.get("/models")
    async def models():
        records = {folder.name: ModelRecord.load(folder) for folder in reader.model_folders(models_dir)}
        found = [{"name": name, "test_accuracy": record.test_accuracy if record else None}
                 for name, record in records.items()]
        return {"loaded": predictor.name, "models": found}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": predictor.name}

    return app
