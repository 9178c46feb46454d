"""X2CT-GAN preprocessing and its inverse (DCTNetLib.data.preprocess)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from DCTNetLib.conventions import HU_MAX, HU_MIN, hu_to_unit, unit_to_hu
from DCTNetLib.data.phantom import chest_phantom, phantom_ct
from DCTNetLib.data.preprocess import (
    PreparedVolume,
    PreprocessConfig,
    preprocess_ct,
    resample_to_crop_grid,
    to_ct_volume,
)
from DCTNetLib.io.ct import CTVolume, to_sitk


def test_hu_window_maps_linearly_and_clips_for_numpy_and_torch():
    hu = np.array([-3000.0, HU_MIN, 226.0, HU_MAX, 4000.0], dtype=np.float32)
    expected = np.array([0.0, 0.0, 0.5, 1.0, 1.0], dtype=np.float32)
    np.testing.assert_allclose(hu_to_unit(hu), expected, atol=1e-7)
    torch.testing.assert_close(hu_to_unit(torch.from_numpy(hu)), torch.from_numpy(expected))
    inside = np.linspace(HU_MIN, HU_MAX, 11, dtype=np.float32)
    np.testing.assert_allclose(unit_to_hu(hu_to_unit(inside)), inside, atol=1e-3)
    torch.testing.assert_close(unit_to_hu(hu_to_unit(torch.from_numpy(inside))), torch.from_numpy(inside),
                               atol=1e-3, rtol=0)
    # values outside [0, 1] (e.g. an unclamped network output) are clipped to the window's ends
    np.testing.assert_array_equal(unit_to_hu(np.array([-0.5, 1.5])), [HU_MIN, HU_MAX])


# A smooth test CT: air plus an off-centre Gaussian blob, sampled on an anisotropic, RAS-like source grid.
_BLOB_CENTRE_LPS = np.array([25.0, -15.0, 40.0])
_BLOB_SIGMA_MM = 40.0
_BLOB_AMPLITUDE_HU = 1000.0


def _smooth_ct() -> CTVolume:
    size_xyz, spacing_xyz = (120, 110, 44), (0.9, 0.8, 2.5)
    image = sitk.Image(size_xyz, sitk.sitkFloat32)
    image.SetSpacing(spacing_xyz)
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))  # a NIfTI/RAS-style file, not canonical
    image.SetOrigin((60.0, 50.0, -10.0))
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in size_xyz], indexing="ij"), -1).reshape(-1, 3)
    matrix = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(spacing_xyz)
    points = np.asarray(image.GetOrigin()) + idx @ matrix.T
    r2 = ((points - _BLOB_CENTRE_LPS) ** 2).sum(-1)
    values = -1000.0 + _BLOB_AMPLITUDE_HU * np.exp(-r2 / (2 * _BLOB_SIGMA_MM**2))
    arr = values.reshape(size_xyz).transpose(2, 1, 0).astype(np.float32)  # (z, y, x)
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing(spacing_xyz)
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    image.SetOrigin((60.0, 50.0, -10.0))
    from DCTNetLib.io.ct import from_sitk

    return from_sitk(image, "smooth blob")


def _weighted_centroid_lps(ct: CTVolume) -> np.ndarray:
    weight = np.clip(ct.hu + 1000.0, 0.0, None).astype(np.float64)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in ct.shape], indexing="ij"), -1)
    mean_index = (index * weight[..., None]).reshape(-1, 3).sum(0) / weight.sum()
    return ct.index_to_lps(mean_index)


def test_preprocess_then_inverse_keeps_centre_position_and_hu():
    source = _smooth_ct()
    prepared = preprocess_ct(source)
    assert prepared.volume.shape == (128, 128, 128) and prepared.volume.dtype == np.float32
    assert 0.0 <= prepared.volume.min() and prepared.volume.max() <= 1.0
    back = to_ct_volume(prepared.volume, prepared)
    np.testing.assert_allclose(back.spacing, (2.5, 2.5, 2.5))
    # the model volume is centred on the source's physical centre (exactly, up to float rounding)
    np.testing.assert_allclose(back.centre_lps(), source.centre_lps(), atol=1e-3)
    # the anatomy sits where it was: blob centroid within one 2.5 mm voxel (a flip would move it by ~50 mm)
    assert np.linalg.norm(_weighted_centroid_lps(back) - _weighted_centroid_lps(source)) < 2.5

    # HU: resample the 2.5 mm result back onto the source grid and compare where the source has data.
    # Linear interpolation of f with step h errs by at most h²/8·max|f''| per axis; four interpolations happen
    # (source grid → 1 mm, 1 mm → 2.5 mm, 2.5 mm → source grid, plus the source's own grid) and each error passes
    # through later ones unamplified, so |error| ≤ Σ_stages Σ_axes h²/8 · A/σ² (A/σ² bounds f'' of a Gaussian).
    steps = [source.spacing, (1.0,) * 3, (2.5,) * 3, (2.5,) * 3]
    bound = sum(h**2 for s in steps for h in s) / 8.0 * _BLOB_AMPLITUDE_HU / _BLOB_SIGMA_MM**2
    resampled = sitk.Resample(to_sitk(back), to_sitk(source), sitk.Transform(), sitk.sitkLinear, -1024.0)
    error = np.abs(sitk.GetArrayFromImage(resampled) - source.hu)
    # Stay 5 mm (two 2.5 mm voxels) inside the source's border on every axis: there the chain mixes the source's
    # edge values with the air padding, which is the crop's definition, not an interpolation error.
    trim = [int(np.ceil(5.0 / h)) + 1 for h in source.spacing]
    core = error[trim[0]:-trim[0], trim[1]:-trim[1], trim[2]:-trim[2]]
    assert core.max() < bound, (core.max(), bound)
    assert bound < 25.0  # the tolerance stays meaningful: ~1 % of the 2500 HU window


def test_folded_crop_equals_resample_then_centre_crop_and_pads_with_air():
    small = PreprocessConfig(crop_size=40, volume_size=16)
    ct = CTVolume(chest_phantom(24, spacing_mm=4.0), spacing=(4.0, 3.0, 2.0), origin_lps=(-30.0, 12.0, 7.0))
    folded = resample_to_crop_grid(ct, small)
    # reference: resample the whole CT to 1 mm on a larger grid with the same centre, then crop its middle
    big = 100  # mm; covers the CT (96 × 72 × 48 mm) with room to spare
    centre = ct.centre_lps()
    origin = centre - np.asarray(ct.direction).reshape(3, 3) @ np.full(3, (big - 1) / 2.0)
    full = sitk.Resample(to_sitk(ct), [big] * 3, sitk.Transform(), sitk.sitkLinear, tuple(origin), (1.0,) * 3,
                         ct.direction, -1024.0, sitk.sitkFloat32)
    start = (big - small.crop_size) // 2
    crop = sitk.GetArrayFromImage(full)[start:start + 40, start:start + 40, start:start + 40]
    np.testing.assert_allclose(folded, crop, atol=1e-3)
    # a 320 mm grid around a 96 mm CT is padded with air, −1024 HU
    padded = resample_to_crop_grid(ct)
    assert padded.shape == (320, 320, 320)
    assert padded[0, 0, 0] == -1024.0 and padded[:, :, :20].max() == -1024.0


def test_phantom_survives_preprocessing_in_place():
    ct = phantom_ct(128)  # 2.5 mm, 320 mm field, the model grid itself
    prepared = preprocess_ct(ct)
    expected = hu_to_unit(ct.hu)
    # 2.5 mm → 1 mm → 2.5 mm smooths edges but keeps every structure where it was: a flipped or shifted
    # axis would drop the correlation far below this
    correlation = np.corrcoef(prepared.volume.ravel(), expected.ravel())[0, 1]
    assert correlation > 0.97, correlation
    np.testing.assert_allclose(prepared.centre_lps(), ct.centre_lps(), atol=1e-3)


def test_to_ct_volume_accepts_batched_tensors_and_other_sizes():
    geometry = PreparedVolume(np.zeros((128,) * 3, np.float32), origin_lps=(-100.0, -50.0, 300.0))
    unit = torch.full((1, 1, 64, 64, 64), 0.5)
    ct = to_ct_volume(unit, geometry)
    assert ct.shape == (64, 64, 64)
    np.testing.assert_allclose(ct.spacing, (5.0, 5.0, 5.0))  # same 320 mm field
    np.testing.assert_allclose(ct.centre_lps(), geometry.centre_lps(), atol=1e-4)
    np.testing.assert_allclose(ct.hu, 226.0)
    again = PreparedVolume.from_geometry(geometry.geometry())
    np.testing.assert_allclose(again.origin_lps, geometry.origin_lps)
    with pytest.raises(ValueError, match="unit_volume"):
        to_ct_volume(np.zeros((2, 8, 8, 8)), geometry)


def test_float16_storage_costs_nothing_measurable():
    unit = hu_to_unit(chest_phantom(64))
    stored = unit.astype(np.float16).astype(np.float32)
    mse = float(((stored - unit) ** 2).mean())
    psnr = 10 * np.log10(1.0 / mse)
    assert psnr > 70.0, psnr  # reconstructions reach ~25–30 dB
    assert np.abs(stored - unit).max() * (HU_MAX - HU_MIN) < 0.7  # HU


@pytest.mark.slow
def test_preprocess_full_size_lidc_is_fast(lidc_demo_ct):
    start = time.perf_counter()
    prepared = preprocess_ct(lidc_demo_ct)
    elapsed = time.perf_counter() - start
    assert prepared.volume.shape == (128, 128, 128)
    assert elapsed < 10.0, elapsed
