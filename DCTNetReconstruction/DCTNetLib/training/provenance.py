"""``run.json``, the run's provenance (written on rank 0 only): resolved config, code version (``git describe``
when run from a checkout, ``DCTNetLib.__version__``), environment (python, torch, platform, CUDA), one entry per
start/resume."""

from __future__ import annotations

import contextlib
import datetime
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..io.atomic import atomic_write_text
from .distributed import DistInfo
from .runlog import json_value

__all__ = ["code_version", "environment_info", "write_run_info"]

_GIT_TIMEOUT_S = 5


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
    return atomic_write_text(path, json.dumps(payload, indent=2, default=json_value) + "\n")
