"""``dctnet prepare`` — turn LIDC-IDRI or CTSpine1K downloads, or your own CTs, into training cases.

Examples::

    dctnet prepare --dataset lidc-idri --source ~/TCIA/LIDC-IDRI --output data/lidc --workers 4
    dctnet prepare --dataset ctspine1k --source ~/CTSpine1K --output data/ctspine1k
    dctnet prepare --dataset generic --source ~/my_cts --output data/mine            # your own CTs (any layout)
    dctnet prepare --dataset generic --source cases.csv --output data/mine           # path,id,split,patient
    dctnet prepare ... --limit 5            # a quick trial on the first five cases
    dctnet prepare --dataset lidc-idri ... --unit patient   # one CT per patient instead of every CT scan

Per case: read the CT (:func:`DCTNetLib.io.ct.read_ct`), preprocess it as X2CT-GAN did
(:func:`DCTNetLib.data.preprocess.preprocess_ct`: 1 mm → 320³ → 128³ → [0, 1]), render PA + lateral DRRs
(``DCTNetLib.data.drr.make_drrs``) and bone-suppressed DRRs (``DCTNetLib.data.bone.bone_suppressed_drrs``),
and write the case folder described in :mod:`DCTNetLib.data.datasets` (``meta.json`` last, as the "done" marker).

Re-running resumes: finished cases are skipped. A case that cannot be read is logged with a one-line reason
and listed in ``failed.txt``; it never stops the run. At the end the train/val/test split files are rewritten
from every finished case (paper sizes, or its proportions for other case counts; fixed ``--seed``; the scans of
one patient stay in one split) and ``splits/split.json`` records how: dataset, discovery unit, case and patient
counts, sizes against the paper's, seed and the sha256 of each list. The last line printed says the same.

LIDC-IDRI is discovered per CT scan by default (``--unit scan``): DCT-Net's 1,018 LIDC-IDRI CTs are scans
(of 1,010 patients), so a complete download gives the paper's 854 / 72 / 92 split sizes.
``--unit patient`` keeps one scan per patient (≤ 1,010 cases, the paper's proportions).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .. import __version__
from ..conventions import HU_MAX, HU_MIN, VOXEL_SPACING_MM
from ..data import datasets
from ..errors import DCTNetError, InputError, OutputError
from ..io.atomic import atomic_write_text, check_free_space, check_writable_dir, display_path

__all__ = ["HELP", "add_arguments", "run", "prepare_dataset", "prepare_case", "PrepareSummary"]

HELP = "prepare LIDC-IDRI / CTSpine1K / your own CTs (generic): CT → 128³ volume + PA/lateral DRRs + bone-suppressed DRRs, and splits"

log = logging.getLogger("dctnet.prepare")

DEFAULT_SEED = 2025
DEFAULT_WORKERS = max(1, min(4, (os.cpu_count() or 1) // 2))  # each worker needs ~1.5 GB at 512²×133 input
# Disk use of one case: float16 128³ volume + two float32 (2, 128, 128) DRR stacks + meta.json, rounded up.
BYTES_PER_CASE = 128**3 * 2 + 2 * (2 * 128 * 128 * 4) + 64 * 1024

DrrFn = Callable[["torch.Tensor"], "torch.Tensor"]  # (1, 1, D, H, W) unit volume → (1, 2, 128, 128) in [0, 1]


@dataclass
class PrepareSummary:
    """What a run did: ids of cases prepared now, skipped (already prepared) and failed (id → reason)."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    splits: dict[str, list[str]] = field(default_factory=dict)
    split_record: dict = field(default_factory=dict)

    def line(self) -> str:
        sizes = " / ".join(f"{name} {len(self.splits.get(name, []))}" for name in datasets.SPLITS)
        return (f"{len(self.done)} done, {len(self.skipped)} skipped (already prepared), {len(self.failed)} failed; "
                f"splits: {sizes}")

    def split_line(self) -> str:
        """Which count and split this run produced, against the paper's (empty before the split is made)."""
        return datasets.describe_split(self.split_record) if self.split_record else ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=datasets.DATASETS, help="which dataset layout to read")
    parser.add_argument("--source", required=True, metavar="DIR",
                        help="the download: folder holding LIDC-IDRI-XXXX/ case folders, or CTSpine1K NIfTI files; "
                             "generic: a folder of CT files / DICOM CT series, or a .csv/.json case list (columns "
                             "path, and optionally id, split, patient)")
    parser.add_argument("--output", required=True, metavar="DIR", help="where cases/ and splits/ are written")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help=f"parallel processes (default {DEFAULT_WORKERS}; each uses one torch thread)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"split seed (default {DEFAULT_SEED})")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N cases (trial runs)")
    parser.add_argument("--unit", choices=datasets.LIDC_UNITS, default="scan",
                        help="LIDC-IDRI: one case per CT scan (default; the paper's 1,018) or per patient")


