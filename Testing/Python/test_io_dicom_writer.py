"""The DICOM series writer: geometry and HU survive a round trip through our own DICOM reader, a film's
patient and study are inherited, and a failed write leaves nothing behind."""

from __future__ import annotations

import numpy as np
import pytest

from DCTNetLib.errors import OutputError
from DCTNetLib.io.ct import CTVolume, read_ct
from DCTNetLib.io.dicom_writer import DICOM_HU_RANGE, patient_study_tags, write_dicom_series


def _volume(direction=(1, 0, 0, 0, 1, 0, 0, 0, -1)) -> CTVolume:
    hu = np.random.default_rng(1).uniform(-1500, 4000, (9, 16, 12)).astype(np.float32)
    return CTVolume(hu, (2.5, 2.0, 1.5), (10.0, -20.0, 30.0), direction)


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, -1), (1, 0, 0, 0, 1, 0, 0, 0, 1)])
def test_a_series_reads_back_on_the_same_grid_in_integer_hu(tmp_path, direction):
    ct = _volume(direction)
    write_dicom_series(ct, tmp_path / "s")
    back = read_ct(tmp_path / "s")
    # our reader returns the canonical orientation; compare physical positions of the corner voxels
    for corner in [(0, 0, 0), (8, 15, 11), (4, 0, 11)]:
        world = ct.index_to_lps(corner)
        index = np.linalg.solve(np.asarray(back.direction).reshape(3, 3) * np.asarray(back.spacing[::-1]),
                                world - np.asarray(back.origin_lps))[::-1]
        assert np.allclose(index, np.round(index), atol=1e-3)
        assert back.hu[tuple(np.round(index).astype(int))] == np.clip(np.rint(ct.hu[corner]), *DICOM_HU_RANGE)
    assert back.hu.min() == DICOM_HU_RANGE[0] and back.hu.max() == DICOM_HU_RANGE[1]  # clipped, not wrapped


def test_non_dicom_films_give_no_tags_and_a_new_study(tmp_path):
    (tmp_path / "pa.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    assert patient_study_tags(tmp_path / "pa.png") == {} and patient_study_tags(None) == {}
    import pydicom

    write_dicom_series(_volume(), tmp_path / "s", inherit_from=tmp_path / "pa.png")
    first = pydicom.dcmread(sorted((tmp_path / "s").iterdir())[0], stop_before_pixels=True)
    assert str(first.PatientName) == "Anonymous" and first.StudyInstanceUID


def test_refusals_leave_the_existing_folder_and_no_temporary_files(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        write_dicom_series(_volume(), tmp_path / "s")
    bad = _volume()
    bad.hu[0, 0, 0] = np.nan
    with pytest.raises(OutputError, match="NaN"):
        write_dicom_series(bad, tmp_path / "t")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        write_dicom_series(_volume(), tmp_path / "file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "s"]
    assert (tmp_path / "s" / "keep.txt").read_text() == "mine"
