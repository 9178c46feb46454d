"""Training throughput: steps per second of the reconstruction GAN and of the CDM, and one full-preset GAN step.

A GAN step is the paper's objective (eq. 10) as the trainer runs it: G(Y) and G(X) forward, a discriminator
update on the detached G(Y) (LSGAN, eq. 9a), then a generator update with the multi-path loss
(:class:`~DCTNetLib.models.losses.MultiPathLoss`: adversarial, perceptual contrastive between G(Y) and G(X),
voxel MSE, three-plane projection L1). The perceptual network φ is VGG16 with random weights (the timing does
not depend on them; no ImageNet download). Adam with the paper's lr 2e-4, betas (0.5, 0.999) (DCT-Net §3.1).
A CDM step is ``ConditionalDiffusion.pair_loss`` on a batch of PA/lateral pairs plus an Adam update
(``CDMTrainConfig`` defaults: batch 8 radiographs = 4 pairs, lr 1e-4, betas (0.9, 0.99)).
Inputs are random tensors of the right shapes and ranges.
"""

from __future__ import annotations

from typing import Any

import torch

from _common import time_repeats

__all__ = ["gan_steps", "cdm_steps"]


def _gan_step_fn(size: str, batch: int, recipe: str = "current"):
    """A closure running one full GAN training step of preset ``size``, and the models' parameter counts.

    ``recipe="v1"`` builds the small preset as the first shipped model had it
    (:data:`~DCTNetLib.models.presets.SMALL_RECIPE_V1`), for the side-by-side comparison.
    """
    from DCTNetLib.helpers import count_parameters
    from DCTNetLib.models.losses import MultiPathLoss
    from DCTNetLib.models.perceptual import VGG16Features
    from DCTNetLib.models.presets import SMALL_RECIPE_V1, build_discriminator, build_generator, gan_preset
    from DCTNetLib.training.config import GANTrainConfig

    if recipe not in ("current", "v1") or (recipe == "v1" and size != "small"):
        raise ValueError(f"recipe must be 'current', or 'v1' with size 'small'; got {recipe!r} with {size!r}")
    torch.manual_seed(0)
    preset = gan_preset(size, **(SMALL_RECIPE_V1 if recipe == "v1" else {}))
    g_raw, g_bs = build_generator(preset.generator), build_generator(preset.generator)
    disc = build_discriminator(preset.discriminator)
    phi = (VGG16Features(random_init=True, blocks=preset.loss.perceptual_blocks)
           if preset.loss.uses_perceptual else None)
    loss = MultiPathLoss(preset.loss, phi)
    cfg = GANTrainConfig()
    opt_g = torch.optim.Adam(list(g_raw.parameters()) + list(g_bs.parameters()), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=cfg.betas)
    n = preset.image_size
    gen = torch.Generator().manual_seed(0)
    y, x = torch.rand(batch, 2, n, n, generator=gen), torch.rand(batch, 2, n, n, generator=gen)
    real = torch.rand(batch, 1, n, n, n, generator=gen)

    def step() -> None:
        fake_y, fake_x = g_raw(y), g_bs(x)
        d_loss, _ = loss.discriminator_loss(disc(real, y), disc(fake_y.detach(), y))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        g_loss, _ = loss.generator_loss(fake_y, real, disc(fake_y, y), fake_x=fake_x)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()

    counts = {name: round(count_parameters(m, trainable_only=False) / 1e6, 2)
              for name, m in (("g_raw", g_raw), ("g_bs", g_bs), ("discriminator", disc))}
    return step, counts, preset


def gan_steps(size: str = "small", repeats: int = 3, warmup: int = 1, batch: int = 1,
              recipe: str = "current") -> dict[str, Any]:
    """Median seconds per GAN training step (run in a fresh process for its peak RSS)."""
    step, counts, preset = _gan_step_fn(size, batch, recipe)
    timing = time_repeats(step, repeats, warmup=warmup)
    return {"preset": size, "recipe": recipe, "batch": batch, "volume": [preset.image_size] * 3,
            "parameters_m": counts, "d_slices_per_plane": preset.discriminator.slices_per_plane or "all",
            "perceptual": {"layers": list(preset.loss.perceptual_layers), "size": preset.loss.perceptual_size or "native"},
            "generator_head": preset.generator.head,
            "loss_terms": [k for k in ("adversarial", "contrastive", "reconstruction", "projection")
                           if getattr(preset.loss, k)], "perceptual_weights": "random (timing only)",
            **timing, "steps_per_s": round(1 / timing["median_s"], 4)}


def cdm_steps(size: str = "small", repeats: int = 3, warmup: int = 1, batch_pairs: int | None = None
              ) -> dict[str, Any]:
    """Median seconds per CDM training step (the preset's denoising MSE on PA/lateral pairs + Adam)."""
    from DCTNetLib.helpers import count_parameters
    from DCTNetLib.models.diffusion import CDMConfig, ConditionalDiffusion
    from DCTNetLib.training.config import CDMTrainConfig

    torch.manual_seed(0)
    config = getattr(CDMConfig, size)()
    model = ConditionalDiffusion(config).train()
    train_cfg = CDMTrainConfig()
    pairs = batch_pairs or max(1, train_cfg.batch_size // 2)
    opt = torch.optim.Adam(model.parameters(), lr=train_cfg.lr, betas=train_cfg.betas)
    gen = torch.Generator().manual_seed(0)
    n = config.image_size
    x, y = torch.rand(pairs, 2, n, n, generator=gen), torch.rand(pairs, 2, n, n, generator=gen)

    def step() -> None:
        loss = model.pair_loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    timing = time_repeats(step, repeats, warmup=warmup)
    return {"preset": size, "batch_radiographs": 2 * pairs, "image": [n, n],
            "parameters_m": round(count_parameters(model, trainable_only=False) / 1e6, 2),
            **timing, "steps_per_s": round(1 / timing["median_s"], 3)}