def run(args: argparse.Namespace) -> int:
    summary = prepare_dataset(args.dataset, args.source, args.output, workers=args.workers, seed=args.seed,
                              limit=args.limit, unit=args.unit)
    print(f"dctnet prepare: {summary.line()}", flush=True)
    print(f"dctnet prepare: {summary.split_line()}; recorded in "
          f"{Path(args.output) / datasets.SPLITS_DIR / datasets.SPLIT_RECORD}", flush=True)
    return 0 if (summary.done or summary.skipped) or not summary.failed else 1


# -------------------------------------------------------------------------------------------------- one case


def _default_drr_fn(unit_volume):
    from ..data.drr import make_drrs  # lazy: the DRR engine is only needed here

    return make_drrs(unit_volume, spacing_mm=VOXEL_SPACING_MM)


def _default_bone_fn(unit_volume):
    from ..data.bone import bone_suppressed_drrs

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


def prepare_case(case: datasets.Case, output: Path, drr_fn: DrrFn | None = None,
                 bone_fn: DrrFn | None = None) -> tuple[str, str, str]:
    """Prepare one case into ``output/cases/<case_id>``.

    Returns:
        ``(case_id, status, detail)`` with status ``"done"`` or ``"failed"`` (detail = one-line reason).

    Raises:
        OutputError: the output cannot be written (disk full, ...): that stops the whole run.
    """
    import torch

    from ..data.preprocess import preprocess_ct
    from ..io.ct import read_ct

    timing: dict[str, float] = {}
    start = time.perf_counter()
    if case.duplicate_of is not None:
        return f"{case.case_id} [{display_path(case.source)}]", "failed", (
            f"duplicate case id {case.case_id}: {display_path(case.source)} maps to the "
                                        f"same id as {display_path(case.duplicate_of)}, which is prepared instead")
    _remove_stale_temporary_files(output / datasets.CASES_DIR / case.case_id)

    def lap(name: str) -> None:
        nonlocal start
        now = time.perf_counter()
        timing[name] = round(now - start, 3)
        start = now

    try:
        ct = read_ct(case.source)
        lap("read")
        prepared = preprocess_ct(ct)
        lap("preprocess")
        unit = torch.from_numpy(prepared.volume)[None, None]
        with torch.no_grad():
            drr = _views((drr_fn or _default_drr_fn)(unit), "drr_fn")
            lap("drr")
            drr_bs = _views((bone_fn or _default_bone_fn)(unit), "bone_fn")
            lap("drr_bone_suppressed")
        source = Path(ct.source or case.source)
        ct_store = prepared.volume.astype(datasets.CT_STORE_DTYPE)
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
        lap("hash")
        meta["timing_s"] = timing
        datasets.write_case(output / datasets.CASES_DIR / case.case_id, ct_store, drr, drr_bs, meta)
        timing["write"] = round(time.perf_counter() - start, 3)
    except OutputError:
        raise
    except DCTNetError as exc:
        return case.case_id, "failed", _one_line(str(exc))
    except Exception as exc:  # any other failure of one case must not stop the run
        return case.case_id, "failed", _one_line(f"{type(exc).__name__}: {exc}")
    return case.case_id, "done", json.dumps(timing)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _remove_stale_temporary_files(case_dir: Path) -> None:
    """Remove the hidden ``.tmp-*`` files a run killed with ``kill -9`` left in a case folder it was writing."""
    if case_dir.is_dir():
        for stale in case_dir.glob(".tmp-*"):
            stale.unlink(missing_ok=True)


_case_running = False  # in a pool worker: whether a case is being prepared (see _end_worker)


def _end_worker(signum: int, frame: object) -> None:
    """SIGTERM / SIGINT in a pool worker: unwind the case being written (removing its temporary files), or, when
    idle, just end — without the traceback multiprocessing would print for an interrupt in its queue wait."""
    from ..errors import Terminated

    if _case_running:
        raise Terminated(f"terminated by signal {signum}")
    os._exit(128 + signum)


def _init_worker(parent_pid: int | None = None) -> None:
    """One thread per worker process (the processes provide the parallelism); SIGTERM and SIGINT end the worker
    (after unwinding the case being written), and a worker whose parent has gone away (killed with ``kill -9``)
    ends itself the same way instead of writing on as an orphan."""
    import signal
    import threading

    import SimpleITK as sitk
    import torch

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


def _prepare_case_in_worker(case: datasets.Case, output: Path, drr_fn: DrrFn | None,
                            bone_fn: DrrFn | None) -> tuple[str, str, str]:
    """:func:`prepare_case` in a pool worker: an interrupt ends the worker process once the case has unwound
    (the pool would otherwise catch it and start the next case)."""
    global _case_running
    _case_running = True
    try:
        return prepare_case(case, output, drr_fn, bone_fn)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM as errors.Terminated: the case has unwound
        os._exit(143)
    finally:
        _case_running = False


