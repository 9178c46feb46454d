"""Projection registration: deform the reconstruction so its DRRs match the two radiographs it came from.

Not in the paper (ours). The generators' volumes are calibrated in value but wrong in *where* things are: a
look-up table from output HU to expected true HU gains nothing, while a smooth displacement of the output fitted to
the true CT gains about 2 dB on the validation CT (``docs/refinement.md``). Two orthogonal views constrain such a
displacement well: the PA shows every left–right and cranio-caudal shift, the lateral every antero-posterior and
cranio-caudal one. So this module fits a smooth displacement field of the volume to the radiographs at
reconstruction time — the intensity-based 2D/3D registration of the field (Markelj et al., *A review of 3D/2D
registration methods for image-guided interventions*, Med. Image Anal. 16, 2012), here deformable and driven by
the differentiable projector of :mod:`~DCTNetLib.data.drr`:

- the displacement lives on a coarse grid of ``control_points``³ nodes spanning the volume (a free-form
  deformation, Rueckert et al., IEEE TMI 18, 1999, with trilinear instead of B-spline interpolation, as in the
  elastic augmentation of :mod:`~DCTNetLib.data.augment`), in mm, zero at the start;
- the data term is the mean squared difference between the warped volume's normalised DRRs
  (:func:`~DCTNetLib.data.drr.make_drrs`, the training DRRs' rendering) and the input radiographs;
- a membrane term (squared differences of neighbouring nodes) keeps the field smooth;
- Adam moves the nodes for a fixed number of steps; the fitted field is then applied to the volume(s).

It changes where the volume's structures are, not their values (the resampling is trilinear). A free field can
still squeeze bone away (on real films the spine's column lost a quarter of its bone); a rigidity term keeps bone
rigid: the squared small strain of the displacement, weighted by the volume's bone (Staring, Klein and Pluim, *A
rigidity penalty term for nonrigid registration*, Med. Phys. 34, 2007, keep bone from being compressed or
stretched while soft tissue deforms; ours is the small-strain form of their "orthonormality" condition).

Real films are not DRRs. :meth:`RegistrationConfig.film_robust` is the setting every reconstruction gets by default
since session 15 (``docs/refinement.md``): the film's blank edge bands (collimator shutters) and saturated white
pixels (burnt-in markers) are left out of the data term (:func:`film_field_mask`), the film's values are mapped by
rank onto the volume's own DRR values inside what is left (the display curve is monotone, not linear), and the
rigidity term keeps bone. On film-like DRRs of the validation CTs the plain data term lost 2.3 dB; this one gains
0.7 dB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config_base import ConfigBase
from ..conventions import CROP_SIZE, unit_to_hu
from ..data.drr import DRRGeometry, DRRProjector, make_drrs, normalise_drr
from ..helpers import exists

__all__ = ["RegistrationConfig", "ProjectionRegistration", "warp_volume", "fit_node_field", "rank_matched",
           "film_field_mask",
           "bone_strain"]

# Values within this of 0 or 1 count as blank (a shutter band) or saturated (a marker) on [0, 1] radiographs.
_FLAT_TOLERANCE = 1e-3
# Pixels a saturated marker's mask grows by on each side (its edge is blurred by the resize to 128²).
_MARKER_MARGIN_PX = 2
# Softness of the bone weight of the rigidity term, in HU (a logistic step around ``rigidity_hu``).
_BONE_STEP_HU = 25.0


@dataclass(frozen=True)
class RegistrationConfig(ConfigBase):
    """Settings of :class:`ProjectionRegistration`, chosen on the validation CTs (``docs/refinement.md``).

    Args:
        iterations: Adam steps. 0 turns the registration off. Defaults to 80.
        control_points: nodes of the displacement grid along each axis (the 320 mm field: 12 nodes are 29 mm
            apart). Defaults to 12.
        step_mm: Adam's learning rate, in mm of displacement. Defaults to 2.5 (one voxel of the model grid).
        smoothness: weight of the membrane term (mean squared difference of neighbouring nodes, in mm²).
            Defaults to 4.8e-5 (3e-4 per squared 2.5 mm voxel).
        fit_size: the fit renders the volume average-pooled to this size (the field is smooth on a far coarser
            scale; 64 gave the same validation PSNR as 128 at an eighth of the voxels); 0 renders it as it is.
            Defaults to 64.
        match_values: fit against the radiographs' values mapped, by rank, onto the values of the starting
            volume's own DRRs (a film's display curve is monotone but not linear in the line integral; the map
            keeps only the order). Defaults to False.
        border_px: detector pixels along each image edge left out of the data term (a film's borders and
            collimation). Defaults to 0.
        film_mask: leave the radiographs' blank edge bands and saturated white pixels out of the data term
            (:func:`film_field_mask`). Defaults to False.
        rigidity: weight of the bone rigidity term (mean squared small strain of the displacement where the volume
            is bone, :func:`bone_strain`); 0 for none. Defaults to 0.
        rigidity_hu: the volume counts as bone for the rigidity term above this. Defaults to 200 (below the 300 HU
            of the bone metrics: the generators' bone is blurred, its edge falls below 300).
        rigidity_grid: the rigidity term's strain is computed on a grid this many voxels across (the bone weight
            average-pooled to it); 0 uses the fit's grid. Defaults to 32 (validation scores within 0.003 dB of the
            64³ fit grid, and the registration about 1.3× faster).
    """

    iterations: int = 80
    control_points: int = 12
    step_mm: float = 2.5
    smoothness: float = 4.8e-5
    fit_size: int = 64
    match_values: bool = False
    border_px: int = 0
    film_mask: bool = False
    rigidity: float = 0.0
    rigidity_hu: float = 200.0
    rigidity_grid: int = 32

    config_name: ClassVar[str] = "registration"

    @classmethod
    def film_robust(cls) -> "RegistrationConfig":
        """The registration every reconstruction gets by default: shutters and markers masked, values matched by
        rank, bone kept rigid (weight 0.3, chosen from 0.3 / 1 / 3 on the validation CTs' plain and film-like DRRs:
        docs/refinement.md)."""
        return cls(match_values=True, film_mask=True, rigidity=0.3)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if self.control_points < 2:
            raise ValueError(f"control_points must be >= 2, got {self.control_points}")
        if self.border_px < 0:
            raise ValueError(f"border_px must be >= 0, got {self.border_px}")
        if self.fit_size < 0:
            raise ValueError(f"fit_size must be >= 0, got {self.fit_size}")
        if self.step_mm <= 0 or self.smoothness < 0:
            raise ValueError(f"step_mm must be > 0 and smoothness >= 0, got {self.step_mm}, {self.smoothness}")
        if self.rigidity < 0 or self.rigidity_grid < 0:
            raise ValueError(f"rigidity and rigidity_grid must be >= 0, got {self.rigidity}, {self.rigidity_grid}")


def warp_volume(volume: torch.Tensor, displacement_mm: torch.Tensor, field_mm: float = CROP_SIZE) -> torch.Tensor:
    """Resample ``volume`` at ``x + u(x)``, with ``u`` interpolated trilinearly from a coarse node grid.

    Args:
        volume: the volume(s) to deform: a cube of side ``field_mm`` (any number of voxels).
        displacement_mm: node displacements in mm along (D, H, W), the grid's corners on the volume's corner
            voxels.
        field_mm: the volume's side. Defaults to the model grid's 320 mm.

    Shapes:
        volume ``(B, C, D, H, W)``, displacement_mm ``(B, 3, n, n, n)`` → ``(B, C, D, H, W)``.
    """
    shape = tuple(volume.shape[2:])
    field = F.interpolate(displacement_mm, size=shape, mode="trilinear", align_corners=True)
    axes = [torch.linspace(-1.0, 1.0, n, device=volume.device, dtype=volume.dtype) for n in shape]
    d, h, w = torch.meshgrid(*axes, indexing="ij")
    # [-1, 1] spans the corner voxels' centres, (n - 1) voxels of field_mm / n
    scale = [2.0 * n / ((n - 1) * field_mm) for n in shape]
    # grid_sample reads (x, y, z) = (W, H, D) in [-1, 1]
    grid = torch.stack((w + field[:, 2] * scale[2], h + field[:, 1] * scale[1], d + field[:, 0] * scale[0]), dim=-1)
    return F.grid_sample(volume, grid, mode="bilinear", padding_mode="border", align_corners=True)


def membrane_energy(displacement: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring nodes along each axis, summed over the axes (mm²), per field.

    Shapes:
        ``(B, 3, n, n, n)`` → ``(B,)``.
    """
    return sum((displacement.diff(dim=axis) ** 2).flatten(1).mean(dim=1) for axis in (2, 3, 4))


