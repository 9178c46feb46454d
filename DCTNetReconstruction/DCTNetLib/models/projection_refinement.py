"""Projection-consistency refinement: make G(Y)'s volume agree with the two radiographs it came from.

Not in the paper (ours). G(Y) is a learned prior: its DRRs differ from the input radiographs by a few per cent of
the range (mean absolute difference 0.046 on the validation CT), most of it where the patient differs from the
chests the generator was trained on. Two views do not determine a volume, but they do fix every line integral,
and any volume moved towards the set of volumes with those line integrals moves towards the true CT: projecting
onto a convex set that contains a point never increases the distance to that point (Bregman / POCS; the reason
SART and SIRT converge, A. C. Kak and M. Slaney, *Principles of Computerized Tomographic Imaging*, IEEE Press
1988, ch. 7). Since session 14 the volume is first moved by a smooth deformation fitted to the radiographs
(:mod:`~DCTNetLib.models.projection_registration`): the generators' error is mostly *where* things are, which a
deformation fixes and SIRT cannot (docs/refinement.md). Then this module runs a few weighted SIRT iterations:

- the measured line integrals are the input radiographs times one scale per view, fitted by least squares to
  G(Y)'s own line integrals (a radiograph is divided by its own maximum, ``data.drr.normalise_drr``, so its
  scale is lost);
- each iteration spreads each ray's residual, divided by the ray's weighted length, back over the voxels it
  crossed (:meth:`~DCTNetLib.data.drr.DRRProjector.backproject`, the projector's exact adjoint), divided by the
  voxel's total ray weight (SART's normalisation);
- voxels G(Y) puts at or above ``keep_above_hu`` (bone) get no update: the residual then goes to the soft tissue
  and lung along the ray, so the bone G(Y) found is kept (measured on the validation CT: uniform updates lowered
  the > 300 HU Dice from 0.152 to 0.140, these weights raised it to 0.160);
- the residual is smoothed by a Gaussian of ``smoothing_px`` (a film's pixel-scale noise and edge enhancement
  are not anatomy).

Voxels G(Y) puts at or below -1000 HU (air outside the patient, where μ is 0) are not updated either, and attenuation
stays non-negative.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn as nn

from ..config_base import ConfigBase
from ..conventions import CROP_SIZE, hu_to_unit, unit_to_hu
from ..data.drr import DRRGeometry, default_projector, hu_to_mu, mu_to_hu
from ..data.film_appearance import gaussian_blur
from ..helpers import exists
from ..io.atlas_bank import load_atlas_bank
from .atlas_prior import AtlasPrior, AtlasPriorConfig
from .projection_registration import ProjectionRegistration, RegistrationConfig, warp_volume

__all__ = ["RefinementConfig", "ProjectionRefinement"]

# Smallest ray length (weighted, mm) or voxel weight divided by: rays that cross no updatable voxel get no update.
_EPS = 1e-6
# Adam steps of the default reconstruction's output registration, and of --no-atlas's. Session 18 halved them from the
# registration's 80 for the default, with the atlas prior's (atlas_prior.FILM_ROBUST_COARSE_STEPS, FILM_ROBUST_FINE_STEPS):
# validation-4 -0.015 dB on plain DRRs, -0.001 dB on 16 film-like pairs, the reconstruction 1.5x faster. Session 19
# halved --no-atlas's too, where the registration is the last step: validation-4 -0.006 dB plain, -0.0004 dB on the 16
# film-like pairs, bone Dice -0.002, a --no-atlas reconstruction 0.68 of the time (docs/refinement.md, "Fewer steps").
DEFAULT_REGISTRATION_STEPS = 40


@dataclass(frozen=True)
class RefinementConfig(ConfigBase):
    """Settings of :class:`ProjectionRefinement`, chosen on the validation CT (``docs/architecture.md``).

    Args:
        iterations: SIRT iterations; 0 for none. Defaults to 10 (validation: 40 added 0.03 dB).
        relaxation: step ω of each iteration, in (0, 2). Defaults to 1.
        keep_above_hu: voxels G(Y) puts at or above this are not updated. Defaults to 300 (the bone threshold of
            ``evaluation.metrics.BONE_HU``).
        smoothing_px: σ of the Gaussian applied to each ray residual, in detector pixels; 0 for none.
            Defaults to 1.5.
        registration: the smooth deformation fitted before the SIRT iterations
            (:class:`~DCTNetLib.models.projection_registration.RegistrationConfig`; ``iterations=0`` for none).
            Defaults to ``RegistrationConfig()``.
        atlas: the atlas prior mixed in after the registration and before SIRT
            (:class:`~DCTNetLib.models.atlas_prior.AtlasPriorConfig`), or None for none. Defaults to None.
        atlas_bank: the atlas bank's ``.npz`` (:func:`~DCTNetLib.io.atlas_bank.load_atlas_bank`); None for the
            shipped one. Defaults to None.
    """

    iterations: int = 10
    relaxation: float = 1.0
    keep_above_hu: float = 300.0
    smoothing_px: float = 1.5
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    atlas: AtlasPriorConfig | None = None
    atlas_bank: str | None = None

    config_name: ClassVar[str] = "refinement"

    @classmethod
    def off(cls) -> "RefinementConfig":
        """Neither step: no registration, no SIRT (the generators' volumes as they are)."""
        return cls(iterations=0, registration=RegistrationConfig(iterations=0))

    @classmethod
    def film_robust(cls) -> "RefinementConfig":
        """What every reconstruction gets by default: the film-robust registration
        (:meth:`~DCTNetLib.models.projection_registration.RegistrationConfig.film_robust`) in
        :data:`DEFAULT_REGISTRATION_STEPS` steps, then the film-robust atlas prior
        (:meth:`~DCTNetLib.models.atlas_prior.AtlasPriorConfig.film_robust`), no SIRT; both help on real films as on
        DRRs (docs/refinement.md)."""
        return dataclasses.replace(cls.registration_only(), atlas=AtlasPriorConfig.film_robust())

    @classmethod
    def registration_only(cls) -> "RefinementConfig":
        """The film-robust registration without the atlas prior (``--no-atlas``; the default until session 16), in
        :data:`DEFAULT_REGISTRATION_STEPS` steps as the default's: the default less its atlas prior, about 7 s faster
        on two CPU cores (benchmarks/refinement.py)."""
        registration = dataclasses.replace(RegistrationConfig.film_robust(), iterations=DEFAULT_REGISTRATION_STEPS)
        return cls(iterations=0, registration=registration)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if not 0.0 < self.relaxation < 2.0:
            raise ValueError(f"relaxation must be in (0, 2), got {self.relaxation}")
        if self.smoothing_px < 0:
            raise ValueError(f"smoothing_px must be >= 0, got {self.smoothing_px}")


def fitted_scale(line_integrals: torch.Tensor, radiographs: torch.Tensor) -> torch.Tensor:
    """Per-view least-squares scale ``s`` minimising ``‖line_integrals − s · radiographs‖²``.

    Shapes:
        ``(B, V, H, W)``, ``(B, V, H, W)`` → ``(B, V, 1, 1)``.
    """
    numerator = (line_integrals * radiographs).sum(dim=(-2, -1), keepdim=True)
    return numerator / (radiographs * radiographs).sum(dim=(-2, -1), keepdim=True).clamp_min(_EPS)


class ProjectionRefinement(nn.Module):
    """Fit a reconstruction to the radiographs it came from: a smooth deformation first
    (:class:`~DCTNetLib.models.projection_registration.ProjectionRegistration`: where things are), optionally the
    atlas prior (:class:`~DCTNetLib.models.atlas_prior.AtlasPrior`: real anatomy registered to the same
    radiographs), then weighted SIRT (how much lies along each ray; see the module docstring).

    Args:
        config: SIRT iterations, relaxation, bone threshold, residual smoothing, the registration's and the atlas
            prior's settings. Defaults to ``RefinementConfig()``.
        geometry: projection geometry of the radiographs. Defaults to the training DRRs' (``DRRGeometry()``).

    Example:
        >>> refine = ProjectionRefinement()
        >>> ct_unit = refine(g_raw(radiographs), radiographs)  # doctest: +SKIP
    """

    def __init__(self, config: RefinementConfig | None = None, geometry: DRRGeometry | None = None) -> None:
        super().__init__()
        self.config = config if exists(config) else RefinementConfig()
        self.geometry = geometry if exists(geometry) else DRRGeometry()
        self.registration = ProjectionRegistration(self.config.registration, self.geometry)
        self._atlas_prior: AtlasPrior | None = None

    @property
    def enabled(self) -> bool:
        """Whether any step runs (SIRT iterations, registration steps, or the atlas prior)."""
        return self.config.iterations > 0 or self.config.registration.iterations > 0 or exists(self.config.atlas)

    @property
    def atlas_prior(self) -> AtlasPrior | None:
        """The atlas prior with its bank loaded on first use (None when the config has none).

        Raises:
            WeightsError: the bank is missing, tampered or malformed (:func:`~DCTNetLib.io.atlas_bank.load_atlas_bank`).
        """
        if self.config.atlas is None:
            return None
        if self._atlas_prior is None:
            bank = load_atlas_bank(self.config.atlas_bank)
            self._atlas_prior = AtlasPrior(bank.volumes, self.config.atlas, self.geometry)
        return self._atlas_prior

    def applies_to(self, image_size: int) -> bool:
        """Whether it refines a model whose radiographs are ``image_size``²: it is on and the projector renders
        that detector (tiny test models have no DRR geometry of their own)."""
        return self.enabled and image_size == self.geometry.image_size

    def describe(self) -> str:
        """The steps it runs, for reports and table rows, e.g. "registration (80) + SIRT (10)" or the default's
        "registration (80, film-robust) + atlas prior (median of best 5, film-robust)"."""
        registration = self.config.registration
        robust = ", film-robust" if registration.film_mask else ""
        steps = [f"registration ({registration.iterations}{robust})"] if registration.iterations else []
        atlas = self.config.atlas
        if exists(atlas):
            chosen = f"median of best {atlas.top_k}" if atlas.average == "median" else f"best {atlas.top_k}"
            steps += [f"atlas prior ({chosen}{', film-robust' if atlas.fine.film_mask else ''})"]
        steps += [f"SIRT ({self.config.iterations})"] if self.config.iterations else []
        return " + ".join(steps) or "off"

    def fit_field(self, ct_unit: torch.Tensor, radiographs: torch.Tensor) -> torch.Tensor | None:
        """The registration's displacement field for ``ct_unit`` (None when the registration is off), so that
        several volumes (the two branches) can be moved by the one field fitted on their mean.

        Shapes:
            ct_unit ``(B, 1, D, H, W)``, radiographs ``(B, 2, n, n)`` → ``(B, 3, c, c, c)`` (mm).
        """
        if self.config.registration.iterations == 0:
            return None
        return self.registration.fit(ct_unit, radiographs)

    def atlas_mean(self, ct_unit: torch.Tensor, radiographs: torch.Tensor) -> torch.Tensor | None:
        """The atlas prior's registered atlas mean for these radiographs (None when the prior is off), aligned to
        ``ct_unit`` (the registered reconstruction) when the prior aligns, so that both branches mix in the same one.

        Shapes:
            ``(1, 1, D, H, W)``, ``(1, 2, n, n)`` → ``(1, 1, D, H, W)``.
        """
        prior = self.atlas_prior
        if prior is None:
            return None
        return prior.aligned(prior.registered_mean(ct_unit, radiographs)[0], ct_unit)

    def forward(self, ct_unit: torch.Tensor, radiographs: torch.Tensor,
                displacement: torch.Tensor | None = None, atlas_mean: torch.Tensor | None = None,
                bone_from: torch.Tensor | None = None) -> torch.Tensor:
        """Refine a reconstruction on the model grid (a cube spanning the 320 mm field).

        Args:
            ct_unit: a generator's volume in [0, 1] on the model's HU window.
            radiographs: the PA and lateral it was reconstructed from, in [0, 1] (bright = dense).
            displacement: a field from :meth:`fit_field` to move the volume by; fitted on ``ct_unit`` itself when
                None and the registration is on.
            atlas_mean: an atlas mean from :meth:`atlas_mean` to mix in; registered to ``radiographs`` here when
                None and the atlas prior is on.
            bone_from: the volume, already moved by ``displacement``, whose bone the atlas mix keeps (the branches'
                mean, so both keep the same voxels); None for ``ct_unit`` itself.

        Shapes:
            ct_unit ``(B, 1, D, H, W)``, radiographs ``(B, 2, n, n)`` → ``(B, 1, D, H, W)`` in [0, 1].
        """
        if not self.enabled:
            return ct_unit
        if ct_unit.ndim != 5 or radiographs.ndim != 4 or radiographs.shape[1] != 2:
            raise ValueError(f"expected ct_unit (B, 1, D, H, W) and radiographs (B, 2, n, n), got "
                             f"{tuple(ct_unit.shape)} and {tuple(radiographs.shape)}")
        if displacement is None:
            displacement = self.fit_field(ct_unit, radiographs)
        if displacement is not None:
            ct_unit = warp_volume(ct_unit.float(), displacement).to(ct_unit.dtype)
        if exists(self.config.atlas):
            atlas_mean = atlas_mean if exists(atlas_mean) else self.atlas_mean(ct_unit, radiographs)
            ct_unit = self.atlas_prior.mix(ct_unit, atlas_mean, bone_from)
        return self._sirt(ct_unit, radiographs)

    def _sirt(self, ct_unit: torch.Tensor, radiographs: torch.Tensor) -> torch.Tensor:
        """The weighted SIRT iterations of the module docstring. Shapes: as :meth:`forward`."""
        cfg = self.config
        if cfg.iterations == 0:
            return ct_unit
        projector = default_projector(ct_unit.device, self.geometry)
        shape = tuple(ct_unit.shape[2:])
        spacing = CROP_SIZE / shape[0]
        hu0 = unit_to_hu(ct_unit.float())
        mu_water = projector.geometry.mu_water_per_mm
        mu = hu_to_mu(hu0, mu_water)
        radiographs = radiographs.float()
        projected = projector.project_mu(mu, spacing)
        target = fitted_scale(projected, radiographs) * radiographs
        updatable = ((mu > 0) & (hu0 < cfg.keep_above_hu)).float()  # μ = 0: air outside the patient
        ray_length = projector.project_mu(updatable, spacing).clamp_min(_EPS)
        voxel_weight = projector.backproject(torch.ones_like(target), shape, spacing).clamp_min(_EPS)
        step = cfg.relaxation * updatable / voxel_weight
        for iteration in range(cfg.iterations):
            if iteration:
                projected = projector.project_mu(mu, spacing)
            residual = target - projected
            if cfg.smoothing_px > 0:
                residual = gaussian_blur(residual.flatten(0, 1), cfg.smoothing_px).view_as(residual)
            mu = (mu + step * projector.backproject(residual / ray_length, shape, spacing)).clamp_min(0.0)
        hu = torch.where(updatable > 0, mu_to_hu(mu, mu_water), hu0)
        return hu_to_unit(hu).clamp(0.0, 1.0).to(ct_unit.dtype)
