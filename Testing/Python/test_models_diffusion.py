"""Bone-suppression CDM (``DCTNetLib.models.diffusion``): schedule maths, U-Net conditioning, samplers, EMA, config.

Everything runs on the tiny preset (32² images, T = 100) on the CPU. One module-scoped fixture trains a tiny
model on one synthetic radiograph pair for ``TRAIN_STEPS`` steps; the sampling tests reuse it.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from DCTNetLib.conventions import VIEW_LAT, VIEW_PA
from DCTNetLib.errors import InputError
from DCTNetLib.models.diffusion import (CDMConfig, ConditionalDiffusion, ConditionalUNet, DiffusionSchedule, EMA,
                                        to_diffusion_range)

TRAIN_STEPS = 150
TRAIN_LR = 2e-3
SIZE = 32


pytestmark = pytest.mark.usefixtures("one_thread")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / ((a - b) ** 2).mean()))


def synthetic_pair(size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """(radiograph y, bone-suppressed x) pairs ``(1, 2, size, size)``: soft tissue with lungs, plus bright rib
    arcs and a spine in PA and a spine in the lateral view.

    Drawn directly rather than projected from ``data.phantom``: at 32² the phantom's bone changes its DRR by only
    30 dB PSNR, finer than a 150-step tiny model resolves, whereas here the bone is the dominant difference.
    """
    r = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    body = torch.exp(-(xx ** 2 / 0.5 + yy ** 2 / 0.7)) * 0.6
    lungs = torch.exp(-(((xx.abs() - 0.4) / 0.22) ** 2 + (yy / 0.5) ** 2)) * 0.25
    soft_pa = (body - lungs).clamp(0, 1)
    ribs = sum(torch.exp(-((yy - c + 0.15 * xx ** 2) / 0.05) ** 2) for c in (-0.6, -0.3, 0.0, 0.3)) * (xx.abs() < 0.8)
    spine = torch.exp(-(xx / 0.08) ** 2) * (yy.abs() < 0.9)
    soft_lat = torch.exp(-(xx ** 2 / 0.4 + yy ** 2 / 0.7)) * 0.55
    spine_lat = torch.exp(-((xx - 0.45) / 0.1) ** 2) * (yy.abs() < 0.9)
    y = torch.stack([soft_pa + 0.3 * ribs + 0.35 * spine, soft_lat + 0.4 * spine_lat])[None].clamp(0, 1)
    x = torch.stack([soft_pa, soft_lat])[None].clamp(0, 1)
    return y, x


@pytest.fixture(scope="module")
def trained():
    """A tiny CDM overfitted to one pair: ``(model, y, x, losses)``."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    y, x = synthetic_pair()
    model = ConditionalDiffusion(CDMConfig.tiny())
    opt = torch.optim.Adam(model.parameters(), lr=TRAIN_LR)
    losses = []
    for _ in range(TRAIN_STEPS):
        loss = model.pair_loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model.eval(), y, x, losses


