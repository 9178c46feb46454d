"""Atlas prior: real chest CTs registered to a patient's two radiographs, mixed into the registered reconstruction.

Not in the paper (ours). Multi-atlas reconstruction is the classic way to bring a population's anatomy to a patient
(label and intensity fusion: Iglesias and Sabuncu, *Multi-atlas segmentation of biomedical images: a survey*, Med.
Image Anal. 24, 2015); here each atlas is registered by the same projection registration as the output
(:mod:`~DCTNetLib.models.projection_registration`), so only the two radiographs drive it:

- each atlas is moved coarsely first (4³ nodes, no membrane: position and size differ between patients by
  centimetres), then by the registration's own settings;
- the atlases are ranked by how well their DRRs then match the radiographs (the fine registration's own data term:
  the mean squared difference, after its film mask and rank matching when it has them), and the ``top_k`` best are
  averaged (atlas selection by image similarity, the survey's §4.1) by their mean or their voxel-wise median (a
  median keeps edges that most of them agree on, where a mean blurs them);
- optionally the mean is then aligned to the registered reconstruction (a smooth 3D–3D registration,
  :func:`align_volume`), so that the two show one outline where they disagree, not two;
- the mean is mixed with the registered reconstruction by ``weight``, optionally faded where the two disagree in
  value (``similarity_hu``: the weight times ``exp(−(a − o)² / 2s²)``, after locally weighted voting in multi-atlas
  fusion, Artaechevarria, Muñoz-Barrutia and Ortiz-de-Solórzano, IEEE TMI 28, 2009): the atlases add detail where
  they agree with the reconstruction's tissue and fade where they do not; with ``edge_gate`` they also fade where the
  atlas mean has an edge the reconstruction lacks (:func:`unshared_edges`): across such an outline ``a − o`` sweeps
  through ``s`` on the outline's ramp, where the weighted change peaks, and drew a thin line there (on a real film,
  beside a lung's border, like a pneumothorax's pleural line); where the reconstruction has bone
  (≥ ``keep_bone_hu``) it keeps at least its own value, since an average of atlases blurs bone below the threshold.

Chosen on the four validation CTs (docs/refinement.md, "The atlas prior"). Since session 16 every reconstruction
gets the film-robust version (:meth:`AtlasPriorConfig.film_robust`: film-robust registrations, the median of the best
five aligned to the reconstruction, mixed at 0.45 faded by a 300 HU similarity and, since session 17, by the edge
gate).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn as nn

from ..config_base import ConfigBase
from ..conventions import HU_PER_UNIT, hu_to_unit
from ..data.drr import DRRGeometry
from ..helpers import exists
from .projection_registration import (ProjectionRegistration, RegistrationConfig, fit_node_field, membrane_energy,
                                      warp_volume)

__all__ = ["AtlasPriorConfig", "AtlasPrior", "align_volume", "unshared_edges"]


def _coarse_registration(**overrides) -> RegistrationConfig:
    return RegistrationConfig(**{"iterations": 60, "control_points": 4, "smoothness": 0.0, **overrides})


# Adam steps of the default (film-robust) prior's two registrations of every atlas. Session 18 halved them from 60 and
# 80: validation-4 -0.015 dB on plain DRRs and -0.001 dB on 16 film-like pairs, the whole reconstruction 1.5x faster
# together with the output registration's 40 steps (docs/refinement.md, "Fewer steps").
FILM_ROBUST_COARSE_STEPS = 30
FILM_ROBUST_FINE_STEPS = 40


# How the chosen atlases are combined.
AVERAGES = ("mean", "median")


@dataclass(frozen=True)
class AtlasPriorConfig(ConfigBase):
    """Settings of :class:`AtlasPrior`, chosen on the validation CTs.

    Args:
        top_k: atlases averaged, the best by DRR agreement after registration. Defaults to 5 (validation, 9 atlases:
            3 → 20.80 dB, 5 → 20.90, 9 → 20.79).
        weight: share of the atlas mean in the mix. Defaults to 0.5 (0.25 and 0.75 scored lower).
        keep_bone_hu: where the reconstruction is at least this dense, the mix keeps at least its value. Defaults to
            300 (the bone threshold of ``evaluation.metrics.BONE_HU``).
        average: how the chosen atlases are combined, voxel by voxel: "mean" or "median". Defaults to "mean".
        align_iterations: Adam steps of the 3D–3D alignment of the combined atlas to the registered reconstruction
            (:func:`align_volume`); 0 for none. Defaults to 0.
        similarity_hu: s of the similarity weight ``exp(−(a − o)² / 2s²)`` of the mix, in HU; 0 for a uniform
            weight. Defaults to 0.
        edge_gate: fade the weight out where the atlas mean has an edge the reconstruction lacks
            (:func:`unshared_edges`). Defaults to False.
        coarse: the first registration of each atlas. Defaults to 4³ nodes, 60 steps, no membrane.
        fine: the second. Defaults to ``RegistrationConfig()``.
    """

    top_k: int = 5
    weight: float = 0.5
    keep_bone_hu: float = 300.0
    average: str = "mean"
    align_iterations: int = 0
    similarity_hu: float = 0.0
    edge_gate: bool = False
    coarse: RegistrationConfig = field(default_factory=_coarse_registration)
    fine: RegistrationConfig = field(default_factory=RegistrationConfig)

    config_name: ClassVar[str] = "atlas prior"

    @classmethod
    def film_robust(cls) -> "AtlasPriorConfig":
        """The atlas prior every reconstruction gets by default (docs/refinement.md, chosen on the validation CTs'
        plain and film-like DRRs and by eye on two real film pairs): both registrations film-robust
        (:meth:`~DCTNetLib.models.projection_registration.RegistrationConfig.film_robust`'s mask and rank match;
        the fine one's bone rigidity) and fitted on a 32³ rendering (−0.016 dB against 64³, 3.4× faster); the
        median of the best five (the mean scored 0.013 lower in SSIM); aligned to the reconstruction in 60 steps
        and mixed at 0.45 faded by a 300 HU similarity (a uniform 0.3 without the alignment scored as well but drew
        the atlases' outlines beside the reconstruction's on a real film) and by the edge gate (session 17: without
        it, thin lines where the atlases' outlines lie on real films); the two registrations in 30 and 40 steps
        (session 18: :data:`FILM_ROBUST_COARSE_STEPS`, :data:`FILM_ROBUST_FINE_STEPS`)."""
        robust = RegistrationConfig.film_robust()
        coarse = _coarse_registration(match_values=True, film_mask=True, fit_size=32,
                                      iterations=FILM_ROBUST_COARSE_STEPS)
        fine = dataclasses.replace(robust, fit_size=32, iterations=FILM_ROBUST_FINE_STEPS)
        return cls(top_k=5, weight=0.45, average="median", align_iterations=60, similarity_hu=300.0, edge_gate=True,
                   coarse=coarse, fine=fine)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {self.weight}")
        if self.align_iterations < 0 or self.similarity_hu < 0:
            raise ValueError(f"align_iterations and similarity_hu must be >= 0, got {self.align_iterations}, "
                             f"{self.similarity_hu}")
        if self.average not in AVERAGES:
            raise ValueError(f"average must be one of {AVERAGES}, got {self.average!r}")


def align_volume(moving: torch.Tensor, fixed: torch.Tensor, iterations: int = 60, control_points: int = 12,
                 step_mm: float = 2.5, smoothness: float = 4.8e-4, fit_size: int = 64) -> torch.Tensor:
    """``moving`` deformed onto ``fixed``: a smooth displacement (``control_points``³ nodes, step and render size
    as the projection registration's) fitted by Adam to the mean squared difference of the two volumes
    average-pooled to ``fit_size``³, plus a membrane term ten times the projection registration's (the setting of
    the session-16 prototype, not tuned: the alignment only has to remove centimetre offsets between outlines).
    Runs with gradients even under ``torch.inference_mode``.

    Shapes:
        ``(B, 1, D, H, W)``, ``(B, 1, D, H, W)`` → ``(B, 1, D, H, W)``.
    """
    with torch.inference_mode(False):  # inference tensors cannot be saved for the backward pass
        source, target = moving.detach().float().clone(), fixed.detach().float().clone()
        small_source, small_target = (nn.functional.adaptive_avg_pool3d(v, fit_size) for v in (source, target))
        start = torch.zeros((source.shape[0], 3) + (control_points,) * 3, device=source.device)

        def loss_of(field: torch.Tensor) -> torch.Tensor:
            data = ((warp_volume(small_source, field) - small_target) ** 2).flatten(1).mean(dim=1)
            return (data + smoothness * membrane_energy(field)).sum()

        field = fit_node_field(loss_of, start, step_mm, iterations)
    return warp_volume(source, field).to(moving.dtype)


def _warp_each(volumes: torch.Tensor, fields: torch.Tensor) -> torch.Tensor:
    """:func:`warp_volume` volume by volume. Shapes: ``(K, 1, D, H, W)``, ``(K, 3, n, n, n)`` → ``(K, 1, D, H, W)``."""
    return torch.cat([warp_volume(volume[None], field[None]) for volume, field in zip(volumes, fields)])


# Edges the atlas has and the reconstruction lacks (chosen by eye on the covid7 pair, session 17: docs/refinement.md):
# an atlas outline is steeper than 150 HU per voxel (lung against soft tissue over its 2-4 voxel ramp: ~200-400),
# the reconstruction there flatter than 50 HU per voxel (inside one tissue); both thresholds soft (25 and 10 HU per
# voxel), the gate smoothed by a Gaussian of one voxel so that it fades without steps, and scaled by 1.5 so that the
# smoothed gate still closes on the ramp.
EDGE_ATLAS_HU = 150.0
EDGE_ATLAS_SOFTNESS_HU = 25.0
EDGE_FLAT_HU = 50.0
EDGE_FLAT_SOFTNESS_HU = 10.0
EDGE_SMOOTHING_VOXELS = 1.0
EDGE_GAIN = 1.5


def gradient_magnitude_hu(volume: torch.Tensor) -> torch.Tensor:
    """``|∇v|`` in HU per voxel (central differences). Shapes: ``(B, 1, D, H, W)`` in [0, 1] → ``(B, 1, D, H, W)``."""
    gradient = torch.gradient(volume[:, 0] * HU_PER_UNIT, dim=(1, 2, 3))
    return torch.sqrt(sum(g ** 2 for g in gradient))[:, None]


def gaussian_smoothed(volume: torch.Tensor, sigma: float) -> torch.Tensor:
    """``volume`` convolved with a Gaussian of ``sigma`` voxels along each axis (taps to 4 sigma, edges
    replicated). Shapes: ``(B, 1, D, H, W)`` → ``(B, 1, D, H, W)``."""
    radius = int(4 * sigma + 0.5)
    taps = torch.arange(-radius, radius + 1, dtype=volume.dtype, device=volume.device)
    kernel = torch.exp(-(taps ** 2) / (2 * sigma * sigma))
    kernel = kernel / kernel.sum()
    out = volume
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = len(taps)
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        out = nn.functional.conv3d(nn.functional.pad(out, pad, mode="replicate"), kernel.view(shape))
    return out


def unshared_edges(atlas_mean: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """0 … 1, towards 1 where the atlas mean has an edge (|∇a| above ``EDGE_ATLAS_HU``) and the reconstruction is flat
    (|∇o| below ``EDGE_FLAT_HU``): an outline of the atlases that the reconstruction does not share. Both thresholds
    soft, the result smoothed over a voxel and scaled by ``EDGE_GAIN``, clipped to 1.

    Shapes:
        ``(1 or B, 1, D, H, W)``, ``(B, 1, D, H, W)`` → ``(B, 1, D, H, W)``.
    """
    steep = torch.sigmoid((gradient_magnitude_hu(atlas_mean) - EDGE_ATLAS_HU) / EDGE_ATLAS_SOFTNESS_HU)
    flat = torch.sigmoid((EDGE_FLAT_HU - gradient_magnitude_hu(reconstruction)) / EDGE_FLAT_SOFTNESS_HU)
    return (EDGE_GAIN * gaussian_smoothed(steep * flat, EDGE_SMOOTHING_VOXELS)).clamp(max=1.0)


class AtlasPrior(nn.Module):
    """Register atlases to the radiographs and mix their mean into a reconstruction (see the module docstring).

    Args:
        atlases: atlas volumes in [0, 1] on the model grid, ``(K, D, H, W)`` (an
            :class:`~DCTNetLib.io.atlas_bank.AtlasBank`'s ``volumes``).
        config: selection, mix and registrations. Defaults to ``AtlasPriorConfig()``.
        geometry: projection geometry of the radiographs. Defaults to the training DRRs' (``DRRGeometry()``).

    Example:
        >>> prior = AtlasPrior(load_atlas_bank().volumes)  # doctest: +SKIP
        >>> atlas_mean, chosen = prior.registered_mean(ct_unit, radiographs)  # doctest: +SKIP
        >>> ct_unit = prior.mix(ct_unit, atlas_mean)  # doctest: +SKIP
    """

    def __init__(self, atlases, config: AtlasPriorConfig | None = None, geometry: DRRGeometry | None = None) -> None:
        super().__init__()
        self.config = config if exists(config) else AtlasPriorConfig()
        self.geometry = geometry if exists(geometry) else DRRGeometry()
        volumes = torch.as_tensor(atlases, dtype=torch.float32)
        if volumes.ndim != 4 or not len(volumes):
            raise ValueError(f"atlases must be (K, D, H, W), got {tuple(volumes.shape)}")
        self.register_buffer("atlases", volumes[:, None], persistent=False)  # (K, 1, D, H, W)
        self.coarse = ProjectionRegistration(self.config.coarse, self.geometry)
        self.fine = ProjectionRegistration(self.config.fine, self.geometry)

    def registered_mean(self, ct_unit: torch.Tensor, radiographs: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """The mean (or median) of the ``top_k`` atlases that, registered to ``radiographs``, match them best.

        Args:
            ct_unit: the reconstruction (only its grid is used: the atlases are resampled to it if they differ).
            radiographs: the PA and lateral, in [0, 1].

        Shapes:
            ct_unit ``(1, 1, D, H, W)``, radiographs ``(1, 2, n, n)`` → ``(1, 1, D, H, W)``, and the chosen atlases'
            indices, best first.
        """
        if ct_unit.shape[0] != 1 or radiographs.shape[0] != 1:
            raise ValueError(f"the atlas prior takes one case at a time, got a batch of {ct_unit.shape[0]}")
        size = tuple(ct_unit.shape[2:])
        atlases = self.atlases.to(ct_unit.device)
        if tuple(atlases.shape[2:]) != size:
            atlases = nn.functional.interpolate(atlases, size=size, mode="trilinear", align_corners=False)
        # the fits take all atlases in one batch (each is fitted on its own, in less time than one after another);
        # the full-size warps and DRRs go one atlas at a time, so the memory of only one is held at once
        targets = radiographs.expand(len(atlases), -1, -1, -1)
        moved = _warp_each(atlases, self.coarse.fit(atlases, targets))
        moved = _warp_each(moved, self.fine.fit(moved, targets))
        errors = [float(self.fine.mismatch(atlas[None], radiographs)[0]) for atlas in moved]
        chosen = sorted(range(len(errors)), key=errors.__getitem__)[: self.config.top_k]
        stack = moved[chosen]
        average = stack.mean(dim=0) if self.config.average == "mean" else stack.median(dim=0).values
        return average[None], chosen

    def aligned(self, atlas_mean: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        """``atlas_mean`` moved onto ``reconstruction`` by :func:`align_volume` (``align_iterations`` steps; as it
        is when 0). Shapes: ``(1, 1, D, H, W)``, ``(1, 1, D, H, W)`` → ``(1, 1, D, H, W)``."""
        if self.config.align_iterations == 0:
            return atlas_mean
        return align_volume(atlas_mean, reconstruction, self.config.align_iterations)

    def mix(self, ct_unit: torch.Tensor, atlas_mean: torch.Tensor, bone_from: torch.Tensor | None = None
            ) -> torch.Tensor:
        """``weight`` × atlas mean + (1 − ``weight``) × reconstruction (the weight faded where they disagree when
        ``similarity_hu`` is set), keeping the reconstruction's bone.

        Args:
            ct_unit: the reconstruction.
            atlas_mean: from :meth:`registered_mean`.
            bone_from: the volume whose bone (≥ ``keep_bone_hu``) is kept and which the similarity weight compares
                the atlas with; None for ``ct_unit`` itself. The two branches pass the CT the user gets (their
                mean), so both are mixed alike.

        Shapes:
            ``(B, 1, D, H, W)``, ``(1 or B, 1, D, H, W)``, ``(B, 1, D, H, W)`` → ``(B, 1, D, H, W)``.
        """
        reference = bone_from if exists(bone_from) else ct_unit
        atlas_mean = atlas_mean.to(ct_unit.dtype)
        w = self.config.weight
        if self.config.similarity_hu > 0:
            s = self.config.similarity_hu / HU_PER_UNIT
            w = w * torch.exp(-((atlas_mean - reference) ** 2) / (2.0 * s * s))
        if self.config.edge_gate:
            w = w * (1.0 - unshared_edges(atlas_mean, reference))
        mixed = w * atlas_mean + (1.0 - w) * ct_unit
        bone = reference >= float(hu_to_unit(torch.tensor(self.config.keep_bone_hu)))
        return torch.where(bone, torch.maximum(mixed, ct_unit), mixed)
