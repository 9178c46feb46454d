"""Reconstruction GAN: presets, generators (DCT-Net, X2CT-GAN), discriminators, multi-path loss, `dctnet info`.

Everything runs on the ``tiny`` presets (32² radiographs → 32³ volumes) with one torch thread; the full presets
are only counted on the "meta" device (no forward). The overfitting test trains a tiny GAN on one phantom case.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from DCTNetLib.conventions import VIEW_LAT, VIEW_PA
from DCTNetLib.errors import InputError
from DCTNetLib.helpers import count_parameters
from DCTNetLib.models.encoder import DenseEncoder2d
from DCTNetLib.models.losses import MultiPathLoss, lsgan_loss, perceptual_loss, project_planes
from DCTNetLib.models.perceptual import VGG16Features
from DCTNetLib.models.presets import (ABLATIONS, GANPreset, LossConfig, build_discriminator, build_generator,
                                      gan_preset)

N = 32  # tiny preset side


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def phi() -> VGG16Features:
    """VGG16 with random weights: eq. 8's arithmetic does not depend on ImageNet training."""
    torch.manual_seed(0)
    return VGG16Features(random_init=True)


def _pair(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 2, N, N, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------- presets
def test_preset_round_trip_and_overrides():
    preset = gan_preset("ablation-no-perceptual@small", lambda_recon=5.0, generator={"fusion_rank": None})
    assert preset.loss.lambda_recon == 5.0 and preset.generator.fusion_rank is None
    assert preset.loss.contrastive_metric == "l1"
    restored = GANPreset.from_dict(json.loads(json.dumps(preset.to_dict())))
    assert restored == preset


@pytest.mark.parametrize("name, kwargs", [("bogus", {}), ("ablation-no-perceptual@huge", {}),
                                          ("small", {"norm": "batch"}), ("small", {"not_a_field": 1})])
def test_preset_errors_name_the_problem(name, kwargs):
    with pytest.raises(InputError) as info:
        gan_preset(name, **kwargs)
    message = str(info.value)
    assert ("valid names" in message and "ablation-no-dual-branch" in message) or "valid keys" in message


def test_loss_config_rejects_contrastive_without_second_branch():
    with pytest.raises(InputError, match="dual_branch"):
        LossConfig(dual_branch=False, contrastive=True)


def test_full_parameter_counts_match_the_papers():
    """Counted on the meta device. DCT-Net Table 2: 60.70 M for the whole model; X2CT-GAN: G ≈ 61.7 M, D 11.1 M."""
    counts = {}
    for name in ("full", "x2ct-baseline"):
        preset = gan_preset(name)
        with torch.device("meta"):
            counts[name] = (count_parameters(build_generator(preset.generator)),
                            count_parameters(build_discriminator(preset.discriminator)))
    g, d = counts["full"]
    assert abs((2 * g + d) / 60.70e6 - 1) < 0.05  # G(Y) + G(X) + D within ±5 % of 60.70 M
    g_x2ct, d_x2ct = counts["x2ct-baseline"]
    assert abs(g_x2ct / 61.7e6 - 1) < 0.05
    assert abs(d_x2ct / 11.1e6 - 1) < 0.05


def test_small_preset_is_a_few_million_parameters():
    preset = gan_preset("small")
    with torch.device("meta"):
        g = count_parameters(build_generator(preset.generator))
        d = count_parameters(build_discriminator(preset.discriminator))
    assert 0.5e6 < g < 5e6 and d < 1e6


# ---------------------------------------------------------------------------------------------- modules
@pytest.mark.parametrize("cls", ["generator.DCTNetGenerator", "x2ct.X2CTGenerator", "x2ct.X2CTDiscriminator",
                                 "discriminator.TriPlaneDiscriminator"])
def test_model_options_are_keyword_only(cls):
    """Options passed by position could silently miswire a model after a signature change: they are refused."""
    import importlib

    module, name = cls.split(".")
    model = getattr(importlib.import_module(f"DCTNetLib.models.{module}"), name)
    with torch.device("meta"):
        with pytest.raises(TypeError, match="positional argument"):
            model(32)


@pytest.mark.parametrize("arch_preset", ["tiny", "x2ct-baseline@tiny"])
def test_generator_shapes_and_range(arch_preset):
    torch.manual_seed(0)
    g = build_generator(gan_preset(arch_preset).generator).eval()
    with torch.no_grad():
        out = g(_pair())
    assert out.shape == (2, 1, N, N, N)
    assert out.min() >= 0 and out.max() <= 1 and out.std() > 0


@pytest.mark.parametrize("arch_preset, expected", [
    ("tiny", {"axial": 2 * N, "coronal": 2 * N, "sagittal": 2 * N}),
    ("x2ct-baseline@tiny", {"volume": 2}),
])
def test_discriminator_shapes(arch_preset, expected):
    d = build_discriminator(gan_preset(arch_preset).discriminator)
    scores = d(torch.rand(2, 1, N, N, N), _pair())
    assert {k: v.shape[0] for k, v in scores.items()} == expected
    assert all(v.shape[1] == 1 and v[0, 0].numel() > 1 for v in scores.values())  # a patch map, not a scalar


def _assert_gradients_reach(module: torch.nn.Module) -> None:
    """Every parameter gets a finite gradient; every weight (ndim > 1) a non-zero one.

    Biases of convolutions followed by a non-affine instance norm are removed by the norm's mean subtraction,
    so their gradient is (numerically) zero by construction and only checked for existence.
    """
    for name, p in module.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
        if p.ndim > 1 or name.endswith("gate"):
            assert p.grad.abs().sum() > 0, f"{name} got a zero gradient"


@pytest.mark.parametrize("arch_preset", ["tiny", "x2ct-baseline@tiny"])
def test_gradient_reaches_every_generator_parameter(arch_preset):
    torch.manual_seed(0)
    g = build_generator(gan_preset(arch_preset).generator)
    for name, p in g.named_parameters():
        if name.endswith("gate"):  # attention gates start at 0 (identity); open them so q/k/v get gradients
            p.data.fill_(0.5)
    outputs = g.forward_views(_pair()) if hasattr(g, "forward_views") else (g(_pair()),)
    sum((o - 0.3).square().mean() for o in outputs).backward()
    _assert_gradients_reach(g)


@pytest.mark.parametrize("arch_preset", ["tiny", "x2ct-baseline@tiny"])
def test_gradient_reaches_every_discriminator_parameter(arch_preset):
    d = build_discriminator(gan_preset(arch_preset).discriminator)
    volume = torch.rand(2, 1, N, N, N, requires_grad=True)
    sum(s.square().mean() for s in d(volume, _pair()).values()).backward()
    _assert_gradients_reach(d)
    assert volume.grad.abs().sum() > 0


def test_encoder_is_shared_between_views():
    """One DenseEncoder2d, called once per forward on PA and lateral images stacked as one batch."""
    g = build_generator(gan_preset("tiny").generator).eval()
    encoders = [m for m in g.modules() if isinstance(m, DenseEncoder2d)]
    assert encoders == [g.encoder]
    calls = []
    hook = g.encoder.register_forward_hook(lambda module, args, out: calls.append(args[0].detach().clone()))
    y = _pair(batch=3)
    with torch.no_grad():
        g(y)
    hook.remove()
    assert len(calls) == 1 and calls[0].shape == (6, 1, N, N)
    assert torch.equal(calls[0][:3, 0], y[:, VIEW_PA]) and torch.equal(calls[0][3:, 0], y[:, VIEW_LAT])
    # The X2CT baseline, by contrast, has one encoder per view.
    x2ct = build_generator(gan_preset("x2ct-baseline@tiny").generator)
    assert sum(isinstance(m, DenseEncoder2d) for m in x2ct.modules()) == 2


@pytest.mark.parametrize("view, column", [(VIEW_PA, 5), (VIEW_PA, 20), (VIEW_LAT, 5), (VIEW_LAT, 20)])
def test_skip_connections_follow_each_views_projection_axis(view, column):
    """Brightening one column of the PA image changes the volume near W = column, uniformly along the A–P axis
    (H); for the lateral image near H = column, uniformly along R–L (W): connection B broadcasts each view along
    its own projection axis (docs/conventions.md)."""
    torch.manual_seed(0)
    g = build_generator(gan_preset("tiny").generator).eval()
    y = _pair(batch=1)
    bright = y.clone()
    bright[0, view, :, column] += 1.0
    with torch.no_grad():
        delta = (g(bright) - g(y)).abs()[0, 0]  # (D, H, W)
    own, other = (2, 1) if view == VIEW_PA else (1, 2)
    along_own = delta.mean(dim=tuple(a for a in (0, 1, 2) if a != own))
    along_other = delta.mean(dim=tuple(a for a in (0, 1, 2) if a != other))
    assert abs(int(along_own.argmax()) - column) <= 3
    assert along_own.max() / along_own.median() > 2.0  # a localised ridge across the column…
    assert along_other.max() / along_other.median() < 1.3  # …spread evenly along the beam


# ---------------------------------------------------------------------------------------------- losses
def test_project_planes_are_axis_means():
    volume = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(1, 1, 2 * 3, 4, 5)[:, :, :6]
    planes = project_planes(volume)
    assert planes["axial"].shape == (1, 1, 4, 5) and planes["coronal"].shape == (1, 1, 6, 5)
    assert planes["sagittal"].shape == (1, 1, 6, 4)
    assert planes["coronal"][0, 0, 2, 3] == volume[0, 0, 2, :, 3].mean()


def test_recon_and_projection_terms_equal_hand_computed_values():
    fake = torch.zeros(1, 1, 2, 2, 2)
    real = torch.zeros(1, 1, 2, 2, 2)
    real[0, 0, 0, 0, 0] = 1.0  # one voxel differs by 1
    config = LossConfig(adversarial=False, contrastive=False, dual_branch=False)
    total, terms = MultiPathLoss(config).generator_loss(fake, real, None)
    assert terms["recon"] == pytest.approx(1 / 8)  # MSE: 1² over 8 voxels
    # Each plane's projection has one pixel at 1/2 among 4 pixels: L1 = 1/8 per plane, mean 1/8.
    assert terms["proj"] == pytest.approx(1 / 8)
    assert total.item() == pytest.approx(10 * 1 / 8 + 10 * 1 / 8)


def test_lsgan_terms_equal_the_formula():
    d_real = {"axial": torch.tensor([[[[0.5, 1.5]]]]), "coronal": torch.tensor([[[[1.0]]]])}
    d_fake = {"axial": torch.tensor([[[[0.2, -0.4]]]]), "coronal": torch.tensor([[[[0.0]]]])}
    loss = MultiPathLoss(LossConfig(lambda_adv=2.0, contrastive=False, dual_branch=False))
    total, terms = loss.discriminator_loss(d_real, d_fake)
    real_term = 0.5 * ((0.25 + 0.25) / 2 + 0.0) / 2  # ½ · mean over planes of mean (d − 1)²
    fake_term = 0.5 * ((0.04 + 0.16) / 2 + 0.0) / 2  # ½ · mean over planes of mean d²
    assert terms["d_real"] == pytest.approx(real_term) and terms["d_fake"] == pytest.approx(fake_term)
    assert total.item() == pytest.approx(2.0 * (real_term + fake_term))
    volume = torch.zeros(1, 1, 2, 2, 2)
    _, g_terms = loss.generator_loss(volume, volume, d_fake)
    assert g_terms["adv"] == pytest.approx(0.5 * (((0.8 ** 2 + 1.4 ** 2) / 2) + 1.0) / 2)  # eq. 9b
    assert lsgan_loss(d_real, 1.0).item() == pytest.approx(2 * real_term)


def test_perceptual_loss_matches_eq8(phi):
    a, b = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    fa, fb = phi(a), phi(b)
    by_hand = sum(((x - y) ** 2).sum(dim=(1, 2, 3)) / x[0].numel() for x, y in zip(fa, fb)).mean()
    assert perceptual_loss(phi, a, b).item() == pytest.approx(by_hand.item(), rel=1e-4)
    assert perceptual_loss(phi, a, a.clone()).item() == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("metric", ["perceptual", "l1"])
def test_contrastive_term_is_zero_for_identical_branches_and_positive_otherwise(phi, metric):
    loss = MultiPathLoss(LossConfig(contrastive_metric=metric), phi)
    a = torch.rand(1, 1, N, N, N)
    assert loss.contrastive(a, a.clone()).item() == pytest.approx(0.0, abs=1e-8)
    assert loss.contrastive(a, torch.rand(1, 1, N, N, N)).item() > 0


def test_generator_loss_requires_what_its_config_uses(phi):
    volume = torch.rand(1, 1, 4, 4, 4)
    with pytest.raises(ValueError, match="fake_x"):
        MultiPathLoss(LossConfig(adversarial=False), phi).generator_loss(volume, volume, None)
    with pytest.raises(ValueError, match="perceptual"):
        MultiPathLoss(LossConfig(), None)


@pytest.mark.parametrize("name", ABLATIONS)
def test_each_ablation_builds_and_trains_one_step(name, phi):
    torch.manual_seed(0)
    preset = gan_preset(f"{name}@tiny")
    g_y = build_generator(preset.generator)
    g_x = build_generator(preset.generator) if preset.loss.dual_branch else None
    d = build_discriminator(preset.discriminator)
    loss = MultiPathLoss(preset.loss, phi if preset.loss.uses_perceptual else None)
    y, ct = _pair(batch=1), torch.rand(1, 1, N, N, N)
    fake_y = g_y(y)
    fake_x = g_x(_pair(batch=1, seed=1)) if g_x is not None else None
    total, terms = loss.generator_loss(fake_y, ct, d(fake_y, y), fake_x)
    total.backward()
    expected = {"adv", "recon", "proj", "total"} | ({"contrastive"} if preset.loss.contrastive else set())
    assert set(terms) == expected and all(math.isfinite(v) and v > 0 for v in terms.values())
    assert (g_x is not None) == ("contrastive" in terms)
    if g_x is not None:  # the contrastive term trains G(X) too
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in g_x.parameters())
    d_loss, d_terms = loss.discriminator_loss(d(ct, y), d(fake_y.detach(), y))
    d_loss.backward()
    assert d_terms["d_total"] > 0


