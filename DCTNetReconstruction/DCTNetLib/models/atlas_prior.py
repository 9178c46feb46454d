"""Atlas prior: real chest CTs registered to a patient's two radiographs, mixed into the registered reconstruction.

Not in the paper (ours). Multi-atlas reconstruction is the classic way to bring a population's anatomy to a patient
(label and intensity fusion: Iglesias and Sabuncu, *Multi-atlas segmentation of biomedical images: a survey*, Med.
Image Anal. 24, 2015); here each atlas is registered by the same projection registration as the output
(:mod:`~DCTNetLib.models.projection_registration`), so only the two radiographs drive it:

- each atlas is moved coarsely first (4³ nodes, no membrane: position and size differ between patients by
  centimetres), then by the registration's own settings;
- the atlases are ranked by how well their DRRs then match the radiographs (mean squared difference), and the
  ``top_k`` best are averaged (atlas selection by image similarity, the survey's §4.1);
- the mean is mixed with the registered reconstruction by ``weight``; where the reconstruction has bone
  (≥ ``keep_bone_hu``) it keeps at least its own value, since an average of atlases blurs bone below the threshold.

Chosen on the four validation CTs (docs/refinement.md, "The atlas prior").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn as nn

from ..config_base import ConfigBase
from ..conventions import CROP_SIZE, hu_to_unit
from ..data.drr import DRRGeometry, make_drrs
from ..helpers import exists
from .projection_registration import ProjectionRegistration, RegistrationConfig, warp_volume

__all__ = ["AtlasPriorConfig", "AtlasPrior"]


def _coarse_registration() -> RegistrationConfig:
    return RegistrationConfig(iterations=60, control_points=4, smoothness=0.0)


@dataclass(frozen=True)
class AtlasPriorConfig(ConfigBase):
    """Settings of :class:`AtlasPrior`, chosen on the validation CTs.

    Args:
        top_k: atlases averaged, the best by DRR agreement after registration. Defaults to 5 (validation, 9 atlases:
            3 → 20.80 dB, 5 → 20.90, 9 → 20.79).
        weight: share of the atlas mean in the mix. Defaults to 0.5 (0.25 and 0.75 scored lower).
        keep_bone_hu: where the reconstruction is at least this dense, the mix keeps at least its value. Defaults to
            300 (the bone threshold of ``evaluation.metrics.BONE_HU``).
        coarse: the first registration of each atlas. Defaults to 4³ nodes, 60 steps, no membrane.
        fine: the second. Defaults to ``RegistrationConfig()``.
    """

    top_k: int = 5
    weight: float = 0.5
    keep_bone_hu: float = 300.0
    coarse: RegistrationConfig = field(default_factory=_coarse_registration)
    fine: RegistrationConfig = field(default_factory=RegistrationConfig)

    config_name: ClassVar[str] = "atlas prior"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {self.weight}")


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
        """The mean of the ``top_k`` atlases that, registered to ``radiographs``, match them best.

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
        moved, errors = [], []
        for atlas in self.atlases.to(ct_unit.device):
            atlas = atlas[None]
            if tuple(atlas.shape[2:]) != size:
                atlas = nn.functional.interpolate(atlas, size=size, mode="trilinear", align_corners=False)
            atlas = warp_volume(atlas, self.coarse.fit(atlas, radiographs))
            atlas = warp_volume(atlas, self.fine.fit(atlas, radiographs))
            moved.append(atlas)
            drrs = make_drrs(atlas, CROP_SIZE / size[0], self.geometry)
            errors.append(float(((drrs - radiographs.float()) ** 2).mean()))
        chosen = sorted(range(len(errors)), key=errors.__getitem__)[: self.config.top_k]
        return torch.stack([moved[i] for i in chosen]).mean(dim=0), chosen

    def mix(self, ct_unit: torch.Tensor, atlas_mean: torch.Tensor) -> torch.Tensor:
        """``weight`` × atlas mean + (1 − ``weight``) × reconstruction, keeping the reconstruction's bone.

        Shapes:
            ``(B, 1, D, H, W)``, ``(1 or B, 1, D, H, W)`` → ``(B, 1, D, H, W)``.
        """
        w = self.config.weight
        mixed = w * atlas_mean.to(ct_unit.dtype) + (1.0 - w) * ct_unit
        bone = ct_unit >= float(hu_to_unit(torch.tensor(self.config.keep_bone_hu)))
        return torch.where(bone, torch.maximum(mixed, ct_unit), mixed)
