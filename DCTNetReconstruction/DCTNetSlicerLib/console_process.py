"""Slicer ≥ 5.12 path of the task runner: a child started by Slicer's non-blocking ``launchConsoleProcess``.

What the Slicer API provides (read from the Slicer/Slicer sources, ``Base/Python/slicer/packaging.py`` at
commit 4bf416c705675a9bccc55ade3904f04a1ca91750, ``_executePythonModule``): ``slicer.util.launchConsoleProcess(
commandLine, useStartupEnvironment=..., blocking=False, logCallback=..., completedCallback=...)`` returns at
once; ``logCallback(line: str)`` gets each output line (stdout and stderr merged) and
``completedCallback(returnCode: int)`` the exit status once, both on the GUI thread (Slicer reads the output
on a thread and drains it from a ``qt.QTimer``, the same pattern as :class:`DCTNetSlicerLib.process.BackgroundProcess`).
The value returned in non-blocking mode is not used by Slicer's own callers; the design it implements returns
the ``subprocess.Popen`` (the "blocking-prevention" proposal for ``slicer.util.pip_install``). The signature
before 5.12 is ``launchConsoleProcess(args, useStartupEnvironment=True, updateEnvironment=None, cwd=None)``.

What it does not provide, and how it is made up for, so Stop and Cancel behave as with ``BackgroundProcess``:

- **Its own process group.** Slicer's ``Popen`` keeps the child in Slicer's process group, so ``killpg`` on the
  child would miss re-parented grandchildren (DataLoader workers, torchrun ranks) and a group-wide Ctrl-C would
  hit Slicer itself. The child is therefore started through :data:`BOOTSTRAP`, which calls ``os.setsid()``
  before running the module: the child leads its own session and process group again, exactly like
  ``BackgroundProcess(start_new_session=True)``, and ``send_interrupt``/``killpg`` work unchanged.
- **The interpreter's pid.** ``PythonSlicer`` is CTK's launcher: it sets up the environment and starts the real
  interpreter as its *child*, so the ``Popen`` Slicer returns (if any) is the launcher's. :data:`BOOTSTRAP`
  prints one ``{"event": "session", "pid": ...}`` line first, from the interpreter itself; it is consumed here
  (never reaching the task's callbacks) and is the pid Stop interrupts. Cancel kills both trees.
- **Windows.** A running process cannot get its own console process group there (needed for the Ctrl-Break
  that lets a run stop cleanly), so :func:`nonblocking_launcher` returns ``None`` and the
  ``BackgroundProcess`` runner (``CREATE_NEW_PROCESS_GROUP``) is used instead.
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
import subprocess
import time
from collections import deque
from types import SimpleNamespace
from typing import Any, Callable, Mapping, Sequence

from .process import TAIL_LINES, BackgroundProcess, parse_event

__all__ = ["BOOTSTRAP", "SESSION_EVENT", "REQUIRED_PARAMETERS", "nonblocking_launcher", "bootstrap_command",
           "environment_update", "session_pid", "kill_now", "ConsoleProcess"]

logger = logging.getLogger(__name__)

# Event printed by BOOTSTRAP before anything else; carries the child's pid (= its process-group id).
SESSION_EVENT = "session"

# Run ``python -c BOOTSTRAP <module> <args...>`` like ``python -m <module> <args...>``, in a new session.
BOOTSTRAP = (
    "import json, os, runpy, sys\n"
    "if hasattr(os, 'setsid'):\n"
    "    try:\n"
    "        os.setsid()\n"
    "    except OSError:\n"
    "        pass\n"
    f"print(json.dumps({{'event': {SESSION_EVENT!r}, 'pid': os.getpid()}}), flush=True)\n"
    "module = sys.argv.pop(1)\n"
    "runpy.run_module(module, run_name='__main__', alter_sys=True)\n"
)

# Keyword parameters of launchConsoleProcess this path needs (all present from Slicer 5.12 on).
REQUIRED_PARAMETERS = frozenset({"blocking", "logCallback", "completedCallback", "updateEnvironment", "cwd"})


def _can_detach() -> bool:
    """True where the child can lead its own process group after it has started (POSIX ``setsid``)."""
    return hasattr(os, "setsid")


def nonblocking_launcher() -> Callable[..., Any] | None:
    """``slicer.util.launchConsoleProcess`` when it has the non-blocking mode (Slicer ≥ 5.12), else ``None``.

    Detected from the signature, not the version number, so a backport or a build from source counts too.
    """
    if not _can_detach():
        return None
    try:
        import slicer

        launch = slicer.util.launchConsoleProcess
        parameters = inspect.signature(launch).parameters
    except (ImportError, AttributeError, TypeError, ValueError):
        return None
    return launch if REQUIRED_PARAMETERS <= set(parameters) else None


def bootstrap_command(python: str, module: str, args: Sequence[str]) -> list[str]:
    """``[python, "-u", "-c", BOOTSTRAP, module, *args]``: ``python -u -m module args`` in its own session."""
    return [str(python), "-u", "-c", BOOTSTRAP, module, *[str(arg) for arg in args]]


def session_pid(event: Mapping[str, Any] | None) -> int | None:
    """The interpreter's pid from a :data:`BOOTSTRAP` session event, else None."""
    if event is not None and event.get("event") == SESSION_EVENT and isinstance(event.get("pid"), int):
        return int(event["pid"])
    return None


