"""Conditional DDPM wrapper of DCT-Net §2.1: ε-MSE training loss, ancestral DDPM and DDIM samplers.

Radiographs enter and leave in [0, 1] (the project's convention) and are mapped to the diffusion domain [-1, 1]
inside (Ho et al. 2020 scale data to [-1, 1]). One model serves both views: a view index (PA = 0, LAT = 1,
:mod:`DCTNetLib.conventions`) selects a learned embedding; :meth:`ConditionalDiffusion.suppress_bones` runs the two
views of a pair as one batch of 2B through the U-Net.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from ...conventions import VIEW_LAT, VIEW_PA
from ...helpers import default, exists
from .config import CDMConfig
from .schedules import DiffusionSchedule
from .unet import ConditionalUNet

__all__ = ["ConditionalDiffusion", "to_diffusion_range", "from_diffusion_range", "make_generator"]

NUM_PAIR_VIEWS = 2  # channel 0 = PA, channel 1 = lateral (docs/conventions.md)


def to_diffusion_range(img: Tensor) -> Tensor:
    """[0, 1] → [-1, 1]. Shapes: any → same."""
    return img * 2.0 - 1.0


def from_diffusion_range(img: Tensor) -> Tensor:
    """[-1, 1] → [0, 1], clamped. Shapes: any → same."""
    return ((img + 1.0) * 0.5).clamp(0.0, 1.0)


def make_generator(device: torch.device, seed: int | None = None,
                   generator: torch.Generator | None = None) -> torch.Generator:
    """The given generator, or a new one on ``device`` seeded with ``seed`` (random seed when None).

    Raises:
        ValueError: ``generator`` lives on another device type than ``device``.
    """
    if exists(generator):
        if generator.device.type != device.type:
            raise ValueError(f"generator is on {generator.device}, but sampling runs on {device}")
        return generator
    gen = torch.Generator(device=device)
    if exists(seed):
        gen.manual_seed(int(seed))
    else:
        gen.seed()
    return gen


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Temporarily switch ``module`` to eval mode (dropout off), restoring its previous mode afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


class ConditionalDiffusion(nn.Module):
    """Bone-suppression conditional diffusion model p_θ(x_{0:T} | y) (DCT-Net eqs. 3–4).

    Args:
        config: Architecture, schedule and sampling settings. Defaults to :meth:`CDMConfig.full`.
        model: ε-prediction network; built from ``config`` when None.

    Example:
        >>> cdm = ConditionalDiffusion(CDMConfig.tiny())
        >>> pair = torch.rand(1, 2, 32, 32)
        >>> cdm.suppress_bones(pair, steps=5, seed=0).shape
        torch.Size([1, 2, 32, 32])
    """

    def __init__(self, config: CDMConfig | None = None, model: ConditionalUNet | None = None) -> None:
        super().__init__()
        self.config = default(config, CDMConfig.full)
        self.model = default(model, lambda: ConditionalUNet(self.config))
        self.schedule = DiffusionSchedule(self.config)
        self.num_timesteps = self.schedule.num_timesteps

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ checks
    def _check_images(self, name: str, img: Tensor) -> None:
        if img.ndim != 4 or img.shape[1] != self.config.image_channels:
            raise ValueError(f"{name} must have shape (B, {self.config.image_channels}, H, W), got {tuple(img.shape)}")

    def _views(self, view: Tensor | int | None, batch: int) -> Tensor:
        """View indices as a ``(B,)`` long tensor on the model's device (an int applies to the whole batch)."""
        if view is None:
            raise ValueError("view is required (PA=0, LAT=1)")
        view = torch.as_tensor(view, device=self.device, dtype=torch.long)
        if view.ndim == 0:
            view = view.expand(batch)
        if view.shape != (batch,):
            raise ValueError(f"view must be an int or have shape ({batch},), got {tuple(view.shape)}")
        if int(view.min()) < 0 or int(view.max()) >= self.config.num_views:
            raise ValueError(f"view values must be in [0, {self.config.num_views - 1}], got {view.tolist()}")
        return view

    # ------------------------------------------------------------------ training
    def forward(self, x0: Tensor, y: Tensor, view: Tensor | int, t: Tensor | None = None,
                noise: Tensor | None = None) -> Tensor:
        """ε-MSE loss ‖ε - ε_θ(√ᾱ_t x_0 + √(1-ᾱ_t) ε, y, t, view)‖² (Ho et al. 2020, eq. 14).

        Args:
            x0: Bone-suppressed target radiographs in [0, 1].
            y: Conditioning (original) radiographs in [0, 1].
            view: PA = 0 / LAT = 1 per sample, or one int for the batch.
            t: Timesteps; uniform in [0, T-1] when None.
            noise: ε; standard normal when None.

        Shapes:
            x0 ``(B, 1, H, W)``, y ``(B, 1, H, W)``, view ``(B,)`` → scalar loss.
        """
        self._check_images("x0", x0)
        self._check_images("y", y)
        batch = x0.shape[0]
        t = default(t, lambda: torch.randint(0, self.num_timesteps, (batch,), device=x0.device))
        x_start = to_diffusion_range(x0)
        noise = default(noise, lambda: torch.randn_like(x_start))
        x_t = self.schedule.q_sample(x_start, t, noise)
        pred = self.model(x_t, to_diffusion_range(y), t, self._views(view, batch))
        return F.mse_loss(pred, noise)

    def pair_loss(self, x_pair: Tensor, y_pair: Tensor) -> Tensor:
        """ε-MSE loss on PA/lateral pairs, both views in one batch of 2B.

        Shapes:
            x_pair ``(B, 2, H, W)`` target, y_pair ``(B, 2, H, W)`` condition, both in [0, 1] → scalar loss.
        """
        x, views = self._fold_pairs("x_pair", x_pair)
        y, _ = self._fold_pairs("y_pair", y_pair)
        return self(x, y, views)

    def _fold_pairs(self, name: str, pair: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, 2, H, W)`` → images ``(2B, 1, H, W)`` ordered (b, view) and their view indices ``(2B,)``."""
        if pair.ndim != 4 or pair.shape[1] != NUM_PAIR_VIEWS:
            raise ValueError(f"{name} must have shape (B, 2, H, W) with channels (PA, LAT), got {tuple(pair.shape)}")
        views = repeat(torch.tensor([VIEW_PA, VIEW_LAT], device=pair.device), "v -> (b v)", b=pair.shape[0])
        return rearrange(pair, "b v h w -> (b v) 1 h w"), views

    # ------------------------------------------------------------------ sampling
    def _predict(self, x_t: Tensor, cond: Tensor, t: int, view: Tensor) -> tuple[Tensor, Tensor]:
        """ε̂ and x̂_0 at integer step ``t`` (x̂_0 clamped to [-1, 1] when ``clip_denoised``; ε̂ made consistent)."""
        t_batch = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
        eps = self.model(x_t, cond, t_batch, view)
        x_start = self.schedule.predict_start_from_noise(x_t, t_batch, eps)
        if self.config.clip_denoised:
            x_start = x_start.clamp(-1.0, 1.0)
            eps = self.schedule.predict_noise_from_start(x_t, t_batch, x_start)
        return eps, x_start

    def _prepare_sampling(self, y: Tensor, view: Tensor | int, seed: int | None,
                          generator: torch.Generator | None) -> tuple[Tensor, Tensor, torch.Generator, Tensor]:
        self._check_images("y", y)
        device = self.device
        cond = to_diffusion_range(y.to(device=device, dtype=torch.float32))
        views = self._views(view, y.shape[0])
        gen = make_generator(device, seed, generator)
        x_t = torch.randn(cond.shape, generator=gen, device=device, dtype=cond.dtype)
        return cond, views, gen, x_t

    @torch.inference_mode()
    def sample_ddim(self, y: Tensor, view: Tensor | int, steps: int | None = None, eta: float | None = None,
                    seed: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """DDIM sampling (Song et al. 2021, eq. 12) of bone-suppressed radiographs given y.

        Args:
            y: Conditioning radiographs in [0, 1].
            view: PA = 0 / LAT = 1 per sample, or one int for the batch.
            steps: Number of denoising steps. Defaults to ``config.sampling_steps``.
            eta: Stochasticity η (0 = deterministic). Defaults to ``config.ddim_eta``.
            seed: Seed of a new generator on the model's device; same seed → identical output.
            generator: Generator to use instead of ``seed`` (must live on the model's device).

        Shapes:
            y ``(B, 1, H, W)``, view ``(B,)`` → ``(B, 1, H, W)`` in [0, 1].
        """
        steps = default(steps, self.config.sampling_steps)
        eta = float(default(eta, self.config.ddim_eta))
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        times = self.schedule.ddim_timesteps(steps)
        alphas_cumprod = self.schedule.alphas_cumprod
        with eval_mode(self):
            cond, views, gen, x_t = self._prepare_sampling(y, view, seed, generator)
            for i, t in enumerate(times):
                eps, x_start = self._predict(x_t, cond, t, views)
                if i == len(times) - 1:
                    x_t = x_start
                    break
                alpha, alpha_next = alphas_cumprod[t], alphas_cumprod[times[i + 1]]
                sigma = eta * ((1 - alpha_next) / (1 - alpha) * (1 - alpha / alpha_next)).sqrt()
                c = (1 - alpha_next - sigma ** 2).clamp(min=0).sqrt()
                x_t = alpha_next.sqrt() * x_start + c * eps
                if eta > 0:
                    x_t = x_t + sigma * torch.randn(x_t.shape, generator=gen, device=x_t.device, dtype=x_t.dtype)
        return from_diffusion_range(x_t)

    @torch.inference_mode()
    def sample_ddpm(self, y: Tensor, view: Tensor | int, seed: int | None = None,
                    generator: torch.Generator | None = None) -> Tensor:
        """Ancestral sampling through all T steps with the posterior variance β̃_t (Ho et al. 2020, Alg. 2).

        Args:
            y: Conditioning radiographs in [0, 1].
            view: PA = 0 / LAT = 1 per sample, or one int for the batch.
            seed: Seed of a new generator on the model's device.
            generator: Generator to use instead of ``seed``.

        Shapes:
            y ``(B, 1, H, W)``, view ``(B,)`` → ``(B, 1, H, W)`` in [0, 1].
        """
        with eval_mode(self):
            cond, views, gen, x_t = self._prepare_sampling(y, view, seed, generator)
            for t in reversed(range(self.num_timesteps)):
                _, x_start = self._predict(x_t, cond, t, views)
                t_batch = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
                mean, log_var = self.schedule.q_posterior(x_start, x_t, t_batch)
                if t == 0:
                    x_t = mean
                else:
                    noise = torch.randn(x_t.shape, generator=gen, device=x_t.device, dtype=x_t.dtype)
                    x_t = mean + (0.5 * log_var).exp() * noise
        return from_diffusion_range(x_t)

    def suppress_bones(self, drr_pair: Tensor, steps: int | None = None, seed: int | None = None,
                       eta: float | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Bone-suppressed PA/lateral pairs by DDIM, both views as one batch of 2B through the U-Net.

        Args:
            drr_pair: Radiograph pairs in [0, 1], channel 0 = PA, channel 1 = lateral.
            steps: DDIM steps. Defaults to ``config.sampling_steps``.
            seed: Sampling seed (same seed → identical output).
            eta: DDIM η. Defaults to ``config.ddim_eta``.
            generator: Generator to use instead of ``seed``.

        Shapes:
            drr_pair ``(B, 2, H, W)`` → ``(B, 2, H, W)`` in [0, 1], on ``drr_pair``'s device.
        """
        y, views = self._fold_pairs("drr_pair", drr_pair)
        out = self.sample_ddim(y, views, steps=steps, eta=eta, seed=seed, generator=generator)
        return rearrange(out, "(b v) 1 h w -> b v h w", v=NUM_PAIR_VIEWS).to(drr_pair.device)
