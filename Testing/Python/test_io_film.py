"""Radiographs ("films"): pixel spacing onto the training detector's 500 mm field, ViewPosition and
PatientOrientation checks, and what is said when something cannot be checked.

The films are conftest's synthetic stand-ins for the shared real CRs (``film_dir``), so this file runs on a plain
clone; :func:`test_the_stand_ins_state_what_the_real_films_state` checks them against the real files when present."""

from __future__ import annotations

import json

import numpy as np
import pytest

from DCTNetLib.errors import InputError
from DCTNetLib.io.film import DETECTOR_MM, DETECTOR_PIXELS, film_info, map_to_detector, read_film
from DCTNetLib.io.radiograph import read_radiograph


@pytest.fixture
def cr_dir(film_dir):
    return film_dir


def test_the_stand_ins_state_what_the_real_films_state(shared_data, film_dir):
    import pydicom

    from conftest import FILM_STANDINS

    for name in FILM_STANDINS:
        real = pydicom.dcmread(shared_data / "radiographs" / name, stop_before_pixels=True)
        ours = pydicom.dcmread(film_dir / name, stop_before_pixels=True)
        for keyword in ("Rows", "Columns", "Modality", "PhotometricInterpretation", "PixelSpacing",
                        "ImagerPixelSpacing", "ViewPosition", "PatientOrientation"):
            assert (real.get(keyword) or None) == (ours.get(keyword) or None), (name, keyword)
        assert film_info(shared_data / "radiographs" / name).warnings == \
            [w.replace(str(film_dir), str(shared_data / "radiographs")) for w in film_info(film_dir / name).warnings]


def _copy_with(source, target, **tags):
    """The DICOM file ``source`` written to ``target`` with header ``tags`` replaced (None deletes a tag)."""
    import pydicom

    ds = pydicom.dcmread(source)
    for keyword, value in tags.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(target)
    return target


def test_a_cr_without_usable_spacing_is_used_whole_and_says_so(cr_dir):
    path = cr_dir / "pa_chest_cr_monochrome1.dcm"  # PixelSpacing 0\0, ViewPosition PA, PatientOrientation L\F
    image, info = read_film(path, "pa")
    np.testing.assert_array_equal(image, read_radiograph(path))  # right view and orientation: used as stored
    assert info.view_position == "PA" and info.orientation == ("L", "F") and info.spacing_mm is None
    assert len(info.warnings) == 1 and "pixel spacing unknown" in info.warnings[0]


def test_an_implausible_spacing_is_not_trusted_and_missing_orientation_is_reported(cr_dir):
    image, info = read_film(cr_dir / "pa_chest_cr_siim.dcm", "pa")  # 1024² at "0.168 mm" = a 172 mm chest?
    assert info.spacing_mm is None and image.shape == (1024, 1024)
    text = "\n".join(info.warnings)
    assert "PixelSpacing 0.168 mm makes the film 172 mm wide" in text and "not trusted" in text
    assert "no PatientOrientation" in text and "pixel spacing unknown" in text


@pytest.mark.parametrize("spacing", [0.4, 0.55])
def test_a_known_spacing_maps_the_film_onto_the_500_mm_detector(cr_dir, tmp_path, spacing):
    from PIL import Image

    path = _copy_with(cr_dir / "pa_chest_cr_siim.dcm", tmp_path / "cr.dcm", ImagerPixelSpacing=[spacing, spacing],
                      PatientOrientation=["L", "F"])
    image, info = read_film(path, "pa")
    assert info.spacing_mm == pytest.approx(spacing) and info.spacing_source == "ImagerPixelSpacing"
    assert image.shape == (DETECTOR_PIXELS, DETECTOR_PIXELS) and not info.warnings
    film = read_radiograph(path)
    side = round(1024 * spacing * DETECTOR_PIXELS / DETECTOR_MM)  # the film's width in detector pixels
    resized = np.asarray(Image.fromarray(film, mode="F").resize((side, side), Image.Resampling.BOX), np.float32)
    if side <= DETECTOR_PIXELS:  # 409.6 mm film: 105 px centred, no attenuation around it
        start = (DETECTOR_PIXELS - side) // 2
        np.testing.assert_allclose(image[start:start + side, start:start + side], np.clip(resized, 0, 1), atol=1e-6)
        assert not image[:, :start].any() and not image[:, start + side:].any()
    else:  # 563 mm film: the detector sees its central 500 mm
        start = (side - DETECTOR_PIXELS) // 2
        np.testing.assert_allclose(image, np.clip(resized[start:start + 128, start:start + 128], 0, 1), atol=1e-6)
    np.testing.assert_array_equal(map_to_detector(film, spacing), image)


