"""Small helpers for what people and other programs read: counts in words, JSON files written whole."""

import json
import os
from pathlib import Path


def counted(number, noun):
    """'1 epoch', '3 epochs': a count with its noun in the right number."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def write_json(data, path):
    """Write `data` as JSON so that a reader sees the old file or the new one, never half of it."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(partial, path)
