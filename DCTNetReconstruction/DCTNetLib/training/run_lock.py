"""One training run per run folder at a time: an exclusive lock held for the life of the process.

Two ``dctnet train`` runs writing into one folder would both exit 0 with their checkpoints and metrics interleaved.
:func:`lock_run_dir` takes an exclusive, non-blocking lock on ``RUN_DIR/.dctnet-run.lock`` (``flock`` on POSIX,
``msvcrt.locking`` on Windows) and keeps it until the process ends; the operating system releases it when the
process dies, even after ``kill -9``, so a crashed run never blocks the next one. The file holds the owner's
process id for the message a second run gets.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import IO

from ..errors import InputError
from ..io.atomic import display_path

__all__ = ["LOCK_NAME", "lock_run_dir"]

LOCK_NAME = ".dctnet-run.lock"
_HELD: dict[str, IO[str]] = {}  # run folder → its open, locked lock file (kept open: closing would unlock it)


def _try_lock(handle: IO[str]) -> bool:
    """Lock ``handle``'s file exclusively without waiting; False when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def lock_run_dir(run_dir: str | os.PathLike) -> None:
    """Hold the run folder's lock until this process ends (a second call for the same folder is a no-op).

    Raises:
        InputError: another process holds it (the message names the folder and that process).
    """
    key = os.path.realpath(run_dir)
    if key in _HELD:
        return
    path = Path(run_dir) / LOCK_NAME
    handle = open(path, "a+", encoding="utf-8")
    if not _try_lock(handle):
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise InputError(f"{display_path(run_dir)} is in use by another training run ({owner}); wait for it to end "
                         "or choose another --output folder")
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    _HELD[key] = handle
