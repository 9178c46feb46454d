"""``metrics.jsonl``, the run's append-only log (written on rank 0 only).

One JSON record per line, appended and flushed per record (a reader tailing the file sees whole lines; the Slicer
training module parses it). Its record kinds and fields are the schema of :mod:`.runlog` (``RECORD_FIELDS``),
which every record is checked against. An append-only log cannot be replaced atomically as a whole; every record is one ``write``
of a complete line instead.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .runlog import make_record

__all__ = ["MetricsLog", "json_value", "now"]


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
            line = json.dumps(record, default=json_value) + "\n"
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
        return record


def json_value(value: Any) -> Any:
    """``json.dumps(default=…)`` for what training records hold besides JSON types: numpy and one-element torch
    scalars become numbers, paths strings."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def now() -> float:
    """Wall-clock seconds since the epoch (the ``time`` field of ``train`` records)."""
    return round(time.time(), 3)
