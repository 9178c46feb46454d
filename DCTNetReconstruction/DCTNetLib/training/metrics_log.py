"""``metrics.jsonl``, the run's append-only log (written on rank 0 only).

One JSON record per line, appended and flushed per record (a reader tailing the file sees whole lines; the Slicer
training module parses it). Its record kinds and fields are the schema of :mod:`.runlog` (``RECORD_FIELDS``),
which every record is checked against. An append-only log cannot be replaced atomically as a whole; every record is one ``write``
of a complete line instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import OutputError
from ..io.atomic import output_error, write_all
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
            self._append((json.dumps(record, default=json_value) + "\n").encode("utf-8"))
        return record

    def _append(self, line: bytes) -> None:
        """Append one complete line; on a failed write (file-size limit, full disk) cut the log back to its earlier
        end, so no half line is left, and raise one :class:`OutputError` naming the file."""
        with open(self.path, "ab", buffering=0) as handle:  # unbuffered: nothing is left to fail at close
            end = handle.seek(0, os.SEEK_END)
            try:
                write_all(handle.fileno(), memoryview(line))
                os.fsync(handle.fileno())
            except OSError as exc:
                with contextlib.suppress(OSError):
                    handle.truncate(end)
                raise OutputError(f"{output_error(exc, self.path)}; it keeps every earlier record") from exc


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
