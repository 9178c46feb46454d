"""Atlas prior: the shipped bank loads only as written, the prior picks and registers the atlas that matches the
radiographs, keeps the reconstruction's bone, and `--refine --atlas` is what the command runs."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from DCTNetLib.conventions import CROP_SIZE, hu_to_unit
from DCTNetLib.data.drr import make_drrs
from DCTNetLib.errors import WeightsError
from DCTNetLib.inference import radiographs_from_ct
from DCTNetLib.io.atlas_bank import default_atlas_bank_path, load_atlas_bank
from DCTNetLib.models.atlas_prior import AtlasPrior, AtlasPriorConfig
from DCTNetLib.models.projection_registration import RegistrationConfig, warp_volume


def test_the_shipped_bank_holds_seven_cc_by_training_chests():
    bank = load_atlas_bank()
    assert bank.volumes.shape == (7, 128, 128, 128) and bank.volumes.dtype == np.float32
    assert 0.0 <= bank.volumes.min() and bank.volumes.max() <= 1.0
    assert all(source["licence"].startswith("CC BY ") for source in bank.sources)
    assert [source["name"] for source in bank.sources] == list(bank.names)
    held_out = {"lidc_idri_0001", "lidc_idri_0350", "lidc_idri_0580", "tcga_lihc_tcga_bc_a3kf",
                "totalsegmentator_aorta_ct", "lctsc_test_s1_101", "lung_dx_a0001"}  # validation and test CTs
    assert not held_out & set(bank.names)


def test_a_tampered_or_incomplete_bank_is_refused_with_its_reason(tmp_path):
    shipped = default_atlas_bank_path()
    bank = tmp_path / "bank.npz"
    shutil.copy(shipped, bank)
    with pytest.raises(WeightsError, match="not found"):
        load_atlas_bank(bank)  # no JSON beside it
    shutil.copy(shipped.with_suffix(".json"), bank.with_suffix(".json"))
    data = bytearray(bank.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bank.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        load_atlas_bank(bank)
    description = json.loads(bank.with_suffix(".json").read_text())
    del description["sha256"]
    bank.with_suffix(".json").write_text(json.dumps(description))
    with pytest.raises(WeightsError, match="no sha256"):
        load_atlas_bank(bank)


def test_the_bank_is_read_once_while_its_files_are_unchanged(tmp_path):
    """A worker reconstructing case after case decompresses the bank once (about 1 s); a changed file is read and
    checked again."""
    shipped = default_atlas_bank_path()
    bank = tmp_path / "bank.npz"
    shutil.copy(shipped, bank)
    shutil.copy(shipped.with_suffix(".json"), bank.with_suffix(".json"))
    first = load_atlas_bank(bank)
    assert load_atlas_bank(bank) is first
    data = bytearray(bank.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bank.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        load_atlas_bank(bank)


def _fast() -> AtlasPriorConfig:
    return AtlasPriorConfig(top_k=1, coarse=RegistrationConfig(iterations=20, control_points=4, smoothness=0.0,
                                                                 fit_size=0),
                            fine=RegistrationConfig(iterations=20, control_points=5, fit_size=0))


def test_the_prior_chooses_and_registers_the_atlas_that_explains_the_radiographs(lidc_demo_ct):
    """Two atlases at 64³: LIDC-IDRI-0001 shifted 10 mm towards the feet and 7.5 mm to the left, and the same CT
    mirrored front to back. Given the unshifted CT's DRRs, the best atlas must be the shifted one, and registered
    it comes back towards the CT. Measured: RMS distance 0.087 → 0.033 (the mirrored atlas: 0.170)."""
    prepared = radiographs_from_ct(lidc_demo_ct)[0]
    truth = F.avg_pool3d(torch.from_numpy(prepared.volume)[None, None].float(), 2)
    radiographs = make_drrs(truth, CROP_SIZE / 64)
    shift = torch.zeros(1, 3, 2, 2, 2)
    shift[:, 0], shift[:, 2] = 10.0, 7.5
    shifted = warp_volume(truth, shift)
    mirrored = truth.flip(3)
    prior = AtlasPrior(torch.cat([mirrored, shifted])[:, 0], _fast())
    with torch.inference_mode():
        mean, chosen = prior.registered_mean(truth, radiographs)
    assert chosen == [1]
    distance = [float(((v - truth) ** 2).mean().sqrt()) for v in (shifted, mean)]
    assert distance[1] < 0.5 * distance[0]


def test_mixing_keeps_the_reconstructions_bone():
    bone = float(hu_to_unit(torch.tensor(400.0)))
    soft = float(hu_to_unit(torch.tensor(0.0)))
    ct = torch.full((1, 1, 4, 4, 4), soft)
    ct[..., 0, 0, 0] = bone
    atlas_mean = torch.full((1, 1, 4, 4, 4), float(hu_to_unit(torch.tensor(-200.0))))
    mixed = AtlasPrior(torch.zeros(1, 4, 4, 4), AtlasPriorConfig(weight=0.5)).mix(ct, atlas_mean)
    assert mixed[..., 0, 0, 0].item() == pytest.approx(bone)  # bone kept
    assert mixed[..., 1, 1, 1].item() == pytest.approx(0.5 * soft + 0.5 * float(atlas_mean[..., 1, 1, 1]))


@pytest.mark.parametrize("field, value, message", [("top_k", 0, "top_k"), ("weight", 1.5, "weight")])
def test_config_refuses_meaningless_settings(field, value, message):
    with pytest.raises(ValueError, match=message):
        AtlasPriorConfig(**{field: value})


def test_the_command_asks_for_refine_with_the_atlas(tmp_path, capsys):
    from DCTNetLib import cli

    code = cli.main(["reconstruct", "--pa", "a.png", "--lat", "b.png", "--output", str(tmp_path / "ct.nii.gz"),
                     "--atlas"])
    assert code == 2 and "add --refine" in capsys.readouterr().err


def test_reconstructor_with_the_atlas_prior_beats_the_refinement_without_it(lidc_demo_ct):
    """The shipped model on the validation CT's DRRs (one DDIM step): the atlas prior adds to the registration and
    SIRT (measured: PSNR 20.85 → 21.35 dB, SSIM 0.522 → 0.545), and the report names it."""
    from DCTNetLib.evaluation.metrics import psnr, ssim3plane
    from DCTNetLib.inference import Reconstructor
    from DCTNetLib.models.projection_refinement import RefinementConfig

    prepared, pa, lat = radiographs_from_ct(lidc_demo_ct)
    scores = {}
    for name, config in (("refined", RefinementConfig()), ("atlas", RefinementConfig(atlas=AtlasPriorConfig()))):
        model = Reconstructor.load(device="cpu", refinement=config)
        result = model.reconstruct(pa, lat, geometry=prepared, steps=1)
        scores[name] = (psnr(result.ct_unit, prepared.volume), ssim3plane(result.ct_unit, prepared.volume)["mean"])
        assert ("atlas prior" in model.refinement_steps) == (name == "atlas")
    assert scores["atlas"][0] > scores["refined"][0] + 0.25
    assert scores["atlas"][1] > scores["refined"][1] + 0.01


def _still(top_k: int, average: str) -> AtlasPriorConfig:
    """No registration at all: the atlases are ranked and combined as they are."""
    off = RegistrationConfig(iterations=0)
    return AtlasPriorConfig(top_k=top_k, average=average, coarse=off, fine=off)


def test_the_median_keeps_an_edge_most_atlases_agree_on_where_the_mean_blurs_it():
    """Three 16³ atlases, two with a dense slab's edge at plane 8 and one with it at plane 11: the median puts the
    edge where two of three put it, at full contrast; the mean leaves a third of a step at planes 8–10."""
    low, high = float(hu_to_unit(torch.tensor(-800.0))), float(hu_to_unit(torch.tensor(40.0)))
    atlases = torch.full((3, 16, 16, 16), low)
    atlases[0, 8:], atlases[1, 8:], atlases[2, 11:] = high, high, high
    radiographs = make_drrs(atlases[:1, None], CROP_SIZE / 16)
    for average in ("median", "mean"):
        prior = AtlasPrior(atlases, _still(3, average))
        combined, chosen = prior.registered_mean(atlases[:1, None], radiographs)
        assert sorted(chosen) == [0, 1, 2]
        if average == "median":
            assert torch.allclose(combined[0, 0], atlases[0], atol=1e-5)  # zero fields resample to within rounding
        else:
            assert combined[0, 0, 9, 0, 0].item() == pytest.approx(low + 2 * (high - low) / 3, abs=1e-6)


def test_film_robust_ranking_sees_through_shutters_and_a_display_curve(lidc_demo_ct):
    """The radiographs are the CT's own DRRs through a gamma curve, with black shutter bands on two sides. The
    plain data term says the CT explains them worse than a copy shifted by 10 mm; the film-robust one (the
    default prior's) ranks the CT first, with a mismatch near zero (a monotone curve keeps every rank)."""
    prepared = radiographs_from_ct(lidc_demo_ct)[0]
    truth = F.avg_pool3d(torch.from_numpy(prepared.volume)[None, None].float(), 2)
    shift = torch.zeros(1, 3, 2, 2, 2)
    shift[:, 0], shift[:, 2] = 10.0, 10.0
    shifted = warp_volume(truth, shift)
    film = make_drrs(truth, CROP_SIZE / 64) ** 0.4
    film[..., :, :20] = 0.0
    film[..., :14, :] = 0.0
    robust = AtlasPrior(torch.cat([shifted, truth])[:, 0], AtlasPriorConfig.film_robust())
    plain = AtlasPrior(torch.cat([shifted, truth])[:, 0], AtlasPriorConfig())
    errors = {name: [float(prior.fine.mismatch(volume, film)[0]) for volume in (shifted, truth)]
              for name, prior in (("robust", robust), ("plain", plain))}
    assert errors["plain"][1] > errors["plain"][0]  # the plain term prefers the wrong volume
    assert errors["robust"][1] < 1e-4 < errors["robust"][0]


def test_the_default_prior_is_the_film_robust_aligned_median():
    config = AtlasPriorConfig.film_robust()
    assert (config.average, config.top_k, config.weight) == ("median", 5, 0.45)
    assert (config.align_iterations, config.similarity_hu, config.edge_gate) == (60, 300.0, True)
    assert not AtlasPriorConfig().edge_gate  # --refine --atlas keeps its own, measured settings
    assert config.coarse.film_mask and config.coarse.match_values and config.coarse.rigidity == 0
    assert config.fine == dataclasses.replace(RegistrationConfig.film_robust(), fit_size=32, iterations=40)
    assert (config.coarse.iterations, config.coarse.control_points, config.coarse.fit_size) == (30, 4, 32)
    assert AtlasPriorConfig().coarse.iterations == 60 and AtlasPriorConfig().fine.iterations == 80  # --refine --atlas
    for field, value in (("average", "mode"), ("align_iterations", -1), ("similarity_hu", -1.0)):
        with pytest.raises(ValueError, match=field):
            AtlasPriorConfig(**{field: value})


def test_alignment_moves_the_atlas_onto_the_reconstruction(lidc_demo_ct):
    """The validation CT at 64³ and a copy shifted by 10 mm along two axes: aligned, the copy comes back onto the
    CT (measured: RMS difference 0.117 → 0.010)."""
    from DCTNetLib.models.atlas_prior import align_volume

    prepared = radiographs_from_ct(lidc_demo_ct)[0]
    truth = F.avg_pool3d(torch.from_numpy(prepared.volume)[None, None].float(), 2)
    shift = torch.zeros(1, 3, 2, 2, 2)
    shift[:, 0], shift[:, 1] = 10.0, -10.0
    shifted = warp_volume(truth, shift)
    with torch.inference_mode():
        aligned = align_volume(shifted, truth, fit_size=32)
    before, after = (float(((v - truth) ** 2).mean().sqrt()) for v in (shifted, aligned))
    assert after < 0.5 * before, (before, after)


def test_the_similarity_weight_fades_the_atlas_where_it_disagrees():
    """Soft tissue (40 HU) in the reconstruction: an atlas voxel of 100 HU is mixed in at nearly the full weight, an
    atlas voxel of lung (−800 HU) hardly at all (exp(−840² / 2·300²) = 0.02 of it), so no second outline appears."""
    unit = lambda hu: float(hu_to_unit(torch.tensor(hu)))  # noqa: E731
    ct = torch.full((1, 1, 2, 2, 2), unit(40.0))
    atlas = torch.full((1, 1, 2, 2, 2), unit(100.0))
    atlas[..., 0, 0, 0] = unit(-800.0)
    prior = AtlasPrior(torch.zeros(1, 2, 2, 2), AtlasPriorConfig(weight=0.45, similarity_hu=300.0))
    mixed = prior.mix(ct, atlas)
    near = 0.45 * np.exp(-(60.0 ** 2) / (2 * 300.0 ** 2))
    assert mixed[..., 1, 1, 1].item() == pytest.approx(near * unit(100.0) + (1 - near) * unit(40.0), abs=1e-6)
    far = 0.45 * np.exp(-(840.0 ** 2) / (2 * 300.0 ** 2))
    assert mixed[..., 0, 0, 0].item() == pytest.approx(far * unit(-800.0) + (1 - far) * unit(40.0), abs=1e-6)
    assert abs(mixed[..., 0, 0, 0].item() - unit(40.0)) < 0.01 * 840 / 2500


def test_an_atlas_outline_the_reconstruction_does_not_share_draws_no_line_with_the_edge_gate():
    """The reconstruction's lung ends at x = 8; the atlas median's lung reaches x = 13 through a two-voxel ramp
    (−850 → −575 → −300 → 0 HU), as a median of real CTs does. On the ramp, at 575 and 300 HU of disagreement, the
    similarity-weighted change peaks: a thin dark line in soft tissue (−41 and −82 HU), the faint line beside a
    lung's border on a real film. With the edge gate (the atlas steep, the reconstruction flat there) the line is
    gone (measured: 0.0 HU on the ramp), and a wide area where the atlas is 200 HU denser than the flat CT keeps its
    change away from that area's own edge (71.8 against 72.1 HU: the soft gate leaks 0.4 % where the atlas is flat)."""
    unit = lambda hu: float(hu_to_unit(torch.tensor(hu)))  # noqa: E731
    ct = torch.full((1, 1, 12, 12, 32), unit(0.0))
    ct[..., :8] = unit(-850.0)
    atlas = ct.clone()
    atlas[..., 8:13] = unit(-850.0)
    atlas[..., 13], atlas[..., 14] = unit(-575.0), unit(-300.0)
    atlas[..., 20:] = unit(200.0)  # a wide, agreeing difference
    config = AtlasPriorConfig(weight=0.45, similarity_hu=300.0)
    hu_change = {}
    for gate in (False, True):
        prior = AtlasPrior(torch.zeros(1, 2, 2, 2), dataclasses.replace(config, edge_gate=gate))
        hu_change[gate] = (prior.mix(ct, atlas) - ct)[0, 0] * 2500.0
    assert hu_change[False][:, :, 13:15].min().item() < -80.0  # the line the plain mix draws
    assert hu_change[True][:, :, 13:15].abs().max().item() < 5.0  # gone with the gate
    wide = 0.45 * np.exp(-(200.0 ** 2) / (2 * 300.0 ** 2)) * 200.0
    assert hu_change[True][2:10, 2:10, 26:30].mean().item() == pytest.approx(wide, rel=1e-2)
