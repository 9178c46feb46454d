"""The dataset pipeline behind ``dctnet prepare``: CTs in, training cases and split files out.

Per case (:func:`prepare_case`): read the CT (:func:`DCTNetLib.io.ct.read_ct`), preprocess it as X2CT-GAN did
(:func:`DCTNetLib.data.preprocess.preprocess_ct`: 1 mm → 320³ → 128³ → [0, 1]), render PA + lateral DRRs
(:func:`DCTNetLib.data.drr.make_drrs`) and bone-suppressed DRRs (:func:`DCTNetLib.data.bone.bone_suppressed_drrs`),
and write the case folder described in :mod:`DCTNetLib.data.prepared_cases` (``meta.json`` last, as the "done" marker).

Per dataset (:func:`prepare_dataset`): discover the cases, skip the finished ones, prepare the others (in this
process or in worker processes, :mod:`DCTNetLib.data.worker_pool`), list the failures in ``failed.txt`` and
rewrite the train/val/test split files and ``splits/split.json`` from every finished case. A case that cannot be
read is logged with a one-line reason and never stops the run; an output that cannot be written does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from .. import __version__
from ..conventions import HU_MAX, HU_MIN, VOXEL_SPACING_MM
from ..errors import DCTNetError, InputError, OutputError
from ..io.atomic import atomic_write_text, check_free_space, check_writable_dir, display_path
from ..io.ct import read_ct
from .bone import bone_suppressed_drrs
from .case_discovery import Case, discover_cases, given_splits
from .case_splits import (SPLIT_SEED, SPLITS, describe_split, make_splits, split_record, write_split_record,
                          write_splits)
from .drr import make_drrs
from .prepared_cases import CASES_DIR, CT_STORE_DTYPE, is_case_done, write_case
from .preprocess import preprocess_ct
from .worker_pool import run_in_workers

__all__ = ["prepare_dataset", "prepare_case", "PrepareSummary", "sha256_of_source"]

log = logging.getLogger("dctnet.prepare")  # what `dctnet prepare` prints comes from this logger

# Disk use of one case: float16 128³ volume + two float32 (2, 128, 128) DRR stacks + meta.json, rounded up.
BYTES_PER_CASE = 128**3 * 2 + 2 * (2 * 128 * 128 * 4) + 64 * 1024
# What each dataset's cases look like, for the message of a source where none is found.
_EXPECTED_LAYOUT = {"lidc-idri": "LIDC-IDRI-XXXX folders holding DICOM series", "ctspine1k": "NIfTI files (*.nii.gz)",
                    "generic": "CT files (.nii.gz, .nrrd, .mha) or DICOM CT series folders"}

DrrFn = Callable[[torch.Tensor], torch.Tensor]  # (1, 1, D, H, W) unit volume → (1, 2, 128, 128) in [0, 1]


@dataclass
class PrepareSummary:
    """What a run did: ids of cases prepared now, skipped (already prepared) and failed (id → reason)."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    splits: dict[str, list[str]] = field(default_factory=dict)
    split_record: dict = field(default_factory=dict)

    def line(self) -> str:
        sizes = " / ".join(f"{name} {len(self.splits.get(name, []))}" for name in SPLITS)
        return (f"{len(self.done)} done, {len(self.skipped)} skipped (already prepared), {len(self.failed)} failed; "
                f"splits: {sizes}")

    def split_line(self) -> str:
        """Which count and split this run produced, against the paper's (empty before the split is made)."""
        return describe_split(self.split_record) if self.split_record else ""

    def record(self, case_id: str, status: str, detail: str) -> None:
        """Count the outcome of one case (``status`` "done" or "failed"; ``detail`` the timings or the reason)."""
        if status == "done":
            self.done.append(case_id)
            log.debug("%s: done %s", case_id, detail)
        else:
            self.failed[case_id] = detail
            log.warning("%s: skipped, cannot be prepared: %s", case_id, detail)


# -------------------------------------------------------------------------------------------------- one case


def _default_drr_fn(unit_volume: torch.Tensor) -> torch.Tensor:
    return make_drrs(unit_volume, spacing_mm=VOXEL_SPACING_MM)


def _default_bone_fn(unit_volume: torch.Tensor) -> torch.Tensor:
    return bone_suppressed_drrs(unit_volume)


