"""Small helpers for what people and other programs read: counts in words, JSON files written whole."""

import json
import os
from pathlib import Path


def counted(number, noun):
    """'1 epoch', '3 epochs': a count with its noun in the right number."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def write_json(data, path):
    """Write `data` as JSON so that a reader sees the old file or the new one, never half of it."""
    write_text(json.dumps(data, indent=2) + "\n", path)


def write_text(text, path):
    """Write `text` to `path` whole or not at all: a full disk leaves the previous file, not an empty one."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        partial.write_text(text)
        os.replace(partial, path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror, str(path)) from None  # named as the user knows it
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
