"""What the DCTNetTraining module runs and reads: ``dctnet`` argument lists, run-folder files, plot columns.

Pure Python (no ``slicer``): the module turns its parameter node into a :class:`RunRequest`, starts
``PythonSlicer -m DCTNetLib <args>`` with :class:`DCTNetSlicerLib.tasks.SlicerTask`, and tails
``<run>/metrics.jsonl`` with :class:`DCTNetLib.training.runlog.MetricsTail` into a
:class:`~DCTNetLib.training.runlog.RunHistory`, which :func:`loss_table_columns` and :func:`eval_table_rows`
turn into a plot-chart table and an evaluation table.

Stages in order (DCT-Net §2): ``prepare`` (raw LIDC-IDRI / CTSpine1K → 128³ cases + DRRs), ``train-cdm`` (the
bone-suppression diffusion model), ``train`` (the dual-branch GAN, using the CDM of the same run folder),
``evaluate`` (PSNR / SSIM / LPIPS per test case).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from DCTNetLib.conventions import PAPER_DATASETS

__all__ = [
    "STAGES",
    "STOPPABLE_STAGES",
    "AttachedRun",
    "find_running",
    "busy_reason",
    "RunRequest",
    "command_args",
    "metrics_log_path",
    "best_checkpoint",
    "loss_table_columns",
    "eval_table_rows",
]

# Stage → dctnet sub-command.
STAGES = {"prepare": "prepare", "cdm": "train-cdm", "gan": "train", "evaluate": "evaluate"}
# Sub-folders of the run folder: the CDM run and the GAN run (the GAN stage reads the CDM's best.pt).
CDM_SUBDIR = "cdm"
GAN_SUBDIR = "gan"
EVAL_SUBDIR = "evaluation"
# Stages whose command polls the stop file of its run folder (DCTNetLib.training.stop_request): Stop is graceful
# there on every platform; the others are interrupted like Ctrl-C.
STOPPABLE_STAGES = ("cdm", "gan")


@dataclass
class RunRequest:
    """Everything one start button needs.

    Args:
        stage: one of :data:`STAGES`.
        dataset: one of :data:`DCTNetLib.conventions.PAPER_DATASETS` (``prepare`` only).
        raw_dir: the downloaded dataset (``prepare`` only).
        prepared_dir: prepared cases (output of ``prepare``, input of the others).
        run_dir: run folder; the CDM goes to ``run_dir/cdm``, the GAN to ``run_dir/gan``.
        preset: ``"tiny"``, ``"small"`` or ``"full"``. Defaults to ``"small"`` (CPU-sized).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        epochs: epochs to train; 0 keeps the config's (the paper's) value.
        resume: continue the run in the folder from its ``latest.pt``.
        weights: model file to evaluate. Defaults to the GAN run's ``best.pt``.
    """

    stage: str
    prepared_dir: str = ""
    run_dir: str = ""
    dataset: str = "lidc-idri"
    raw_dir: str = ""
    preset: str = "small"
    device: str = "auto"
    epochs: int = 0
    resume: bool = False
    weights: str = ""


def _require(value: str, what: str) -> str:
    if not str(value).strip():
        raise ValueError(f"{what} is not set")
    return str(Path(value))


def stage_dir(request: RunRequest, stage: str | None = None) -> Path:
    """The folder a stage writes to (its run folder, holding ``metrics.jsonl`` and checkpoints)."""
    stage = stage or request.stage
    if stage == "prepare":
        return Path(_require(request.prepared_dir, "the prepared-data folder"))
    sub = {"cdm": CDM_SUBDIR, "gan": GAN_SUBDIR, "evaluate": EVAL_SUBDIR}[stage]
    return Path(_require(request.run_dir, "the run folder")) / sub


def command_args(request: RunRequest) -> list[str]:
    """The ``dctnet`` arguments (after ``python -m DCTNetLib``) of a request.

    Raises:
        ValueError: unknown stage or dataset, or a folder the stage needs is not set.
    """
    if request.stage not in STAGES:
        raise ValueError(f"stage must be one of {sorted(STAGES)}, got {request.stage!r}")
    command = STAGES[request.stage]
    if request.stage == "prepare":
        if request.dataset not in PAPER_DATASETS:
            raise ValueError(f"dataset must be one of {sorted(PAPER_DATASETS)}, got {request.dataset!r}")
        return [command, "--dataset", request.dataset, "--source", _require(request.raw_dir, "the dataset folder"),
                "--output", str(stage_dir(request))]
    data = _require(request.prepared_dir, "the prepared-data folder")
    if request.stage == "evaluate":
        weights = request.weights or str(stage_dir(request, "gan") / "best.pt")
        return [command, "--data", data, "--checkpoint", weights, "--output", str(stage_dir(request)),
                "--device", request.device]
    args = [command, "--data", data, "--output", str(stage_dir(request)), "--preset", request.preset,
            "--device", request.device]
    if request.stage == "gan":
        args += ["--cdm", str(stage_dir(request, "cdm") / "best.pt")]
    if request.epochs > 0:
        args += ["--epochs", str(int(request.epochs))]
    if request.resume:
        args.append("--resume")
    return args


def metrics_log_path(run_dir: str | Path) -> Path:
    """``<run_dir>/metrics.jsonl``, the JSON-lines log the trainers and ``dctnet evaluate`` append to."""
    from DCTNetLib.training.runlog import METRICS_FILENAME

    return Path(run_dir) / METRICS_FILENAME


def best_checkpoint(run_dir: str | Path) -> Path | None:
    """The run's ``best.pt``, else its ``latest.pt``, else ``None``."""
    from DCTNetLib.checkpoints.checkpoint import BEST, LATEST

    for name in (BEST, LATEST):
        path = Path(run_dir) / name
        if path.is_file():
            return path
    return None