# ------------------------------------------------------------------------------------------------ schedules
def test_cosine_schedule_matches_nichol_dhariwal():
    """ᾱ_t = f(t)/f(0), f(t) = cos²(((t/T + s)/(1 + s))·π/2), β_t = min(1 − ᾱ_t/ᾱ_{t−1}, 0.999) (eq. 17, §3.2)."""
    for preset in (CDMConfig.full(), CDMConfig.small()):
        assert preset.timesteps == 1000 and preset.beta_schedule == "cosine"
    config = CDMConfig.small()
    T, s = config.timesteps, 0.008
    f = np.cos(((np.arange(T + 1) / T + s) / (1 + s)) * np.pi / 2) ** 2
    alpha_bar = f / f[0]
    betas = np.minimum(1 - alpha_bar[1:] / alpha_bar[:-1], 0.999)
    schedule = DiffusionSchedule(config)
    np.testing.assert_allclose(schedule.betas.numpy(), betas, rtol=1e-5, atol=1e-8)
    assert float(schedule.betas.max()) == pytest.approx(0.999) and float(schedule.betas.min()) > 0
    assert bool((schedule.betas[1:] >= schedule.betas[:-1]).all())
    # ᾱ is the unclipped formula except at the last step, where the clip takes effect
    np.testing.assert_allclose(schedule.alphas_cumprod.numpy()[:-1], alpha_bar[1:-1], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(schedule.alphas_cumprod.numpy(), np.cumprod(1 - betas), rtol=1e-5, atol=1e-12)


def test_q_sample_mean_and_variance():
    schedule = DiffusionSchedule(CDMConfig.tiny())
    n, t_index = 40_000, 30
    x0 = torch.full((n, 1, 1, 1), 0.6)
    t = torch.full((n,), t_index, dtype=torch.long)
    gen = torch.Generator().manual_seed(1)
    x_t = schedule.q_sample(x0, t, torch.randn(x0.shape, generator=gen))
    alpha_bar = float(schedule.alphas_cumprod[t_index])
    assert 0.2 < alpha_bar < 0.95  # a step where both terms matter
    assert float(x_t.mean()) == pytest.approx(math.sqrt(alpha_bar) * 0.6, abs=4 * math.sqrt((1 - alpha_bar) / n))
    assert float(x_t.var()) == pytest.approx(1 - alpha_bar, rel=0.03)


def test_ddim_timesteps_trailing_and_distinct():
    schedule = DiffusionSchedule(CDMConfig.small())
    for steps in (1, 2, 7, 64, 1000):
        times = schedule.ddim_timesteps(steps)
        assert len(set(times)) == steps and times[0] == 999 and min(times) >= 0 and times == sorted(times)[::-1]
    assert schedule.ddim_timesteps(1000) == list(range(999, -1, -1))
    with pytest.raises(ValueError, match="steps"):
        schedule.ddim_timesteps(0)


# ------------------------------------------------------------------------------------------------ U-Net
def test_unet_shape_and_conditioning_changes_output():
    torch.manual_seed(0)
    net = ConditionalUNet(CDMConfig.tiny()).eval()
    x_t, y = torch.randn(2, 1, SIZE, SIZE), torch.rand(2, 1, SIZE, SIZE)
    t, views = torch.tensor([3, 70]), torch.tensor([VIEW_PA, VIEW_LAT])
    with torch.no_grad():
        out = net(x_t, y, t, views)
        assert out.shape == (2, 1, SIZE, SIZE) and torch.isfinite(out).all()
        assert (net(x_t, torch.rand_like(y), t, views) - out).abs().mean() > 1e-3  # y is seen
        assert (net(x_t, y, torch.tensor([50, 10]), views) - out).abs().mean() > 1e-3  # t is seen
        # per-sample independence: sample 0 alone gives the same output
        torch.testing.assert_close(net(x_t[:1], y[:1], t[:1], views[:1]), out[:1], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(1, 1, 30, 30), torch.rand(1, 1, 30, 30), t[:1], views[:1])


def test_view_flag_is_required_and_used():
    """The design choice (ConditionalDiffusion docstring): an explicit view flag selecting a learned embedding."""
    torch.manual_seed(0)
    cdm = ConditionalDiffusion(CDMConfig.tiny())
    x0, y = torch.rand(2, 1, SIZE, SIZE), torch.rand(2, 1, SIZE, SIZE)
    t, noise = torch.tensor([20, 60]), torch.randn(2, 1, SIZE, SIZE)
    loss_pa = cdm(x0, y, VIEW_PA, t=t, noise=noise)
    assert loss_pa == cdm(x0, y, torch.tensor([VIEW_PA, VIEW_PA]), t=t, noise=noise)  # int broadcasts
    assert abs((loss_pa - cdm(x0, y, VIEW_LAT, t=t, noise=noise)).item()) > 1e-6
    for bad in (None, 2, -1, torch.tensor([0, 1, 0])):
        with pytest.raises(ValueError, match="view"):
            cdm(x0, y, bad, t=t, noise=noise)
    # pair_loss folds (B, 2, H, W) as PA = channel 0, LAT = channel 1
    pair_x, pair_y = torch.cat([x0[:1], x0[1:]], 1), torch.cat([y[:1], y[1:]], 1)
    torch.manual_seed(5)
    folded = cdm.pair_loss(pair_x, pair_y)
    torch.manual_seed(5)
    assert folded == cdm(x0, y, torch.tensor([VIEW_PA, VIEW_LAT]))


# ------------------------------------------------------------------------------------------------ samplers
class OracleModel(nn.Module):
    """The exact network output for a known clean image x0 (ε, v or x0 given x_t), to test sampler algebra."""

    def __init__(self, schedule: DiffusionSchedule, x0: torch.Tensor, objective: str) -> None:
        super().__init__()
        self.schedule, self.x0, self.objective = schedule, x0, objective
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the wrapper a device

    def forward(self, x_t, cond, t, view):
        a = self.schedule.sqrt_alphas_cumprod[t].view(-1, 1, 1, 1)
        s = self.schedule.sqrt_one_minus_alphas_cumprod[t].view(-1, 1, 1, 1)
        eps = (x_t - a * self.x0) / s
        return {"eps": eps, "v": a * eps - s * self.x0, "x0": self.x0}[self.objective]


@pytest.mark.parametrize("objective", ["eps", "v", "x0"])
def test_samplers_recover_x0_with_an_exact_model(objective):
    config = CDMConfig.tiny(objective=objective, timesteps=50)
    y, x = synthetic_pair()
    x0 = to_diffusion_range(x.reshape(2, 1, SIZE, SIZE))
    cdm = ConditionalDiffusion(config, model=OracleModel(DiffusionSchedule(config), x0, objective))
    cond = y.reshape(2, 1, SIZE, SIZE)
    for steps in (1, 3, 50):
        for eta in (0.0, 1.0):
            out = cdm.sample_ddim(cond, [VIEW_PA, VIEW_LAT], steps=steps, eta=eta, seed=0)
            torch.testing.assert_close(out, x.reshape(2, 1, SIZE, SIZE), atol=2e-4, rtol=0)
    torch.testing.assert_close(cdm.sample_ddpm(cond, [0, 1], seed=0), x.reshape(2, 1, SIZE, SIZE), atol=2e-4, rtol=0)


def test_ddim_with_eta_one_and_all_steps_is_ancestral_ddpm():
    """η = 1, steps = T: σ_t² = β̃_t and the DDIM update equals the DDPM posterior mean (Song et al. 2021, §4.1)."""
    torch.manual_seed(0)
    cdm = ConditionalDiffusion(CDMConfig.tiny(timesteps=40)).eval()
    y = torch.rand(2, 1, SIZE, SIZE)
    ddpm = cdm.sample_ddpm(y, [0, 1], seed=3)
    ddim = cdm.sample_ddim(y, [0, 1], steps=40, eta=1.0, seed=3)
    torch.testing.assert_close(ddim, ddpm, atol=1e-4, rtol=0)
    assert (cdm.sample_ddim(y, [0, 1], steps=40, eta=0.0, seed=3) - ddpm).abs().max() > 1e-2  # η matters


def test_training_reduces_loss_and_suppresses_bone(trained):
    model, y, x, losses = trained
    first, last = np.mean(losses[:20]), np.mean(losses[-20:])
    assert last < 0.35 * first, (first, last)  # measured: 0.41 → 0.077 over 150 steps
    psnr_input = psnr(y, x)  # 19.26 dB: the radiograph against its bone-suppressed target
    out = model.suppress_bones(y, steps=4, seed=0)
    gain = psnr(out, x) - psnr_input
    assert gain > 2.0, (psnr_input, psnr(out, x))  # measured: 19.26 → 22.62 dB (+3.4 dB) at 4 DDIM steps


def test_ddim_is_deterministic_per_seed(trained):
    model, y, _, _ = trained
    for eta in (0.0, 0.5):
        a = model.suppress_bones(y, steps=4, seed=7, eta=eta)
        torch.testing.assert_close(a, model.suppress_bones(y, steps=4, seed=7, eta=eta), atol=0, rtol=0)
        assert (a - model.suppress_bones(y, steps=4, seed=8, eta=eta)).abs().max() > 1e-3
    torch.testing.assert_close(model.sample_ddim(y[:, :1], 0, steps=3, generator=torch.Generator().manual_seed(4)),
                               model.sample_ddim(y[:, :1], 0, steps=3, seed=4), atol=0, rtol=0)


def test_both_views_batched_equal_separate_calls(trained):
    model, y, _, _ = trained
    for eta in (0.0, 0.5):
        pair = model.suppress_bones(y, steps=4, seed=11, eta=eta)
        pa = model.sample_ddim(y[:, 0:1], VIEW_PA, steps=4, seed=11, eta=eta)
        lat = model.sample_ddim(y[:, 1:2], VIEW_LAT, steps=4, seed=12, eta=eta)
        torch.testing.assert_close(pair, torch.cat([pa, lat], 1), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="seed"):
        model.sample_ddim(y[:, :1], 0, steps=2, seed=[1, 2])


def test_sampling_restores_training_mode(trained):
    model, y, _, _ = trained
    model.train()
    model.suppress_bones(y, steps=1, seed=0)
    assert model.training
    model.eval()


# ------------------------------------------------------------------------------------------------ EMA, config
def test_ema_update_math():
    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    ema = EMA(net, decay=0.9, update_every=2, warmup_steps=2)
    with torch.no_grad():
        net[0].weight.fill_(1.0)
    ema.update()  # step 1: not a multiple of 2 → untouched
    assert not torch.equal(ema.model[0].weight, net[0].weight)
    ema.update()  # step 2 ≤ warmup: copy
    torch.testing.assert_close(ema.model[0].weight, net[0].weight)
    with torch.no_grad():
        net[0].weight.fill_(3.0)
        net[1].running_mean.fill_(5.0)
    ema.update()
    ema.update()  # step 4: θ ← 0.9·1 + 0.1·3
    torch.testing.assert_close(ema.model[0].weight, torch.full((3, 3), 1.2))
    torch.testing.assert_close(ema.model[1].running_mean, torch.full((3,), 5.0))  # buffers copied
    assert not any(p.requires_grad for p in ema.model.parameters())

    other = EMA(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)), decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert (other.step, other.decay, other.update_every, other.warmup_steps) == (4, 0.9, 2, 2)
    torch.testing.assert_close(other.model[0].weight, ema.model[0].weight)
    with pytest.raises(ValueError, match="decay"):
        EMA(net, decay=1.0)


