"""Benchmark `POST /predict`: latency one request at a time, and throughput under 50 clients.

    python benchmarks/serve_latency.py                 # starts serve.py with its default model
    python benchmarks/serve_latency.py --model cnn --requests 2000
    python benchmarks/serve_latency.py --runtime savedmodel  # the model's SavedModel on TensorFlow

Starts `python serve.py` on a free loopback port, warms it up, then measures from a separate
process: (1) one request at a time, p50 and p99 latency; (2) `--clients` concurrent clients
(asyncio + httpx, one connection each), p50 and p99 latency and requests per second; and the
server's resident memory after its first 100 requests. The image is
an MNIST test digit drawn large as a JPEG, so preprocessing is part of every request. Prints a
Markdown table and writes it with the raw figures to reports/serve_latency.{md,json}.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from mnist_lab.data import load_mnist
from mnist_lab.flags import RUNTIMES, ArgumentParser, free_port, positive_int
from mnist_lab.machine import cpu_name

ROOT = Path(__file__).resolve().parents[1]


def sample_image():
    """An MNIST test digit drawn 10x larger, dark on white, as a JPEG."""
    import io

    from PIL import Image

    digit = load_mnist(log=lambda *_: None).x_test[0]
    big = Image.fromarray(255 - digit).resize((280, 280), Image.Resampling.BICUBIC).convert("RGB")
    buffer = io.BytesIO()
    big.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def resident_memory(pid):
    """A process's resident set size in bytes (VmRSS), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for process {pid}")


def percentiles(seconds):
    ms = np.array(seconds) * 1000
    return round(float(np.percentile(ms, 50)), 2), round(float(np.percentile(ms, 99)), 2)


def sequential(url, image, count):
    latencies = []
    with httpx.Client(timeout=30) as client:
        for _ in range(count):
            start = time.perf_counter()
            client.post(f"{url}/predict", content=image).raise_for_status()
            latencies.append(time.perf_counter() - start)
    return latencies


async def concurrent(url, image, count, clients):
    latencies, queue = [], asyncio.Queue()
    for index in range(count):
        queue.put_nowait(index)

    async def client_loop():
        async with httpx.AsyncClient(timeout=60) as client:
            while not queue.empty():
                queue.get_nowait()
                start = time.perf_counter()
                (await client.post(f"{url}/predict", content=image)).raise_for_status()
                latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(clients)))
    return latencies, time.perf_counter() - start


def main():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model to serve (default: serve.py's choice: robust_cnn once trained, else the best recorded)")
    parser.add_argument("--requests", type=positive_int, default=1000,
                        help="requests in the concurrent phase (default: 1000)")
    parser.add_argument("--clients", type=positive_int, default=50, help="concurrent clients (default: 50)")
    parser.add_argument("--runtime", choices=RUNTIMES,
                        help="serve.py's --runtime (default: serve.py's choice: onnx where the model has model.onnx)")
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, str(ROOT / "serve.py"), "--port", str(port)] + (["--model", args.model] if args.model else [])
    command += ["--runtime", args.runtime] if args.runtime else []
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        served = server.stdout.readline().strip()
        print(served)
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{url}/health", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if server.poll() is not None or time.monotonic() > deadline:
                    sys.exit("error: serve.py did not start; run it alone to see why")
                time.sleep(0.2)
        image = sample_image()
        sequential(url, image, 100)  # warm-up
        resident_mb = round(resident_memory(server.pid) / 2**20)
        start = time.perf_counter()
        one_p50, one_p99 = percentiles(sequential(url, image, 300))
        one_rate = round(300 / (time.perf_counter() - start), 1)
        latencies, seconds = asyncio.run(concurrent(url, image, args.requests, args.clients))
        many_p50, many_p99 = percentiles(latencies)
        rate = round(args.requests / seconds, 1)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()

    cpu = cpu_name()
    result = {"server": served, "machine": f"{cpu}, {os.cpu_count()} cores",
              "resident_mb_after_100_requests": resident_mb,
              "one_at_a_time": {"requests": 300, "p50_ms": one_p50, "p99_ms": one_p99, "requests_per_second": one_rate},
              "concurrent": {"clients": args.clients, "requests": args.requests, "p50_ms": many_p50,
                             "p99_ms": many_p99, "requests_per_second": rate}}
    table = (f"| load | requests | p50 | p99 | requests/s |\n|---|---:|---:|---:|---:|\n"
             f"| 1 client, one request at a time | 300 | {one_p50} ms | {one_p99} ms | {one_rate} |\n"
             f"| {args.clients} concurrent clients | {args.requests} | {many_p50} ms | {many_p99} ms | {rate} |")
    table += f"\n\nresident memory of serve.py after 100 requests: {resident_mb} MB"
    print(table)
    reports = ROOT / "reports"
    reports.mkdir(exist_ok=True)
    (reports / "serve_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    (reports / "serve_latency.md").write_text(f"{served}\n\n{table}\n")


if __name__ == "__main__":
    main()
