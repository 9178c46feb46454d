"""Worker processes for ``dctnet prepare --workers N``: run jobs in parallel, and stop them cleanly.

Each worker is a spawned process with one torch and one ITK thread (the processes provide the parallelism).
SIGTERM and SIGINT end a worker after the job it is running has unwound (removing its temporary files); a worker
whose parent was killed with ``kill -9`` ends itself the same way instead of writing on as an orphan; and when
the caller stops (Ctrl-C, SIGTERM, an output error) every running worker is stopped before it returns.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Iterable

import SimpleITK as sitk
import torch

from ..errors import Terminated

__all__ = ["run_in_workers"]

_job_running = False  # in a pool worker: whether a job is running (see _end_worker)


def run_in_workers(function: Callable[..., Any], jobs: Iterable[tuple], workers: int,
                   on_result: Callable[[Any], None]) -> None:
    """Call ``function(*job)`` for every job in ``workers`` processes, passing each result to ``on_result`` as it
    comes. ``function`` and the jobs must be picklable (a module-level function and plain data)."""
    context = multiprocessing.get_context("spawn")  # fork after torch/OpenMP start-up can deadlock
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                               initargs=(os.getpid(),))
    try:
        futures = [pool.submit(_run_job, function, job) for job in jobs]
        for future in as_completed(futures):
            on_result(future.result())
    except BaseException:  # Ctrl-C, SIGTERM, an output error: stop every worker before leaving
        _stop_workers(pool)
        raise
    pool.shutdown(wait=True)


def _end_worker(signum: int, frame: object) -> None:
    """SIGTERM / SIGINT in a pool worker: unwind the job being run (removing its temporary files), or, when
    idle, just end — without the traceback multiprocessing would print for an interrupt in its queue wait."""
    if _job_running:
        raise Terminated(f"terminated by signal {signum}")
    os._exit(128 + signum)


def _init_worker(parent_pid: int | None = None) -> None:
    """One thread per worker process (the processes provide the parallelism); SIGTERM and SIGINT end the worker
    (after unwinding the job being run), and a worker whose parent has gone away (killed with ``kill -9``)
    ends itself the same way instead of writing on as an orphan."""
    torch.set_num_threads(1)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    signal.signal(signal.SIGTERM, _end_worker)
    signal.signal(signal.SIGINT, _end_worker)
    if parent_pid is not None:
        def watch_parent() -> None:
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch_parent, name="dctnet-parent-watch", daemon=True).start()


def _run_job(function: Callable[..., Any], job: tuple) -> Any:
    """``function(*job)`` in a pool worker: an interrupt ends the worker process once the job has unwound (the
    pool would otherwise catch it and start the next job)."""
    global _job_running
    _job_running = True
    try:
        return function(*job)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM as errors.Terminated: the job has unwound
        os._exit(143)
    finally:
        _job_running = False


def _stop_workers(pool: ProcessPoolExecutor, grace_s: float = 10.0) -> None:
    """End the running workers (SIGTERM, so each removes its temporary files; SIGKILL after ``grace_s``), so that
    no worker keeps writing after the caller has stopped. The pool then marks the jobs not done as failed with
    BrokenProcessPool (futures are not cancelled here: Python 3.11's pool would then raise in its own thread)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + grace_s
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(1.0)
    pool.shutdown(wait=False)
