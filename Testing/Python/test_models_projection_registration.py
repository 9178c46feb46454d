"""Projection registration: the warp moves what it says, the fit undoes a known deformation from two DRRs alone, and
`dctnet reconstruct` / `dctnet evaluate` apply it with --refine."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from DCTNetLib.conventions import CROP_SIZE
from DCTNetLib.data.drr import make_drrs
from DCTNetLib.inference import radiographs_from_ct
from DCTNetLib.models.projection_registration import (ProjectionRegistration, RegistrationConfig, membrane_energy,
                                                      rank_matched, warp_volume)


@pytest.fixture(scope="module")
def chest_and_moved(lidc_demo_ct):
    """LIDC-IDRI-0001 at 64³ (5 mm voxels), its DRRs, and the same CT under a known smooth deformation: shifted
    7.5 mm towards the feet and 5 mm to the patient's left, plus a 10 mm antero-posterior bulge in the middle (a
    generator's guess with the anatomy in the wrong place)."""
    prepared = radiographs_from_ct(lidc_demo_ct)[0]
    truth = F.avg_pool3d(torch.from_numpy(prepared.volume)[None, None].float(), 2)
    radiographs = make_drrs(truth, CROP_SIZE / 64)
    field = torch.zeros(1, 3, 5, 5, 5)
    field[:, 0] = 7.5
    field[:, 2] = 5.0
    field[:, 1, 2, 2, 2] = 10.0
    return truth, radiographs, warp_volume(truth, field)


def _distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b) ** 2).mean().sqrt())


def test_warp_is_the_identity_at_zero_and_a_shift_for_a_constant_field():
    torch.manual_seed(0)
    volume = torch.rand(1, 1, 16, 16, 16)
    assert torch.allclose(warp_volume(volume, torch.zeros(1, 3, 4, 4, 4)), volume, atol=1e-5)
    # one voxel of a 16³ cube spanning 320 mm is 20 mm: the value at x comes from x + 20 mm along the axis
    for axis in range(3):
        field = torch.zeros(1, 3, 4, 4, 4)
        field[:, axis] = 20.0
        moved = warp_volume(volume, field)
        inner = [slice(None)] * 5
        inner[2 + axis] = slice(0, 15)
        shifted = [slice(None)] * 5
        shifted[2 + axis] = slice(1, 16)
        assert torch.allclose(moved[tuple(inner)], volume[tuple(shifted)], atol=1e-5)


def test_membrane_energy_is_zero_for_a_translation_and_grows_with_roughness():
    constant = torch.full((1, 3, 4, 4, 4), 3.0)
    assert float(membrane_energy(constant)) == 0.0
    rough = constant.clone()
    rough[0, 1, 1, 1, 1] = 5.0
    assert float(membrane_energy(rough)) > 0.0


def test_rank_matching_keeps_the_order_and_takes_the_references_values():
    torch.manual_seed(0)
    images = torch.rand(1, 2, 8, 8) ** 3  # a non-linear "display curve" of the reference's order
    reference = torch.rand(1, 2, 8, 8)
    matched = rank_matched(images, reference)
    assert torch.equal(matched.flatten(2).sort(-1).values, reference.flatten(2).sort(-1).values)
    assert torch.equal(matched.flatten(2).argsort(-1), images.flatten(2).argsort(-1))


def test_fit_undoes_a_known_deformation_from_the_two_drrs_alone(chest_and_moved):
    """The moved CT registered to the true CT's DRRs comes back towards the true CT in 3D, not just in its DRRs.
    Measured: RMS distance 0.071 → 0.017, DRR error 0.035 → 0.004 (mean absolute)."""
    truth, radiographs, moved = chest_and_moved
    register = ProjectionRegistration(RegistrationConfig(iterations=40, control_points=5, fit_size=0))
    with torch.inference_mode():  # as the Reconstructor calls it
        field = register.fit(moved, radiographs)
    back = warp_volume(moved, field)
    assert field.shape == (1, 3, 5, 5, 5) and not field.requires_grad
    drr_error = [float((make_drrs(v, CROP_SIZE / 64) - radiographs).abs().mean()) for v in (moved, back)]
    assert drr_error[1] < 0.3 * drr_error[0]
    assert _distance(back, truth) < 0.6 * _distance(moved, truth)


def test_value_matching_makes_the_fit_indifferent_to_a_display_curve(chest_and_moved):
    """A film's radiographs are a monotone, non-linear function of the line integrals: with ``match_values`` the
    fit on gamma-0.5 radiographs still brings the CT back, while the plain fit distorts it to imitate the curve.
    Measured: RMS distance 0.071 → 0.019 matched, → 0.110 plain."""
    truth, radiographs, moved = chest_and_moved
    film_like = radiographs.clamp_min(0) ** 0.5
    fits = {}
    for match in (False, True):
        register = ProjectionRegistration(RegistrationConfig(iterations=40, control_points=5, fit_size=0,
                                                             match_values=match))
        fits[match] = _distance(warp_volume(moved, register.fit(moved, film_like)), truth)
    assert fits[True] < 0.5 * _distance(moved, truth)
    assert fits[False] > _distance(moved, truth)


def test_registration_off_returns_its_input_and_zero_field(chest_and_moved):
    _, radiographs, moved = chest_and_moved
    register = ProjectionRegistration(RegistrationConfig(iterations=0))
    assert register(moved, radiographs) is moved
    assert not register.fit(moved, radiographs).any()
    assert not register.applies_to(128) and ProjectionRegistration().applies_to(128)
    assert not ProjectionRegistration().applies_to(32)


@pytest.mark.parametrize("field, value, message", [("iterations", -1, "iterations"), ("control_points", 1, "control"),
                                                    ("step_mm", 0.0, "step_mm"), ("fit_size", -1, "fit_size"),
                                                    ("border_px", -2, "border_px")])
def test_config_refuses_meaningless_settings(field, value, message):
    with pytest.raises(ValueError, match=message):
        RegistrationConfig(**{field: value})


def test_fit_refuses_wrong_shapes():
    with pytest.raises(ValueError, match="radiographs"):
        ProjectionRegistration().fit(torch.zeros(1, 1, 8, 8, 8), torch.zeros(1, 1, 128, 128))