def test_config_round_trip_and_validation():
    for config in (CDMConfig.full(), CDMConfig.small(), CDMConfig.tiny(channels=[8, 16, 32], dropout=0.1)):
        data = json.loads(json.dumps(config.to_dict()))
        assert CDMConfig.from_dict(data) == config
    assert CDMConfig.small().objective == "v" and CDMConfig.full().objective == "eps"
    legacy = CDMConfig.small().to_dict()
    del legacy["objective"]
    assert CDMConfig.from_dict(legacy).objective == "eps"  # saved before the field existed
    with pytest.raises(ValueError, match="bogus"):
        CDMConfig.from_dict({**CDMConfig.tiny().to_dict(), "bogus": 1})
    for bad in (dict(objective="x"), dict(image_size=30), dict(sampling_steps=0), dict(beta_schedule="quad")):
        with pytest.raises(ValueError):
            CDMConfig.tiny(**bad)


# ------------------------------------------------------------------------------------------------ residual target
def test_residual_encoding_round_trips_and_never_brightens():
    cdm = ConditionalDiffusion(CDMConfig.tiny(target="residual", residual_range=0.5))
    y, x = synthetic_pair()
    y, x = y.reshape(2, 1, SIZE, SIZE), x.reshape(2, 1, SIZE, SIZE)
    z = cdm.encode(x, y)
    assert z.min() >= -1 and z.max() <= 1
    torch.testing.assert_close(cdm.decode(z, y), x.clamp(min=(y - 0.5)), atol=1e-6, rtol=0)
    # whatever the sample, the decoded image is never brighter than the radiograph (bone only adds attenuation)
    assert (cdm.decode(torch.rand_like(z) * 2 - 1, y) <= y + 1e-7).all()
    with pytest.raises(ValueError, match="target"):
        CDMConfig.tiny(target="bones")