def test_tiny_gan_overfits_one_phantom_case():
    """40 steps of the single-branch tiny GAN (adversarial + recon + projection) on one 32³ phantom:
    PSNR rises from ~8 dB to > 17 dB and the reconstruction MSE falls at least 8-fold (measured: 8 → ~19 dB)."""
    from DCTNetLib.conventions import hu_to_unit
    from DCTNetLib.data.drr import DRRGeometry, make_drrs
    from DCTNetLib.data.phantom import chest_phantom

    torch.manual_seed(0)
    ct = torch.from_numpy(hu_to_unit(chest_phantom(N))).float()[None, None]
    y = make_drrs(ct, spacing_mm=320 / N, geometry=DRRGeometry(image_size=N))
    preset = gan_preset("ablation-no-dual-branch@tiny")
    g, d = build_generator(preset.generator), build_discriminator(preset.discriminator)
    loss = MultiPathLoss(preset.loss)
    # lr 2e-3 (10× the paper's 2e-4) so a one-sample overfit shows within a CI-friendly number of steps.
    opt_g = torch.optim.Adam(g.parameters(), 2e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), 2e-3, betas=(0.5, 0.999))

    def psnr() -> float:
        g.eval()
        with torch.no_grad():
            mse = F.mse_loss(g(y), ct).item()
        g.train()
        return 10 * math.log10(1 / mse)

    before = psnr()
    recon = []
    for _ in range(40):
        fake = g(y)
        opt_d.zero_grad()
        loss.discriminator_loss(d(ct, y), d(fake.detach(), y))[0].backward()
        opt_d.step()
        opt_g.zero_grad()
        total, terms = loss.generator_loss(fake, ct, d(fake, y))
        total.backward()
        opt_g.step()
        recon.append(terms["recon"])
    after = psnr()
    assert after > 17.0 and after - before > 8.0, (before, after)
    assert recon[0] / min(recon[-5:]) > 8.0, recon


