"""What every command does first and last: start TensorFlow quietly, and turn a user's mistake into
one line and an exit code."""

import contextlib
import errno
import os
import sys
import signal
import threading
import warnings

from mnist_lab.errors import UserError


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
    with native_output_hidden():
        import keras  # noqa: F401
        import tensorflow

        tensorflow.config.list_physical_devices()  # device discovery logs its "no CUDA" line now


@contextlib.contextmanager
def native_output_hidden(stdout=False):
    """While it lasts, what native code (and Python's warnings) write to stderr, and with `stdout` to
    stdout too, goes nowhere: converters and runtimes print notices no log level reaches."""
    streams = (1, 2) if stdout else (2,)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in streams}
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in streams:
        os.dup2(devnull, fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


def stop_on_sigterm(signum, frame):
    """SIGTERM (`kill`, a job scheduler) stops like Ctrl-C: with a line saying how to go on, not silently."""
    raise KeyboardInterrupt


def printable(text):
    """`text` with control characters escaped: a file or folder named with terminal escapes cannot
    recolour or rewrite the user's terminal through our messages."""
    return "".join(character if character.isprintable() else repr(character)[1:-1] for character in text)


def run(main, sigterm_stops=False):
    """Run an entry point's main(); turn a UserError, a missing package or Ctrl-C into one line and an exit
    code. `sigterm_stops`: SIGTERM too, as Ctrl-C (train.py and the search, which resume)."""
    if sigterm_stops and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop_on_sigterm)
    # A name the terminal's encoding cannot show (PYTHONIOENCODING=ascii) is escaped, never a crash.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True, errors="backslashreplace")  # progress shows at once in a pipe
    if hasattr(sys.stderr, "reconfigure"):
        sys.stderr.reconfigure(errors="backslashreplace")
    try:
        return main()
    except UserError as error:
        print(f"error: {printable(str(error))}", file=sys.stderr)
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
    except ModuleNotFoundError as error:  # the project's packages are not installed for this Python
        print(f"error: {error.name} is not installed for {sys.executable}; activate the project's virtual "
              "environment (`. .venv/bin/activate`) or install the project there (`python -m pip install -e .`)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to go on where it stopped (a training run or search "
              "resumes from its last completed epoch or trial)", file=sys.stderr)
        return 130
