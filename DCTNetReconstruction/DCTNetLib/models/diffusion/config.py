"""Configuration of the bone-suppression conditional diffusion model (CDM, DCT-Net §2.1).

One dataclass holds every architecture, schedule and sampling constant; presets are classmethods:

- :meth:`CDMConfig.full`  — the U-Net sized for 128² radiographs on a GPU (channels 64-128-256-512), far smaller
  than BS-Diff's ~220 M parameters (Chen et al., ISBI 2024, the paper's ref. [25]).
- :meth:`CDMConfig.small` — trains on a 2-core CPU; its weights ship with the extension (≤ ~8 MB).
- :meth:`CDMConfig.tiny`  — 32² images and 8-16-32 channels, for unit tests only.

The config is saved inside every CDM checkpoint and bundle (:meth:`CDMConfig.to_dict`) and rebuilt with
:meth:`CDMConfig.from_dict`, which rejects unknown keys and values of the wrong type
(:class:`~DCTNetLib.config_base.ConfigBase`); every invalid value is an :class:`~DCTNetLib.errors.InputError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ...config_base import ConfigBase
from ...conventions import IMAGE_SIZE
from ...errors import InputError

__all__ = ["CDMConfig", "BETA_SCHEDULES", "OBJECTIVES", "TARGETS"]

BETA_SCHEDULES = ("cosine", "linear")
# What the U-Net predicts: the noise ε (Ho et al. 2020), v = √ᾱ ε − √(1−ᾱ) x_0 (Salimans & Ho 2022, §4) or x_0.
OBJECTIVES = ("eps", "v", "x0")
# What the diffusion generates: the bone-suppressed image x itself (the paper, eq. 3), or the bone component
# y − x that is subtracted from the radiograph (the generated variable is then sparse and non-negative).
TARGETS = ("image", "residual")
LEGACY_OBJECTIVE = "eps"  # what configs saved before the ``objective`` field meant


@dataclass(frozen=True, kw_only=True)
class CDMConfig(ConfigBase):
    """Architecture, noise schedule and sampling settings of :class:`ConditionalDiffusion`.

    Args:
        image_size: Side of the square radiographs in pixels. Defaults to 128 (DCT-Net §3.1).
        image_channels: Channels of the generated image x (a grey radiograph). Defaults to 1.
        cond_channels: Channels of the conditioning radiograph y, concatenated to x_t, so the U-Net sees
            ``image_channels + cond_channels`` = 2 channels (SR3 / BS-Diff conditioning by concatenation).
            Defaults to 1.
        channels: Feature channels of each U-Net level; level ``i`` works at ``image_size / 2**i``.
            Defaults to (64, 128, 256, 512) (DDPM's 4-level layout, Ho et al. 2020, at 64 base channels).
        num_res_blocks: ResBlocks per level in the encoder (the decoder has one more, DDPM layout).
            Defaults to 2 (Ho et al. 2020).
        attention_levels: Number of lowest-resolution levels with self-attention after each ResBlock
            (16² and 32² for a 128² input with 4 levels). The middle block always has attention. Defaults to 2.
        attention_heads: Heads of every self-attention layer. Defaults to 4 (Nichol & Dhariwal 2021 used 4).
        norm_groups: GroupNorm groups (Wu & He 2018 used 32; capped at the channel count). Defaults to 32.
        time_emb_mult: Time-embedding width as a multiple of ``channels[0]``. Defaults to 4 (Ho et al. 2020).
        num_views: Number of learned view embeddings added to the time embedding (PA=0, LAT=1; see
            ``docs/cdm.md``). Defaults to 2.
        dropout: Dropout inside ResBlocks. Defaults to 0.0 (Ho et al. 2020 used 0.1 only on CIFAR-10).
        timesteps: Diffusion steps T. Defaults to 1000 (Ho et al. 2020; BS-Diff used T=1000).
        beta_schedule: ``"cosine"`` (Nichol & Dhariwal 2021; BS-Diff's "squaredcos_cap_v2") or ``"linear"``
            (Ho et al. 2020). Defaults to "cosine".
        cosine_s: Offset s of the cosine schedule. Defaults to 0.008 (Nichol & Dhariwal 2021, §3.2).
        max_beta: Upper clip of β_t for the cosine schedule. Defaults to 0.999 (Nichol & Dhariwal 2021, §3.2).
        linear_beta_start: β_1 of the linear schedule for T=1000. Defaults to 1e-4 (Ho et al. 2020, §4).
        linear_beta_end: β_T of the linear schedule for T=1000. Defaults to 0.02 (Ho et al. 2020, §4).
        objective: Target of the U-Net, one of :data:`OBJECTIVES`: ``"eps"`` (ε-prediction, Ho et al. 2020, the
            loss of DCT-Net §2.1 and BS-Diff), ``"v"`` (Salimans & Ho 2022; its x̂_0 stays accurate at the
            noisiest steps, which few-step DDIM previews depend on) or ``"x0"``. Defaults to "eps".
        sampling_steps: Default DDIM steps for interactive previews. Defaults to 20 (Song et al. 2021 show
            DDIM at 20 steps is close to 1000-step quality on CIFAR-10/CelebA).
        ddim_eta: Default DDIM η (0 = deterministic ODE sampler). Defaults to 0.0 (Song et al. 2021).
        clip_denoised: Clamp the predicted x0 to [-1, 1] at every sampling step. Defaults to True (Ho et al.).
        ema_decay: EMA decay of the weights. Defaults to 0.9999 (Ho et al. 2020, Appendix B).
        ema_update_every: Optimiser steps between EMA updates. Defaults to 1.
        ema_warmup_steps: Steps during which the EMA copies the weights instead of averaging. Defaults to 0.
        target: What the diffusion generates, one of :data:`TARGETS`: ``"image"`` — the bone-suppressed
            radiograph x (DCT-Net eq. 3) — or ``"residual"`` — the bone component ``r = y − x`` divided by
            ``residual_range`` (so it spans [0, 1] like an image), from which x = y − residual_range · r.
            Defaults to "image".
        sampling_strength: Where DDIM starts, as a fraction of T: 1 = pure noise (the paper's reverse process,
            eq. 4); below 1, the unchanged radiograph (a zero bone component) noised to that level (SDEdit, Meng
            et al., ICLR 2022) — fewer, smaller corrections, closer to the input. Defaults to 1.0.
        residual_range: Largest bone component expected, as a fraction of the radiograph's range; larger ones
            are clipped. Defaults to 0.25 (the synthetic targets reach 0.13 (PA) and 0.21 (lateral) where rays
            cross the spine, ``Testing/Python/test_data_bone.py``).
        sampling_samples: Number of DDIM samples (different seeds) whose mean is the preview: the mean of K
            samples of the posterior estimates its mean, the least-squares choice, and averages the sampler's own
            noise out of the bone component (``docs/cdm.md`` measures it). Defaults to 1 (the paper's one sample).
    """

    config_name: ClassVar[str] = "CDM config"
    # how a model samples (a bundle's preview setting), not what the network is
    sampler_fields: ClassVar[tuple[str, ...]] = ("sampling_steps", "sampling_strength", "sampling_samples")

    image_size: int = IMAGE_SIZE
    image_channels: int = 1
    cond_channels: int = 1
    channels: tuple[int, ...] = (64, 128, 256, 512)
    num_res_blocks: int = 2
    attention_levels: int = 2
    attention_heads: int = 4
    norm_groups: int = 32
    time_emb_mult: int = 4
    num_views: int = 2
    dropout: float = 0.0
    timesteps: int = 1000
    beta_schedule: str = "cosine"
    cosine_s: float = 0.008
    max_beta: float = 0.999
    linear_beta_start: float = 1e-4
    linear_beta_end: float = 0.02
    objective: str = "eps"
    sampling_steps: int = 20
    ddim_eta: float = 0.0
    clip_denoised: bool = True
    ema_decay: float = 0.9999
    ema_update_every: int = 1
    ema_warmup_steps: int = 0
    target: str = "image"
    sampling_strength: float = 1.0
    residual_range: float = 0.25
    sampling_samples: int = 1

    def network_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without the :attr:`sampler_fields`: what two configs must share for one network's
        weights to fit the other."""
        return {k: v for k, v in self.to_dict().items() if k not in self.sampler_fields}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.image_size <= 0:
            raise InputError(f"CDM config: image_size must be positive, got {self.image_size}")
        if len(self.channels) < 2:
            raise InputError(f"CDM config: channels needs at least 2 levels, got {self.channels}")
        if any(c <= 0 for c in self.channels):
            raise InputError(f"CDM config: channels must be positive, got {self.channels}")
        factor = 2 ** (len(self.channels) - 1)
        if self.image_size % factor:
            raise InputError(f"CDM config: image_size={self.image_size} must be divisible by 2**(levels-1)={factor} "
                             f"for channels={self.channels}")
        if not 0 <= self.attention_levels <= len(self.channels):
            raise InputError(f"CDM config: attention_levels must be in [0, {len(self.channels)}], "
                             f"got {self.attention_levels}")
        if self.num_res_blocks < 1:
            raise InputError(f"CDM config: num_res_blocks must be >= 1, got {self.num_res_blocks}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise InputError(f"CDM config: beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}")
        if self.target not in TARGETS:
            raise InputError(f"CDM config: target must be one of {TARGETS}, got {self.target!r}")
        if self.sampling_samples < 1:
            raise InputError(f"CDM config: sampling_samples must be at least 1, got {self.sampling_samples}")
        if not 0.0 < self.sampling_strength <= 1.0:
            raise InputError(f"CDM config: sampling_strength must be in (0, 1], got {self.sampling_strength}")
        if not 0.0 < self.residual_range <= 1.0:
            raise InputError(f"CDM config: residual_range must be in (0, 1], got {self.residual_range}")
        if self.objective not in OBJECTIVES:
            raise InputError(f"CDM config: objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.timesteps < 2:
            raise InputError(f"CDM config: timesteps must be >= 2, got {self.timesteps}")
        if not 1 <= self.sampling_steps <= self.timesteps:
            raise InputError(f"CDM config: sampling_steps must be in [1, timesteps={self.timesteps}], "
                             f"got {self.sampling_steps}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise InputError(f"CDM config: ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.ema_update_every < 1:
            raise InputError(f"CDM config: ema_update_every must be >= 1, got {self.ema_update_every}")
        for level in range(len(self.channels)):
            c = self.channels[level]
            if (self.has_attention(level) or level == len(self.channels) - 1) and c % self.attention_heads:
                raise InputError(f"CDM config: attention_heads={self.attention_heads} must divide the attended "
                                 f"channels {c}")

    def has_attention(self, level: int) -> bool:
        """True when U-Net level ``level`` (0 = full resolution) has self-attention after its ResBlocks."""
        return level >= len(self.channels) - self.attention_levels

    @property
    def unet_in_channels(self) -> int:
        """Input channels of the U-Net: noisy x_t concatenated with the condition y."""
        return self.image_channels + self.cond_channels

    @property
    def time_emb_dim(self) -> int:
        """Width of the time (+ view) embedding fed to every ResBlock."""
        return self.channels[0] * self.time_emb_mult

    # ------------------------------------------------------------------ presets
    @classmethod
    def full(cls, **overrides: Any) -> "CDMConfig":
        """GPU preset: 64-128-256-512 channels, 2 ResBlocks per level, attention at 32² and 16² (64.2 M params),
        ε-prediction as in the paper."""
        return cls(**overrides)

    @classmethod
    def small(cls, **overrides: Any) -> "CDMConfig":
        """CPU preset (shipped weights): 16-32-64-64 channels, 1 ResBlock per level, attention at 16² only (1.1 M).

        EMA decay 0.995 every 10 steps follows lucidrains/denoising-diffusion-pytorch's Trainer defaults, suited
        to the few thousand steps a CPU run makes. The objective is v (Salimans & Ho 2022) instead of the paper's
        ε: the interactive preview samples with few DDIM steps, which starts from x̂_0 at the noisiest step where
        ε-prediction divides its error by √ᾱ_T ≈ 5e-5. Measured on one synthetic pair after 200 CPU steps
        (``Testing/Python/test_models_diffusion.py``): 2-step DDIM PSNR 25.7 dB with v against 7.4 dB with ε.
        It generates the bone component (``target="residual"``), which few-step sampling gets right far sooner
        than the whole image (docs/cdm.md has the measured curves).
        """
        base = dict(channels=(16, 32, 64, 64), num_res_blocks=1, attention_levels=1, attention_heads=4,
                    norm_groups=8, ema_decay=0.995, ema_update_every=10, objective="v", target="residual")
        return cls(**{**base, **overrides})

    @classmethod
    def tiny(cls, **overrides: Any) -> "CDMConfig":
        """Test preset: 32² images, 8-16-32 channels, T=100, v objective like ``small`` (unit tests only)."""
        base = dict(image_size=32, channels=(8, 16, 32), num_res_blocks=1, attention_levels=1, attention_heads=2,
                    norm_groups=4, timesteps=100, sampling_steps=10, ema_decay=0.9, ema_update_every=1,
                    objective="v")
        return cls(**{**base, **overrides})

    # ------------------------------------------------------------------ (de)serialisation
    @classmethod
    def upgrade(cls, data: dict[str, Any]) -> dict[str, Any]:
        """A dict without ``objective`` was written before that field existed, when every model predicted ε, so
        it is read as ``objective="eps"`` whatever the current default."""
        data.setdefault("objective", LEGACY_OBJECTIVE)
        return data