# ---------------------------------------------------------------------------------------------- dctnet info
def test_info_command_prints_a_table_ending_in_total(capsys):
    from DCTNetLib.cli import main

    assert main(["info", "--preset", "full"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].lstrip().startswith("total") and "paper: 60.70 M" in lines[-1]
    assert any("G(X)" in line for line in lines) and any("CDM" in line for line in lines)
    assert main(["info", "--preset", "x2ct-baseline@tiny", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["config"]["generator"]["arch"] == "x2ct" and data["total"] > 0
    assert "torch" in data["machine"] and "cuda_available" in data["machine"]
    assert main(["info", "--preset", "bogus"]) == 2


def test_discriminator_slice_subset_only_in_training_and_drawn_from_the_volume():
    preset = gan_preset("tiny", slices_per_plane=5)
    d = build_discriminator(preset.discriminator)
    volume, radiographs = torch.rand(1, 1, 32, 32, 32), torch.rand(1, 2, 32, 32)
    d.train()
    torch.manual_seed(0)
    with torch.no_grad():
        subset = d(volume, radiographs)
    assert all(scores.shape[0] == 5 for scores in subset.values())
    d.eval()
    with torch.no_grad():
        full = d(volume, radiographs)
    assert all(scores.shape[0] == 32 for scores in full.values())
    # every drawn slice's score equals the score of some slice of the full pass (eval and train share the weights
    # and instance norm has no running statistics), so the subset is a sample of eq. 7's terms, not a new quantity
    for plane, scores in subset.items():
        distances = (scores.flatten(1)[:, None] - full[plane].flatten(1)[None]).abs().amax(-1)
        assert float(distances.min(1).values.max()) < 1e-5, plane


# ---------------------------------------------------------------------------------------------- small recipe
def test_deconv_head_generator_never_holds_a_full_resolution_feature_map():
    """head='deconv' (the small preset): the finest level is a 2×2×2 transposed conv straight to the volume."""
    torch.manual_seed(0)
    g = build_generator(gan_preset("tiny", generator=dict(decoder_channels=(16, 16, 8, 1), head="deconv",
                                                          output_init=0.2)).generator).eval()
    widest: list[int] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: widest.append(out.shape[-1]))
             for m in g.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.InstanceNorm3d))]
    with torch.no_grad():
        out = g(_pair())
    for hook in hooks:
        hook.remove()
    assert out.shape == (2, 1, N, N, N) and 0 < out.min() and out.max() < 1
    assert max(widest) == N // 2  # every 3D conv / norm runs at half resolution or coarser
    assert isinstance(g.head[0], torch.nn.ConvTranspose3d) and g.head[0].kernel_size == (2, 2, 2)
    # output_init sets the starting level: the head's bias is logit(0.2)
    assert torch.sigmoid(g.head[0].bias).item() == pytest.approx(0.2)


