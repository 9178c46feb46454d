"""Stopping a training run politely, on every platform, and knowing that a run folder is in use.

- Ctrl-C and SIGTERM: the first asks the loop to stop at the next step boundary (after writing a checkpoint), a
  second Ctrl-C aborts at once.
- The **stop file** ``<run>/STOP``: its appearance is the same polite request, checked at every step. It needs no
  signal, so it works the same on Windows (where a GUI cannot send Ctrl-C to a detached child), from another
  machine sharing the folder, and from a Slicer session that did not start the run (``touch run/gan/STOP``).
- The **run lock** ``<run>/RUNNING.json``: the process training into a folder records its pid, host and start time
  there while it runs (:func:`claim_run_dir`), so a second run into the same folder is refused and a GUI can find
  (re-attach to) a run it did not start (:func:`running_run`). A lock whose process is gone is stale and ignored.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..processes import pid_alive

__all__ = ["StopRequest", "STOP_FILE", "LOCK_FILE", "request_stop", "claim_run_dir", "release_run_dir",
           "running_run", "pid_alive", "leave_sigterm_to_the_main_process"]

# Name of the file whose appearance in the run folder stops the run after its current step.
STOP_FILE = "STOP"
# Name of the file holding {"pid", "host", "started", "command"} while a run trains into the folder.
LOCK_FILE = "RUNNING.json"


def request_stop(run_dir: str | Path) -> Path:
    """Ask the run training into ``run_dir`` to stop after its current step (it writes a checkpoint first)."""
    path = Path(run_dir) / STOP_FILE
    path.write_text(f"stop requested at {time.strftime('%Y-%m-%d %H:%M:%S')}\n", encoding="utf-8")
    return path


def running_run(run_dir: str | Path) -> dict[str, Any] | None:
    """The lock record of the run training into ``run_dir`` when its process is alive on this host, else None
    (no lock, an unreadable one, or a stale one left by a run that was killed)."""
    path = Path(run_dir) / LOCK_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        pid = int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if record.get("host") not in (None, socket.gethostname()):
        return record  # another machine's run: it cannot be checked from here, so it counts as running
    return record if pid_alive(pid) else None


_CLAIMED: set[Path] = set()


def claim_run_dir(run_dir: str | Path, command: str = "") -> Path:
    """Record this process as the one training into ``run_dir``; a stale stop file is removed.

    Raises:
        InputError: another live run holds the folder.
    """
    run_dir = Path(run_dir)
    other = running_run(run_dir)
    if other is not None and int(other.get("pid", -1)) != os.getpid():
        raise InputError(f"{run_dir} is in use by a running training (pid {other.get('pid')} on "
                         f"{other.get('host', '?')}, started {other.get('started', '?')}); stop it first "
                         f"(create {run_dir / STOP_FILE}) or choose another folder")
    with contextlib.suppress(FileNotFoundError):
        (run_dir / STOP_FILE).unlink()
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": command or " ".join(sys.argv)}
    path = run_dir / LOCK_FILE
    temporary = path.with_name(f".{LOCK_FILE}.{os.getpid()}")
    temporary.write_text(json.dumps(record) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    if run_dir not in _CLAIMED:
        _CLAIMED.add(run_dir)
        atexit.register(release_run_dir, run_dir)
    return path


def release_run_dir(run_dir: str | Path) -> None:
    """Remove the run lock (when it is this process's) and the stop file that ended the run."""
    run_dir = Path(run_dir)
    path = run_dir / LOCK_FILE
    try:
        mine = int(json.loads(path.read_text(encoding="utf-8")).get("pid", -1)) == os.getpid()
    except (OSError, ValueError, TypeError, AttributeError):
        mine = False
    if mine:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with contextlib.suppress(FileNotFoundError):
            (run_dir / STOP_FILE).unlink()
    _CLAIMED.discard(run_dir)


def leave_sigterm_to_the_main_process(worker_id: int) -> None:
    """``worker_init_fn`` of the training DataLoader: a worker ignores the *first* SIGTERM.

    ``kill -TERM -PGID`` (a scheduler, a closing terminal) signals every process of the group at once. A worker that
    died of it made the main process fail at its next batch ("DataLoader worker … is killed by signal: Terminated",
    exit 1) instead of stopping at the step boundary with a checkpoint; the main process's own SIGTERM is the polite
    stop request, after which it ends its workers itself. A second SIGTERM (the loader's own fallback) ends the
    worker as usual; a worker whose main process is gone ends by itself (torch's watchdog).
    """
    def ignore_once(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    with contextlib.suppress(AttributeError, ValueError):  # no SIGTERM handler possible here: keep the default
        signal.signal(signal.SIGTERM, ignore_once)


class StopRequest:
    """Turns the first Ctrl-C / SIGTERM, or the stop file, into a polite request checked at the next step boundary.

    A second Ctrl-C raises ``KeyboardInterrupt`` at once (the previous ``latest.pt`` stays valid). Handlers are
    installed only in the main thread and restored on exit.

    Args:
        stop_file: file whose appearance requests the stop (polled by :attr:`requested`). None: signals only.
    """

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self, stop_file: str | Path | None = None) -> None:
        self._requested = False
        self.signal_name: str | None = None
        self.stop_file = Path(stop_file) if stop_file is not None else None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """True once a stop was asked for: a signal, or the stop file exists (one ``stat`` per call)."""
        if not self._requested and self.stop_file is not None and self.stop_file.exists():
            self._requested = True
            self.signal_name = "stop file"
            print(f"\n{self.stop_file} found: stopping after the current step and writing a checkpoint",
                  file=sys.stderr, flush=True)
        return self._requested

    @requested.setter
    def requested(self, value: bool) -> None:
        self._requested = bool(value)

    def _handle(self, signum: int, frame: Any) -> None:
        if self._requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self._requested = True
        self.signal_name = signal.Signals(signum).name
        print(f"\n{self.signal_name} received: stopping after the current step and writing a checkpoint "
              "(press Ctrl-C again to abort at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> "StopRequest":
        for name in self.SIGNALS:
            signum = getattr(signal, name, None)
            if signum is None:
                continue
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread (e.g. called from a GUI worker)
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            with contextlib.suppress(ValueError):
                signal.signal(signum, handler)
        self._previous.clear()
