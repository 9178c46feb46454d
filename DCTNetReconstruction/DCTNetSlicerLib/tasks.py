"""Run ``dctnet`` in the background from a Slicer module: one runner for every run.

:class:`SlicerTask` runs one ``dctnet`` command in a child process (a :class:`~DCTNetSlicerLib.process.
BackgroundProcess`: output read by a thread into a queue) and hands its output to callbacks on the caller's
thread: plain lines to ``on_log``, ``{"event": "progress", ...}`` lines to ``on_progress``, every event to
``on_event``, and ``(success, message)`` once to ``on_finished``. What delivers the output:

- in Slicer, a ``qt.QTimer`` on the GUI thread (every :data:`POLL_INTERVAL_MS`), so Slicer never blocks;
- :meth:`SlicerTask.wait` (the console methods): in Slicer a local ``qt.QEventLoop`` runs until the task ends, so
  the window keeps repainting and the progress bar moves; without Qt it blocks on the output queue. Never a
  sleep loop.

Two kinds of run share that machinery:

- **One-shot** (training, evaluation, preparation): ``PythonSlicer -m DCTNetLib <command> …``; the run ends when
  the process exits.
- **A request to a** :class:`Worker` (reconstruction, preview): a ``dctnet worker`` child kept alive between
  clicks, which keeps torch imported and the model loaded, so a second Reconstruct costs only the reconstruction;
  the request ends with the worker's ``{"event": "exit", "returncode": N}`` line. Cancel kills the worker (the next
  request starts a new one).

``PythonSlicer`` is CTK's launcher, which starts the real interpreter as its child. Children are therefore started
through :data:`DCTNetSlicerLib.process.BOOTSTRAP`: the interpreter puts itself in its own session and reports its
pid, Stop interrupts that pid's process group (the interpreter and its workers) and never the launcher, and
Cancel kills both trees at once without waiting on the GUI thread.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import DCTNetLib

from .process import BackgroundProcess, bootstrap_command, child_environment, kill_now, module_command, session_pid

__all__ = ["python_executable", "core_pythonpath", "send_interrupt", "SlicerTask", "Worker", "EXIT_EVENT"]

logger = logging.getLogger(__name__)

# Milliseconds between two polls of the child's output (fast enough for a smooth progress bar).
POLL_INTERVAL_MS = 100
# Lines handled per poll, so a chatty child cannot stall the GUI.
MAX_LINES_PER_POLL = 500
# Seconds a stopped run gets to finish its current step and exit on its own before its tree is killed.
STOP_GRACE_S = 15.0
# The line a `dctnet worker` prints when a request has ended (DCTNetLib.commands.worker.EXIT_EVENT).
EXIT_EVENT = "exit"

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
    """Ask a child (leader of its own session / process group) to stop, like Ctrl-C.

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


def _gui_timer(callback: Callable[[], None]) -> Any:
    """A running ``qt.QTimer`` calling ``callback`` on the GUI thread, or None without Qt (callers then drive the
    task with :meth:`SlicerTask.pump` or :meth:`SlicerTask.wait`)."""
    try:
        import qt
    except ImportError:
        return None
    timer = qt.QTimer()
    timer.setInterval(POLL_INTERVAL_MS)
    timer.connect("timeout()", callback)
    timer.start()
    return timer


class Worker:
    """A ``dctnet worker`` child kept alive between requests (torch imported, the model loaded once).

    Args:
        python: interpreter. Defaults to :func:`python_executable`.
    """

    def __init__(self, python: str | None = None) -> None:
        self.python = python
        self.process: BackgroundProcess | None = None
        self.busy = False

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.running

    def submit(self, args: Sequence[str]) -> BackgroundProcess:
        """Send one request (``dctnet`` arguments), starting the worker first if it is not running.

        Raises:
            RuntimeError: a request is still running (one at a time).
        """
        if self.busy and self.alive:
            raise RuntimeError("a reconstruction is already running; wait for it or cancel it")
        if not self.alive:
            command = bootstrap_command(self.python or python_executable(), "DCTNetLib", ["worker"])
            self.process = BackgroundProcess(command, env=_environment(), stdin=True).start()
        self.busy = True
        self.process.tail.clear()  # the error summary of this request must not quote an earlier one
        self.process.send(json.dumps({"args": [str(arg) for arg in args]}))
        return self.process

    def kill(self) -> None:
        """End the worker and everything it started, at once (a cancelled request); the next request starts a new
        one."""
        process, self.process, self.busy = self.process, None, False
        if process is not None and process.running:
            process.cancelled = True
            kill_now([process.pid, getattr(process, "session_pid", None)],
                     groups=[process.pid, getattr(process, "session_pid", None)])

    def close(self) -> None:
        """Let an idle worker exit (its input is closed); a busy one is killed."""
        if self.process is None:
            return
        if self.busy:
            self.kill()
            return
        self.process.close_input()
        self.process = None