def test_view_position_and_orientation_are_checked_and_fixed(cr_dir, tmp_path):
    source = cr_dir / "pa_chest_cr_siim.dcm"
    with pytest.raises(InputError, match="ViewPosition is PA.*pass it as --pa"):
        read_film(source, "lat")
    lateral = _copy_with(source, tmp_path / "lat.dcm", ViewPosition="LL")
    with pytest.raises(InputError, match="ViewPosition is LL.*pass it as --lat"):
        read_film(lateral, "pa")
    mirrored = _copy_with(source, tmp_path / "mirrored.dcm", PatientOrientation=["R", "H"])
    image, info = read_film(mirrored, "pa")
    np.testing.assert_array_equal(image, read_radiograph(mirrored)[::-1, ::-1])
    assert any("flipped left-right and upside down" in w for w in info.warnings)
    ap = _copy_with(source, tmp_path / "ap.dcm", ViewPosition="AP", PatientOrientation=["L", "F"])
    assert any("an AP film" in w for w in read_film(ap, "pa")[1].warnings)


def test_png_films_cannot_be_checked_and_say_so(cr_dir):
    image, info = read_film(cr_dir / "pa_chest_nih_00000001_000.png", "pa")
    assert not info.dicom and len(info.warnings) == 1 and "no DICOM header" in info.warnings[0]
    np.testing.assert_array_equal(image, read_radiograph(cr_dir / "pa_chest_nih_00000001_000.png"))


