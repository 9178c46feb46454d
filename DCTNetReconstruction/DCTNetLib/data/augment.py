"""On-the-fly augmentation of prepared cases: a random pose and HU calibration, then new DRRs.

With a few real CTs, the generator must not learn a handful of fixed poses. Each training item is therefore a new
sample drawn from its prepared case:

1. **Pose.** A random rotation about the three patient axes, an isotropic scale and a shift, optionally a
   left–right mirror and a smooth random deformation (``elastic_mm``: other anatomy, not only another pose),
   applied to the 128³ volume (trilinear, air outside) and to its bone mask (the same transform);
2. **Calibration.** Attenuation above air scaled by a random factor (scanner/kVp calibration differs between
   sites): ``HU' = -1024 + (HU + 1024)·(1 + a)``, so air stays air; optionally (``bone_gain_range``) the
   radiographs' bone contrast raised by a random factor, as a film's softer spectrum shows it;
3. **Radiographs.** PA and lateral DRRs of the *augmented* volume, raw and with the bone mask suppressed
   (:mod:`.bone`), rendered by the project's projector with the training geometry;
4. **Film appearance** (optional, ``film``): each view's pair gets a random film-like look
   (:mod:`.film_appearance`: scatter, blur, noise, display LUT, edge enhancement, collimation, markers).

Because the radiographs are re-rendered from the transformed volume, every view stays consistent with the CT:
a mirrored patient gets the PA *and* the lateral of the mirrored body (the lateral is not just flipped in 2D,
which would put the cone beam's magnification on the wrong side), and a shifted patient moves in both views.

The ranges are ours, chosen to stay within how a chest is positioned for a PA/lateral pair: a few degrees of
rotation, ±10 % size, ±1 cm shift. X2CT-GAN (Ying et al. 2019) trained without augmentation on 916 CTs, which we
do not have; nnU-Net's generic defaults (±30°, scale 0.7–1.4; Isensee et al., Nat. Methods 2021) are for
segmentation of arbitrary poses and would leave the field of view. Mirroring makes a *situs inversus* anatomy:
it is drawn less often than not (``flip_probability`` 0.25) so that most samples keep the heart on the left.

All random numbers come from torch's global generator, which the trainers store in every checkpoint: resumed
runs draw the same augmentations.

**A pool of draws** (``pool``): re-rendering a 128³ case costs about 0.8 s on one CPU core, which is 90 % of a
small CDM training step (8 radiographs). With ``pool = P``, each training index keeps P draws and every access
returns one of them, picked by the global generator; draw ``k`` of index ``i`` is made the first time it is
picked, from its own seed (``pool_seed``, ``i``, ``k``) and without touching the global generator, so a resumed
run rebuilds the same pool and picks the same entries. The variety is finite (P draws per index) and the pool
lives in memory (the CT as float16, ~4 MB per draw, in each data-loader worker).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..conventions import HU_AIR, HU_MIN, VOXEL_SPACING_MM, unit_to_hu
from .bone import BoneConfig, bone_mask, drrs_given_bone_mask
from .film_appearance import FilmAppearanceConfig, film_like

if HU_MIN != HU_AIR:  # augment_volume scales unit values to scale attenuation above air
    raise ImportError("data.augment assumes the HU window starts at air")

__all__ = ["AugmentConfig", "random_pose", "random_displacement", "augment_volume", "AugmentedCaseDataset"]


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random pose and calibration (see the module docstring for their sources).

    Args:
        max_rotation_deg: largest rotation about the S–I, A–P and R–L axes, in degrees. Defaults to (6, 3, 3)
            (turning in the axial plane varies most between patients).
        scale_range: isotropic scale factors (patient size). Defaults to (0.9, 1.1).
        max_anisotropy: largest extra relative scale of each axis on its own (patients differ in width, depth
            and height independently; a film narrowed or squeezed must give a narrower or shorter body).
            0 = isotropic only. Defaults to 0.
        max_shift_mm: largest shift along each axis, mm. Defaults to 10.
        flip_probability: probability of a left–right mirror. Defaults to 0.25.
        max_attenuation_change: largest relative change of attenuation above air (``a`` above). Defaults to 0.04.
        elastic_mm: standard deviation, in mm, of a smooth random deformation added to the pose: a displacement
            drawn at ``elastic_points``³ control points spread over the field and interpolated trilinearly
            between them (Ronneberger et al., MICCAI 2015, §3.1: random displacements on a coarse grid, the
            key augmentation with few training images; 3D U-Net, Çiçek et al., MICCAI 2016, and the
            ``elasticdeform`` package's ``deform_random_grid(sigma, points)`` draw it the same way). It is added
            to the pose's sampling grid so that the volume is resampled once, not twice. With a few CTs the
            generator otherwise meets only a few anatomies (lung shapes, heart sizes, rib positions), however
            they are posed. 0 = off. Defaults to 0.
        elastic_points: control points per axis of the deformation (5 over 320 mm: 80 mm apart, so lungs
            and mediastinum change shape while a rib stays a rib). Defaults to 5.
        bone_gain_range: the raw radiographs are rendered with bone's excess attenuation over soft tissue scaled
            by a factor drawn from this range (:func:`~DCTNetLib.data.bone.boost_bone`: a film's softer spectrum
            shows bone about 1.2–2.4× brighter against soft tissue than the CT's HU do); the CT and the
            bone-removed radiographs do not change. Defaults to (1, 1): the CT's own contrast.
    """

    max_rotation_deg: tuple[float, float, float] = (6.0, 3.0, 3.0)
    scale_range: tuple[float, float] = (0.9, 1.1)
    max_anisotropy: float = 0.0
    max_shift_mm: float = 10.0
    flip_probability: float = 0.25
    max_attenuation_change: float = 0.04
    elastic_mm: float = 0.0
    elastic_points: int = 5
    bone_gain_range: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        if len(self.max_rotation_deg) != 3 or any(r < 0 for r in self.max_rotation_deg):
            raise ValueError(f"max_rotation_deg needs three non-negative angles, got {self.max_rotation_deg}")
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {self.scale_range}")
        if not 0 <= self.max_anisotropy < 1:
            raise ValueError(f"max_anisotropy must be in [0, 1), got {self.max_anisotropy}")
        if self.max_shift_mm < 0 or not 0 <= self.flip_probability <= 1 or not 0 <= self.max_attenuation_change < 1:
            raise ValueError(f"invalid augmentation ranges: {self}")
        if self.elastic_mm < 0 or self.elastic_points < 2:
            raise ValueError(f"elastic_mm must be >= 0 and elastic_points >= 2, got {self.elastic_mm} and "
                             f"{self.elastic_points}")
        if len(self.bone_gain_range) != 2 or not 0 < self.bone_gain_range[0] <= self.bone_gain_range[1]:
            raise ValueError(f"bone_gain_range must satisfy 0 < low <= high, got {self.bone_gain_range}")


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def _rotation(axis: int, angle: float) -> torch.Tensor:
    """3×3 rotation by ``angle`` (radians) about coordinate ``axis`` of (x=W, y=H, z=D)."""
    c, s = math.cos(angle), math.sin(angle)
    i, j = [k for k in range(3) if k != axis]
    matrix = torch.eye(3)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix


