"""CT reading and writing (DCTNetLib.io.ct): formats, canonical orientation, DICOM series checks, rejections."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from DCTNetLib.errors import InputError
from DCTNetLib.io.ct import CANONICAL_DIRECTION, CTVolume, read_ct, to_sitk, write_ct


def _marker_image(direction, origin=(10.0, -20.0, 30.0), spacing=(2.0, 3.0, 4.0)) -> sitk.Image:
    """A CT-like 12×10×8 image (air, with one 500 HU voxel at index (3, 2, 1)) in an arbitrary orientation."""
    arr = np.full((8, 10, 12), -1000.0, dtype=np.float32)  # (z, y, x)
    arr[1, 2, 3] = 500.0
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


@pytest.mark.parametrize("direction", [
    (1, 0, 0, 0, 1, 0, 0, 0, 1),  # LPS (DICOM default)
    (-1, 0, 0, 0, -1, 0, 0, 0, 1),  # RAS (NIfTI default)
    (0, 1, 0, 1, 0, 0, 0, 0, -1),  # axes swapped
])
def test_read_ct_reorients_to_canonical_and_keeps_physical_positions(tmp_path, direction):
    image = _marker_image(direction)
    marker_lps = np.asarray(image.TransformIndexToPhysicalPoint((3, 2, 1)))
    path = tmp_path / "marker.nii.gz"
    sitk.WriteImage(image, str(path))
    ct = read_ct(path)
    assert ct.hu.dtype == np.float32 and ct.hu.ndim == 3
    np.testing.assert_allclose(ct.direction, CANONICAL_DIRECTION, atol=1e-6)
    index = np.argwhere(ct.hu == 500.0)
    assert len(index) == 1
    np.testing.assert_allclose(ct.index_to_lps(index[0]), marker_lps, atol=1e-3)
    # canonical axes: W grows to the patient's left (+x LPS), H to posterior (+y), D to inferior (−z)
    d, h, w = index[0]
    np.testing.assert_allclose(ct.index_to_lps((d, h, w + 1)) - marker_lps, [ct.spacing[2], 0, 0], atol=1e-4)
    np.testing.assert_allclose(ct.index_to_lps((d, h + 1, w)) - marker_lps, [0, ct.spacing[1], 0], atol=1e-4)
    np.testing.assert_allclose(ct.index_to_lps((d + 1, h, w)) - marker_lps, [0, 0, -ct.spacing[0]], atol=1e-4)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_write_then_read_round_trip(tmp_path, tiny_phantom_ct, suffix):
    ct = CTVolume(tiny_phantom_ct.hu, spacing=(3.0, 2.0, 1.5), origin_lps=(-12.5, 7.0, 99.0))
    path = write_ct(ct, tmp_path / f"ct{suffix}")
    back = read_ct(path)
    np.testing.assert_array_equal(back.hu, ct.hu)
    np.testing.assert_allclose(back.spacing, ct.spacing, rtol=1e-6)
    np.testing.assert_allclose(back.origin_lps, ct.origin_lps, atol=1e-4)
    np.testing.assert_allclose(back.centre_lps(), ct.centre_lps(), atol=1e-4)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp files left


def test_mhd_with_separate_raw_is_readable(tmp_path, tiny_phantom_ct):
    sitk.WriteImage(to_sitk(tiny_phantom_ct), str(tmp_path / "ct.mhd"))
    np.testing.assert_array_equal(read_ct(tmp_path / "ct.mhd").hu, tiny_phantom_ct.hu)


def test_dicom_series_applies_rescale_and_keeps_geometry(tmp_path, tiny_phantom_ct, dicom_series_writer):
    ct = CTVolume(tiny_phantom_ct.hu[:, :, :24], spacing=(5.0, 1.5, 1.25), origin_lps=(-40.0, -60.0, 120.0))
    dicom_series_writer(ct, tmp_path / "series")
    back = read_ct(tmp_path / "series")
    assert back.shape == ct.shape
    # stored as HU + 1024 with intercept −1024: values come back in HU (±1 from integer storage)
    np.testing.assert_allclose(back.hu, np.clip(ct.hu, -1024, None), atol=1.0)
    np.testing.assert_allclose(back.spacing, ct.spacing, atol=1e-4)
    np.testing.assert_allclose(back.origin_lps, ct.origin_lps, atol=1e-3)


def test_folder_with_several_series_uses_the_largest_and_logs_it(tmp_path, tiny_phantom_ct, dicom_series_writer,
                                                                caplog):
    big = CTVolume(tiny_phantom_ct.hu, spacing=(10.0, 10.0, 10.0))
    small = CTVolume(tiny_phantom_ct.hu[:6] + 100.0, spacing=(10.0, 10.0, 10.0))
    dicom_series_writer(big, tmp_path / "case" / "study" / "a")
    dicom_series_writer(small, tmp_path / "case" / "study" / "b")
    with caplog.at_level(logging.INFO, logger="DCTNetLib.io.ct"):
        back = read_ct(tmp_path / "case")
    assert back.shape == big.shape
    assert "2 DICOM series" in caplog.text and "largest" in caplog.text


def _series(tmp_path, tiny_phantom_ct, dicom_series_writer, **kwargs):
    ct = CTVolume(tiny_phantom_ct.hu[:10], spacing=(10.0, 10.0, 10.0))
    return dicom_series_writer(ct, tmp_path / "series", **kwargs)


def test_missing_slice_is_rejected_naming_the_folder(tmp_path, tiny_phantom_ct, dicom_series_writer):
    files = _series(tmp_path, tiny_phantom_ct, dicom_series_writer)
    files[4].unlink()
    with pytest.raises(InputError, match=r"missing slice.*series"):
        read_ct(tmp_path / "series")


def test_duplicated_slice_is_rejected(tmp_path, tiny_phantom_ct, dicom_series_writer):
    files = _series(tmp_path, tiny_phantom_ct, dicom_series_writer)
    shutil.copy(files[3], tmp_path / "series" / "copy_of_0004.dcm")
    with pytest.raises(InputError, match=r"duplicated slice.*series"):
        read_ct(tmp_path / "series")


def test_uneven_slice_spacing_is_rejected(tmp_path, tiny_phantom_ct, dicom_series_writer):
    positions = [0, 10, 20, 30, 42, 52, 62, 72, 82, 92]  # one 12 mm gap among 10 mm gaps
    _series(tmp_path, tiny_phantom_ct, dicom_series_writer, positions_mm=positions)
    with pytest.raises(InputError, match=r"inconsistent slice spacing.*series"):
        read_ct(tmp_path / "series")


def test_truncated_dicom_files_are_rejected(tmp_path, tiny_phantom_ct, dicom_series_writer):
    for path in _series(tmp_path, tiny_phantom_ct, dicom_series_writer):
        path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(InputError, match="series"):
        read_ct(tmp_path / "series")


def test_mr_series_is_rejected(tmp_path, tiny_phantom_ct, dicom_series_writer):
    _series(tmp_path, tiny_phantom_ct, dicom_series_writer, modality="MR")
    with pytest.raises(InputError, match="MR, not CT"):
        read_ct(tmp_path / "series")


def test_missing_and_unreadable_paths(tmp_path):
    with pytest.raises(InputError, match="not found.*nothing.nii.gz"):
        read_ct(tmp_path / "nothing.nii.gz")
    (tmp_path / "garbage.nii.gz").write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(InputError, match="cannot read CT file.*garbage.nii.gz"):
        read_ct(tmp_path / "garbage.nii.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no readable DICOM series.*empty"):
        read_ct(tmp_path / "empty")


def test_2d_image_and_single_slice_are_rejected(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.full((20, 20), -1000, np.int16)), str(tmp_path / "flat.nrrd"))
    with pytest.raises(InputError, match="3D volume.*flat.nrrd"):
        read_ct(tmp_path / "flat.nrrd")
    sitk.WriteImage(sitk.GetImageFromArray(np.full((1, 20, 20), -1000, np.int16)), str(tmp_path / "one.nii.gz"))
    with pytest.raises(InputError, match="single slice.*one.nii.gz"):
        read_ct(tmp_path / "one.nii.gz")


def test_nan_and_non_ct_values_are_rejected(tmp_path):
    arr = np.full((8, 8, 8), -1000.0, np.float32)
    arr[2, 3, 3] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / "nan.mha"))  # (ITK's NIfTI writer zeroes NaN)
    with pytest.raises(InputError, match="1 NaN/inf.*nan.mha"):
        read_ct(tmp_path / "nan.mha")
    mr = np.random.default_rng(0).uniform(0, 1200, size=(8, 8, 8)).astype(np.float32)  # MR-like intensities
    sitk.WriteImage(sitk.GetImageFromArray(mr), str(tmp_path / "t1.nii.gz"))
    with pytest.raises(InputError, match="not look like a CT.*t1.nii.gz"):
        read_ct(tmp_path / "t1.nii.gz")
    rgb = sitk.GetImageFromArray(np.zeros((6, 8, 8, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.mha"))
    with pytest.raises(InputError, match="one value per voxel.*rgb.mha"):
        read_ct(tmp_path / "rgb.mha")


def test_write_ct_rejects_unknown_format(tmp_path, tiny_phantom_ct):
    from DCTNetLib.errors import OutputError

    with pytest.raises(OutputError, match="unsupported CT output format"):
        write_ct(tiny_phantom_ct, tmp_path / "ct.png")
    with pytest.raises(OutputError, match="does not exist"):
        write_ct(tiny_phantom_ct, tmp_path / "missing" / "ct.nii.gz")


def test_real_dicom_chest_ct(shared_data):
    ct = read_ct(shared_data / "ct" / "Lung_Dx-A0002")
    assert ct.shape == (30, 512, 512)
    np.testing.assert_allclose(ct.spacing, (8.0, 0.646484375, 0.646484375))
    assert ct.hu.min() <= -1000 and ct.hu.max() > 1000  # HU after rescale (stored values are ≥ 0)
    upper_chest = ct.hu[12]
    # lungs (dark) lie either side of the mediastinum (soft tissue)
    assert upper_chest[180:300, 110:180].mean() < -600 and upper_chest[180:300, 340:410].mean() < -600
    assert upper_chest[150:250, 236:276].mean() > -100


def test_real_nifti_ct_from_ras_file(shared_data):
    ct = read_ct(shared_data / "ct" / "totalsegmentator_example_ct.nii.gz")
    assert ct.shape == (112, 101, 122)  # (D, H, W) after reorientation of a 122×101×112 x,y,z file
    np.testing.assert_allclose(ct.direction, CANONICAL_DIRECTION)
    raw = sitk.ReadImage(str(shared_data / "ct" / "totalsegmentator_example_ct.nii.gz"))
    raw_centre = raw.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in raw.GetSize()])
    np.testing.assert_allclose(ct.centre_lps(), raw_centre, atol=1e-3)
