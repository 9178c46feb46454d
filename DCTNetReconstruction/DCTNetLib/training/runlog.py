"""A run's JSON-lines metrics log (``<run_dir>/metrics.jsonl``): its schema, its writer and its reader for a live run.

Records are one JSON object per line, built by :func:`make_record` for every writer (the trainers and ``dctnet
evaluate``, through :class:`MetricsLog`), for example from a GAN run::

    {"event": "train", "epoch": 1, "step": 10, "losses": {"adv": 0.25, "recon": 0.031, "total": 1.9, …},
     "lr": 0.0002, "time": 1795600000.125}
    {"event": "val", "epoch": 1, "step": 17, "psnr": 24.1, "ssim": 0.55, "mae": 0.04, "psnr_gx": 23.2}
    {"event": "eval", "case": "LIDC-IDRI-0001", "method": "DCT-Net", "checkpoint": "best.pt", "psnr": 26.9, …}

:data:`RECORD_FIELDS` names each kind and the fields it must carry; every other field of a ``val`` or ``eval``
record, and every entry of a ``train`` record's ``losses``, is a measurement. :class:`MetricsLog` appends each
record as one ``write`` of a complete line, flushed, on rank 0 only (an append-only log cannot be replaced
atomically as a whole). :class:`MetricsTail` returns only
the records appended since its previous call and never a half-written line; :class:`RunHistory` turns records
into loss curves, validation curves and an evaluation table with mean ± standard deviation. Used by the
DCTNetTraining Slicer module and usable from any script.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import OutputError
from ..io.atomic import output_error, write_all

__all__ = [
    "METRICS_FILENAME",
    "TRAIN",
    "VAL",
    "EVAL",
    "RECORD_FIELDS",
    "make_record",
    "MetricsLog",
    "json_value",
    "now",
    "EVAL_METRICS",
    "MetricsTail",
    "EvalRow",
    "MetricSummary",
    "RunHistory",
    "format_mean_std",
]

logger = logging.getLogger(__name__)

METRICS_FILENAME = "metrics.jsonl"

# Record kinds ("event") whose other fields are measurements: training losses, validation and evaluation metrics.
TRAIN, VAL, EVAL = "train", "val", "eval"
# Every kind a writer may append, with the fields it must carry (besides its measurements).
RECORD_FIELDS: dict[str, tuple[str, ...]] = {
    TRAIN: ("epoch", "step", "losses", "lr", "time"),
    VAL: ("epoch", "step"),
    EVAL: ("case", "method", "checkpoint"),
    "checkpoint": ("path", "best", "step", "epoch"),
    "resume": ("epoch", "step"),
    "best_is_latest": ("step", "epoch", "reason"),
    "interrupted": ("step", "epoch", "reason"),
    "done": ("step", "epoch", "reason", "best_metric", "best_epoch"),
}
# Fields that are never a measurement, whatever the record (readers also meet records from older versions).
_NOT_MEASUREMENTS = frozenset({"event", *(name for fields in RECORD_FIELDS.values() for name in fields)})
# Metrics of the paper's result tables (DCT-Net §3.2: PSNR, SSIM, LPIPS), in table order.
EVAL_METRICS = ("psnr", "ssim", "lpips")


def make_record(event: str, **fields: Any) -> dict[str, Any]:
    """The record ``{"event": event, **fields}``, checked against :data:`RECORD_FIELDS`.

    Raises:
        ValueError: ``event`` is not a kind of the schema, or one of its fields is missing.
    """
    if event not in RECORD_FIELDS:
        raise ValueError(f"unknown metrics-log record kind {event!r}; known: {', '.join(RECORD_FIELDS)}")
    missing = [name for name in RECORD_FIELDS[event] if name not in fields]
    if missing:
        raise ValueError(f"a {event!r} record needs {', '.join(missing)}")
    return {"event": event, **fields}


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
    # A torch tensor can only exist once torch is imported: this module does not import it (the Slicer training
    # module reads the log in Slicer's own process, where torch may be missing).
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def now() -> float:
    """Wall-clock seconds since the epoch (the ``time`` field of ``train`` records)."""
    return round(time.time(), 3)


class MetricsTail:
    """Incremental reader of a JSON-lines file that another process appends to.

    Args:
        path: the log file; it may not exist yet.

    Keeps the byte offset of the last complete line, so each :meth:`read_new` parses only new data. A line
    without its newline yet is kept until it is complete. If the file shrinks (the run was restarted and the
    log rewritten) reading starts again from the beginning and :attr:`restarted` is set.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.offset = 0
        self.skipped = 0  # lines that were not JSON objects
        self.restarted = False
        self._pending = b""

    def reset(self) -> None:
        self.offset, self.skipped, self._pending = 0, 0, b""

    def read_new(self) -> list[dict[str, Any]]:
        """Records completed since the previous call (empty while the file does not exist)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        self.restarted = False
        if size < self.offset + len(self._pending):
            self.reset()
            self.restarted = True
        with self.path.open("rb") as handle:
            handle.seek(self.offset + len(self._pending))
            data = handle.read()
        if not data:
            return []
        chunk = self._pending + data
        lines = chunk.split(b"\n")
        self._pending = lines.pop()  # b"" when the chunk ended with a newline
        self.offset += len(chunk) - len(self._pending)
        records = []
        for raw in lines:
            record = self._parse(raw)
            if record is not None:
                records.append(record)
        return records

    def _parse(self, raw: bytes) -> dict[str, Any] | None:
        text = raw.decode("utf-8", errors="replace").strip()
        if not text:
            return None
        try:
            record = json.loads(text)
        except RecursionError:  # "[[[[…" 100,000 deep: the parser's recursion limit, not a record
            self.skipped += 1
            logger.warning("skipping a line of %s nested too deeply to be a record (%d characters)", self.path,
                           len(text))
            return None
        except ValueError:
            record = None
        if not isinstance(record, dict):
            self.skipped += 1
            logger.debug("skipping a line of %s that is not a JSON object: %.80s", self.path, text)
            return None
        return record


@dataclass(frozen=True)
class EvalRow:
    """One evaluated case: its name and metric values (missing metrics are NaN)."""

    case: str
    values: dict[str, float]


@dataclass(frozen=True)
class MetricSummary:
    """Mean, sample standard deviation (ddof=1; 0 for one case) and count of one metric over the cases."""

    mean: float
    std: float
    count: int


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


@dataclass
class RunHistory:
    """Everything learned from a run's records so far.

    Attributes:
        losses: loss name → list of ``(step, value)`` from ``train`` records, in arrival order.
        validation: metric name → list of ``(epoch, value)`` from ``val`` records.
        evaluations: one :class:`EvalRow` per ``eval`` record; a case evaluated again replaces its row.
        last_epoch / last_step: the latest seen in any record (``None`` before the first).
        other_events: count of records of any other event type (e.g. ``checkpoint``), by type.
    """

    losses: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    validation: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    evaluations: list[EvalRow] = field(default_factory=list)
    last_epoch: int | None = None
    last_step: int | None = None
    other_events: dict[str, int] = field(default_factory=dict)
    _train_records: int = 0

    def update(self, records: Iterable[dict[str, Any]]) -> int:
        """Fold ``records`` in; returns how many were understood (train, val or eval)."""
        understood = 0
        for record in records:
            event = record.get("event")
            epoch = _as_float(record.get("epoch"))
            if math.isfinite(epoch):
                self.last_epoch = int(epoch)
            if event == TRAIN:
                self._add_train(record)
            elif event == VAL:
                self._add_val(record)
            elif event == EVAL:
                self._add_eval(record)
            else:
                key = str(event)
                self.other_events[key] = self.other_events.get(key, 0) + 1
                continue
            understood += 1
        return understood

    def _add_train(self, record: dict[str, Any]) -> None:
        self._train_records += 1
        step_value = _as_float(record.get("step"))
        step = int(step_value) if math.isfinite(step_value) else self._train_records
        self.last_step = step
        losses = record.get("losses")
        if not isinstance(losses, dict):  # tolerate flat records: every numeric field but the bookkeeping
            losses = {k: v for k, v in record.items() if k not in _NOT_MEASUREMENTS}
        for name, value in losses.items():
            number = _as_float(value)
            if math.isfinite(number):
                self.losses.setdefault(str(name), []).append((step, number))

    def _add_val(self, record: dict[str, Any]) -> None:
        epoch_value = _as_float(record.get("epoch"))
        epoch = int(epoch_value) if math.isfinite(epoch_value) else (self.last_epoch or 0)
        for name, value in record.items():
            if name in _NOT_MEASUREMENTS:
                continue
            number = _as_float(value)
            if math.isfinite(number):
                self.validation.setdefault(str(name), []).append((epoch, number))

    def _add_eval(self, record: dict[str, Any]) -> None:
        case = str(record.get("case", f"case {len(self.evaluations) + 1}"))
        values = {name: _as_float(value) for name, value in record.items()
                  if name not in _NOT_MEASUREMENTS and not isinstance(value, (dict, list, str))}
        self.evaluations = [row for row in self.evaluations if row.case != case]
        self.evaluations.append(EvalRow(case=case, values=values))

    # -- views -------------------------------------------------------------------------------------------

    def loss_series(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Loss name → ``(steps, values)`` float64 arrays, ready for a plot."""
        return {name: (np.array([p[0] for p in points], dtype=np.float64),
                       np.array([p[1] for p in points], dtype=np.float64))
                for name, points in self.losses.items()}

    def validation_series(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Validation metric → ``(epochs, values)`` float64 arrays."""
        return {name: (np.array([p[0] for p in points], dtype=np.float64),
                       np.array([p[1] for p in points], dtype=np.float64))
                for name, points in self.validation.items()}

    def eval_metric_names(self) -> list[str]:
        """Metric columns of the evaluation table: PSNR, SSIM, LPIPS first, then any others seen."""
        seen: list[str] = []
        for row in self.evaluations:
            seen += [name for name in row.values if name not in seen]
        return [m for m in EVAL_METRICS if m in seen] + [m for m in seen if m not in EVAL_METRICS]

    def eval_summary(self, metrics: Sequence[str] | None = None) -> dict[str, MetricSummary]:
        """Mean ± std of each metric over the evaluated cases (NaNs ignored)."""
        summary = {}
        for name in metrics or self.eval_metric_names():
            values = np.array([row.values.get(name, math.nan) for row in self.evaluations], dtype=np.float64)
            values = values[np.isfinite(values)]
            if values.size == 0:
                summary[name] = MetricSummary(math.nan, math.nan, 0)
                continue
            std = float(values.std(ddof=1)) if values.size > 1 else 0.0
            summary[name] = MetricSummary(float(values.mean()), std, int(values.size))
        return summary


def format_mean_std(summary: MetricSummary, digits: int = 3) -> str:
    """``"26.912 ± 0.031"`` (the paper's table style), or ``"–"`` when there is no value."""
    if summary.count == 0 or not math.isfinite(summary.mean):
        return "–"
    return f"{summary.mean:.{digits}f} ± {summary.std:.{digits}f}"