def test_binomial_smoothing_removes_the_voxel_to_voxel_pattern_and_keeps_ramps():
    """[1, 2, 1] / 4 per axis: a pattern alternating from voxel to voxel (what a 2×2×2 stride-2 head leaves)
    vanishes inside the volume, a linear ramp and a constant pass unchanged, the output stays in the input's range,
    and the filter equals SciPy's ``convolve1d`` with replicated edges along each axis."""
    from scipy import ndimage

    from DCTNetLib.models.blocks import BinomialSmoothing3d

    smooth = BinomialSmoothing3d()
    i, j, k = torch.meshgrid(*(torch.arange(n) for n in (8, 10, 12)), indexing="ij")
    alternating = ((-1.0) ** (i + j + k))[None, None]
    assert smooth(alternating)[..., 1:-1, 1:-1, 1:-1].abs().max() < 1e-6
    ramp = (0.1 * i + 0.05 * j - 0.02 * k).float()[None, None]
    torch.testing.assert_close(smooth(ramp)[..., 1:-1, 1:-1, 1:-1], ramp[..., 1:-1, 1:-1, 1:-1])
    torch.testing.assert_close(smooth(torch.full((1, 1, 5, 6, 7), 0.3)), torch.full((1, 1, 5, 6, 7), 0.3))
    volume = torch.rand(2, 3, 9, 8, 7, generator=torch.Generator().manual_seed(0))
    out = smooth(volume)
    assert out.min() >= volume.min() and out.max() <= volume.max()
    reference = volume.numpy()
    for axis in (2, 3, 4):
        reference = ndimage.convolve1d(reference, [0.25, 0.5, 0.25], axis=axis, mode="nearest")
    torch.testing.assert_close(out, torch.from_numpy(reference))
    assert list(smooth.state_dict()) == []  # no weights: switching it on keeps a generator's state dict


