"""Shared command-line plumbing: one-line argument errors, flag types, quiet TensorFlow start-up."""

import argparse
import errno
import os
import socket
import sys

from mnist_lab.errors import UserError


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is reported on one line instead of usage plus error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def whole_number(minimum):
    """An argparse type: a whole number no smaller than `minimum`."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text}")
        return value

    return parse


positive_int = whole_number(1)
non_negative_int = whole_number(0)


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


def counted(number, noun):
    """'1 epoch', '3 epochs': a count with its noun in the right number."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


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


def quiet_tensorflow_import():
    """Import TensorFlow with its native start-up lines hidden.

    TF 2.21 writes oneDNN and CUDA notices to stderr from C++ before logging is configured, so
    TF_CPP_MIN_LOG_LEVEL cannot silence them; they would bury our one-line error messages.

    It also turns on TensorFlow's oneDNN kernels, which TF enables by itself only on CPUs with
    AVX-512 VNNI, BF16 or AMX; on an AVX2-only EPYC, deep_cnn's ops took 2.6 times less core time
    with them than with TF's own Eigen kernels (docs/speed.md). TF_ENABLE_ONEDNN_OPTS=0 still wins.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import keras  # noqa: F401
        import tensorflow

        tensorflow.config.list_physical_devices()  # device discovery logs its "no CUDA" line now
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
        os.close(devnull)


def run(main):
    """Run an entry point's main(); turn a UserError or Ctrl-C into one line and an exit code."""
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # progress shows at once even through a pipe or tee
    try:
        return main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        # Writers build in hidden staging folders and swap in whole, so a full disk leaves the old
        # model as it was; a killed training run's backup resumes.
        where = f" {error.filename}" if error.filename else ""
        print(f"error: cannot write{where}: {error.strerror}; free some space or choose another folder, "
              "then run the same command again", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
