"""Issue 19: the full-resolution product path (ViewProductPath) that puts what both views see where their beams
cross, and fine-tuning a model into a generator that has it (``dctnet train --init``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from DCTNetLib.errors import InputError
from DCTNetLib.models.blocks import bilinear_backprojection
from DCTNetLib.models.presets import build_generator, gan_preset


def test_backprojection_puts_a_point_seen_in_both_views_at_their_crossing():
    n = 16
    pa, lat = torch.zeros(1, 1, n, n), torch.zeros(1, 1, n, n)
    row, pa_column, lat_column = 5, 11, 3  # PA column = volume W (R→L); lateral column = volume H (A→P)
    pa[0, 0, row, pa_column] = 1.0
    lat[0, 0, row, lat_column] = 1.0
    volume = bilinear_backprojection(pa, lat)
    assert volume.shape == (1, 1, n, n, n)
    assert torch.nonzero(volume).tolist() == [[0, 0, row, lat_column, pa_column]]  # (B, C, D, H, W)
    # the additive copies (connection B) are as high along both beams as at the crossing
    summed = pa.unsqueeze(3).expand(1, 1, n, n, n) + lat.unsqueeze(4).expand(1, 1, n, n, n)
    assert int((summed > 0).sum()) == 2 * n - 1


def test_backprojection_refuses_maps_of_different_shapes():
    with pytest.raises(ValueError, match="one shape"):
        bilinear_backprojection(torch.zeros(1, 2, 8, 8), torch.zeros(1, 1, 8, 8))


def _tiny(product_channels: int):
    preset = gan_preset("tiny", generator={"product_channels": product_channels})
    return preset, build_generator(preset.generator)


def test_a_generator_given_the_path_starts_exactly_as_the_same_generator_without_it():
    torch.manual_seed(0)
    _, plain = _tiny(0)
    _, with_path = _tiny(4)
    missing, unexpected = with_path.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(key.startswith("product.") for key in missing)
    radiographs = torch.rand(2, 2, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(with_path.eval()(radiographs), plain.eval()(radiographs), rtol=0, atol=0)


def test_the_path_learns_a_thin_column_the_views_show():
    """A bright column along D at (h0, w0), seen as a line in each view: a few Adam steps on the path's maps and
    mix (the rest of the generator frozen, the path's zero start included) make the column stand out from the
    beams through it."""
    torch.manual_seed(0)
    _, generator = _tiny(4)
    n, h0, w0 = 32, 9, 21
    target = torch.full((1, 1, n, n, n), 0.2)
    target[..., h0, w0] = 0.9
    radiographs = torch.zeros(1, 2, n, n)
    radiographs[0, 0, :, w0] = 1.0  # PA column = W
    radiographs[0, 1, :, h0] = 1.0  # lateral column = H
    for parameter in generator.parameters():
        parameter.requires_grad_(False)
    trained = [*generator.product.features.parameters(), *generator.product.mix.parameters()]  # not the gate
    for parameter in trained:
        parameter.requires_grad_(True)
    optimiser = torch.optim.Adam(trained, lr=1e-2)

    def contrast() -> float:
        with torch.no_grad():
            out = generator(radiographs)[0, 0]
        beams = torch.cat([out[:, :h0, w0].flatten(), out[:, h0, :w0].flatten()])
        return float(out[:, h0, w0].mean() - beams.mean())

    before = contrast()
    column, beams = torch.zeros(n, n, dtype=torch.bool), torch.zeros(n, n, dtype=torch.bool)
    beams[h0, :], beams[:, w0] = True, True
    column[h0, w0], beams[h0, w0] = True, False
    for _ in range(50):  # the column, the beams through it and the rest weigh alike
        optimiser.zero_grad()
        error = (generator(radiographs) - target)[0, 0] ** 2
        (error[:, column].mean() + error[:, beams].mean() + error[:, ~(column | beams)].mean()).backward()
        optimiser.step()
    after = contrast()
    assert after - before > 0.2, (before, after)


def test_init_may_add_the_path_to_a_model_without_it(tiny_bundle_path):
    from DCTNetLib.commands.train import initialise_generators

    def trainer(product_channels):
        preset, g_raw = _tiny(product_channels)
        return SimpleNamespace(preset=preset, g_raw=g_raw, g_bs=build_generator(preset.generator))

    grown = trainer(4)
    initialise_generators(grown, tiny_bundle_path)  # the tiny bundle has no product path
    from DCTNetLib.checkpoints.bundle import load_model_bundle
    source = load_model_bundle(tiny_bundle_path)
    radiographs = torch.rand(1, 2, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(grown.g_raw.eval()(radiographs), source.g_raw.eval()(radiographs), rtol=0, atol=0)
        torch.testing.assert_close(grown.g_bs.eval()(radiographs), source.g_bs.eval()(radiographs), rtol=0, atol=0)
    other = trainer(0)
    other.preset = gan_preset("tiny", generator={"product_channels": 0, "fusion_rank": 8})
    with pytest.raises(InputError, match="differs"):
        initialise_generators(other, tiny_bundle_path)


def test_init_refuses_to_drop_or_resize_the_path(tmp_path):
    from conftest import make_tiny_bundle

    from DCTNetLib.checkpoints.bundle import save_model_bundle
    from DCTNetLib.commands.train import initialise_generators

    bundle = make_tiny_bundle(with_cdm=False)
    preset, bundle.g_raw = _tiny(4)
    bundle.gan_preset = preset.to_dict()
    path = save_model_bundle(bundle, tmp_path / "with_path.pt")
    for channels in (0, 2):
        run_preset, g_raw = _tiny(channels)
        with pytest.raises(InputError, match="product"):
            initialise_generators(SimpleNamespace(preset=run_preset, g_raw=g_raw, g_bs=None), path)
    run_preset, g_raw = _tiny(4)
    initialise_generators(SimpleNamespace(preset=run_preset, g_raw=g_raw, g_bs=None), path)
    torch.testing.assert_close(g_raw.state_dict()["product.mix.weight"], bundle.g_raw.state_dict()["product.mix.weight"])


def test_the_product_path_trains_in_its_own_adam_group_at_its_scaled_lr():
    from DCTNetLib.training.gan_trainer import generator_param_groups

    generators = [_tiny(4)[1], _tiny(4)[1]]
    groups = generator_param_groups(generators, product_lr=3e-3)
    rest, product = groups
    assert product["lr"] == 3e-3 and "lr" not in rest  # the rest takes the optimiser's lr
    named = [(name, p) for g in generators for name, p in g.named_parameters()]
    assert {id(p) for p in product["params"]} == {id(p) for name, p in named if name.startswith("product.")}
    assert len(rest["params"]) + len(product["params"]) == len(named)
    optimiser = torch.optim.Adam(groups, lr=1e-4)
    assert [group["lr"] for group in optimiser.param_groups] == [1e-4, 3e-3]
    assert len(generator_param_groups([_tiny(0)[1]], product_lr=3e-3)) == 1  # no path: one group, as before


def test_bone_images_have_the_views_shape_and_train_towards_a_bone_image():
    torch.manual_seed(0)
    _, generator = _tiny(4)
    radiographs = torch.rand(2, 2, 32, 32)
    bone = torch.zeros(2, 2, 32, 32)
    bone[:, :, :, 14:18] = 0.3  # a vertical band, as the spine in both views
    optimiser = torch.optim.Adam(generator.product.parameters(), lr=1e-2)
    radiographs[:, :, :, 14:18] += 0.3

    def error() -> float:
        with torch.no_grad():
            return float((generator.product.bone_images(radiographs) - bone).abs().mean())

    before = error()
    for _ in range(40):
        optimiser.zero_grad()
        (generator.product.bone_images(radiographs) - bone).abs().mean().backward()
        optimiser.step()
    assert generator.product.bone_images(radiographs).shape == (2, 2, 32, 32)
    assert error() < 0.5 * before, (before, error())


def test_the_bone_image_term_needs_a_product_path():
    from DCTNetLib.models.presets import LossConfig

    assert LossConfig(lambda_bone_image=1.0).lambda_bone_image == 1.0
    with pytest.raises(InputError, match="lambda_bone_image"):
        LossConfig(lambda_bone_image=-1.0)