def random_pose(config: AugmentConfig, side: int, spacing_mm: float = VOXEL_SPACING_MM) -> torch.Tensor:
    """A random ``(3, 4)`` sampling matrix for :func:`torch.nn.functional.affine_grid`.

    It maps output coordinates to input coordinates in the normalised ``(x=W, y=H, z=D)`` frame of a cubic
    volume of ``side`` voxels: rotation, then isotropic scale ``s`` (the anatomy grows by ``s``), then shift.
    """
    # (x, y, z) = (R→L, A→P, S→I): the S–I axis is z, so axial-plane turning is a rotation about z.
    si, ap, rl = (math.radians(_uniform(-r, r)) for r in config.max_rotation_deg)
    rotation = _rotation(2, si) @ _rotation(1, ap) @ _rotation(0, rl)
    scale = _uniform(*config.scale_range)
    linear = rotation / scale
    if config.max_anisotropy > 0:  # drawn only when on, so isotropic runs keep their random stream
        axes = torch.tensor([1.0 + _uniform(-config.max_anisotropy, config.max_anisotropy) for _ in range(3)])
        linear = linear @ torch.diag(1.0 / axes)
    if float(torch.rand(())) < config.flip_probability:
        linear = linear @ torch.diag(torch.tensor([-1.0, 1.0, 1.0]))  # mirror R↔L (the W axis)
    half_extent_mm = side * spacing_mm / 2
    shift = torch.tensor([_uniform(-config.max_shift_mm, config.max_shift_mm) for _ in range(3)]) / half_extent_mm
    return torch.cat([linear, shift[:, None]], dim=1)


def random_displacement(config: AugmentConfig, side: int, spacing_mm: float = VOXEL_SPACING_MM) -> torch.Tensor:
    """A smooth random ``(1, side, side, side, 3)`` displacement in :func:`~torch.nn.functional.grid_sample`'s
    normalised ``(x, y, z)`` units: normal draws of standard deviation ``config.elastic_mm`` at
    ``config.elastic_points``³ control points, interpolated trilinearly over the volume."""
    points = config.elastic_points
    coarse = torch.randn(1, 3, points, points, points) * (config.elastic_mm / (side * spacing_mm / 2))
    field = F.interpolate(coarse, size=(side, side, side), mode="trilinear", align_corners=True)
    return field.permute(0, 2, 3, 4, 1)