def sha256_of_source(source: Path) -> str:
    """sha256 over a NIfTI file, or over the (name, content) of every file in a DICOM series folder."""
    digest = hashlib.sha256()
    files = sorted(p for p in source.iterdir() if p.is_file()) if source.is_dir() else [source]
    for path in files:
        if source.is_dir():
            digest.update(os.fsencode(path.name) + b"\0")  # any bytes: names need not be UTF-8
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _views(drr, name: str) -> np.ndarray:
    array = drr.detach().to("cpu").float().numpy() if hasattr(drr, "detach") else np.asarray(drr, np.float32)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3 or array.shape[0] != 2:
        raise ValueError(f"{name} must return (1, 2, H, W) PA + lateral images, got shape {array.shape}")
    return array


class _Laps:
    """Seconds spent in each step of a case, each measured from the end of the one before."""

    def __init__(self) -> None:
        self.timing: dict[str, float] = {}
        self._start = time.perf_counter()

    def __call__(self, step: str) -> None:
        now = time.perf_counter()
        self.timing[step] = round(now - self._start, 3)
        self._start = now


def prepare_case(case: Case, output: Path, drr_fn: DrrFn | None = None,
                 bone_fn: DrrFn | None = None) -> tuple[str, str, str]:
    """Prepare one case into ``output/cases/<case_id>``.

    Returns:
        ``(case_id, status, detail)`` with status ``"done"`` or ``"failed"`` (detail = one-line reason).

    Raises:
        OutputError: the output cannot be written (disk full, ...): that stops the whole run.
    """
    laps = _Laps()
    if case.duplicate_of is not None:
        return f"{case.case_id} [{display_path(case.source)}]", "failed", (
            f"duplicate case id {case.case_id}: {display_path(case.source)} maps to the "
            f"same id as {display_path(case.duplicate_of)}, which is prepared instead")
    _remove_stale_temporary_files(output / CASES_DIR / case.case_id)
    try:
        _write_case(case, output, drr_fn or _default_drr_fn, bone_fn or _default_bone_fn, laps)
    except OutputError:
        raise
    except DCTNetError as exc:
        return case.case_id, "failed", _one_line(str(exc))
    except Exception as exc:  # any other failure of one case must not stop the run
        return case.case_id, "failed", _one_line(f"{type(exc).__name__}: {exc}")
    return case.case_id, "done", json.dumps(laps.timing)


def _write_case(case: Case, output: Path, drr_fn: DrrFn, bone_fn: DrrFn, laps: _Laps) -> None:
    """Read, preprocess and render one case and write its folder; ``meta.json`` records the step times."""
    ct = read_ct(case.source)
    laps("read")
    prepared = preprocess_ct(ct)
    laps("preprocess")
    unit = torch.from_numpy(prepared.volume)[None, None]
    with torch.no_grad():
        drr = _views(drr_fn(unit), "drr_fn")
        laps("drr")
        drr_bs = _views(bone_fn(unit), "bone_fn")
        laps("drr_bone_suppressed")
    source = Path(ct.source or case.source)
    ct_store = prepared.volume.astype(CT_STORE_DTYPE)
    meta = {
        "case_id": case.case_id,
        "dataset": case.dataset,
        "source": str(source),
        "source_sha256": sha256_of_source(source),
        "original": {"shape": list(ct.shape), "spacing_mm": list(ct.spacing),
                     "origin_lps": list(ct.origin_lps), "direction": list(ct.direction)},
        "geometry": prepared.geometry(),
        "hu_window": [HU_MIN, HU_MAX],
        "ct_sha256": hashlib.sha256(ct_store.tobytes()).hexdigest(),
        "dctnet_version": __version__,
    }
    laps("hash")
    meta["timing_s"] = laps.timing  # as far as it goes: the write is timed after meta.json is written
    write_case(output / CASES_DIR / case.case_id, ct_store, drr, drr_bs, meta)
    laps("write")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _remove_stale_temporary_files(case_dir: Path) -> None:
    """Remove the hidden ``.tmp-*`` files a run killed with ``kill -9`` left in a case folder it was writing."""
    if case_dir.is_dir():
        for stale in case_dir.glob(".tmp-*"):
            stale.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- whole dataset


