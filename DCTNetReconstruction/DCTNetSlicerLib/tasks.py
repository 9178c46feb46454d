"""Run a ``dctnet`` command (or another Python module) in the background from a Slicer module.

:class:`SlicerTask` runs the child with Slicer's own Python (``PythonSlicer``) and handles its output on the
GUI thread without ever blocking it, so Slicer stays responsive; output
lines go to the log callback, ``{"event": "progress", ...}`` lines to the progress callback, and the
finished callback gets ``(success, message)``. :meth:`SlicerTask.cancel` kills the whole process tree at once,
without waiting on the GUI thread; :meth:`SlicerTask.stop` first interrupts the child (Ctrl-C: ``dctnet``
commands exit cleanly, leaving only complete files) and kills the tree only if it is still running after a grace
period.

``PythonSlicer`` is CTK's launcher, which starts the real interpreter as its child. The child is therefore always
started through :data:`DCTNetSlicerLib.console_process.BOOTSTRAP`: the interpreter puts itself in its own session
and reports its pid, and Stop interrupts that pid's process group (the interpreter and its workers), never the
launcher, which then exits with the interpreter's status.

Two runners behind one interface, chosen when the task is created:

- Slicer ≥ 5.12 (detected from the signature of ``slicer.util.launchConsoleProcess``, which gained
  ``blocking=False``, ``logCallback`` and ``completedCallback``): Slicer starts the child and streams its
  lines, see :class:`DCTNetSlicerLib.console_process.ConsoleProcess` (which also explains how the child is
  put in its own session so Stop and Cancel still reach the whole tree).
- Slicer 5.10 and Windows: :class:`DCTNetSlicerLib.process.BackgroundProcess` polled here by a ``qt.QTimer``.

Both feed the same handlers (:meth:`SlicerTask._deliver` for output, :meth:`SlicerTask._finish` for the end),
so log lines, progress events, finish messages and Stop/Cancel behave identically.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import DCTNetLib

from .console_process import (ConsoleProcess, bootstrap_command, environment_update, kill_now, nonblocking_launcher,
                              session_pid)
from .process import BackgroundProcess, child_environment, module_command, parse_event

__all__ = ["python_executable", "core_pythonpath", "send_interrupt", "SlicerTask"]

logger = logging.getLogger(__name__)

# Milliseconds between two polls of the child's output (fast enough for a smooth progress bar).
POLL_INTERVAL_MS = 200
# Lines handled per poll, so a chatty child cannot stall the GUI.
MAX_LINES_PER_POLL = 500
# Seconds a stopped run gets to finish its current step and exit on its own before its tree is killed.
STOP_GRACE_S = 15.0


# Environment variable naming the interpreter of the child processes (tests, or a separate Python for the model).
PYTHON_ENV = "DCTNET_PYTHON"


def python_executable() -> str:
    """The interpreter of the child processes: ``$DCTNET_PYTHON`` if set, else ``PythonSlicer`` (Slicer's Python
    with its libraries set up) when available, else this interpreter."""
    if os.environ.get(PYTHON_ENV):
        return os.environ[PYTHON_ENV]
    found = shutil.which("PythonSlicer")
    if found:
        return found
    candidate = Path(sys.executable).with_name("PythonSlicer" + (".exe" if os.name == "nt" else ""))
    return str(candidate) if candidate.exists() else sys.executable


def core_pythonpath() -> list[str]:
    """Folders the child needs on its import path: the one holding ``DCTNetLib`` (and ``DCTNetSlicerLib``)."""
    return [str(Path(DCTNetLib.__file__).resolve().parent.parent)]


def send_interrupt(pid: int) -> bool:
    """Ask a child started by ``BackgroundProcess`` (its own session / process group) to stop, like Ctrl-C.

    POSIX: SIGINT to the child's process group, so its workers get it too. Windows: CTRL_BREAK_EVENT to the
    child's process group (``CREATE_NEW_PROCESS_GROUP``). Returns False when the process is already gone.
    """
    try:
        if os.name == "posix":
            os.killpg(pid, signal.SIGINT)
        else:
            os.kill(pid, signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]  (Windows only)
    except (ProcessLookupError, PermissionError, OSError):
        return False
    return True


def _startup_environment() -> dict[str, str] | None:
    """The environment Slicer was started with (not its own), or None outside Slicer."""
    try:
        import slicer

        return dict(slicer.util.startupEnvironment())
    except (ImportError, AttributeError):
        return None


def _environment() -> dict[str, str]:
    return child_environment(core_pythonpath(), base=_startup_environment())


class SlicerTask:
    """A background ``python -m <module> <args>`` run polled by a Qt timer.

    Args:
        args: arguments after the module name.
        module: Python module to run. Defaults to ``"DCTNetLib"`` (the ``dctnet`` CLI).
        on_log: called with each plain output line.
        on_progress: called with ``(fraction or None, message)`` for each progress event.
        on_event: called with every JSON event (progress included).
        on_finished: called once with ``(success, message)``; ``message`` summarises a failure.
        cwd: working folder of the child.
    """

    def __init__(
        self,
        args: Sequence[str],
        module: str = "DCTNetLib",
        on_log: Callable[[str], None] | None = None,
        on_progress: Callable[[float | None, str], None] | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        on_finished: Callable[[bool, str], None] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.argv = module_command(module, args, python=python_executable())  # what it runs, as shown in the log
        self.on_log, self.on_progress, self.on_event, self.on_finished = on_log, on_progress, on_event, on_finished
        command = bootstrap_command(python_executable(), module, args)
        launcher = nonblocking_launcher()
        if launcher is not None:  # Slicer ≥ 5.12
            base = _startup_environment()
            env = child_environment(core_pythonpath(), base=base)
            self.process = ConsoleProcess(
                command, launcher, cwd=cwd,
                update=environment_update(env, os.environ if base is None else base),
                use_startup_environment=base is not None,
            )
        else:
            self.process = BackgroundProcess(command, cwd=cwd, env=_environment())
        self._timer = None
        self._session_pid: int | None = None  # the interpreter's pid, from the bootstrap's first line
        self.stopped = False  # set by stop(): the run was ended on purpose
        self.cancelled = False  # set by cancel()

    @property
    def uses_slicer_launcher(self) -> bool:
        """True when Slicer's non-blocking ``launchConsoleProcess`` runs the child (Slicer ≥ 5.12)."""
        return isinstance(self.process, ConsoleProcess)

    @property
    def running(self) -> bool:
        return self.process.running

    @property
    def interrupt_pid(self) -> int | None:
        """Whom Stop interrupts: the interpreter as it reported itself (POSIX), else the started process (Windows:
        its console process group, or before the interpreter has reported)."""
        reported = getattr(self.process, "session_pid", None) or self._session_pid
        return reported if reported is not None and os.name == "posix" else self.process.pid

    def start(self) -> SlicerTask:
        if self.on_log:
            self.on_log("$ " + " ".join(self.argv))
        if isinstance(self.process, ConsoleProcess):
            self.process.start(on_line=self._on_line, on_exit=self._finish)
            return self
        import qt

        self.process.start()
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._poll)
        self._timer.start()
        return self

    def cancel(self) -> None:
        """Kill the child and its descendants at once; ``on_finished(False, "Cancelled")`` follows."""
        if not self.running:
            return
        self.cancelled = True
        if isinstance(self.process, ConsoleProcess):
            self.process.cancel()
            return
        pid = self.process.pid  # BackgroundProcess: the launcher, leader of its own session
        kill_now([pid, self._session_pid], groups=[pid, self._session_pid])

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Interrupt the child; if it is still running after ``grace_s`` seconds, kill its whole tree."""
        import qt

        if not self.running or self.interrupt_pid is None:
            return
        self.stopped = True
        if not send_interrupt(self.interrupt_pid):
            self.cancel()
            return
        if self.on_log:
            self.on_log(f"Stopping (the process is killed if it has not exited in {grace_s:.0f} s)…")
        qt.QTimer.singleShot(int(grace_s * 1000), lambda: self.cancel() if self.running else None)

    # -- output and end, shared by both runners ------------------------------------------------------------

    def _deliver(self, lines: Sequence[str], events: Sequence[dict[str, Any]]) -> bool:
        """Hand output to the callbacks; False (after logging) when a callback failed."""
        try:
            for line in lines:
                if self.on_log:
                    self.on_log(line)
            for event in events:
                reported = session_pid(event)
                if reported is not None:  # the bootstrap's line (BackgroundProcess path): ours, not the caller's
                    self._session_pid = reported
                    continue
                if self.on_event:
                    self.on_event(event)
                if event.get("event") == "progress" and self.on_progress:
                    fraction = event.get("fraction")
                    self.on_progress(float(fraction) if isinstance(fraction, (int, float)) else None,
                                     str(event.get("message", "")))
        except Exception:  # a callback failed: log it, keep the run tracked
            logger.exception("error while handling background process output")
            return False
        return True

    def _on_line(self, line: str) -> None:
        event = parse_event(line)
        self._deliver([] if event is not None else [line], [event] if event is not None else [])

    def _poll(self) -> None:
        update = self.process.poll(max_items=MAX_LINES_PER_POLL)
        if not self._deliver(update.lines, update.events):
            return
        if update.finished:
            self._timer.stop()
            self._finish(update.returncode)

    def _finish(self, returncode: int | None) -> None:
        if self.cancelled or self.process.cancelled or self.stopped:
            success, message = False, "Stopped" if self.stopped else "Cancelled"
        elif returncode == 0:
            success, message = True, f"Finished in {self.process.elapsed_s:.0f} s"
        else:
            success, message = False, self.process.error_summary()
        logger.info("background process finished (status %s): %s", returncode, message)
        if self.on_finished:
            self.on_finished(success, message)
