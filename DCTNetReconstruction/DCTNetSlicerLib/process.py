"""Background process runner: long ``dctnet`` work runs in a child process so the caller never blocks.

No Qt here. The child's merged stdout/stderr is read line by line by a daemon thread into a
:class:`queue.Queue`; the caller drains it without blocking with :meth:`BackgroundProcess.poll` (the Slicer
widget calls it from a ``qt.QTimer``; a console script can call :meth:`BackgroundProcess.wait`).
:meth:`BackgroundProcess.cancel` ends the child and every process it started (``psutil`` walks the tree, and
on POSIX the child's own session is killed too, so re-parented grandchildren go as well).

The pattern (reader thread + queue + timer + kill of the whole tree) follows lassoan/SlicerMONAIAuto3DSeg
``MONAIAuto3DSegLib/process.py``, which notes that killing only the launcher leaves the real worker running.

Progress travels as JSON lines on stdout, e.g. ``{"event": "progress", "fraction": 0.4, "message": "..."}``;
:func:`parse_event` recognises them, every other line is plain log text.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = [
    "BOOTSTRAP",
    "bootstrap_command",
    "session_pid",
    "kill_now",
    "BackgroundProcess",
    "ProcessUpdate",
    "parse_event",
    "module_command",
    "child_environment",
    "kill_process_tree",
]

logger = logging.getLogger(__name__)

# Seconds a process gets to exit after SIGTERM before it is killed outright. Short: every file the project
# writes goes through DCTNetLib.io.atomic, so a killed run never leaves a half-written file behind.
TERMINATE_GRACE_S = 1.0
# Seconds cancel() waits for killed processes to disappear.
KILL_TIMEOUT_S = 5.0
# Lines of output kept for the error summary of a failed run.
TAIL_LINES = 200


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

def parse_event(line: str) -> dict[str, Any] | None:
    """The JSON object on ``line`` if it is an event (a dict with an ``"event"`` key), else ``None``."""
    text = line.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "event" in record else None


def module_command(module: str, args: Sequence[str], python: str | os.PathLike | None = None) -> list[str]:
    """``[python, "-u", "-m", module, *args]``; ``python`` defaults to the running interpreter.

    In Slicer pass the ``PythonSlicer`` launcher so the child gets Slicer's Python environment.
    """
    return [str(python or sys.executable), "-u", "-m", module, *[str(arg) for arg in args]]


def child_environment(
    pythonpath: Sequence[str | os.PathLike] = (), base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Environment for a Python child: unbuffered UTF-8 output and ``pythonpath`` prepended to PYTHONPATH.

    Args:
        pythonpath: folders to put first on the child's import path (e.g. the folder holding ``DCTNetLib``).
        base: environment to start from. Defaults to ``os.environ``.
    """
    env = dict(os.environ if base is None else base)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    paths = [str(Path(p)) for p in pythonpath]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def kill_process_tree(
    pid: int,
    timeout: float = KILL_TIMEOUT_S,
    grace: float = TERMINATE_GRACE_S,
    popen: subprocess.Popen | None = None,
) -> list[int]:
    """Terminate ``pid`` and all its descendants, then kill whatever is left; returns the pids signalled.

    Descendants are collected before anything is signalled, so grandchildren cannot escape by being
    re-parented when their parent dies first.

    Args:
        pid: root of the tree.
        timeout: seconds to wait for killed processes to disappear.
        grace: seconds between SIGTERM and SIGKILL.
        popen: the ``subprocess.Popen`` of ``pid`` when it is our child. It is then reaped through ``popen``
            so its exit status is not lost to ``psutil`` (which would reap it first).
    """
    import psutil  # optional at import time: only needed to cancel

    try:
        root = psutil.Process(pid)
        descendants = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    watched = descendants if popen is not None else [*descendants, root]
    for proc in [root, *descendants]:
        try:
            if proc is root and popen is not None:
                popen.terminate()
            else:
                proc.terminate()
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass
    _, alive = psutil.wait_procs(watched, timeout=grace)
    if popen is not None:
        try:
            popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(alive, timeout=timeout)
    if alive:
        logger.warning("processes still alive after kill: %s", [p.pid for p in alive])
    return [proc.pid for proc in [root, *descendants]]


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


@dataclass
class ProcessUpdate:
    """What :meth:`BackgroundProcess.poll` found since the previous call.

    Args:
        lines: new output lines that are not events (log text), in order.
        events: new JSON events (see :func:`parse_event`), in order.
        finished: True once the process has exited and all its output has been delivered.
        returncode: exit status once finished (negative = killed by a signal on POSIX), else None.
    """

    lines: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False
    returncode: int | None = None


_EXIT = object()  # queue sentinel: the reader has seen end of output and the process has exited


