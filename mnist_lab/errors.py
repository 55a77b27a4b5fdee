"""Errors a user can fix. Entry points print them as one line on stderr and exit non-zero."""


def first_line(error, limit=200):
    """An exception's message as one short line (its type name if it has none), for one-line errors."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


class UserError(Exception):
    """Something the user supplied (a flag, a file, a folder) cannot work; the message says why."""


class DataError(UserError):
    """A dataset file is missing, malformed, or not what it claims to be."""


class ModelError(UserError):
    """A saved model cannot be loaded or does not fit the MNIST input."""
