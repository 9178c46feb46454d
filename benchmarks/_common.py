"""Shared plumbing of the benchmarks: machine description, repeat-and-median timing, fresh-subprocess runs.

Every benchmark module exposes plain functions returning JSON-able dicts. ``run_all.py`` calls them either in
its own process or, when peak memory must not mix between models, in a fresh child process through
:func:`run_in_subprocess` (``_child.py`` imports the module, calls the function and prints one JSON line).

Timing: wall-clock (``time.perf_counter``) and process CPU time (``time.process_time``, all threads) are both
recorded for every repeat; medians are reported. On a shared machine the wall time grows with the other users'
load while CPU time grows much less, so ratios are given for both.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULT_MARKER = "BENCH_RESULT "

__all__ = ["HERE", "REPO", "machine_info", "time_repeats", "peak_rss_mb", "run_in_subprocess", "ratio",
           "set_threads", "skipped"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Platform, CPU, memory, library versions, torch threads and CUDA device (if any)."""
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "threading_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")},
    }
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False)
        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # psutil is a project dependency, but the report must not fail without it
        pass
    return info


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (``None`` keeps the default) and return the count in use."""
    import torch

    if threads is not None and threads > 0:
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MB). Linux reports ``ru_maxrss`` in KB, macOS in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def time_repeats(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> dict[str, Any]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times; medians of wall and CPU seconds.

    Returns:
        ``{"median_s", "median_cpu_s", "runs_s", "runs_cpu_s"}`` (CPU = this process, all threads).
    """
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(max(1, repeats)):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return {"median_s": round(statistics.median(wall), 4), "median_cpu_s": round(statistics.median(cpu), 4),
            "runs_s": [round(t, 4) for t in wall], "runs_cpu_s": [round(t, 4) for t in cpu]}


def ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    """``a / b`` rounded, or None when either is missing or ``b`` is zero."""
    if a is None or b is None or b == 0:
        return None
    return round(a / b, digits)


def skipped(reason: str) -> dict[str, Any]:
    """The entry of a benchmark that did not run."""
    return {"skipped": True, "reason": reason}


def _child_env(changes: dict[str, str | None] | None) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in (changes or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_in_subprocess(target: str, kwargs: dict[str, Any] | None = None, threads: int | None = None,
                      timeout: float = 1800.0, env: dict[str, str | None] | None = None) -> dict[str, Any]:
    """Call ``module:function(**kwargs)`` of this folder in a fresh Python process and return its dict.

    The child adds ``peak_rss_mb`` (its own ``ru_maxrss``, so peaks of different models never mix) and
    ``child_wall_s``. A failing child returns ``{"error": ...}`` with the last lines of its stderr. ``env`` sets
    environment variables (e.g. ``OMP_WAIT_POLICY``, read by OpenMP when torch loads); a None value unsets one.
    """
    cmd = [sys.executable, str(HERE / "_child.py"), target, json.dumps(kwargs or {})]
    if threads:
        cmd.append(str(int(threads)))
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(REPO),
                              env=_child_env(env))
    except subprocess.TimeoutExpired:
        return {"error": f"{target} timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            result = json.loads(line[len(RESULT_MARKER):])
            result.setdefault("subprocess_wall_s", round(time.perf_counter() - start, 2))
            return result
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
    return {"error": f"{target} exited with {proc.returncode}: {tail}"}


def emit_report(report: dict[str, Any], output: Path | None) -> None:
    """Print a benchmark's JSON report and, with ``output``, also write it there."""
    text = json.dumps(report, indent=1)
    print(text)
    if output:
        output.write_text(text + "\n")
