"""Result tables: a per-case CSV and a Markdown table in the format of the paper's Tables 1 and 2.

The paper's columns are ``Method | PSNR (↑) | SSIM (↑) | LPIPS (↓) | Params (M)`` with values ``mean ± std`` to
3 decimals (e.g. ``27.602 ± 0.003``). ``std`` here is the population standard deviation over test cases
(``numpy.std``, ddof = 0); the paper does not say which it used. Non-finite per-case values (PSNR of identical
volumes is ``inf``) propagate: the summary then reads ``inf``, never a silently dropped case.

Both files are written atomically (:mod:`DCTNetLib.io.atomic`).
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from torch import nn

from ..helpers import count_parameters
from ..io.atomic import atomic_write_text

__all__ = [
    "TABLE_METRICS", "MethodResult", "summarize", "format_mean_std", "count_parameters_m",
    "case_csv_text", "write_case_csv", "markdown_table", "write_markdown_table",
]

# (result key, column header) of the paper's tables; ↑ higher is better, ↓ lower is better.
TABLE_METRICS: tuple[tuple[str, str], ...] = (("psnr", "PSNR (↑)"), ("ssim", "SSIM (↑)"), ("lpips", "LPIPS (↓)"))
DECIMALS = 3  # as printed in the paper's tables
MISSING = "—"


@dataclass
class MethodResult:
    """One row of a results table.

    Args:
        method: name in the first column (e.g. ``"DCT-Net"``, ``"X2CT-GAN"``).
        cases: per-case metric dicts, e.g. from :func:`~DCTNetLib.evaluation.metrics.evaluate_volume`, each with
            a ``"case"`` key naming the case.
        params_m: trainable parameters in millions (:func:`count_parameters_m`), or None if unknown.
    """

    method: str
    cases: list[dict] = field(default_factory=list)
    params_m: float | None = None


def count_parameters_m(*modules: nn.Module) -> float:
    """Trainable parameters of ``modules`` in millions (the paper's "Params (M)"), each parameter counted once."""
    return count_parameters(*modules) / 1e6


def summarize(cases: Sequence[Mapping[str, float]], key: str) -> tuple[float, float] | None:
    """``(mean, std)`` of ``key`` over the cases that have it; None when no case has it.

    Args:
        cases: per-case metric dicts.
        key: metric name, e.g. ``"psnr"``.
    """
    values = [float(case[key]) for case in cases if key in case and case[key] is not None]
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    if not np.isfinite(array).all():
        return float(np.mean(array)), math.nan
    return float(array.mean()), float(array.std())


def format_mean_std(stats: tuple[float, float] | None, decimals: int = DECIMALS) -> str:
    """``"27.602 ± 0.003"``; ``inf`` / ``nan`` spelled out; ``—`` for no value.

    Args:
        stats: ``(mean, std)`` from :func:`summarize`, or None.
        decimals: digits after the point. Defaults to 3 (the paper's tables).
    """
    if stats is None:
        return MISSING
    mean, std = stats
    if not math.isfinite(mean):
        return str(mean)
    if not math.isfinite(std):
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def _columns(cases: Sequence[Mapping[str, object]]) -> list[str]:
    """``case`` first, then every other key in first-seen order."""
    columns: list[str] = ["case"]
    for case in cases:
        for key in case:
            if key not in columns:
                columns.append(key)
    return columns


def case_csv_text(cases: Sequence[Mapping[str, object]]) -> str:
    """Per-case CSV (one row per case, one column per metric; missing metrics are empty cells).

    Args:
        cases: per-case metric dicts with a ``"case"`` key.
    """
    if not cases:
        raise ValueError("cases must not be empty")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_columns(cases), restval="", lineterminator="\n")
    writer.writeheader()
    for case in cases:
        writer.writerow({key: (repr(value) if isinstance(value, float) else value) for key, value in case.items()})
    return buffer.getvalue()


def write_case_csv(cases: Sequence[Mapping[str, object]], path: str | os.PathLike) -> Path:
    """Write :func:`case_csv_text` to ``path`` atomically and return the path."""
    return atomic_write_text(path, case_csv_text(cases))


def markdown_table(results: Sequence[MethodResult], decimals: int = DECIMALS) -> str:
    """The paper's table: ``| Method | PSNR (↑) | SSIM (↑) | LPIPS (↓) | Params (M) |``.

    Args:
        results: one :class:`MethodResult` per row, in display order.
        decimals: digits after the point of the metric columns. Defaults to 3.
    """
    if not results:
        raise ValueError("results must not be empty")
    header = ["Method", *(title for _, title in TABLE_METRICS), "Params (M)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] * len(header)) + "|"]
    for result in results:
        cells = [result.method.replace("|", "\\|")]
        cells += [format_mean_std(summarize(result.cases, key), decimals) for key, _ in TABLE_METRICS]
        cells.append(MISSING if result.params_m is None else f"{result.params_m:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_markdown_table(results: Sequence[MethodResult], path: str | os.PathLike,
                         decimals: int = DECIMALS) -> Path:
    """Write :func:`markdown_table` to ``path`` atomically and return the path."""
    return atomic_write_text(path, markdown_table(results, decimals))
