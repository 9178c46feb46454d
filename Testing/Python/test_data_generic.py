"""``--dataset generic``: your own CTs as a folder of CT files and DICOM series, or a CSV / JSON case list with
an optional split column (like nnU-Net's ``dataset.json``)."""

from __future__ import annotations

import json

import pytest

from conftest import write_dicom_series
from DCTNetLib.data import case_discovery, case_splits, prepared_cases
from DCTNetLib.errors import InputError


@pytest.fixture
def own_cts(tmp_path, tiny_phantom_ct):
    """A folder in no known layout: NIfTI and NRRD files in sub-folders, a label map, a DICOM CT series."""
    from DCTNetLib.io.ct import write_ct

    root = tmp_path / "my_cts"
    (root / "site1").mkdir(parents=True)
    (root / "site2").mkdir()
    (root / "labels").mkdir()
    write_ct(tiny_phantom_ct, root / "site1" / "ct01.nii.gz")
    write_ct(tiny_phantom_ct, root / "site2" / "scan.nrrd")
    write_ct(tiny_phantom_ct, root / "site1" / "ct01_seg.nii.gz")  # a label map: not a case
    write_ct(tiny_phantom_ct, root / "labels" / "ct02.nii.gz")      # in a label folder: not a case
    write_dicom_series(tiny_phantom_ct, root / "dicom" / "series1")
    (root / "notes.txt").write_text("not a CT\n")
    return root


def test_a_folder_of_ct_files_and_dicom_series_is_found_with_path_ids(own_cts):
    cases = case_discovery.discover_cases("generic", own_cts)
    assert [(c.case_id, c.source.relative_to(own_cts).as_posix()) for c in cases] == [
        ("dicom_series1", "dicom/series1"), ("site1_ct01", "site1/ct01.nii.gz"), ("site2_scan", "site2/scan.nrrd")]
    assert all(c.dataset == "generic" and not c.split for c in cases)


def test_case_lists_in_csv_and_json_carry_ids_splits_and_patients(own_cts, tmp_path):
    csv_list = own_cts / "cases.csv"
    csv_list.write_text("path,id,split,patient\nsite1/ct01.nii.gz,a,train,p1\nsite2/scan.nrrd,b,test,p2\n"
                        f"{own_cts / 'dicom' / 'series1'},,val,\n", encoding="utf-8")
    cases = case_discovery.discover_cases("generic", csv_list)
    assert [(c.case_id, c.split, c.patient) for c in cases] == [("a", "train", "p1"), ("b", "test", "p2"),
                                                               ("series1", "val", "")]
    assert cases[0].source == own_cts / "site1" / "ct01.nii.gz"  # relative to the list file
    json_list = tmp_path / "dataset.json"
    json_list.write_text(json.dumps({"cases": [str(own_cts / "site2" / "scan.nrrd"),
                                               {"path": str(own_cts / "site1" / "ct01.nii.gz"), "split": "val"}]}))
    cases = case_discovery.discover_cases("generic", json_list)
    assert [(c.case_id, c.split) for c in cases] == [("scan", ""), ("ct01", "val")]
    splits = case_discovery.given_splits(cases, ["scan", "ct01"])
    assert splits == {"train": ["scan"], "val": ["ct01"], "test": []}

    bad = tmp_path / "bad.csv"
    bad.write_text("path,split\nx.nii.gz,holdout\n")
    with pytest.raises(InputError, match="holdout"):
        case_discovery.discover_cases("generic", bad)
    bad.write_text("id\nx\n")
    with pytest.raises(InputError, match="no 'path'"):
        case_discovery.discover_cases("generic", bad)


def test_prepare_generic_list_keeps_the_given_split(own_cts, tmp_path, capsys):
    from DCTNetLib.cli import main

    csv_list = own_cts / "cases.csv"
    csv_list.write_text("path,split\nsite1/ct01.nii.gz,train\nsite2/scan.nrrd,test\ndicom/series1,val\n")
    out = tmp_path / "prep"
    assert main(["prepare", "--dataset", "generic", "--source", str(csv_list), "--output", str(out),
                 "--workers", "1"]) == 0
    for split, ids in (("train", ["ct01"]), ("val", ["series1"]), ("test", ["scan"])):
        assert case_splits.read_split(out, split) == ids
        assert prepared_cases.PreparedCaseDataset(out, split)[0]["drr"].shape == (2, 128, 128)
    record = json.loads((out / "splits" / "split.json").read_text())
    assert record["dataset"] == "generic" and "split column" in record["given_by"]
