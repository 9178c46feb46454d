"""Issue 15, point 2: LIDC-IDRI per-scan discovery (the paper counted 1,018 CT scans), patient-grouped
deterministic splits, and ``prepare`` stating which count and split a run used (stdout and ``splits/split.json``).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from conftest import write_dicom_series
from DCTNetLib import cli
from DCTNetLib.data import case_discovery, case_splits
from DCTNetLib.errors import InputError

# A TCIA-like download: patient 0007 with two CT scans (and a CR radiograph), patient 0009 with one CT scan.
SERIES = {
    ("LIDC-IDRI-0007", "01-01-2000-NA-NA-11111", "3000001.000000-NA-00001"): ("CT", 8),
    ("LIDC-IDRI-0007", "01-01-2001-NA-NA-22222", "3000002.000000-NA-00002"): ("CT", 12),
    ("LIDC-IDRI-0007", "01-01-2000-NA-NA-33333", "1.000000-NA-00003"): ("CR", 2),
    ("LIDC-IDRI-0009", "01-01-2000-NA-NA-44444", "3000004.000000-NA-00004"): ("CT", 10),
}


@pytest.fixture(scope="module")
def download(tmp_path_factory) -> Path:
    from DCTNetLib.data.phantom import phantom_ct

    root = tmp_path_factory.mktemp("lidc_scans") / "manifest-1" / "LIDC-IDRI"
    for seed, (parts, (modality, depth)) in enumerate(SERIES.items()):
        ct = phantom_ct(size=16, seed=seed)
        ct = type(ct)(hu=ct.hu[:depth], spacing=ct.spacing, origin_lps=ct.origin_lps, source="phantom")
        write_dicom_series(ct, root.joinpath(*parts), modality=modality)
    return root.parents[1]


def test_per_scan_discovery_finds_every_ct_series(download):
    cases = case_discovery.discover_cases("lidc-idri", download)  # default unit: scan
    assert [c.case_id for c in cases] == ["LIDC-IDRI-0007_s1", "LIDC-IDRI-0007_s2", "LIDC-IDRI-0009"]
    assert [c.patient for c in cases] == ["LIDC-IDRI-0007", "LIDC-IDRI-0007", "LIDC-IDRI-0009"]
    assert [c.source.name for c in cases] == ["3000001.000000-NA-00001", "3000002.000000-NA-00002",
                                              "3000004.000000-NA-00004"]  # the CR series is no case


def test_per_patient_discovery_keeps_the_largest_ct_series(download):
    cases = case_discovery.discover_cases("lidc-idri", download, "patient")
    assert [(c.case_id, c.source.name) for c in cases] == [("LIDC-IDRI-0007", "3000002.000000-NA-00002"),
                                                           ("LIDC-IDRI-0009", "3000004.000000-NA-00004")]
    with pytest.raises(InputError, match="unit"):
        case_discovery.discover_cases("lidc-idri", download, "study")


def _paper_like_ids() -> tuple[list[str], dict[str, str]]:
    """1,018 scan ids of 1,010 patients (8 patients with two scans), as in LIDC-IDRI."""
    ids, groups = [], {}
    for patient in range(1, 1011):
        name = f"LIDC-IDRI-{patient:04d}"
        scans = [f"{name}_s1", f"{name}_s2"] if patient % 120 == 0 else [name]
        for scan in scans:
            ids.append(scan)
            groups[scan] = name
    return ids, groups


def test_grouped_split_of_1018_scans_has_the_papers_sizes_and_no_patient_in_two_splits():
    ids, groups = _paper_like_ids()
    assert len(ids) == 1018 and len(set(groups.values())) == 1010
    splits = case_splits.make_splits(ids, "lidc-idri", seed=2025, groups=groups)
    assert tuple(len(splits[name]) for name in case_splits.SPLITS) == case_splits.PAPER_SPLIT_SIZES["lidc-idri"]
    where = {case: name for name, members in splits.items() for case in members}
    assert len(where) == 1018
    for patient in set(groups.values()):
        assert len({where[c] for c in ids if groups[c] == patient}) == 1, patient
    # deterministic, independent of the order the ids come in
    again = case_splits.make_splits(list(reversed(ids)), "lidc-idri", seed=2025, groups=groups)
    assert again == splits
    assert case_splits.make_splits(ids, "lidc-idri", seed=1, groups=groups) != splits
    # without pairs, the grouped split is the plain shuffle of the ids
    singles = [c for c in ids if "_s" not in c]
    assert case_splits.make_splits(singles, "lidc-idri", 5, {c: c for c in singles}) == \
        case_splits.make_splits(singles, "lidc-idri", 5)


def test_split_record_says_whether_the_sizes_are_the_papers():
    ids, groups = _paper_like_ids()
    splits = case_splits.make_splits(ids, "lidc-idri", seed=2025, groups=groups)
    record = case_splits.split_record(splits, "lidc-idri", seed=2025, unit="scan", groups=groups)
    assert record["matches_paper"] and record["cases"] == 1018 and record["groups"] == 1010
    assert "the paper's sizes" in case_splits.describe_split(record)
    fewer = [c for c in ids if not c.endswith("_s2")][:1010]  # one scan per patient: 1,010 cases
    splits = case_splits.make_splits(fewer, "lidc-idri", seed=2025)
    record = case_splits.split_record(splits, "lidc-idri", seed=2025, unit="patient")
    assert not record["matches_paper"] and record["sizes"] == {"train": 848, "val": 71, "test": 91}
    assert "the paper used 1018 cases → 854 / 72 / 92" in case_splits.describe_split(record)


def test_prepare_reports_the_count_and_split_and_records_them(download, tmp_path):
    output = tmp_path / "prepared"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["prepare", "--dataset", "lidc-idri", "--source", str(download), "--output", str(output),
                         "--workers", "1", "--seed", "3"])
    assert code == 0
    text = out.getvalue()
    assert "3 lidc-idri cases (one case per CT scan, 2 patients/groups)" in text, text
    assert "split.json" in text
    record = json.loads((output / "splits" / "split.json").read_text(encoding="utf-8"))
    assert record["unit"] == "scan" and record["cases"] == 3 and record["seed"] == 3
    assert record["grouped_by_patient"] and not record["matches_paper"]
    lists = {name: case_splits.read_split(output, name) for name in case_splits.SPLITS}
    assert sum(len(v) for v in lists.values()) == 3
    # the two scans of patient 0007 share a split
    assert len({name for name, v in lists.items() if any(c.startswith("LIDC-IDRI-0007") for c in v)}) == 1
    import hashlib

    for name in case_splits.SPLITS:
        data = (output / "splits" / f"{name}.txt").read_bytes()
        assert hashlib.sha256(data).hexdigest() == record["sha256"][name]