def test_reconstruct_real_films_reports_checks_and_says_once_it_is_a_demonstration_model(cr_dir, tmp_path, capsys,
                                                                                          caplog):
    from DCTNetLib.cli import main

    lateral = _copy_with(cr_dir / "pa_chest_cr_siim.dcm", tmp_path / "lat.dcm", ViewPosition="LL",
                         PatientOrientation=["P", "F"], ImagerPixelSpacing=[0.4, 0.4])
    out = tmp_path / "ct.nii.gz"
    # a PA film given as the lateral: one clear line, exit 2, nothing written
    assert main(["reconstruct", "--pa", str(lateral), "--lat", str(cr_dir / "pa_chest_cr_monochrome1.dcm"),
                 "--output", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "ViewPosition is LL" in err and len(err.strip().splitlines()) == 1 and not out.exists()
    # (a PA film relabelled as the lateral, and synthetic stand-in films: the image-content checks are off here,
    # this test is about what the headers say)
    assert main(["reconstruct", "--pa", str(cr_dir / "pa_chest_cr_monochrome1.dcm"), "--lat", str(lateral),
                 "--output", str(out), "--device", "cpu", "--progress", "json", "--no-input-checks"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["inputs"]["films"]["lat"]["spacing_mm"] == pytest.approx(0.4)
    assert report["inputs"]["films"]["pa"]["spacing_mm"] is None
    assert any("pixel spacing unknown" in w for w in report["warnings"])
    assert len(report["notes"]) == 1 and "trained on DRRs" in report["notes"][0]
    assert sum("trained on DRRs" in r.getMessage() for r in caplog.records) == 1


def test_dicom_output_files_under_the_films_patient_and_study_and_reads_back_as_the_nifti(cr_dir, tmp_path,
                                                                                           tiny_bundle_path):
    import pydicom

    from DCTNetLib.cli import main
    from DCTNetLib.io.ct import read_ct

    pa = _copy_with(cr_dir / "pa_chest_cr_siim.dcm", tmp_path / "pa.dcm", ViewPosition="PA", PatientID="P-0042",
                    PatientName="Doe^Jane", StudyInstanceUID="2.25.123456789", AccessionNumber="ACC7")
    lateral = _copy_with(cr_dir / "pa_chest_cr_siim.dcm", tmp_path / "lat.dcm", ViewPosition="LL",
                         PatientOrientation=["P", "F"], ImagerPixelSpacing=[0.4, 0.4])
    args = ["reconstruct", "--pa", str(pa), "--lat", str(lateral), "--output", str(tmp_path / "ct.nii.gz"),
            "--weights", str(tiny_bundle_path), "--device", "cpu", "--dicom", str(tmp_path / "series")]
    assert main(args) == 0
    files = sorted((tmp_path / "series").iterdir())
    nifti = read_ct(tmp_path / "ct.nii.gz")
    assert len(files) == nifti.shape[0]
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    first = headers[0]
    assert (first.PatientID, str(first.PatientName), first.StudyInstanceUID, first.AccessionNumber) == \
        ("P-0042", "Doe^Jane", "2.25.123456789", "ACC7")
    assert first.Modality == "CT" and first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert "DERIVED" in first.ImageType and "not for clinical use" in first.ImageComments
    assert len({h.SeriesInstanceUID for h in headers}) == 1 and first.SeriesInstanceUID != first.StudyInstanceUID
    assert len({h.SOPInstanceUID for h in headers}) == len(headers)
    # the series is the NIfTI in integer HU on the same grid
    series = read_ct(tmp_path / "series")
    assert series.shape == nifti.shape
    np.testing.assert_allclose(series.spacing, nifti.spacing, atol=1e-3)
    np.testing.assert_allclose(series.origin_lps, nifti.origin_lps, atol=1e-3)
    np.testing.assert_allclose(series.hu, np.clip(np.rint(nifti.hu), -1024, 3071), atol=0)
    # an existing series is not replaced without --overwrite; with it, it is replaced whole
    assert main(args) == 2
    assert main([*args, "--overwrite"]) == 0
    assert len(list((tmp_path / "series").iterdir())) == len(files)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".tmp-", ".old-"))]


def _patient_films(folder, cr_dir):
    """Films of three patients as a PACS would give them, each patient's pair written by different systems: names in
    different case, with trailing empty components or a middle name on one, PatientSex "O" (other) on one."""
    patients = {
        "jane": dict(PatientID="P-0042", PatientName="Doe^Jane", PatientBirthDate="19610307", PatientSex="F"),
        "john": dict(PatientID="P-0043", PatientName="Doe^John", PatientBirthDate="19580112", PatientSex="M"),
        # a PatientID blanked by an anonymiser, the rest kept
        "anna": dict(PatientID="", PatientName="Roe^Anna", PatientBirthDate="19700101", PatientSex="F"),
    }
    films = {}
    for name, tags in patients.items():
        lat_tags = dict(tags, PatientName=tags["PatientName"].upper() + ("^Q" if name == "anna" else "^^"),
                        PatientSex="O" if name == "john" else tags["PatientSex"])
        films[name] = (
            _copy_with(cr_dir / "pa_chest_cr_siim.dcm", folder / f"{name}_pa.dcm", AcquisitionDate="20261201", **tags),
            _copy_with(cr_dir / "pa_chest_cr_siim.dcm", folder / f"{name}_lat.dcm", ViewPosition="LL",
                       AcquisitionDate="20261201", **lat_tags))
    return films


def test_films_naming_two_patients_are_told_apart_from_one_patients_pair(cr_dir, tmp_path):
    from DCTNetLib.io.film import pair_identity

    films = _patient_films(tmp_path, cr_dir)
    flagged = {}
    for pa_name, (pa, _) in films.items():
        for lat_name, (_, lat) in films.items():
            identity, messages = pair_identity(film_info(pa), film_info(lat))
            flagged[pa_name, lat_name] = identity.same_patient is False
            assert bool(messages) == flagged[pa_name, lat_name]
            if pa_name == lat_name:  # one patient through case, trailing "^", a middle name, an unstated sex
                assert identity.same_patient is True and not identity.differ, (pa_name, identity)
    # every one of the six two-patient pairs is flagged, none of the three genuine ones
    assert sum(flagged.values()) == 6 and not any(flagged[n, n] for n in films)
    identity, messages = pair_identity(film_info(films["jane"][0]), film_info(films["john"][1]))
    assert identity.differ == ("PatientID", "PatientName", "PatientBirthDate")  # sex: "O" says nothing
    assert "name two patients" in messages[0] and "'P-0042' against 'P-0043'" in messages[0]
    # without a PatientID the other attributes still tell (anna's pair against jane's: name and birth date)
    identity, _ = pair_identity(film_info(films["anna"][0]), film_info(films["jane"][1]))
    assert "PatientID" not in identity.compared and identity.differ == ("PatientName", "PatientBirthDate")


def test_what_cannot_be_compared_is_not_called_two_patients_and_a_later_lateral_is_said(cr_dir, tmp_path):
    from DCTNetLib.io.film import pair_identity

    anonymous = [_copy_with(cr_dir / "pa_chest_cr_siim.dcm", tmp_path / f"{v}.dcm", ViewPosition=v, PatientID="",
                            PatientName="", PatientSex="O") for v in ("PA", "LL")]
    identity, messages = pair_identity(*(film_info(f) for f in anonymous))
    assert identity.same_patient is None and identity.compared == () and messages == []
    png = film_info(cr_dir / "pa_chest_nih_00000001_000.png")
    assert pair_identity(png, film_info(anonymous[1])) == (pair_identity(png, png)[0], [])
    pa = _copy_with(cr_dir / "pa_chest_cr_siim.dcm", tmp_path / "pa.dcm", PatientID="P-7", StudyDate="20261102")
    lat = _copy_with(cr_dir / "pa_chest_cr_siim.dcm", tmp_path / "lat.dcm", ViewPosition="LL", PatientID="P-7",
                     StudyDate="20261201")
    identity, messages = pair_identity(film_info(pa), film_info(lat))
    assert identity.same_patient is True and identity.days_apart == 29
    assert len(messages) == 1 and "taken 29 days apart" in messages[0]


def test_reconstruct_warns_on_two_patients_films_and_will_not_file_their_ct_under_one(cr_dir, tmp_path, capsys,
                                                                                       tiny_bundle_path):
    from DCTNetLib.cli import main

    films = _patient_films(tmp_path, cr_dir)
    out = tmp_path / "ct.nii.gz"
    args = ["reconstruct", "--pa", str(films["jane"][0]), "--lat", str(films["john"][1]), "--output", str(out),
            "--weights", str(tiny_bundle_path), "--device", "cpu", "--progress", "json", "--no-input-checks"]
    # --dicom would file the CT under Jane: one line, exit 2, nothing written
    assert main([*args, "--dicom", str(tmp_path / "series")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "name two patients" in err[0] and "--dicom" in err[0]
    assert not out.exists() and not (tmp_path / "series").exists()
    # without --dicom it is a warning, recorded in the report with what differs
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["inputs"]["films"]["pair"]["same_patient"] is False
    assert "PatientID" in report["inputs"]["films"]["pair"]["differ"]
    assert any("name two patients" in w for w in report["warnings"])
    # the genuine pair: no such warning, and the report says the films agree
    assert main([*args[:2], str(films["john"][0]), *args[3:], "--overwrite"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["inputs"]["films"]["pair"]["same_patient"] is True
    assert not any("two patients" in w for w in report["warnings"])