class BackgroundProcess:
    """One child process with its output streamed through a queue.

    Args:
        argv: command line, e.g. from :func:`module_command`.
        cwd: working folder of the child. Defaults to the caller's.
        env: environment of the child. Defaults to :func:`child_environment`.
        stdin: give the child a pipe to read from (:meth:`send`; a long-lived worker); else it reads nothing.

    Example::

        proc = BackgroundProcess(module_command("DCTNetLib", ["reconstruct", ...])).start()
        while not (update := proc.poll(timeout=None)).finished:   # blocks on the output queue, no sleep
            print(update.lines, update.events)
    """

    def __init__(
        self,
        argv: Sequence[str],
        cwd: str | os.PathLike | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bool = False,
    ) -> None:
        if not argv:
            raise ValueError("argv must name a program to run, got an empty command")
        self.argv = [str(arg) for arg in argv]
        self.cwd = None if cwd is None else str(cwd)
        self.env = dict(env) if env is not None else child_environment()
        self.stdin = stdin
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.cancelled = False
        self.returncode: int | None = None
        self.session_pid: int | None = None  # the interpreter's own pid when started through BOOTSTRAP
        self._proc: subprocess.Popen | None = None
        self._queue: queue.Queue = queue.Queue()
        self._reader: threading.Thread | None = None
        self._finished = False
        self._start_time: float | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> BackgroundProcess:
        """Launch the child and its reader thread; returns ``self``."""
        if self._proc is not None:
            raise RuntimeError("this BackgroundProcess was already started")
        kwargs: dict[str, Any] = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True  # own process group: cancel() can kill it as a whole
        else:
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0) | getattr(
                subprocess, "CREATE_NO_WINDOW", 0
            )
        logger.info("starting: %s", subprocess.list2cmdline(self.argv))
        self._start_time = time.monotonic()
        self._proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.PIPE if self.stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **kwargs,
        )
        self._reader = threading.Thread(target=self._read_output, name=f"dctnet-reader-{self.pid}", daemon=True)
        self._reader.start()
        return self

    def _read_output(self) -> None:
        proc = self._proc  # set by start() before this thread runs
        for line in proc.stdout:
            self._queue.put(line.rstrip("\r\n"))
        proc.stdout.close()
        self._queue.put((_EXIT, proc.wait()))

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the child has exited and its output has been delivered."""
        return self._proc is not None and not self._finished

    @property
    def elapsed_s(self) -> float:
        return 0.0 if self._start_time is None else time.monotonic() - self._start_time

    # -- output ------------------------------------------------------------------------------------------

    def send(self, line: str) -> None:
        """Write one line to the child's stdin (a process started with ``stdin=True``).

        Raises:
            RuntimeError: the child has no stdin pipe or has exited (its pipe is closed).
        """
        if self._proc is None or self._proc.stdin is None:
            raise RuntimeError("this process was not started with a stdin pipe")
        try:
            self._proc.stdin.write(line.rstrip("\n") + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as exc:
            raise RuntimeError(f"the process {self.pid} no longer reads its input ({exc})") from exc

    def close_input(self) -> None:
        """Close the child's stdin (a worker then exits once it has finished its request)."""
        if self._proc is not None and self._proc.stdin is not None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass

    def poll(self, max_items: int | None = None, timeout: float | None = 0.0) -> ProcessUpdate:
        """Deliver what the child printed since the last call.

        Args:
            max_items: stop after this many lines so a chatty child cannot stall a GUI timer.
                Defaults to everything queued.
            timeout: seconds to block for the first line when nothing is queued (0: never block, the GUI timer's
                way; None: until a line arrives or the child exits). Blocking waits on the queue, never sleeps.
        """
        update = ProcessUpdate()
        count = 0
        while max_items is None or count < max_items:
            try:
                if count == 0 and timeout != 0.0 and not self._finished:
                    item = self._queue.get(timeout=timeout)
                else:
                    item = self._queue.get_nowait()
            except queue.Empty:
                break
            count += 1
            if isinstance(item, tuple) and item and item[0] is _EXIT:
                self._finished = True
                self.returncode = item[1]
                break
            self.tail.append(item)
            event = parse_event(item)
            if event is not None:
                update.events.append(event)
            else:
                update.lines.append(item)
        update.finished = self._finished
        update.returncode = self.returncode
        return update

    def wait(self, timeout: float | None = None) -> ProcessUpdate:
        """Block until the child has finished (or ``timeout`` seconds passed); returns everything delivered."""
        if self._proc is None:
            raise RuntimeError("start() the process before waiting for it")
        deadline = None if timeout is None else time.monotonic() + timeout
        total = ProcessUpdate()
        while not self._finished:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            update = self.poll(timeout=remaining)
            total.lines += update.lines
            total.events += update.events
        total.finished, total.returncode = self._finished, self.returncode
        return total

    # -- cancel ------------------------------------------------------------------------------------------

    def cancel(self, timeout: float = KILL_TIMEOUT_S) -> None:
        """Kill the child and all its descendants; the reader then sees end of output and finishes."""
        if self._proc is None or self._finished:
            return
        self.cancelled = True
        logger.info("cancelling process %s and its children", self.pid)
        try:
            kill_process_tree(self._proc.pid, timeout=timeout, popen=self._proc)
        except ImportError:  # no psutil: at least the child itself
            self._proc.kill()
        if os.name == "posix":
            # Anything of the child's session that escaped the tree walk (daemonised helpers).
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._reader is not None:
            self._reader.join(timeout)

    def __enter__(self) -> BackgroundProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()

    # -- reporting ---------------------------------------------------------------------------------------

    def error_summary(self, max_lines: int = 5, returncode: int | None = None) -> str:
        """A short message for a failed run: the ``error:`` line of the ``dctnet`` CLI if there is one, else
        the last non-empty output lines, else the exit status (``returncode``, default the process's)."""
        lines = [line for line in self.tail if line.strip() and parse_event(line) is None]
        for line in reversed(lines):
            if "error:" in line:
                return line.strip()
        if lines:
            return "\n".join(line.strip() for line in lines[-max_lines:])
        return f"process exited with status {self.returncode if returncode is None else returncode}"
