"""Atlas prior: the shipped bank loads only as written, the prior picks and registers the atlas that matches the
radiographs, keeps the reconstruction's bone, and `--refine --atlas` is what the command runs."""

from __future__ import annotations

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