@pytest.mark.parametrize("objective", ["eps", "v"])
def test_samplers_recover_x0_with_an_exact_residual_model(objective):
    config = CDMConfig.tiny(objective=objective, timesteps=50, target="residual", residual_range=0.5)
    y, x = synthetic_pair()
    cond, target = y.reshape(2, 1, SIZE, SIZE), x.reshape(2, 1, SIZE, SIZE)
    cdm = ConditionalDiffusion(config)
    oracle = OracleModel(DiffusionSchedule(config), cdm.encode(target, cond), objective)
    cdm = ConditionalDiffusion(config, model=oracle)
    for steps in (1, 4):
        out = cdm.sample_ddim(cond, [VIEW_PA, VIEW_LAT], steps=steps, seed=0)
        torch.testing.assert_close(out, target.clamp(min=cond - 0.5), atol=2e-4, rtol=0)


def test_residual_target_beats_the_input_after_short_training():
    """The small preset's choice (docs/cdm.md): generating the bone component instead of the whole image."""
    torch.manual_seed(0)
    y, x = synthetic_pair()
    model = ConditionalDiffusion(CDMConfig.tiny(target="residual", residual_range=0.5))
    opt = torch.optim.Adam(model.parameters(), lr=TRAIN_LR)
    for _ in range(TRAIN_STEPS):
        loss = model.pair_loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    psnr_input = psnr(y, x)
    gains = {steps: psnr(model.eval().suppress_bones(y, steps=steps, seed=0), x) - psnr_input for steps in (1, 4)}
    # measured (150 steps, one thread): residual +5.5 dB at 1 step, +9.3 dB at 4; the image target of the same
    # network and training reaches −1.0 and +3.3 dB
    assert gains[1] > 3.0 and gains[4] > 6.0, (psnr_input, gains)