def test_output_smoothing_filters_the_same_generator_output():
    """output_smoothing=True is the same generator (same weights, same state-dict keys) followed by the filter."""
    from DCTNetLib.models.blocks import BinomialSmoothing3d

    torch.manual_seed(0)
    plain = build_generator(gan_preset("tiny", generator=dict(decoder_channels=(16, 16, 8, 1), head="deconv",
                                                              output_init=0.2)).generator).eval()
    smoothed = build_generator(gan_preset("tiny", generator=dict(decoder_channels=(16, 16, 8, 1), head="deconv",
                                                                 output_init=0.2, output_smoothing=True)).generator)
    smoothed.load_state_dict(plain.state_dict(), strict=True)
    with torch.no_grad():
        x = _pair()
        torch.testing.assert_close(smoothed.eval()(x), BinomialSmoothing3d()(plain(x)))
        assert not torch.equal(smoothed(x), plain(x))
    assert gan_preset("small").generator.output_smoothing and not gan_preset("full").generator.output_smoothing


@pytest.mark.parametrize("overrides, match", [
    (dict(decoder_channels=(16, 16, 8, 4), head="deconv"), "decoder_channels"),
    (dict(head="pixelshuffle"), "head"),
    (dict(output_init=1.5), "output_init"),
    (dict(deconv_kernels=(4, 3, 4)), "deconv_kernel"),
])
def test_generator_options_are_checked(overrides, match):
    with pytest.raises(ValueError, match=match):
        build_generator(gan_preset("tiny", generator=overrides).generator)