def fit_node_field(loss_of: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, step_mm: float,
                   iterations: int) -> torch.Tensor:
    """The node displacements that minimise ``loss_of(field)``: Adam from ``start`` with learning rate ``step_mm``
    for ``iterations`` steps (the optimiser of :meth:`ProjectionRegistration.fit` and of the atlas prior's 3D–3D
    alignment). Runs with gradients even under ``torch.inference_mode``.

    Shapes:
        start ``(B, 3, n, n, n)`` (mm) → ``(B, 3, n, n, n)``.
    """
    with torch.inference_mode(False), torch.enable_grad():
        field = start.detach().clone().requires_grad_(True)
        optimiser = torch.optim.Adam([field], lr=step_mm)
        for _ in range(iterations):
            optimiser.zero_grad(set_to_none=True)
            loss_of(field).backward()
            optimiser.step()
    return field.detach()


def bone_strain(displacement_mm: torch.Tensor, bone_weight: torch.Tensor) -> torch.Tensor:
    """Mean squared small strain ``ε = (∇u + ∇uᵀ) / 2`` of a displacement, weighted by ``bone_weight`` (the
    rigidity term). ``u`` is interpolated from its nodes to ``bone_weight``'s grid; the strain is dimensionless
    (mm per mm), so the grid's spacing drops out; rotations and shifts cost nothing. One value per field, each
    weighted by its own volume's bone.

    Shapes:
        displacement_mm ``(B, 3, n, n, n)``, bone_weight ``(B, 1, D, D, D)`` (a cube) → ``(B,)``.
    """
    size = bone_weight.shape[2]
    spacing = CROP_SIZE / size
    u = F.interpolate(displacement_mm, size=tuple(bone_weight.shape[2:]), mode="trilinear",
                      align_corners=True) / spacing
    # gradient[i][j] = ∂u_j / ∂x_i, in voxels per voxel
    gradient = [[torch.gradient(u[:, j], dim=1 + i)[0] for j in range(3)] for i in range(3)]
    strain = sum((0.5 * (gradient[i][j] + gradient[j][i])) ** 2 for i in range(3) for j in range(3))
    weight = bone_weight[:, 0]
    return (strain * weight).flatten(1).sum(dim=1) / weight.flatten(1).sum(dim=1).clamp_min(1.0)