def prepare_dataset(dataset: str, source: str | os.PathLike, output: str | os.PathLike, *,
                    workers: int = 1, seed: int = SPLIT_SEED, limit: int | None = None,
                    drr_fn: DrrFn | None = None, bone_fn: DrrFn | None = None,
                    progress: bool = True, unit: str = "scan") -> PrepareSummary:
    """Prepare every case of ``dataset`` under ``source`` into ``output`` and write the split files.

    Args:
        dataset: ``"lidc-idri"``, ``"ctspine1k"`` or ``"generic"``.
        source: the raw download.
        output: destination folder (created if missing).
        workers: processes; 1 runs in this process. Defaults to 1.
        seed: seed of the train/val/test split. Defaults to 2025.
        limit: prepare only the first ``limit`` discovered cases.
        drr_fn, bone_fn: DRR renderers ``(1, 1, D, H, W)`` unit → ``(1, 2, H, W)`` in [0, 1]; default to
            ``data.drr.make_drrs`` and ``data.bone.bone_suppressed_drrs``. With ``workers > 1`` they must be
            picklable (module-level functions).
        progress: show a tqdm bar (only on a terminal).
        unit: LIDC-IDRI discovery unit, ``"scan"`` or ``"patient"`` (:func:`~DCTNetLib.data.case_discovery.discover_cases`).
            Defaults to "scan".

    Returns:
        :class:`PrepareSummary`.

    Raises:
        InputError: unknown dataset or missing source folder. OutputError: output not writable / disk full.
    """
    output = Path(output)
    summary = PrepareSummary()
    cases = discover_cases(dataset, source, unit)
    if limit is not None:
        cases = cases[: max(0, int(limit))]
    log.info("%d %s case(s) found under %s", len(cases), dataset, source)
    todo = [case for case in cases if not _already_prepared(case, output, summary)]
    if not cases:  # before any folder is made: a run that finds nothing leaves nothing behind
        raise InputError(f"no {dataset} cases found under {source} (expected {_EXPECTED_LAYOUT[dataset]}); check "
                         "--source and --dataset")
    _prepare_output(output, len(todo))
    bar = tqdm(total=len(todo), desc="prepare", unit="case", disable=None if progress else True)

    def record(result: tuple[str, str, str]) -> None:
        summary.record(*result)
        bar.update()

    try:
        jobs = [(case, output, drr_fn, bone_fn) for case in todo]
        if workers <= 1 or len(todo) <= 1:
            for job in jobs:
                record(prepare_case(*job))
        else:
            run_in_workers(prepare_case, jobs, workers, record)
    finally:
        bar.close()
    _write_splits(output, cases, dataset, source, seed, unit, summary)
    atomic_write_text(output / "failed.txt", "".join(f"{k}\t{v}\n" for k, v in sorted(summary.failed.items())))
    log.info("prepare: %s", summary.line())
    log.info("prepare: %s", summary.split_line())
    return summary


def _already_prepared(case: Case, output: Path, summary: PrepareSummary) -> bool:
    """True (and counted as skipped) when the case's folder is complete from an earlier run."""
    if case.duplicate_of is None and is_case_done(output / CASES_DIR / case.case_id):
        summary.skipped.append(case.case_id)
        return True
    return False


def _prepare_output(output: Path, n_cases: int) -> None:
    try:
        (output / CASES_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {output}: {exc.strerror or exc}") from exc
    check_writable_dir(output)
    check_free_space(output, n_cases * BYTES_PER_CASE)


def _write_splits(output: Path, cases: list[Case], dataset: str, source: str | os.PathLike, seed: int,
                  unit: str, summary: PrepareSummary) -> None:
    """The split files of every finished case (a case list's own split column, else the seeded split) and the
    record of how they were made."""
    finished = [c.case_id for c in cases if is_case_done(output / CASES_DIR / c.case_id)]
    groups = {c.case_id: c.group for c in cases} if any(c.patient for c in cases) else None
    summary.splits = given_splits(cases, finished) or make_splits(finished, dataset, seed, groups)
    write_splits(output, summary.splits)
    summary.split_record = split_record(summary.splits, dataset, seed=seed,
                                                 unit=unit if dataset == "lidc-idri" else "scan", groups=groups)
    if any(c.split for c in cases):
        summary.split_record["given_by"] = f"the split column of {source}"
    write_split_record(output, summary.split_record)
