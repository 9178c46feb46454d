"""The bone terms of the multi-path loss (``LossConfig.bone_weight``, ``lambda_bone_proj``): off they change
nothing, on they weigh the ground truth's bone voxels and the projection of the bone component, and they push a
soft-tissue guess towards bone where the ground truth has it (the reason they exist)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from DCTNetLib.conventions import hu_to_unit
from DCTNetLib.models.losses import BONE_RAMP_UNIT, MultiPathLoss, bone_component
from DCTNetLib.models.presets import LossConfig, gan_preset

pytestmark = pytest.mark.usefixtures("one_thread")

SOFT, BONE = float(hu_to_unit(np.float64(40.0))), float(hu_to_unit(np.float64(700.0)))


def volumes():
    """A soft-tissue cube with a bony rod in the ground truth, and a guess without the rod."""
    real = torch.full((1, 1, 16, 16, 16), SOFT)
    real[..., 4:12, 7:9, 7:9] = BONE
    guess = torch.full_like(real, SOFT)
    return guess, real


def loss(**fields) -> MultiPathLoss:
    config = LossConfig(adversarial=False, contrastive=False, dual_branch=False, **fields)
    return MultiPathLoss(config)


def test_defaults_are_the_papers_plain_terms():
    guess, real = volumes()
    cfg = gan_preset("small").loss
    assert cfg.bone_weight == 0 and cfg.lambda_bone_proj == 0
    total, terms = loss().generator_loss(guess, real, None)
    assert set(terms) == {"recon", "proj", "total"}
    assert terms["recon"] == pytest.approx(float(F.mse_loss(guess, real)))


def test_bone_weight_multiplies_the_error_on_bone_voxels_only():
    guess, real = volumes()
    plain = loss().reconstruction(guess, real)
    weighted = loss(bone_weight=15.0).reconstruction(guess, real)
    assert float(weighted) == pytest.approx(16.0 * float(plain), rel=1e-5)  # every error here sits on bone
    off_bone = real.clone()
    off_bone[..., 0, 0, 0] = SOFT + 0.02  # an error on a soft-tissue voxel (+50 HU) counts once
    assert float(loss(bone_weight=15.0).reconstruction(real, off_bone)) == pytest.approx(
        float(F.mse_loss(real, off_bone)), rel=1e-5)


def test_bone_component_has_a_gradient_below_the_threshold():
    t = float(hu_to_unit(np.float64(200.0)))
    values = torch.tensor([SOFT, t - BONE_RAMP_UNIT, t, BONE], requires_grad=True)
    component = bone_component(values, t)
    component.sum().backward()
    assert float(component[-1]) == pytest.approx(BONE - t, abs=1e-4)  # well above: the bone's excess
    assert float(component[0]) < 1e-3  # soft tissue carries (almost) none
    assert bool((values.grad > 0).all())  # but still a gradient, so a missing bone can grow


def test_bone_projection_term_is_logged_zero_for_a_perfect_output_and_pulls_towards_bone():
    guess, real = volumes()
    criterion = loss(lambda_bone_proj=100.0)
    _, perfect = criterion.generator_loss(real.clone(), real, None)
    assert perfect["bone"] == pytest.approx(0.0, abs=1e-7)
    guess.requires_grad_(True)
    total, terms = criterion.generator_loss(guess, real, None)
    assert terms["bone"] > 0
    total.backward()
    rod = guess.grad[..., 4:12, 7:9, 7:9]
    # the descent direction (−grad) raises the rod's voxels more with the bone terms than without
    plain = guess.detach().clone().requires_grad_(True)
    loss().generator_loss(plain, real, None)[0].backward()
    assert float(-rod.mean()) > float(-plain.grad[..., 4:12, 7:9, 7:9].mean()) > 0


def test_negative_bone_weights_are_refused():
    from DCTNetLib.errors import InputError

    with pytest.raises(InputError, match="bone_weight"):
        LossConfig(bone_weight=-1.0)
    with pytest.raises(InputError, match="lambda_bone_proj"):
        LossConfig(lambda_bone_proj=-1.0)


# ---------------------------------------------------------------------------------------------- soft bone Dice
def test_soft_dice_ranks_outputs_by_their_bone_overlap_and_pulls_the_rod_up():
    from DCTNetLib.models.losses import soft_bone_dice_loss

    guess, real = volumes()
    t = float(hu_to_unit(np.float64(300.0)))
    clean = torch.where(real > t, real, torch.zeros_like(real))  # no soft tissue near the threshold
    assert float(soft_bone_dice_loss(clean, real, t)) == pytest.approx(0.0, abs=1e-3)
    # 40 HU soft tissue is 5 ramps below 300 HU: 4,064 voxels at sigmoid(−5.2) ≈ 0.0055 count as ~22 bone voxels
    # beside the rod's 32, so the perfect output keeps a floor; every imperfect output scores worse
    perfect = float(soft_bone_dice_loss(real, real, t))
    half = guess.clone()
    half[..., 4:8, 7:9, 7:9] = BONE  # half the rod found
    shifted = torch.roll(real, shifts=2, dims=-1)  # the rod moved by its own width: no overlap
    losses = [perfect, float(soft_bone_dice_loss(half, real, t)), float(soft_bone_dice_loss(guess, real, t)),
              float(soft_bone_dice_loss(shifted, real, t))]
    # bone in the wrong place scores worse than none (it adds to the denominator and overlaps nothing)
    assert losses == sorted(losses) and losses[0] < 0.3 < losses[1] < 0.6 < losses[2] < losses[3]
    assert losses[2] == pytest.approx(1.0, abs=0.01)
    # its gradient on a guess just below the threshold raises the rod, and only the rod
    near = torch.full_like(real, t - BONE_RAMP_UNIT).requires_grad_(True)
    soft_bone_dice_loss(near, real, t).backward()
    assert float(-near.grad[..., 4:12, 7:9, 7:9].min()) > 0
    assert float(-near.grad.flatten()[0]) < 0  # a soft-tissue voxel is pushed down


def test_soft_dice_term_is_logged_per_branch_at_the_evaluation_threshold():
    from DCTNetLib.evaluation.metrics import BONE_HU

    guess, real = volumes()
    assert LossConfig().bone_dice_threshold_hu == BONE_HU  # ℓ_dice trains the Dice that `dctnet evaluate` reports
    criterion = loss(lambda_bone_dice=1.0)
    _, terms = criterion.generator_loss(guess, real, None)
    assert terms["dice"] == pytest.approx(1.0, abs=0.01)
    names = [name for name, _, _ in criterion.voxel_terms(guess, real, suffix="_x")]
    assert "dice_x" in names
    assert "dice" not in loss().generator_loss(guess, real, None)[1]  # off by default
    from DCTNetLib.errors import InputError

    with pytest.raises(InputError, match="lambda_bone_dice"):
        LossConfig(lambda_bone_dice=-1.0)
