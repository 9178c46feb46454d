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
    assert first.PatientName.family_name == "Anonymous" and first.StudyInstanceUID


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


def _film(tmp_path, **tags):
    """A DICOM PA film carrying a patient and a study (synthetic pixels)."""
    from dicom_films import chest_like_film, write_dx

    patient = dict(PatientID="P-0042", PatientName="Doe^Jane", PatientBirthDate="19700101", PatientSex="F",
                   StudyInstanceUID="2.25.123456789", StudyDate="20240101", StudyTime="101010",
                   AccessionNumber="ACC7", ReferringPhysicianName="", ViewPosition="PA")
    return write_dx(tmp_path / "pa.dcm", chest_like_film(64, 64), **{**patient, **tags})


# What the CT Image IOD (DICOM PS3.3 A.3.3) requires of every file, module by module: Type 1 attributes must have
# a value, Type 2 (and Type 2C whose condition holds for a CT Image Storage series) must be present, empty or not.
_TYPE1 = {
    "General Series": ("Modality", "SeriesInstanceUID"),
    "Frame of Reference": ("FrameOfReferenceUID",),
    "Image Plane": ("PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient"),
    "Image Pixel": ("SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated",
                    "BitsStored", "HighBit", "PixelRepresentation", "PixelData"),
    "CT Image": ("ImageType", "RescaleIntercept", "RescaleSlope"),
    "General Study": ("StudyInstanceUID",),
    "SOP Common": ("SOPClassUID", "SOPInstanceUID"),
}
_TYPE2 = {
    "Patient": ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"),
    "General Study": ("StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber"),
    "General Series": ("SeriesNumber", "PatientPosition"),  # PatientPosition: 2C, required for CT Image Storage
    "Frame of Reference": ("PositionReferenceIndicator",),
    "General Equipment": ("Manufacturer",),
    "General Image": ("InstanceNumber",),
    "Image Plane": ("SliceThickness",),
    "CT Image": ("KVP", "AcquisitionNumber"),
}


@pytest.mark.parametrize("from_film", [False, True], ids=["new study", "film's study"])
def test_every_file_has_the_ct_image_iods_required_attributes(tmp_path, from_film):
    import pydicom

    film = _film(tmp_path, StudyID="S17") if from_film else None
    write_dicom_series(_volume(), tmp_path / "s", inherit_from=film)
    for path in sorted((tmp_path / "s").iterdir()):
        ds = pydicom.dcmread(path)
        for module, keywords in _TYPE1.items():
            for keyword in keywords:
                assert ds.get(keyword) not in (None, ""), f"{path.name}: Type 1 {keyword} ({module}) has no value"
        for module, keywords in _TYPE2.items():
            for keyword in keywords:
                assert keyword in ds, f"{path.name}: Type 2 {keyword} ({module}) is missing"
        # Laterality (General Series, 2C) is needed for a paired body part only: the series says it is a chest
        assert ds.BodyPartExamined == "CHEST" and "Laterality" not in ds
        assert ds.StudyID, "a DICOMDIR needs a Study ID"
        if from_film:
            assert (ds.StudyID, ds.StudyInstanceUID, ds.PatientID) == ("S17", "2.25.123456789", "P-0042")


def test_a_films_study_keeps_its_own_study_id_even_when_it_has_none(tmp_path):
    import pydicom

    write_dicom_series(_volume(), tmp_path / "s", inherit_from=_film(tmp_path))  # the film has no StudyID
    first = pydicom.dcmread(sorted((tmp_path / "s").iterdir())[0], stop_before_pixels=True)
    assert first.StudyInstanceUID == "2.25.123456789" and "StudyID" in first and first.StudyID == ""
    write_dicom_series(_volume(), tmp_path / "new")
    new = pydicom.dcmread(sorted((tmp_path / "new").iterdir())[0], stop_before_pixels=True)
    assert new.StudyID and new.StudyInstanceUID != first.StudyInstanceUID


@pytest.mark.parametrize("from_film", [False, True], ids=["new study", "film's study"])
def test_every_file_passes_an_independent_iod_validator(tmp_path, from_film):
    """dciodvfy (David Clunie's dicom3tools; Debian/Ubuntu package ``dicom3tools``) checks each file against the
    standard's CT Image IOD: no error and no warning."""
    import shutil
    import subprocess

    validator = shutil.which("dciodvfy")
    if validator is None:
        pytest.skip("dciodvfy is not installed (apt-get install dicom3tools); "
                    "test_every_file_has_the_ct_image_iods_required_attributes checks the required tags without it")
    film = _film(tmp_path, StudyID="S17") if from_film else None
    write_dicom_series(_volume(), tmp_path / "s", inherit_from=film)
    files = sorted((tmp_path / "s").iterdir())
    assert files
    for path in files:
        out = subprocess.run([validator, str(path)], capture_output=True, text=True, timeout=60)
        lines = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith(("Error", "Warning"))]
        assert out.returncode == 0 and not lines, f"{path.name}:\n" + "\n".join(lines)


def test_a_patient_id_holding_a_backslash_is_written_as_one_value_with_a_warning(tmp_path, caplog):
    """A backslash is DICOM's value separator: the film's PatientID `x\\y` was read as two values and written as the
    text "['x', 'y']". Now it is the one value x_y, and a warning names the film and both spellings."""
    import logging

    import pydicom

    film = _film(tmp_path, PatientID="x\\y")
    assert list(pydicom.dcmread(film, stop_before_pixels=True).PatientID) == ["x", "y"]  # how pydicom reads it
    with caplog.at_level(logging.WARNING):
        write_dicom_series(_volume(), tmp_path / "s", inherit_from=film)
    for path in sorted((tmp_path / "s").iterdir()):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.PatientID == "x_y" and ds["PatientID"].VM == 1, ds.PatientID
    warnings = [r.getMessage() for r in caplog.records if "PatientID" in r.getMessage()]
    assert len(warnings) == 1 and "pa.dcm" in warnings[0] and "x\\\\y" in warnings[0] and "x_y" in warnings[0], warnings
