"""CT preprocessing of X2CT-GAN / PerX2CT for LIDC-IDRI, and its geometric inverse.

Steps (sources: kylekma/X2CT ``CT2XRAY/ctpro.py`` as re-published in dek924/PerX2CT
``data_preprocessing/{0_dicom2mhd,1_ctpro_wo_mask,4_ct_dataset_prepare}.py`` and X2CT
``3DGAN/lib/dataset/data_augmentation.py``):

0. (X2CT-GAN only) multiply the CT by a body mask that removes the scanner table (``bedstriping``; the masks
   come from outside the repository and were never published — PerX2CT's ``1_ctpro_wo_mask.py`` comments the
   step out);
1. resample to 1 mm isotropic with ``scipy.ndimage.zoom`` at its default order 3, a cubic spline
   (``resample(..., new_spacing=[1, 1, 1])``, ``mode='nearest'``);
2. crop or pad to 320³ voxels, padding with air (their volumes store HU + 1024 and pad with 0, i.e. −1024 HU);
3. resize to 128³, linear (``Resize_image``: ``scipy.ndimage.zoom(order=1)``);
4. clip to [0, 2500] on HU + 1024 = [−1024, 1476] HU and map linearly to [0, 1] (``CT_MIN_MAX: [0, 2500]``,
   ``Limit_Min_Max_Threshold`` then ``Normalization``).

Deliberate differences, all geometric and sub-voxel or documented:

* Step 0 is not done (PerX2CT's public reading; X2CT-GAN's masks are not available): the table stays in the CT
  and its DRRs. Step 1 is linear, not cubic. Both are measured by ``benchmarks/x2ct_preprocessing.py``
  (``docs/architecture.md``, "Data preparation against X2CT-GAN's"): cubic instead of linear changes the 128³
  volume by 4–6 HU on average (PSNR 46–50 dB); removing what lies outside the patient denser than −500 HU (the
  table) by 2–10 HU (PSNR 28–37 dB), and X2CT-GAN's whole mask, which also flattens the air, by 22–32 HU.
* Steps 1–2 are *one* SimpleITK ``Resample`` onto a 320³ 1 mm grid centred on the CT's physical centre. This is
  resample-then-crop/pad with the crop folded into the output grid, and it never builds the full 1 mm volume
  (the slow part). X2CT cropped the *last* 320 slices along z; we centre the crop on every axis so the model
  volume is centred on the source CT (needed to write results back in place).
* Step 3 uses ``torch.nn.functional.interpolate(mode="trilinear", align_corners=False)``: the 128 output voxels
  tile the same 320 mm field with exactly 2.5 mm spacing. ``ndimage.zoom(order=1)`` aligns the corner voxel
  centres instead (spacing 319/127 = 2.512 mm, a 0.5 % scale difference).
* The DRRs (``data/prepare.py``) are rendered from the 128³ volume clipped to the window, X2CT-GAN's from the
  1 mm 320³ volume with its full HU range (``CT2XRAY/xraypro.py``): same geometry, see the measured effect there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from ..conventions import (CROP_SIZE, HU_AIR, HU_MAX, HU_MIN, RESAMPLE_SPACING_MM, VOLUME_SIZE, VOXEL_SPACING_MM,
                           hu_to_unit, unit_to_hu)
from ..io.ct import CANONICAL_DIRECTION, CTVolume, to_sitk
from ..io.geometry import centred_origin_lps, grid_centre_lps

__all__ = [
    "ct_fingerprint",
    "same_ct",
    "PREPROCESSING_VERSION",
    "PreprocessConfig",
    "PreparedVolume",
    "resample_to_crop_grid",
    "preprocess_ct",
    "to_ct_volume",
]

# Bump when the numbers a prepared case holds would change; stored in every prepared case's meta.json.
PREPROCESSING_VERSION = "1"


@dataclass(frozen=True)
class PreprocessConfig:
    """Preprocessing constants (X2CT-GAN / PerX2CT LIDC-IDRI defaults).

    Args:
        resample_spacing_mm: isotropic spacing of the intermediate grid. Defaults to 1.0 (X2CT ``ctpro``
            ``new_spacing=[1, 1, 1]``).
        crop_size: voxels per side of the intermediate grid. Defaults to 320 (X2CT ``crop_to_standard(scale=320)``).
        volume_size: voxels per side of the model volume. Defaults to 128 (X2CT ``ct_channel``/``fine_size`` 128;
            DCT-Net §3.1 "output CT is resized to 128×128×128").
        hu_min: lower end of the HU window. Defaults to −1024 (X2CT ``CT_MIN_MAX[0] = 0`` on HU + 1024).
        hu_max: upper end of the HU window. Defaults to 1476 (``CT_MIN_MAX[1] = 2500`` on HU + 1024).
        pad_hu: value outside the source CT. Defaults to −1024 HU, air (X2CT pads its HU + 1024 data with 0).
    """

    resample_spacing_mm: float = RESAMPLE_SPACING_MM
    crop_size: int = CROP_SIZE
    volume_size: int = VOLUME_SIZE
    hu_min: float = HU_MIN
    hu_max: float = HU_MAX
    pad_hu: float = HU_AIR

    @property
    def field_mm(self) -> float:
        """Side of the cubic field of view in mm (320)."""
        return self.crop_size * self.resample_spacing_mm

    @property
    def voxel_spacing_mm(self) -> float:
        """Spacing of the model volume (2.5 mm)."""
        return self.field_mm / self.volume_size


@dataclass
class PreparedVolume:
    """A model-ready volume and where it sits in the patient.

    Args:
        volume: ``(S, S, S)`` float32 unit values (HU window → [0, 1]), canonical (D, H, W) axes; S = 128.
        spacing_mm: isotropic voxel size. Defaults to 2.5.
        origin_lps: LPS position (mm) of the centre of voxel ``(0, 0, 0)``.
        direction: SimpleITK direction cosines of the grid (those of the source CT, canonical ``diag(1, 1, -1)``
            for axis-aligned scans).
        source: file or folder of the source CT.
    """

    volume: np.ndarray
    spacing_mm: float = VOXEL_SPACING_MM
    origin_lps: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = CANONICAL_DIRECTION
    source: str = ""

    def centre_lps(self) -> np.ndarray:
        """LPS position (mm) of the centre of the volume."""
        return grid_centre_lps(self.volume.shape, (self.spacing_mm,) * 3, self.origin_lps, self.direction)

    def geometry(self) -> dict[str, Any]:
        """JSON-ready geometry (everything but the voxels), the inverse of :meth:`from_geometry`."""
        return {
            "size": list(self.volume.shape),
            "spacing_mm": float(self.spacing_mm),
            "origin_lps": [float(v) for v in self.origin_lps],
            "direction": [float(v) for v in self.direction],
            "source": self.source,
        }

    @classmethod
    def from_geometry(cls, geometry: dict[str, Any], volume: np.ndarray | None = None) -> "PreparedVolume":
        """Rebuild from :meth:`geometry` (e.g. a prepared case's ``meta.json``) and optionally the voxels."""
        size = tuple(geometry.get("size", (VOLUME_SIZE,) * 3))
        return cls(
            volume=np.zeros(size, np.float32) if volume is None else np.asarray(volume, np.float32),
            spacing_mm=float(geometry["spacing_mm"]),
            origin_lps=tuple(geometry["origin_lps"]),
            direction=tuple(geometry.get("direction", CANONICAL_DIRECTION)),
            source=str(geometry.get("source", "")),
        )


def resample_to_crop_grid(ct: CTVolume, config: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """Steps 1–2: the CT on a ``crop_size``³ grid of ``resample_spacing_mm`` voxels centred on its centre (HU).

    One linear ``sitk.Resample`` onto the output grid: the same numbers as resampling the whole CT to 1 mm and
    then centre-cropping / padding with air, without building the full 1 mm volume.

    Returns:
        ``(C, C, C)`` float32 HU, C = ``crop_size``, canonical (D, H, W) axes.
    """
    n, step = config.crop_size, config.resample_spacing_mm
    origin = centred_origin_lps((n,) * 3, (step,) * 3, ct.centre_lps(), ct.direction)
    image = sitk.Resample(
        to_sitk(ct), [n, n, n], sitk.Transform(), sitk.sitkLinear, origin, (step,) * 3, ct.direction,
        float(config.pad_hu), sitk.sitkFloat32,
    )
    return sitk.GetArrayFromImage(image)


def preprocess_ct(ct: CTVolume, config: PreprocessConfig = PreprocessConfig()) -> PreparedVolume:
    """HU CT → model volume (``volume_size``³ in [0, 1], 2.5 mm, centred on the CT's physical centre).

    Args:
        ct: canonical HU volume from :func:`DCTNetLib.io.ct.read_ct`.
        config: constants; defaults are X2CT-GAN's.

    Returns:
        :class:`PreparedVolume` with ``volume`` ``(128, 128, 128)`` float32 unit values.
    """
    crop = torch.from_numpy(resample_to_crop_grid(ct, config))
    size = (config.volume_size,) * 3
    small = F.interpolate(crop[None, None], size=size, mode="trilinear", align_corners=False)[0, 0]
    unit = hu_to_unit(small, config.hu_min, config.hu_max).numpy().astype(np.float32, copy=False)
    spacing = config.voxel_spacing_mm
    return PreparedVolume(
        volume=unit,
        spacing_mm=spacing,
        origin_lps=centred_origin_lps((config.volume_size,) * 3, (spacing,) * 3, ct.centre_lps(), ct.direction),
        direction=tuple(ct.direction),
        source=ct.source,
    )


def to_ct_volume(unit_volume, geometry: PreparedVolume | None = None,
                 hu_min: float = HU_MIN, hu_max: float = HU_MAX) -> CTVolume:
    """Model output (unit values) → :class:`CTVolume` in HU, placed where the source CT was.

    The voxels are not resampled: the result is the model grid itself (2.5 mm for 128³), centred on the source
    CT's physical centre, so viewers overlay it on the original CT. A volume of another size (e.g. 64³ from a
    small preset) is taken to span the same field (spacing scaled by 128 / size), again centred.

    Args:
        unit_volume: ``(S, S, S)``, ``(1, S, S, S)`` or ``(1, 1, S, S, S)``, numpy or torch, values in [0, 1].
        geometry: the :class:`PreparedVolume` of the source (or ``PreparedVolume.from_geometry(meta)``). Defaults
            to a volume centred on the LPS origin with canonical axes (radiographs without a CT).
        hu_min, hu_max: the HU window used by :func:`~DCTNetLib.conventions.hu_to_unit`.

    Returns:
        float32 HU :class:`CTVolume` with isotropic spacing.
    """
    if isinstance(unit_volume, torch.Tensor):
        unit_volume = unit_volume.detach().to("cpu", torch.float32).numpy()
    unit = np.asarray(unit_volume, dtype=np.float32)
    while unit.ndim > 3 and unit.shape[0] == 1:
        unit = unit[0]
    if unit.ndim != 3:
        raise ValueError(f"unit_volume must be (D, H, W) or (1, 1, D, H, W), got shape {np.shape(unit_volume)}")
    geometry = geometry if geometry is not None else PreparedVolume(np.zeros((VOLUME_SIZE,) * 3, np.float32))
    field = np.asarray(geometry.volume.shape, dtype=np.float64) * geometry.spacing_mm
    spacing = field / np.asarray(unit.shape, dtype=np.float64)
    if not np.allclose(spacing, spacing[0]):
        raise ValueError(f"unit_volume shape {unit.shape} does not tile the cubic field of {field[0]:.1f} mm")
    origin = centred_origin_lps(unit.shape, tuple(spacing.tolist()), geometry.centre_lps(), geometry.direction)
    return CTVolume(
        hu=unit_to_hu(unit, hu_min, hu_max),
        spacing=tuple(spacing.tolist()),
        origin_lps=origin,
        direction=geometry.direction,
        source=geometry.source,
    )


FINGERPRINT_BLOCKS = 8        # a 128³ volume → 16³ block means
FINGERPRINT_TOLERANCE = 3     # of 255: the same CT read twice differs by float noise; two CTs by far more


def ct_fingerprint(unit_volume: np.ndarray) -> str:
    """A compact, noise-tolerant fingerprint of a model-grid volume in unit values: the means of its 8³ blocks as
    bytes (hex). Two fingerprints of the same CT agree within :data:`FINGERPRINT_TOLERANCE` (:func:`same_ct`); it
    identifies training CTs without storing them (``manifest.json`` ``training_fingerprints``)."""
    volume = np.clip(np.asarray(unit_volume, dtype=np.float64), 0.0, 1.0)
    n, k = volume.shape[0], FINGERPRINT_BLOCKS
    blocks = volume[:n - n % k, :n - n % k, :n - n % k].reshape(n // k, k, n // k, k, n // k, k).mean(axis=(1, 3, 5))
    return np.round(blocks * 255).astype(np.uint8).tobytes().hex()


def same_ct(a: str, b: str) -> bool:
    """True when two :func:`ct_fingerprint` values come from the same CT (every block within the tolerance)."""
    x, y = np.frombuffer(bytes.fromhex(a), np.uint8), np.frombuffer(bytes.fromhex(b), np.uint8)
    return x.shape == y.shape and int(np.abs(x.astype(int) - y.astype(int)).max()) <= FINGERPRINT_TOLERANCE

