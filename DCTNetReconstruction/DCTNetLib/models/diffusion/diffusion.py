"""Conditional DDPM wrapper of DCT-Net §2.1: denoising MSE loss, ancestral DDPM and DDIM samplers.

The U-Net predicts the noise ε (the paper's choice, the ``full`` preset), v or x₀, as ``CDMConfig.objective``
says; the shipped model's ``small`` CDM predicts v (``docs/cdm.md``).

Radiographs enter and leave in [0, 1] (the project's convention) and are mapped to the diffusion domain [-1, 1]
inside (Ho et al. 2020 scale data to [-1, 1]). One model serves both views: a view index (PA = 0, LAT = 1,
:mod:`DCTNetLib.conventions`) selects a learned embedding; :meth:`ConditionalDiffusion.suppress_bones` runs the two
views of a pair as one batch of 2B through the U-Net.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from ...conventions import VIEW_LAT, VIEW_PA
from ...helpers import default, exists
from .config import CDMConfig
from .schedules import DiffusionSchedule
from .unet import ConditionalUNet

__all__ = ["ConditionalDiffusion", "to_diffusion_range", "from_diffusion_range", "make_generator",
           "sample_generators", "randn_from"]

NUM_PAIR_VIEWS = 2  # channel 0 = PA, channel 1 = lateral (docs/conventions.md)
SEED_MODULUS = 2 ** 64  # torch.Generator.manual_seed accepts seeds in [0, 2**64)


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
        gen.manual_seed(int(seed) % SEED_MODULUS)
    else:
        gen.seed()
    return gen


def sample_generators(device: torch.device, batch: int, seed: int | Sequence[int] | None = None,
                      generator: torch.Generator | None = None) -> list[torch.Generator]:
    """Noise sources of a sampling call: one generator per sample, or one for the whole batch.

    An int ``seed`` gives sample ``i`` its own generator seeded ``seed + i``, a sequence gives sample ``i`` the
    seed ``seed[i]``: a sample's noise then depends only on its seed, not on the batch it is in, so the PA and
    lateral views sampled together equal each view sampled alone with its seed (``suppress_bones`` documents
    which seed each view gets). ``generator`` (or ``seed=None``, a random seed) drives the whole batch instead.

    Raises:
        ValueError: a seed sequence whose length is not ``batch``; ``generator`` on another device type.
    """
    if exists(generator) or not exists(seed):
        return [make_generator(device, None, generator)]
    seeds = [int(seed) + i for i in range(batch)] if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
    if len(seeds) != batch:
        raise ValueError(f"seed must be an int or one seed per sample ({batch}), got {len(seeds)} seeds")
    return [make_generator(device, s) for s in seeds]


def randn_from(gens: list[torch.Generator], shape: torch.Size | tuple[int, ...], device: torch.device,
               dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal noise of ``shape``: sample ``i`` from ``gens[i]``, or all of it from a single generator.

    Shapes:
        → ``shape`` = ``(B, …)``.
    """
    if len(gens) == 1:
        return torch.randn(shape, generator=gens[0], device=device, dtype=dtype)
    return torch.stack([torch.randn(shape[1:], generator=g, device=device, dtype=dtype) for g in gens])


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

    Views: one network serves both views, told which one it sees by an explicit view flag (PA = 0, LAT = 1,
    :mod:`DCTNetLib.conventions`) that selects a learned embedding added to the timestep embedding (as ADM adds
    its class embedding). We chose a flag over learning the view from the image because the caller always knows
    the view (pairs are ``(B, 2, H, W)`` with channel 0 = PA), PA and lateral chest films differ in anatomy and
    bone layout, and a flag costs ``2 × emb_dim`` parameters. Every public method therefore requires ``view``
    (an int for the whole batch or one per sample; ``None`` or out-of-range values raise ``ValueError``), and
    :meth:`pair_loss` / :meth:`suppress_bones` set it from the channel order.

    Args:
        config: Architecture, schedule and sampling settings. Defaults to :meth:`CDMConfig.full`.
        model: denoising network predicting ``config.objective`` (ε, v or x₀); built from ``config`` when None.

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

    # ------------------------------------------------------------------ parameterisation
    def encode(self, x0: Tensor, y: Tensor) -> Tensor:
        """The diffusion variable in [-1, 1] for target radiographs ``x0`` given ``y`` (see ``config.target``).

        Shapes: ``(B, C, H, W)`` in [0, 1] → ``(B, C, H, W)`` in [-1, 1].
        """
        if self.config.target == "residual":
            return to_diffusion_range(((y - x0) / self.config.residual_range).clamp(0.0, 1.0))
        return to_diffusion_range(x0)

    def decode(self, z: Tensor, y: Tensor) -> Tensor:
        """Bone-suppressed radiographs in [0, 1] from a diffusion sample ``z`` in [-1, 1] given ``y``.

        Shapes: ``(B, C, H, W)`` → ``(B, C, H, W)``.
        """
        if self.config.target == "residual":
            return (y - self.config.residual_range * from_diffusion_range(z)).clamp(0.0, 1.0)
        return from_diffusion_range(z)

    def _target(self, x_start: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Regression target of the U-Net for ``config.objective`` (ε, v or x_0). Shapes: ``(B, C, H, W)``."""
        if self.config.objective == "eps":
            return noise
        if self.config.objective == "v":
            return self.schedule.predict_v(x_start, t, noise)
        return x_start

    def _start_from_output(self, x_t: Tensor, t: Tensor, out: Tensor) -> Tensor:
        """x̂_0 from the U-Net output under ``config.objective``. Shapes: ``(B, C, H, W)``."""
        if self.config.objective == "eps":
            return self.schedule.predict_start_from_noise(x_t, t, out)
        if self.config.objective == "v":
            return self.schedule.predict_start_from_v(x_t, t, out)
        return out

    # ------------------------------------------------------------------ training
    def forward(self, x0: Tensor, y: Tensor, view: Tensor | int, t: Tensor | None = None,
                noise: Tensor | None = None) -> Tensor:
        """Denoising loss: ‖ε - ε_θ(√ᾱ_t x_0 + √(1-ᾱ_t) ε, y, t, view)‖² (Ho et al. 2020, eq. 14) for the "eps"
        objective; the same MSE against v or x_0 for the other objectives.

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
        x_start = self.encode(x0, y)
        noise = default(noise, lambda: torch.randn_like(x_start))
        x_t = self.schedule.q_sample(x_start, t, noise)
        pred = self.model(x_t, to_diffusion_range(y), t, self._views(view, batch))
        return F.mse_loss(pred, self._target(x_start, t, noise))

    def pair_loss(self, x_pair: Tensor, y_pair: Tensor) -> Tensor:
        """Denoising loss (:meth:`forward`) on PA/lateral pairs, both views in one batch of 2B.

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
        out = self.model(x_t, cond, t_batch, view)
        x_start = self._start_from_output(x_t, t_batch, out)
        if self.config.clip_denoised:
            x_start = x_start.clamp(-1.0, 1.0)
        if self.config.objective == "eps" and not self.config.clip_denoised:
            return out, x_start
        return self.schedule.predict_noise_from_start(x_t, t_batch, x_start), x_start

    def _prepare_sampling(self, y: Tensor, view: Tensor | int, seed: int | Sequence[int] | None,
                          generator: torch.Generator | None, start: int | None = None
                          ) -> tuple[Tensor, Tensor, list[torch.Generator], Tensor]:
        """Condition in [-1, 1], view indices, the noise generators and the starting x_t: pure noise x_T, or with
        ``start`` the unchanged radiograph (no bone component) noised to step ``start`` (SDEdit).

        Shapes: y ``(B, 1, H, W)``."""
        self._check_images("y", y)
        device = self.device
        y = y.to(device=device, dtype=torch.float32)
        cond = to_diffusion_range(y)
        views = self._views(view, y.shape[0])
        gens = sample_generators(device, y.shape[0], seed, generator)
        noise = randn_from(gens, cond.shape, device, cond.dtype)
        if start is None or start >= self.num_timesteps - 1:
            return cond, views, gens, noise
        t = torch.full((y.shape[0],), start, device=device, dtype=torch.long)
        return cond, views, gens, self.schedule.q_sample(self.encode(y, y), t, noise)

    @torch.inference_mode()
    def sample_ddim(self, y: Tensor, view: Tensor | int, steps: int | None = None, eta: float | None = None,
                    seed: int | Sequence[int] | None = None, generator: torch.Generator | None = None,
                    strength: float | None = None) -> Tensor:
        """DDIM sampling (Song et al. 2021, eq. 12) of bone-suppressed radiographs given y.

        Args:
            y: Conditioning radiographs in [0, 1].
            view: PA = 0 / LAT = 1 per sample, or one int for the batch.
            steps: Number of denoising steps. Defaults to ``config.sampling_steps``.
            eta: Stochasticity η (0 = deterministic). Defaults to ``config.ddim_eta``.
            seed: Sample ``i`` draws its noise from a generator seeded ``seed + i`` (or ``seed[i]`` for a
                sequence), so the same seed gives identical output whatever the batch (see
                :func:`sample_generators`). None = random.
            generator: One generator for the whole batch instead of ``seed`` (on the model's device).
            strength: Start at this fraction of T (``config.sampling_strength`` when None; see
                :class:`CDMConfig`).

        Shapes:
            y ``(B, 1, H, W)``, view ``(B,)`` → ``(B, 1, H, W)`` in [0, 1].
        """
        steps = default(steps, self.config.sampling_steps)
        strength = float(default(strength, self.config.sampling_strength))
        eta = float(default(eta, self.config.ddim_eta))
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        times = self.schedule.ddim_timesteps(steps, strength)
        alphas_cumprod = self.schedule.alphas_cumprod
        with eval_mode(self):
            cond, views, gens, x_t = self._prepare_sampling(y, view, seed, generator, start=times[0])
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
                    x_t = x_t + sigma * randn_from(gens, x_t.shape, x_t.device, x_t.dtype)
        return self.decode(x_t, from_diffusion_range(cond))

    @torch.inference_mode()
    def sample_ddpm(self, y: Tensor, view: Tensor | int, seed: int | Sequence[int] | None = None,
                    generator: torch.Generator | None = None) -> Tensor:
        """Ancestral sampling through all T steps with the posterior variance β̃_t (Ho et al. 2020, Alg. 2).

        Args:
            y: Conditioning radiographs in [0, 1].
            view: PA = 0 / LAT = 1 per sample, or one int for the batch.
            seed: Per-sample seeds as in :meth:`sample_ddim`.
            generator: One generator for the whole batch instead of ``seed``.

        Shapes:
            y ``(B, 1, H, W)``, view ``(B,)`` → ``(B, 1, H, W)`` in [0, 1].
        """
        with eval_mode(self):
            cond, views, gens, x_t = self._prepare_sampling(y, view, seed, generator)
            for t in reversed(range(self.num_timesteps)):
                _, x_start = self._predict(x_t, cond, t, views)
                t_batch = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
                mean, log_var = self.schedule.q_posterior(x_start, x_t, t_batch)
                if t == 0:
                    x_t = mean
                else:
                    noise = randn_from(gens, x_t.shape, x_t.device, x_t.dtype)
                    x_t = mean + (0.5 * log_var).exp() * noise
        return self.decode(x_t, from_diffusion_range(cond))

    def suppress_bones(self, drr_pair: Tensor, steps: int | None = None, seed: int | Sequence[int] | None = None,
                       eta: float | None = None, generator: torch.Generator | None = None,
                       strength: float | None = None, samples: int | None = None) -> Tensor:
        """Bone-suppressed PA/lateral pairs by DDIM, both views (and all samples) as one batch through the U-Net.

        Args:
            drr_pair: Radiograph pairs in [0, 1], channel 0 = PA, channel 1 = lateral.
            steps: DDIM steps. Defaults to ``config.sampling_steps``.
            seed: Sampling seed: view ``v`` of pair ``b`` in sample ``k`` uses ``seed + 2(kB + b) + v`` (PA
                ``seed``, lateral ``seed + 1`` for one pair and one sample), so the batched pair equals
                :meth:`sample_ddim` of each view alone with its seed.
            eta: DDIM η. Defaults to ``config.ddim_eta``.
            generator: Generator to use instead of ``seed``.
            strength: Where DDIM starts (``config.sampling_strength`` when None).
            samples: Number of samples averaged into the result (``config.sampling_samples`` when None).

        Shapes:
            drr_pair ``(B, 2, H, W)`` → ``(B, 2, H, W)`` in [0, 1], on ``drr_pair``'s device.
        """
        samples = self.config.sampling_samples if samples is None else int(samples)
        if samples < 1:
            raise ValueError(f"samples must be at least 1, got {samples}")
        y, views = self._fold_pairs("drr_pair", drr_pair)
        y, views = y.repeat(samples, 1, 1, 1), views.repeat(samples)
        out = self.sample_ddim(y, views, steps=steps, eta=eta, seed=seed, generator=generator, strength=strength)
        out = rearrange(out, "(k b v) 1 h w -> k b v h w", k=samples, v=NUM_PAIR_VIEWS).mean(dim=0)
        return out.to(drr_pair.device)