class SlicerTask:
    """A background ``python -m <module> <args>`` run, or a request to a :class:`Worker`.

    Args:
        args: arguments after the module name.
        module: Python module to run. Defaults to ``"DCTNetLib"`` (the ``dctnet`` CLI).
        on_log: called with each plain output line.
        on_progress: called with ``(fraction or None, message)`` for each progress event.
        on_event: called with every JSON event (progress included).
        on_finished: called once with ``(success, message)``; ``message`` summarises a failure.
        cwd: working folder of the child (one-shot runs).
        worker: run the request on this worker instead of a new process.
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
        worker: Worker | None = None,
    ) -> None:
        self.args = [str(arg) for arg in args]
        self.argv = module_command(module, args, python=python_executable())  # what it runs, as shown in the log
        self.on_log, self.on_progress, self.on_event, self.on_finished = on_log, on_progress, on_event, on_finished
        self.worker = worker
        self.process: BackgroundProcess | None = None
        if worker is None:
            self.process = BackgroundProcess(bootstrap_command(python_executable(), module, args), cwd=cwd,
                                             env=_environment())
        self._timer = None
        self._loop = None
        self._session_pid: int | None = None  # the interpreter's pid, from the bootstrap's first line
        self._start_time: float | None = None
        self.returncode: int | None = None
        self.done = False
        self.stopped = False  # set by stop(): the run was ended on purpose
        self.cancelled = False  # set by cancel()

    @property
    def running(self) -> bool:
        return self._start_time is not None and not self.done

    @property
    def elapsed_s(self) -> float:
        return 0.0 if self._start_time is None else time.monotonic() - self._start_time

    @property
    def interrupt_pid(self) -> int | None:
        """Whom Stop interrupts: the interpreter as it reported itself (POSIX), else the started process (Windows:
        its console process group, or before the interpreter has reported)."""
        pid = self.process.pid if self.process is not None else None
        return self._session_pid if self._session_pid is not None and os.name == "posix" else pid

    def start(self) -> SlicerTask:
        if self.on_log:
            self.on_log("$ " + " ".join(self.argv))
        self._start_time = time.monotonic()
        if self.worker is not None:
            self.process = self.worker.submit(self.args)
            self._session_pid = getattr(self.process, "session_pid", None)
        else:
            self.process.start()
        self._timer = _gui_timer(self.pump)
        return self

    # -- ending it -------------------------------------------------------------------------------------------------

    def cancel(self) -> None:
        """Kill the child (or the worker) and its descendants at once; ``on_finished(False, "Cancelled")`` follows
        (at once for a worker request; for a one-shot run once its output has ended)."""
        if not self.running:
            return
        self.cancelled = True
        if self.worker is not None:
            self.worker.kill()
            self._finish(None)
            return
        pid = self.process.pid  # the launcher, leader of its own session
        self.process.cancelled = True
        kill_now([pid, self._session_pid], groups=[pid, self._session_pid])

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Interrupt the child; if it is still running after ``grace_s`` seconds, kill its whole tree."""
        if not self.running or self.interrupt_pid is None:
            return
        self.stopped = True
        if not send_interrupt(self.interrupt_pid):
            self.cancel()
            return
        if self.on_log:
            self.on_log(f"Stopping (the process is killed if it has not exited in {grace_s:.0f} s)…")
        try:
            import qt

            qt.QTimer.singleShot(int(grace_s * 1000), lambda: self.cancel() if self.running else None)
        except ImportError:  # console without Qt: the caller waits; kill at the next pump after the grace
            self._kill_after = time.monotonic() + grace_s

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the task has ended (callbacks delivered as it goes); returns True when it has.

        In Slicer a local ``qt.QEventLoop`` runs meanwhile (the window stays alive, the timer keeps polling);
        without Qt the output queue is waited on.
        """
        if self._timer is not None:
            import qt

            if not self.done:
                self._loop = qt.QEventLoop()
                if timeout is not None:
                    qt.QTimer.singleShot(int(timeout * 1000), self._loop.quit)
                run = getattr(self._loop, "exec", None) or self._loop.exec_
                run()
                self._loop = None
            return self.done
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            self.pump(block_s=remaining if remaining is not None else 1.0)
        return self.done

    # -- output, shared by both kinds ------------------------------------------------------------------------------

    def pump(self, block_s: float = 0.0) -> bool:
        """Deliver the output that arrived (waiting up to ``block_s`` seconds for some); True once finished."""
        if self.done:
            return True
        kill_after = getattr(self, "_kill_after", None)
        if kill_after is not None and time.monotonic() > kill_after:
            self.cancel()
        update = self.process.poll(max_items=MAX_LINES_PER_POLL, timeout=block_s)
        ended = None
        try:
            for line in update.lines:
                if self.on_log:
                    self.on_log(line)
            for event in update.events:
                reported = session_pid(event)
                if reported is not None:  # the bootstrap's line: ours, not the caller's
                    self._session_pid = self.process.session_pid = reported
                    continue
                if self.worker is not None and event.get("event") in (EXIT_EVENT, "ready"):
                    if event.get("event") == EXIT_EVENT:
                        ended = int(event.get("returncode", 1))
                    continue
                if self.on_event:
                    self.on_event(event)
                if event.get("event") == "progress" and self.on_progress:
                    fraction = event.get("fraction")
                    self.on_progress(float(fraction) if isinstance(fraction, (int, float)) else None,
                                     str(event.get("message", "")))
        except Exception:  # a callback failed: log it, keep the run tracked
            logger.exception("error while handling background process output")
        if ended is not None:
            self.worker.busy = False
            self._finish(ended)
        elif update.finished:
            if self.worker is not None:  # the worker died during the request
                self.worker.process, self.worker.busy = None, False
            self._finish(update.returncode)
        return self.done

    def _finish(self, returncode: int | None) -> None:
        if self.done:
            return
        self.done = True
        self.returncode = returncode
        if self._timer is not None:
            self._timer.stop()
        if self.cancelled or self.stopped:
            success, message = False, "Stopped" if self.stopped else "Cancelled"
        elif returncode == 0:
            success, message = True, f"Finished in {self.elapsed_s:.1f} s"
        else:
            success, message = False, self.error_summary()
        logger.info("background process finished (status %s): %s", returncode, message)
        try:
            if self.on_finished:
                self.on_finished(success, message)
        finally:
            if self._loop is not None:
                self._loop.quit()

    def error_summary(self) -> str:
        """The ``error:`` line of the run, else its last lines, else its exit status."""
        return self.process.error_summary(returncode=self.returncode)
