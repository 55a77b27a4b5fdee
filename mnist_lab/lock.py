"""One writer per model folder: a lock beside it, `.cnn.lock`, held for the whole run.

It is a flock, which the kernel releases however the process ends, so a killed run never leaves a
stale lock; the file names its holder while held and is removed when the run ends.
"""

import fcntl
import os
import shlex
import sys
import time
from pathlib import Path

from mnist_lab.errors import UserError


def lock_path(output):
    return output.parent / f".{output.name}.lock"


class OutputLock:
    """An exclusive, non-blocking lock on a model folder for the length of a `with` block.

    The lock file names its holder while held and is removed when the block ends.
    """

    def __init__(self, output, flag="--output"):
        self.output = Path(output)
        self.path = lock_path(self.output)
        self.flag = flag  # the flag that chooses another folder, for the message

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            self._handle = open(self.path, "a+")
            try:
                fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._handle.seek(0)
                holder = self._handle.read().strip() or "another process"
                self._handle.close()
                raise UserError(f"{self.output} is being written by another run ({holder}); wait for it "
                                f"to finish or choose another {self.flag}") from None
            try:  # the holder before us may have removed the file we opened: then lock the new one
                if os.stat(self.path).st_ino == os.fstat(self._handle.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            self._handle.close()
        self._handle.truncate(0)
        self._handle.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                           f"{shlex.join([os.path.basename(sys.executable), *sys.argv])}")
        self._handle.flush()
        return self

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)  # while still held: nobody can lock the file we remove
        self._handle.close()  # closing releases the flock


def is_locked(output):
    """Whether some process holds the lock on this model folder right now."""
    try:
        handle = open(lock_path(Path(output)))
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False
