"""The run folder (``--output`` of ``dctnet train`` / ``train-cdm``): made once, never overwritten by accident,
and used by one run at a time.

Two ``dctnet train`` runs writing into one folder would both exit 0 with their checkpoints and metrics interleaved.
:func:`lock_run_dir` takes an exclusive, non-blocking lock on ``RUN_DIR/.dctnet-run.lock`` (``flock`` on POSIX,
``msvcrt.locking`` on Windows) and keeps it until the process ends; the operating system releases it when the
process dies, even after ``kill -9``, so a crashed run never blocks the next one. The file holds the owner's
process id for the message a second run gets.
"""

from __future__ import annotations

import errno
import json
import os
import warnings
from pathlib import Path
from typing import IO, Any

from ..errors import InputError, OutputError
from ..io.atomic import check_writable_dir, display_path
from .stop_request import claim_run_dir, running_run

__all__ = ["RUN_FILES", "CHECKPOINT_FILES", "LOCK_NAME", "prepare_run_dir", "lock_run_dir", "saved_run_config",
           "training_run_files", "honour_resume"]

# Files that mark a folder as holding a run (refused without --resume/--overwrite).
RUN_FILES = ("latest.pt", "best.pt", "config.json", "run.json", "metrics.jsonl")
# What a run has to lose: without one of these, a folder holds only the stub of a run that stopped in its first epoch.
CHECKPOINT_FILES = ("latest.pt", "best.pt")
# Config keys that limit one invocation, not the run: a resumed run does not inherit them.
_INVOCATION_LIMITS = ("max_steps", "stop_after_steps")
# The lock file that keeps a second run out (:func:`lock_run_dir`).
LOCK_NAME = ".dctnet-run.lock"
_HELD: dict[str, IO[str]] = {}  # run folder → its open, locked lock file (kept open: closing would unlock it)


def prepare_run_dir(run_dir: str | Path, resume: bool, overwrite: bool) -> Path:
    """Create the run folder, refusing to silently overwrite an existing run.

    Args:
        run_dir: the ``--output`` folder.
        resume: continue the run found there (``latest.pt`` must exist).
        overwrite: delete that run's files (only :data:`RUN_FILES`, nothing else) and start again.

    The folder stays locked for this process (:func:`lock_run_dir`): a second run into it is refused
    while this one lives.

    Raises:
        InputError: a run exists and neither flag is given, both flags are given, ``resume`` finds nothing, or
            another run is using the folder (its lock, or a live ``RUNNING.json``: :mod:`.stop_request`).
        OutputError: the folder cannot be created or written.
    """
    run_dir = Path(run_dir)
    if resume and overwrite:
        raise InputError("--resume and --overwrite exclude each other")
    if running_run(run_dir) is not None:  # before anything is deleted: claim_run_dir below says who holds it
        claim_run_dir(run_dir)
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if resume:
        if not (run_dir / "latest.pt").is_file():
            raise InputError(f"--resume: no checkpoint to resume in {run_dir} (latest.pt is missing)")
    elif existing and not overwrite:
        if _checkpoints(run_dir):
            raise InputError(
                f"{run_dir} already holds a training run ({', '.join(existing)}); add --resume to continue it, "
                "--overwrite to start it again, or choose another --output folder"
            )
        warnings.warn(f"{display_path(run_dir)} holds only the start of a run that stopped before its first "
                      f"checkpoint ({', '.join(existing)}); starting the run afresh there", stacklevel=2)
        overwrite = True  # its stub files go (after the lock is taken, below); nothing else in the folder does
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the run folder {display_path(run_dir)}: {exc.strerror or exc}") from exc
    check_writable_dir(run_dir)
    lock_run_dir(run_dir)  # before anything of an earlier run is removed: a run still writing there is refused
    if overwrite:
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
    claim_run_dir(run_dir)  # this process trains here now (RUNNING.json: who, for the Slicer module)
    return run_dir


def _checkpoints(run_dir: Path) -> list[str]:
    return [name for name in CHECKPOINT_FILES if (run_dir / name).exists()]


def honour_resume(run_dir: str | Path, resume: bool) -> bool:
    """Whether ``--resume`` can be honoured: False, with a warning, for the stub of a run that crashed in its first
    epoch (its config and log, no checkpoint: nothing to continue, so the run starts afresh instead of refusing).
    A folder without any run file (a typo?) or with ``best.pt`` but no ``latest.pt`` is still refused by
    :func:`prepare_run_dir`."""
    run_dir = Path(run_dir)
    stub = [name for name in RUN_FILES if (run_dir / name).exists()]
    if not resume or not stub or _checkpoints(run_dir):
        return resume
    warnings.warn(f"--resume: {display_path(run_dir)} holds no checkpoint yet ({', '.join(stub)}: the run stopped "
                  "before its first one); starting the run afresh", stacklevel=2)
    return False


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


def training_run_files(folder: str | Path) -> list[str]:
    """The files in ``folder`` only a training run writes (checkpoints, its config and run record); empty when
    ``folder`` is not a run folder (``metrics.jsonl`` alone is not a mark: evaluations write one too)."""
    return [name for name in RUN_FILES if name != "metrics.jsonl" and (Path(folder) / name).exists()]


def saved_run_config(run_dir: str | Path) -> dict[str, Any] | None:
    """The resolved config a run was started with (its ``config.json``) without the limits of that invocation
    (``max_steps``, ``stop_after_steps``), or None when the folder holds none.

    Raises:
        InputError: ``config.json`` is not valid JSON.
    """
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(f"cannot parse the saved run config {path}: {exc}") from exc
    for key in _INVOCATION_LIMITS:
        saved.pop(key, None)
    return saved
