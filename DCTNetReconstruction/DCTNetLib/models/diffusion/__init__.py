"""Bone-suppression conditional diffusion model (CDM) of DCT-Net §2.1 — see ``docs/cdm.md``.

Layers, importing only downward: ``config`` → ``schedules`` → ``unet`` → ``diffusion`` (loss + samplers); ``ema``
is independent.

Example:
    >>> cdm = ConditionalDiffusion(CDMConfig.small())             # doctest: +SKIP
    >>> loss = cdm.pair_loss(x_pair, y_pair)                      # training, pairs (B, 2, H, W) in [0, 1]
    >>> x = cdm.suppress_bones(y_pair, steps=20, seed=0)          # DDIM, (B, 2, H, W) in [0, 1]
"""

from __future__ import annotations

from .config import BETA_SCHEDULES, CDMConfig
from .diffusion import ConditionalDiffusion, from_diffusion_range, make_generator, to_diffusion_range
from .ema import EMA
from .schedules import DiffusionSchedule, beta_schedule, cosine_beta_schedule, extract, linear_beta_schedule
from .unet import ConditionalUNet

__all__ = [
    "BETA_SCHEDULES",
    "CDMConfig",
    "ConditionalDiffusion",
    "ConditionalUNet",
    "DiffusionSchedule",
    "EMA",
    "beta_schedule",
    "cosine_beta_schedule",
    "extract",
    "from_diffusion_range",
    "linear_beta_schedule",
    "make_generator",
    "to_diffusion_range",
]
