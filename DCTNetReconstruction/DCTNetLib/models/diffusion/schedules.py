"""Noise schedules (pure functions chosen by name) and the Gaussian forward/posterior maths of DDPM.

Timesteps are 0-based indices ``t ∈ {0, …, T-1}``; index ``t`` holds β_{t+1} of Ho et al. (2020), so ``t = 0`` is
the least noisy step and ``t = T-1`` is (nearly) pure noise. Schedule constants are computed in float64 and stored
as float32 buffers named after their formula (lucidrains/denoising-diffusion-pytorch naming); they are
non-persistent, i.e. rebuilt from :class:`CDMConfig` and never stored in a checkpoint.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from .config import CDMConfig

__all__ = ["cosine_beta_schedule", "linear_beta_schedule", "beta_schedule", "extract", "DiffusionSchedule"]

# Linear-schedule constants are given by Ho et al. (2020) for T = 1000; other T scale them by 1000 / T so the
# total noise stays comparable (Nichol & Dhariwal 2021, improved-diffusion `get_named_beta_schedule`).
_LINEAR_REFERENCE_T = 1000


def cosine_beta_schedule(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Cosine schedule ᾱ(t) = cos²(((t/T + s)/(1 + s))·π/2) / ᾱ(0) (Nichol & Dhariwal 2021, eq. 17).

    Args:
        timesteps: Number of diffusion steps T.
        s: Small offset that keeps β_1 from being too small near t = 0. Defaults to 0.008 (ibid., §3.2).
        max_beta: Clip of β_t preventing a singularity at t = T. Defaults to 0.999 (ibid., §3.2).

    Returns:
        β_t, float64 tensor of shape ``(T,)``.
    """
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    alphas_cumprod = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(0, max_beta)