def _blank_edge_depth(flat: torch.Tensor, limit: int) -> torch.Tensor:
    """How many of the first ``limit`` lines are flat, counted from the start. Shapes: ``(N, L)`` bool → ``(N,)``."""
    return torch.cumprod(flat[:, :limit].int(), dim=1).sum(dim=1)


def film_field_mask(radiographs: torch.Tensor) -> torch.Tensor:
    """1 where a radiograph shows the patient, 0 on its blank edge bands (rows or columns of one value along an
    edge: collimator shutters, up to a quarter of the side) and on saturated white pixels grown by 2 px (burnt-in
    markers and text). A DRR has neither, save the pixels at its own maximum.

    Shapes:
        ``(B, V, H, W)`` in [0, 1] → ``(B, V, H, W)`` of 0 / 1.
    """
    b, v, h, w = radiographs.shape
    images = radiographs.reshape(b * v, h, w)
    rows = (images.amax(dim=2) - images.amin(dim=2)) < _FLAT_TOLERANCE  # (N, H)
    cols = (images.amax(dim=1) - images.amin(dim=1)) < _FLAT_TOLERANCE  # (N, W)
    top, bottom = _blank_edge_depth(rows, h // 4), _blank_edge_depth(rows.flip(1), h // 4)
    left, right = _blank_edge_depth(cols, w // 4), _blank_edge_depth(cols.flip(1), w // 4)
    r = torch.arange(h, device=images.device)[None, :, None]
    c = torch.arange(w, device=images.device)[None, None, :]
    inside = ((r >= top[:, None, None]) & (r < h - bottom[:, None, None])
              & (c >= left[:, None, None]) & (c < w - right[:, None, None]))
    saturated = (images >= 1.0 - _FLAT_TOLERANCE).float()[:, None]
    size = 2 * _MARKER_MARGIN_PX + 1
    saturated = F.max_pool2d(saturated, size, stride=1, padding=_MARKER_MARGIN_PX)[:, 0]
    return (inside & (saturated == 0)).to(radiographs.dtype).view(b, v, h, w)


def rank_matched(images: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Each image's values replaced by the reference image's sorted values, in the order of its own ranks
    (histogram matching; ties keep their pixel order: stable sorts, so a reconstruction repeats exactly). With
    ``mask``, only the pixels where it is 1 take part (the reference's values there, in the order of the image's
    values there); the others keep their values.

    Shapes:
        images ``(B, V, H, W)``, reference ``(B, V, H, W)``, mask ``(B, V, H, W)`` of 0 / 1 → ``(B, V, H, W)``.
    """
    if mask is None:
        flat = images.flatten(2)
        order = flat.argsort(dim=-1, stable=True)
        matched = torch.empty_like(flat).scatter_(-1, order, reference.flatten(2).sort(dim=-1, stable=True).values)
        return matched.view_as(images)
    matched = images.clone()
    for b in range(images.shape[0]):
        for v in range(images.shape[1]):
            keep = mask[b, v] > 0
            values = images[b, v][keep]
            out = torch.empty_like(values)
            out[values.argsort(stable=True)] = reference[b, v][keep].sort(stable=True).values
            matched[b, v][keep] = out
    return matched


class ProjectionRegistration(nn.Module):
    """Fit a smooth displacement of a reconstruction to its two radiographs (see the module docstring).

    Args:
        config: steps, grid, step size, smoothness. Defaults to ``RegistrationConfig()``.
        geometry: projection geometry of the radiographs. Defaults to the training DRRs' (``DRRGeometry()``).

    Example:
        >>> register = ProjectionRegistration()
        >>> field = register.fit(ct_unit, radiographs)  # doctest: +SKIP
        >>> moved = warp_volume(ct_unit, field)  # doctest: +SKIP
    """

    def __init__(self, config: RegistrationConfig | None = None, geometry: DRRGeometry | None = None) -> None:
        super().__init__()
        self.config = config if exists(config) else RegistrationConfig()
        self.geometry = geometry if exists(geometry) else DRRGeometry()
        # its own projector: the shared one's ray tables may have been built under inference mode, and inference
        # tensors cannot be saved for the backward pass
        self._projector: DRRProjector | None = None

    def applies_to(self, image_size: int) -> bool:
        """Whether it registers a model whose radiographs are ``image_size``²: it is on and the projector
        renders that detector (tiny test models have no DRR geometry of their own)."""
        return self.config.iterations > 0 and image_size == self.geometry.image_size

    def fit(self, ct_unit: torch.Tensor, radiographs: torch.Tensor) -> torch.Tensor:
        """The node displacements that make ``ct_unit``'s DRRs match ``radiographs``.

        Runs with gradients even when called under ``torch.inference_mode`` (the volume and the radiographs are
        constants of the fit; only the field is optimised). The volumes of a batch are fitted independently, each
        with its own loss, in one pass (the atlas prior registers its atlases so).

        Args:
            ct_unit: a reconstruction in [0, 1] on the model's HU window, on the model grid (a cube spanning the
                320 mm field).
            radiographs: the PA and lateral it was reconstructed from, in [0, 1] (bright = dense).

        Shapes:
            ct_unit ``(B, 1, D, H, W)``, radiographs ``(B, 2, n, n)`` → ``(B, 3, c, c, c)`` in mm, c =
            ``control_points``; zeros when the registration is off.
        """
        cfg = self.config
        if ct_unit.ndim != 5 or radiographs.ndim != 4 or radiographs.shape[1] != 2:
            raise ValueError(f"expected ct_unit (B, 1, D, H, W) and radiographs (B, 2, n, n), got "
                             f"{tuple(ct_unit.shape)} and {tuple(radiographs.shape)}")
        n = cfg.control_points
        with torch.inference_mode(False):  # the volume and the radiographs are saved for the backward pass
            volume = ct_unit.detach().float().clone()
            target = radiographs.detach().float().clone()
            start = torch.zeros((volume.shape[0], 3, n, n, n), device=volume.device)
            if cfg.iterations == 0:
                return start
            projector = self._projector_on(volume.device)
            pool = volume.shape[2] // cfg.fit_size if cfg.fit_size and volume.shape[2] > cfg.fit_size else 1
            if pool > 1:  # the field is smooth over tens of mm: fit it on the coarser volume
                volume = F.avg_pool3d(volume, pool)
            spacing = CROP_SIZE / volume.shape[2]
            with torch.no_grad():
                weight, target = self._data_weight_and_target(
                    normalise_drr(projector(unit_to_hu(volume), spacing)), target)
            bone = torch.sigmoid((unit_to_hu(volume) - cfg.rigidity_hu) / _BONE_STEP_HU) if cfg.rigidity else None
            if bone is not None and 0 < cfg.rigidity_grid < bone.shape[2]:
                bone = F.adaptive_avg_pool3d(bone, cfg.rigidity_grid)

            def loss_of(field: torch.Tensor) -> torch.Tensor:
                # each volume's own loss, summed: a batch of B fits is B independent fits (Adam is element-wise)
                drrs = normalise_drr(projector(unit_to_hu(warp_volume(volume, field)), spacing))
                data = (((drrs - target) ** 2 * weight).sum(dim=(1, 2, 3))
                        / weight.sum(dim=(1, 2, 3)).clamp_min(1.0))
                loss = data + cfg.smoothness * membrane_energy(field)
                if bone is not None:
                    loss = loss + cfg.rigidity * bone_strain(field, bone)
                return loss.sum()

            return fit_node_field(loss_of, start, cfg.step_mm, cfg.iterations)

    def mismatch(self, ct_unit: torch.Tensor, radiographs: torch.Tensor) -> torch.Tensor:
        """The fit's data term for ``ct_unit`` as it is, rendered on its own grid: the weighted mean squared
        difference between its normalised DRRs and the radiographs, after this config's border, film mask and
        rank matching (so volumes can be ranked by how well they explain a film as the fit sees it).

        Shapes:
            ct_unit ``(B, 1, D, H, W)``, radiographs ``(B, 2, n, n)`` → ``(B,)``.
        """
        with torch.no_grad():  # the shared projector (no backward here), so the fit's keeps its own grid's tables
            drrs = make_drrs(ct_unit.float(), CROP_SIZE / ct_unit.shape[2], self.geometry)
            weight, target = self._data_weight_and_target(drrs, radiographs.float())
            return ((drrs - target) ** 2 * weight).sum(dim=(1, 2, 3)) / weight.sum(dim=(1, 2, 3)).clamp_min(1.0)

    def _data_weight_and_target(self, own_drrs: torch.Tensor, radiographs: torch.Tensor
                                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The data term's pixel weights (border and film mask) and its target (the radiographs, mapped by rank
        onto ``own_drrs``, the starting volume's DRRs, when ``match_values``).

        Shapes:
            ``(B, V, n, n)``, ``(B, V, n, n)`` → ``(B, V, n, n)`` of 0 / 1, ``(B, V, n, n)``.
        """
        cfg = self.config
        weight = torch.zeros_like(radiographs)
        edge = cfg.border_px
        weight[..., edge: weight.shape[-2] - edge, edge: weight.shape[-1] - edge] = 1.0
        if cfg.film_mask:
            weight = weight * film_field_mask(radiographs)
        target = radiographs
        if cfg.match_values:
            target = rank_matched(radiographs, own_drrs, weight if cfg.film_mask else None)
        return weight, target

    def _projector_on(self, device: torch.device) -> DRRProjector:
        """This module's projector; it builds its ray tables for ``device`` on first use, inside :meth:`fit`."""
        if self._projector is None:
            self._projector = DRRProjector(self.geometry)
        return self._projector.to(device)

    def forward(self, ct_unit: torch.Tensor, radiographs: torch.Tensor) -> torch.Tensor:
        """``ct_unit`` moved by the field fitted to ``radiographs``. Shapes: as :meth:`fit`, → ``(B, 1, D, H, W)``."""
        if self.config.iterations == 0:
            return ct_unit
        return warp_volume(ct_unit.float(), self.fit(ct_unit, radiographs)).to(ct_unit.dtype)