def loss_table_columns(history: Any) -> tuple[list[str], np.ndarray]:
    """Loss curves of a ``RunHistory`` as one table: column names and a ``(steps, 1 + losses)`` array.

    Column 0 is the step; each loss has a value at every step any loss was logged at (NaN where it was not),
    which is the layout a Slicer table node needs to plot one series per loss against a shared x column.
    """
    series = history.loss_series()
    names = sorted(series)
    steps = np.unique(np.concatenate([series[n][0] for n in names])) if names else np.zeros(0)
    table = np.full((steps.size, 1 + len(names)), math.nan, dtype=np.float64)
    table[:, 0] = steps
    for column, name in enumerate(names, start=1):
        x, y = series[name]
        table[np.searchsorted(steps, x), column] = y
    return ["step", *names], table


def eval_table_rows(history: Any, metrics: Sequence[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """The evaluation table: header ``["case", *metrics]``, one row per case, then a ``mean ± std`` row."""
    from DCTNetLib.training.runlog import format_mean_std

    metrics = list(metrics or history.eval_metric_names())
    rows = [[row.case, *[f"{row.values.get(m, math.nan):.4f}" for m in metrics]] for row in history.evaluations]
    if rows:
        summary = history.eval_summary(metrics)
        rows.append(["mean ± std", *[format_mean_std(summary[m]) for m in metrics]])
    return ["case", *metrics], rows


def busy_reason(request: RunRequest) -> str | None:
    """Why ``request`` must not start (one line), or None: a live run already trains into its folder."""
    from DCTNetLib.training.stop_request import running_run

    if request.stage not in STOPPABLE_STAGES:
        return None
    folder = stage_dir(request)
    record = running_run(folder)
    if record is None:
        return None
    return (f"{folder} is in use by a running training (pid {record.get('pid')}, started "
            f"{record.get('started', '?')}); stop it first or choose another run folder")


class AttachedRun:
    """A training run this Slicer session did not start (found from its run folder's lock): watched, and stopped
    through the stop file, never orphaned by a module reload.

    Args:
        stage: ``"cdm"`` or ``"gan"``.
        folder: its run folder.
        record: its lock record (``pid``, ``host``, ``started``).
    """

    def __init__(self, stage: str, folder: Path, record: dict[str, Any]) -> None:
        self.stage, self.folder, self.record = stage, Path(folder), dict(record)
        self.pid = int(record.get("pid", -1))
        self.stopped = False

    @property
    def running(self) -> bool:
        from DCTNetLib.training.stop_request import running_run

        return running_run(self.folder) is not None

    def stop(self) -> None:
        """Ask the run to stop after its current step (it writes a checkpoint first)."""
        from DCTNetLib.training.stop_request import request_stop

        self.stopped = True
        request_stop(self.folder)

    def cancel(self) -> None:
        """Kill the run and its workers at once (the previous checkpoint stays valid)."""
        from .process import kill_now

        kill_now([self.pid])


def find_running(run_dir: str | Path) -> AttachedRun | None:
    """The live training run in a DCTNet Training run folder (its ``cdm`` or ``gan`` sub-folder), else None."""
    from DCTNetLib.training.stop_request import running_run

    if not str(run_dir).strip():
        return None
    for stage in STOPPABLE_STAGES:
        folder = stage_dir(RunRequest(stage=stage, run_dir=str(run_dir)))
        record = running_run(folder)
        if record is not None:
            return AttachedRun(stage, folder, record)
    return None