def _stop_workers(pool: ProcessPoolExecutor, grace_s: float = 10.0) -> None:
    """End the running workers (SIGTERM, so each removes its temporary files; SIGKILL after ``grace_s``), so that
    no worker keeps writing after the command has stopped. The pool then marks the cases not done as failed with
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


# ---------------------------------------------------------------------------------------------- whole dataset


def _prepare_output(output: Path, n_cases: int) -> None:
    try:
        (output / datasets.CASES_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {output}: {exc.strerror or exc}") from exc
    check_writable_dir(output)
    check_free_space(output, n_cases * BYTES_PER_CASE)


def prepare_dataset(dataset: str, source: str | os.PathLike, output: str | os.PathLike, *,
                    workers: int = 1, seed: int = DEFAULT_SEED, limit: int | None = None,
                    drr_fn: DrrFn | None = None, bone_fn: DrrFn | None = None,
                    progress: bool = True, unit: str = "scan") -> PrepareSummary:
    """Prepare every case of ``dataset`` under ``source`` into ``output`` and write the split files.

    Args:
        dataset: ``"lidc-idri"`` or ``"ctspine1k"``.
        source: the raw download.
        output: destination folder (created if missing).
        workers: processes; 1 runs in this process. Defaults to 1.
        seed: seed of the train/val/test split. Defaults to 2025.
        limit: prepare only the first ``limit`` discovered cases.
        drr_fn, bone_fn: DRR renderers ``(1, 1, D, H, W)`` unit → ``(1, 2, H, W)`` in [0, 1]; default to
            ``data.drr.make_drrs`` and ``data.bone.bone_suppressed_drrs``. With ``workers > 1`` they must be
            picklable (module-level functions).
        progress: show a tqdm bar (only on a terminal).
        unit: LIDC-IDRI discovery unit, ``"scan"`` or ``"patient"`` (:func:`~DCTNetLib.data.datasets.discover_cases`).
            Defaults to "scan".

    Returns:
        :class:`PrepareSummary`.

    Raises:
        InputError: unknown dataset or missing source folder. OutputError: output not writable / disk full.
    """
    from tqdm import tqdm

    output = Path(output)
    cases = datasets.discover_cases(dataset, source, unit)
    if limit is not None:
        cases = cases[: max(0, int(limit))]
    log.info("%d %s case(s) found under %s", len(cases), dataset, source)
    summary = PrepareSummary()
    todo = []
    for case in cases:
        if case.duplicate_of is None and datasets.is_case_done(output / datasets.CASES_DIR / case.case_id):
            summary.skipped.append(case.case_id)
        else:
            todo.append(case)
    if not cases:  # before any folder is made: a run that finds nothing leaves nothing behind
        layout = {"lidc-idri": "LIDC-IDRI-XXXX folders holding DICOM series", "ctspine1k": "NIfTI files (*.nii.gz)",
                  "generic": "CT files (.nii.gz, .nrrd, .mha) or DICOM CT series folders"}[dataset]
        raise InputError(f"no {dataset} cases found under {source} (expected {layout}); check --source and --dataset")
    _prepare_output(output, len(todo))
    if todo and drr_fn is None:
        from ..data import drr  # noqa: F401  fail now, not once per case, when the DRR engine is missing
    if todo and bone_fn is None:
        from ..data import bone  # noqa: F401

    def record(case_id: str, status: str, detail: str) -> None:
        if status == "done":
            summary.done.append(case_id)
            log.debug("%s: done %s", case_id, detail)
        else:
            summary.failed[case_id] = detail
            log.warning("%s: skipped, cannot be prepared: %s", case_id, detail)

    bar = tqdm(total=len(todo), desc="prepare", unit="case", disable=None if progress else True)
    try:
        if workers <= 1 or len(todo) <= 1:
            for case in todo:
                record(*prepare_case(case, output, drr_fn, bone_fn))
                bar.update()
        else:
            context = multiprocessing.get_context("spawn")  # fork after torch/OpenMP start-up can deadlock
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                                       initargs=(os.getpid(),))
            try:
                futures = [pool.submit(_prepare_case_in_worker, case, output, drr_fn, bone_fn) for case in todo]
                for future in as_completed(futures):
                    record(*future.result())
                    bar.update()
            except BaseException:  # Ctrl-C, SIGTERM, an output error: stop every worker before leaving
                _stop_workers(pool)
                raise
            pool.shutdown(wait=True)
    finally:
        bar.close()

    finished = [c.case_id for c in cases if datasets.is_case_done(output / datasets.CASES_DIR / c.case_id)]
    groups = {c.case_id: c.group for c in cases} if any(c.patient for c in cases) else None
    summary.splits = datasets.given_splits(cases, finished) or datasets.make_splits(finished, dataset, seed, groups)
    datasets.write_splits(output, summary.splits)
    summary.split_record = datasets.split_record(summary.splits, dataset, seed=seed,
                                                 unit=unit if dataset == "lidc-idri" else "scan", groups=groups)
    if any(c.split for c in cases):
        summary.split_record["given_by"] = f"the split column of {source}"
    datasets.write_split_record(output, summary.split_record)
    atomic_write_text(output / "failed.txt", "".join(f"{k}\t{v}\n" for k, v in sorted(summary.failed.items())))
    log.info("prepare: %s", summary.line())
    log.info("prepare: %s", summary.split_line())
    return summary