def augment_volume(unit: torch.Tensor, mask: torch.Tensor, config: AugmentConfig,
                   spacing_mm: float = VOXEL_SPACING_MM) -> tuple[torch.Tensor, torch.Tensor]:
    """A randomly posed and recalibrated copy of a volume and its bone mask.

    Args:
        unit: ``(1, D, H, W)`` CT in [0, 1] on the HU window (0 = air).
        mask: ``(1, D, H, W)`` bone mask (bool or {0, 1}).
        config: ranges.
        spacing_mm: voxel size. Defaults to 2.5.

    Returns:
        ``(unit', mask')``: ``(1, D, H, W)`` float in [0, 1] and bool.
    """
    if unit.ndim != 4 or unit.shape != mask.shape or len(set(unit.shape[1:])) != 1:
        raise ValueError(f"unit and mask must be the same cubic (1, n, n, n) shape, got {tuple(unit.shape)} "
                         f"and {tuple(mask.shape)}")
    side = unit.shape[-1]
    theta = random_pose(config, side, spacing_mm)[None]
    stacked = torch.cat([unit.float(), mask.float()])[None]  # (1, 2, D, H, W): one resampling for both
    grid = F.affine_grid(theta, list(stacked.shape), align_corners=False)
    if config.elastic_mm > 0:  # drawn only when on, so runs without it keep their random stream
        grid = grid + random_displacement(config, side, spacing_mm)
    moved = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    gain = 1.0 + _uniform(-config.max_attenuation_change, config.max_attenuation_change)
    # unit = (HU − HU_MIN) / (HU_MAX − HU_MIN) with HU_MIN = air: scaling HU + 1024 scales the unit value
    return (moved[:1] * gain).clamp(0.0, 1.0), moved[1:] > 0.5


class AugmentedCaseDataset(Dataset):
    """Prepared cases with a fresh random pose, calibration and DRRs at every access.

    Items have the keys of :class:`~DCTNetLib.data.prepared_cases.PreparedCaseDataset` (``ct``, ``drr``, ``drr_bs``,
    ``case_id``), so the trainers take either. Each case's bone mask is segmented once (about a second) and kept.

    Args:
        base: the prepared cases (any dataset with those keys).
        config: augmentation ranges. Defaults to ``AugmentConfig()``.
        bone_config: bone segmentation settings. Defaults to ``BoneConfig()``.
        film: film-like appearance ranges for the radiographs, or ``None`` for plain DRRs. Defaults to None.
        pool: keep this many draws per index and pick among them (module docstring); 0 = a new draw at every
            access. Defaults to 0.
        pool_seed: seed of the pool's draws. Defaults to 0.
    """

    def __init__(self, base: Dataset, config: AugmentConfig | None = None,
                 bone_config: BoneConfig | None = None, film: FilmAppearanceConfig | None = None,
                 pool: int = 0, pool_seed: int = 0) -> None:
        super().__init__()
        if pool < 0:
            raise ValueError(f"pool must be >= 0, got {pool}")
        self.pool = pool
        self.pool_seed = pool_seed
        self._pool: dict[tuple[int, int], dict[str, Any]] = {}
        self.film = film
        self.base = base
        self.config = config or AugmentConfig()
        self.bone_config = bone_config or BoneConfig()
        self._masks: dict[str, torch.Tensor] = {}
        self.root = getattr(base, "root", None)

    def __len__(self) -> int:
        return len(self.base)

    def _mask(self, case_id: str, unit: torch.Tensor) -> torch.Tensor:
        if case_id not in self._masks:
            hu = unit_to_hu(unit[0].numpy().astype(np.float32))
            self._masks[case_id] = torch.from_numpy(bone_mask(hu, VOXEL_SPACING_MM, self.bone_config))[None]
        return self._masks[case_id]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not self.pool:
            return self._draw(index)
        k = int(torch.randint(self.pool, ()))  # the global generator: a resumed run picks the same entries
        if (index, k) not in self._pool:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed((self.pool_seed * 1_000_003 + index) * 1_000_003 + k)
                item = self._draw(index)
            self._pool[(index, k)] = {**item, "ct": item["ct"].half()}
        item = self._pool[(index, k)]
        return {**item, "ct": item["ct"].float()}

    def _draw(self, index: int) -> dict[str, Any]:
        """A new random draw of training case ``index`` (the module docstring's steps 1–4)."""
        item = self.base[index]
        unit, mask = augment_volume(item["ct"], self._mask(item["case_id"], item["ct"]), self.config)
        low, high = self.config.bone_gain_range
        gain = _uniform(low, high) if high > low else low  # no draw at a fixed gain: earlier runs resume alike
        with torch.no_grad():
            drr, drr_bs = drrs_given_bone_mask(unit[None], mask[None], VOXEL_SPACING_MM, self.bone_config,
                                               bone_gain=gain)
            if self.film is not None:
                views = [film_like(torch.stack([drr[0, v], drr_bs[0, v]]), self.film) for v in range(drr.shape[1])]
                drr, drr_bs = (torch.stack([view[k] for view in views])[None] for k in (0, 1))
        return {"ct": unit, "drr": drr[0], "drr_bs": drr_bs[0], "case_id": item["case_id"]}