def test_preview_of_several_samples_is_the_mean_of_the_single_samples_it_names():
    """samples=K runs the K samples as one batch; sample k of a one-pair batch is the single sample seeded
    seed + 2k (PA) and seed + 2k + 1 (lateral), and the preview is their mean."""
    torch.manual_seed(0)
    y, _ = synthetic_pair()
    cdm = ConditionalDiffusion(CDMConfig.tiny(target="residual", residual_range=0.5)).eval()
    singles = [cdm.suppress_bones(y, steps=2, seed=5 + 2 * k) for k in range(3)]
    torch.testing.assert_close(cdm.suppress_bones(y, steps=2, seed=5, samples=3), torch.stack(singles).mean(0),
                               atol=1e-5, rtol=0)
    assert not torch.allclose(singles[0], singles[1], atol=1e-3)  # the samples differ: the mean is not one of them
    # the config's default is used when the caller does not ask
    averaged = ConditionalDiffusion(dataclasses.replace(cdm.config, sampling_samples=3), model=cdm.model).eval()
    torch.testing.assert_close(averaged.suppress_bones(y, steps=2, seed=5), torch.stack(singles).mean(0),
                               atol=1e-5, rtol=0)
    with pytest.raises(InputError):
        CDMConfig.tiny(sampling_samples=0)
    with pytest.raises(ValueError):
        cdm.suppress_bones(y, steps=2, seed=5, samples=0)


def test_partial_start_begins_at_the_noised_input():
    """strength < 1 (SDEdit): the sampler starts from the unchanged radiograph noised to strength·T."""
    schedule = DiffusionSchedule(CDMConfig.tiny(timesteps=100))
    assert schedule.ddim_timesteps(4, 1.0) == schedule.ddim_timesteps(4)
    times = schedule.ddim_timesteps(4, 0.5)
    assert times[0] == 49 and times == sorted(times, reverse=True) and len(set(times)) == 4
    with pytest.raises(ValueError):
        schedule.ddim_timesteps(60, 0.5)  # more steps than the shortened chain has
    with pytest.raises(ValueError):
        CDMConfig.tiny(sampling_strength=0.0)


@pytest.mark.parametrize("target", ["image", "residual"])
def test_samplers_recover_x0_from_a_partial_start(target):
    config = CDMConfig.tiny(objective="v", timesteps=50, target=target, residual_range=0.5)
    y, x = synthetic_pair()
    cond, goal = y.reshape(2, 1, SIZE, SIZE), x.reshape(2, 1, SIZE, SIZE)
    oracle = OracleModel(DiffusionSchedule(config), ConditionalDiffusion(config).encode(goal, cond), "v")
    cdm = ConditionalDiffusion(config, model=oracle)
    expected = goal.clamp(min=cond - 0.5) if target == "residual" else goal
    for strength in (0.3, 0.7):
        out = cdm.sample_ddim(cond, [VIEW_PA, VIEW_LAT], steps=3, seed=0, strength=strength)
        torch.testing.assert_close(out, expected, atol=2e-4, rtol=0)
    # strength 1 is the plain sampler: same noise, same result
    torch.testing.assert_close(cdm.sample_ddim(cond, [0, 1], steps=3, seed=0, strength=1.0),
                               cdm.sample_ddim(cond, [0, 1], steps=3, seed=0))
