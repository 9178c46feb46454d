"""Loop machinery shared by the trainers: device, precision, determinism, seeds, RNG, logs, provenance, stops.

Everything GPU-only sits behind a device check: mixed precision (``torch.autocast`` float16 + ``GradScaler``)
and ``cudnn.benchmark`` are switched on only on CUDA; on CPU the *same* code runs with both disabled (a disabled
autocast and GradScaler are no-ops), so the tests exercise the GPU code path.

Run folder files written here (rank 0 only):

- ``metrics.jsonl``  one JSON record per line, appended and flushed per record (a reader tailing the file sees
  whole lines; the Slicer training module parses it). Its record kinds and fields are the schema of
  :mod:`.runlog` (``RECORD_FIELDS``), which every record is checked against. An append-only log cannot be
  replaced atomically as a whole; every record is one ``write`` of a complete line instead.
- ``run.json``       provenance: resolved config, code version (``git describe`` when run from a checkout,
  ``DCTNetLib.__version__``), environment (python, torch, platform, CUDA), one entry per start/resume.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .. import __version__
from ..errors import InputError
from .distributed import DistInfo
from .runlog import make_record

__all__ = [
    "configure_backends",
    "seed_everything",
    "capture_rng_state",
    "restore_rng_state",
    "preserved_rng",
    "MetricsLog",
    "code_version",
    "environment_info",
    "write_run_info",
    "RUN_FILES",
    "prepare_run_dir",
    "StopRequest",
    "Progress",
]

# Files that mark a folder as holding a run (refused without --resume/--overwrite).
RUN_FILES = ("latest.pt", "best.pt", "config.json", "run.json", "metrics.jsonl")
# cuBLAS needs a fixed workspace for deterministic results on CUDA ≥ 10.2 (PyTorch "Reproducibility" notes).
_CUBLAS_WORKSPACE = ":4096:8"
_GIT_TIMEOUT_S = 5


# ---------------------------------------------------------------------------------------------- device & seeds
def configure_backends(device: torch.device, deterministic: bool) -> None:
    """Deterministic algorithms when asked; cuDNN autotuning only on CUDA and only when not deterministic."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_WORKSPACE)
    if torch.are_deterministic_algorithms_enabled() != deterministic:  # the call imports torch._inductor (slow)
        torch.use_deterministic_algorithms(deterministic)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU and every CUDA device), numpy and python, as ``weights_only``-loadable data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block (validation, sampling) without disturbing the training random streams."""
    saved = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(saved)


# ---------------------------------------------------------------------------------------------- logs & provenance
class MetricsLog:
    """Append-only JSON-lines log ``<run_dir>/metrics.jsonl``; disabled (no-op) off rank 0.

    Args:
        path: the log file.
        enabled: write records (rank 0) or ignore them (other ranks).
    """

    def __init__(self, path: str | Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled

    def write(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append ``{"event": event, **fields}`` as one line and flush it to disk; returns the record."""
        record = make_record(event, **fields)
        if self.enabled:
            line = json.dumps(record, default=_json_default) + "\n"
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
        return record


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def code_version() -> dict[str, Any]:
    """``{"dctnet": __version__, "git": "<git describe --always --dirty>" or None}``."""
    described = None
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=_GIT_TIMEOUT_S, check=False,
        )
        if out.returncode == 0:
            described = out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"dctnet": __version__, "git": described}


def environment_info(device: torch.device | None = None, info: DistInfo | None = None) -> dict[str, Any]:
    """Python, torch, platform and CUDA versions, plus device and world size."""
    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cuda_available": cuda,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "gpu": torch.cuda.get_device_name(device) if cuda and device is not None and device.type == "cuda" else None,
        "device": str(device) if device is not None else None,
        "world_size": (info or DistInfo()).world_size,
    }


def write_run_info(run_dir: str | Path, config: dict[str, Any], device: torch.device, info: DistInfo,
                   resumed_from_step: int | None = None) -> Path:
    """Write (or extend, on resume) ``<run_dir>/run.json`` atomically."""
    from ..io.atomic import atomic_write_text

    path = Path(run_dir) / "run.json"
    sessions: list[dict[str, Any]] = []
    if path.is_file():
        with contextlib.suppress(ValueError, OSError):
            sessions = list(json.loads(path.read_text(encoding="utf-8")).get("sessions", []))
    sessions.append({
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "argv": list(sys.argv),
        "resumed_from_step": resumed_from_step,
        "environment": environment_info(device, info),
    })
    payload = {"config": config, "code_version": code_version(), "environment": sessions[-1]["environment"],
               "sessions": sessions}
    return atomic_write_text(path, json.dumps(payload, indent=2, default=_json_default) + "\n")


def prepare_run_dir(run_dir: str | Path, resume: bool, overwrite: bool) -> Path:
    """Create the run folder, refusing to silently overwrite an existing run.

    Args:
        run_dir: the ``--output`` folder.
        resume: continue the run found there (``latest.pt`` must exist).
        overwrite: delete that run's files (only :data:`RUN_FILES`, nothing else) and start again.

    Raises:
        InputError: a run exists and neither flag is given, both flags are given, or ``resume`` finds nothing.
    """
    from ..io.atomic import check_writable_dir

    run_dir = Path(run_dir)
    if resume and overwrite:
        raise InputError("--resume and --overwrite exclude each other")
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    if resume:
        if not (run_dir / "latest.pt").is_file():
            raise InputError(f"--resume: no checkpoint to resume in {run_dir} (latest.pt is missing)")
    elif existing:
        if not overwrite:
            raise InputError(
                f"{run_dir} already holds a training run ({', '.join(existing)}); add --resume to continue it, "
                "--overwrite to start it again, or choose another --output folder"
            )
        for name in existing:
            (run_dir / name).unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    check_writable_dir(run_dir)
    return run_dir


# ---------------------------------------------------------------------------------------------- stop & progress
class StopRequest:
    """Turns the first Ctrl-C / SIGTERM into a polite request checked at the next step boundary.

    A second Ctrl-C raises ``KeyboardInterrupt`` at once (the previous ``latest.pt`` stays valid). Handlers are
    installed only in the main thread and restored on exit.
    """

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
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


class Progress:
    """tqdm bar over the run's steps with the loss terms and the ETA; silent off rank 0 or when disabled.

    Args:
        total: steps of the whole run.
        initial: steps already done (resume).
        enabled: show the bar.
    """

    def __init__(self, total: int, initial: int = 0, enabled: bool = True) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, smoothing=0.1)

    def update(self, epoch: int, epochs: int, losses: dict[str, float]) -> None:
        if self.bar is None:
            return
        self.bar.set_description(f"epoch {epoch + 1}/{epochs}", refresh=False)
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in losses.items()}, refresh=False)
        self.bar.update(1)

    def write(self, message: str) -> None:
        if self.bar is None:
            print(message, file=sys.stderr, flush=True)
        else:
            self.bar.write(message, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def now() -> float:
    """Wall-clock seconds since the epoch (the ``time`` field of ``train`` records)."""
    return round(time.time(), 3)