def linear_beta_schedule(timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """Linear schedule of Ho et al. (2020, §4), β from 1e-4 to 0.02 at T = 1000, scaled by 1000 / T.

    Args:
        timesteps: Number of diffusion steps T.
        beta_start: β_1 at T = 1000. Defaults to 1e-4.
        beta_end: β_T at T = 1000. Defaults to 0.02.

    Returns:
        β_t, float64 tensor of shape ``(T,)``.
    """
    scale = _LINEAR_REFERENCE_T / timesteps
    return torch.linspace(scale * beta_start, scale * beta_end, timesteps, dtype=torch.float64)


_SCHEDULES: dict[str, Callable[[CDMConfig], Tensor]] = {
    "cosine": lambda c: cosine_beta_schedule(c.timesteps, s=c.cosine_s, max_beta=c.max_beta),
    "linear": lambda c: linear_beta_schedule(c.timesteps, c.linear_beta_start, c.linear_beta_end),
}


def beta_schedule(config: CDMConfig) -> Tensor:
    """β_t of the schedule named by ``config.beta_schedule`` (float64, shape ``(T,)``).

    Raises:
        ValueError: ``config.beta_schedule`` is not a known schedule name.
    """
    if config.beta_schedule not in _SCHEDULES:
        raise ValueError(f"beta_schedule must be one of {sorted(_SCHEDULES)}, got {config.beta_schedule!r}")
    return _SCHEDULES[config.beta_schedule](config)


def extract(a: Tensor, t: Tensor, x_shape: torch.Size | tuple[int, ...]) -> Tensor:
    """Gather ``a[t]`` per sample and reshape it to broadcast against a batch of shape ``x_shape``.

    Shapes:
        a ``(T,)``, t ``(B,)`` long → ``(B, 1, …, 1)`` with ``len(x_shape)`` dimensions.
    """
    out = a.gather(-1, t)
    return out.reshape(t.shape[0], *((1,) * (len(x_shape) - 1)))


class DiffusionSchedule(nn.Module):
    """Buffers of the forward process q and of the posterior q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eqs. 4–7).

    Args:
        config: Provides ``timesteps`` and the schedule name and constants.
    """

    def __init__(self, config: CDMConfig) -> None:
        super().__init__()
        betas = beta_schedule(config)
        alphas = 1.0 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
        self.num_timesteps = int(betas.shape[0])

        def register(name: str, value: Tensor) -> None:
            self.register_buffer(name, value.to(torch.float32), persistent=False)

        register("betas", betas)
        register("alphas_cumprod", alphas_cumprod)
        register("alphas_cumprod_prev", alphas_cumprod_prev)
        # q(x_t | x_0) = N(√ᾱ_t x_0, (1 - ᾱ_t) I)                                            (Ho et al., eq. 4)
        register("sqrt_alphas_cumprod", alphas_cumprod.sqrt())
        register("sqrt_one_minus_alphas_cumprod", (1.0 - alphas_cumprod).sqrt())
        # x_0 = x_t / √ᾱ_t - √(1/ᾱ_t - 1) ε                                                 (inverse of eq. 4)
        register("sqrt_recip_alphas_cumprod", (1.0 / alphas_cumprod).sqrt())
        register("sqrt_recipm1_alphas_cumprod", (1.0 / alphas_cumprod - 1.0).sqrt())
        # q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, β̃_t I)                            (Ho et al., eqs. 6–7)
        posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
        register("posterior_variance", posterior_variance)
        # β̃_0 = 0, so the log is clipped to β̃_1 (Nichol & Dhariwal 2021, improved-diffusion).
        register("posterior_log_variance_clipped",
                 torch.log(torch.cat([posterior_variance[1:2], posterior_variance[1:]])))
        register("posterior_mean_coef1", betas * alphas_cumprod_prev.sqrt() / (1.0 - alphas_cumprod))
        register("posterior_mean_coef2", (1.0 - alphas_cumprod_prev) * alphas.sqrt() / (1.0 - alphas_cumprod))

    def q_sample(self, x_start: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Noise a clean image to step ``t``: √ᾱ_t x_0 + √(1-ᾱ_t) ε.

        Shapes:
            x_start, noise ``(B, C, H, W)``; t ``(B,)`` long → ``(B, C, H, W)``.
        """
        return (extract(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
                + extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise)

    def predict_start_from_noise(self, x_t: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x̂_0 from x_t and predicted ε.

        Shapes:
            x_t, noise ``(B, C, H, W)``; t ``(B,)`` → ``(B, C, H, W)``.
        """
        return (extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t
                - extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * noise)

    def predict_noise_from_start(self, x_t: Tensor, t: Tensor, x_start: Tensor) -> Tensor:
        """ε consistent with x_t and a (possibly clamped) x̂_0.

        Shapes:
            x_t, x_start ``(B, C, H, W)``; t ``(B,)`` → ``(B, C, H, W)``.
        """
        return ((extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t - x_start)
                / extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape))

    def predict_v(self, x_start: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """v = √ᾱ_t ε − √(1-ᾱ_t) x_0 (Salimans & Ho 2022, §4).

        Shapes:
            x_start, noise ``(B, C, H, W)``; t ``(B,)`` → ``(B, C, H, W)``.
        """
        return (extract(self.sqrt_alphas_cumprod, t, x_start.shape) * noise
                - extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * x_start)

    def predict_start_from_v(self, x_t: Tensor, t: Tensor, v: Tensor) -> Tensor:
        """x̂_0 = √ᾱ_t x_t − √(1-ᾱ_t) v (inverse of :meth:`predict_v` given x_t).

        Shapes:
            x_t, v ``(B, C, H, W)``; t ``(B,)`` → ``(B, C, H, W)``.
        """
        return (extract(self.sqrt_alphas_cumprod, t, x_t.shape) * x_t
                - extract(self.sqrt_one_minus_alphas_cumprod, t, x_t.shape) * v)

    def q_posterior(self, x_start: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and clipped log-variance of q(x_{t-1} | x_t, x_0).

        Shapes:
            x_start, x_t ``(B, C, H, W)``; t ``(B,)`` → mean ``(B, C, H, W)``, log-variance ``(B, 1, 1, 1)``.
        """
        mean = (extract(self.posterior_mean_coef1, t, x_t.shape) * x_start
                + extract(self.posterior_mean_coef2, t, x_t.shape) * x_t)
        return mean, extract(self.posterior_log_variance_clipped, t, x_t.shape)

    def ddim_timesteps(self, steps: int, strength: float = 1.0) -> list[int]:
        """Decreasing timesteps visited by a ``steps``-step DDIM sampler, from ``strength``·T − 1 down to ≥ 0.

        Evenly spaced "trailing" indices that always include the first one, so sampling starts from the noisiest
        step asked for (Lin et al., "Common Diffusion Noise Schedules and Sample Steps are Flawed", WACV 2024,
        §3.4); ``strength < 1`` starts part-way (SDEdit, Meng et al., ICLR 2022).

        Raises:
            ValueError: ``steps`` is not in [1, T], or ``strength`` not in (0, 1].
        """
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        span = max(1, int(round(strength * self.num_timesteps)))
        if not 1 <= steps <= span:
            raise ValueError(f"steps must be in [1, {span}] (T={self.num_timesteps}, strength={strength}), got {steps}")
        stride = span / steps
        return [int(round(span - 1 - i * stride)) for i in range(steps)]