def kill_now(roots: Sequence[int | None], groups: Sequence[int | None] = ()) -> list[int]:
    """SIGKILL the process trees under ``roots`` and the process groups ``groups``, and return at once.

    Unlike :func:`DCTNetSlicerLib.process.kill_process_tree` nothing is waited for (no SIGTERM grace, no reaping), so
    it can run on Slicer's GUI thread: whoever started a process reaps it (the reader thread of
    ``BackgroundProcess`` or Slicer's launcher), and the task's end is reported through the usual callback.
    Descendants are collected before anything is killed, so none escapes by being re-parented.

    Returns:
        the pids signalled (by tree; without ``psutil`` only the roots themselves).
    """
    try:
        import psutil
    except ImportError:  # the group kill below still reaches each session
        psutil = None
    victims: dict[int, Any] = {}
    for pid in roots:
        if pid is None:
            continue
        if psutil is None:
            victims[pid] = None
            continue
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                victims[proc.pid] = proc
        except psutil.NoSuchProcess:
            pass
    gone = (OSError,) if psutil is None else (OSError, psutil.Error)
    for pid, proc in victims.items():
        try:
            proc.kill() if proc is not None else os.kill(pid, getattr(signal, "SIGKILL", signal.SIGTERM))
        except gone:
            pass
    if os.name == "posix":
        for group in groups:
            if group is None:
                continue
            try:  # anything of the session that escaped the tree walk (daemonised helpers)
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    return sorted(victims)


def environment_update(env: Mapping[str, str], base: Mapping[str, str]) -> dict[str, str]:
    """The variables of ``env`` that are new or different in ``base`` (what ``updateEnvironment`` must set)."""
    return {key: value for key, value in env.items() if base.get(key) != value}


class ConsoleProcess:
    """A child run by ``launchConsoleProcess(blocking=False)``, with the interface ``SlicerTask`` uses of
    :class:`DCTNetSlicerLib.process.BackgroundProcess` (``pid``, ``running``, ``cancelled``, ``returncode``,
    ``elapsed_s``, ``tail``, ``cancel()``, ``error_summary()``).

    Args:
        argv: command line, normally from :func:`bootstrap_command`.
        launcher: the non-blocking ``launchConsoleProcess`` (see :func:`nonblocking_launcher`).
        cwd: working folder of the child.
        update: variables set on top of the start environment (see :func:`environment_update`).
        use_startup_environment: start from the environment Slicer was started with (else Slicer's own).
    """

    def __init__(
        self,
        argv: Sequence[str],
        launcher: Callable[..., Any],
        cwd: str | None = None,
        update: Mapping[str, str] | None = None,
        use_startup_environment: bool = True,
    ) -> None:
        self.argv = [str(arg) for arg in argv]
        self.launcher = launcher
        self.cwd = cwd
        self.update = dict(update or {})
        self.use_startup_environment = use_startup_environment
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.cancelled = False
        self.returncode: int | None = None
        self._popen: Any = None
        self._pid: int | None = None  # the launched process (the launcher when Slicer returns its Popen)
        self.session_pid: int | None = None  # the interpreter, as it reported itself
        self._started = False
        self._finished = False
        self._start_time: float | None = None
        self._on_line: Callable[[str], None] | None = None
        self._on_exit: Callable[[int], None] | None = None

    def start(self, on_line: Callable[[str], None], on_exit: Callable[[int], None]) -> ConsoleProcess:
        """Launch the child; ``on_line(line)`` and ``on_exit(returncode)`` are called on the GUI thread."""
        if self._started:
            raise RuntimeError("this ConsoleProcess was already started")
        self._on_line, self._on_exit = on_line, on_exit
        self._started = True
        self._start_time = time.monotonic()
        logger.info("starting (Slicer launchConsoleProcess): %s", subprocess.list2cmdline(self.argv))
        self._popen = self.launcher(
            self.argv,
            useStartupEnvironment=self.use_startup_environment,
            updateEnvironment=self.update,
            cwd=self.cwd,
            blocking=False,
            logCallback=self._line,
            completedCallback=self._completed,
        )
        pid = getattr(self._popen, "pid", None)
        if isinstance(pid, int):
            self._pid = pid
        return self

    # -- callbacks from Slicer ---------------------------------------------------------------------------

    def _line(self, line: str) -> None:
        line = str(line).rstrip("\r\n")
        reported = session_pid(parse_event(line))
        if reported is not None:
            self.session_pid = reported
            if self._pid is None:
                self._pid = reported
            return
        self.tail.append(line)
        self._on_line(line)

    def _completed(self, returncode: int) -> None:
        if self._finished:
            return
        self._finished = True
        self.returncode = int(returncode) if returncode is not None else None
        self._on_exit(self.returncode)

    # -- state -------------------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def running(self) -> bool:
        """True from :meth:`start` until Slicer has delivered the exit status."""
        return self._started and not self._finished

    @property
    def elapsed_s(self) -> float:
        return 0.0 if self._start_time is None else time.monotonic() - self._start_time

    def cancel(self) -> None:
        """Kill the launcher, the interpreter, their descendants and the interpreter's session, without waiting;
        Slicer's completion callback follows."""
        if not self.running or self._pid is None:
            return
        self.cancelled = True
        logger.info("cancelling process %s (interpreter %s) and its children", self._pid, self.session_pid)
        kill_now([self._pid, self.session_pid], groups=[self.session_pid])

    def error_summary(self, max_lines: int = 5) -> str:
        """Same message as :meth:`BackgroundProcess.error_summary` for the same output and status."""
        return BackgroundProcess.error_summary(
            SimpleNamespace(tail=self.tail, returncode=self.returncode), max_lines  # type: ignore[arg-type]
        )