def test_view_skips_switch_connection_b_per_level():
    torch.manual_seed(0)
    g = build_generator(gan_preset("tiny", generator=dict(view_skips=(True, True, False))).generator)
    assert g.levels[0].skip_pa is not None and g.levels[2].skip_pa is None and g.levels[2].skip_lat is None
    assert g(_pair(1)).shape == (1, 1, N, N, N)


def test_small_preset_mixes_skips_in_3d_at_every_decoder_level():
    """The v1 small preset summed broadcast PA and lateral skips without a 3D conv at 32³–128³: its axial slices
    showed a cross-shaped grid of bands. Every level of the current small decoder has a 3×3×3 conv after them."""
    g = gan_preset("small").generator
    assert g.head == "deconv" and len(g.decoder_convs) == 5
    assert all(c >= 1 for c in g.decoder_convs[:-1])  # the last entry belongs to the level the head replaces


def test_truncated_vgg_returns_the_first_taps_of_the_full_network():
    torch.manual_seed(0)
    full = VGG16Features(random_init=True)
    short = VGG16Features(random_init=True, blocks=3)
    short.load_state_dict({k: v for k, v in full.state_dict().items() if k in short.state_dict()})
    x = torch.rand(1, 1, 32, 32)
    taps_full, taps_short = full(x), short(x)
    assert len(taps_short) == 3
    for a, b in zip(taps_short, taps_full[:3]):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError):
        VGG16Features(random_init=True, blocks=6)


def test_perceptual_size_pools_the_projections_before_phi(phi):
    a, b = torch.rand(1, 1, N, N, N), torch.rand(1, 1, N, N, N)
    pooled = MultiPathLoss(LossConfig(perceptual_size=16), phi).contrastive(a, b)
    by_hand = sum(perceptual_loss(phi, F.adaptive_avg_pool2d(p, 16), F.adaptive_avg_pool2d(q, 16))
                  for p, q in zip(project_planes(a).values(), project_planes(b).values())) / 3
    assert pooled.item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert pooled.item() != pytest.approx(MultiPathLoss(LossConfig(), phi).contrastive(a, b).item(), rel=1e-3)
    assert LossConfig(perceptual_layers=(0, 2)).perceptual_blocks == 3
    with pytest.raises(InputError):
        LossConfig(perceptual_layers=(5,))
