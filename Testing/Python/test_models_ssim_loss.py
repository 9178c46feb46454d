"""ℓ_ssim: the torch SSIM of the three planes against scikit-image's (what ``dctnet evaluate`` reports)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from DCTNetLib.errors import InputError
from DCTNetLib.evaluation.metrics import ssim3plane
from DCTNetLib.models.losses import MultiPathLoss, plane_ssim
from DCTNetLib.models.presets import LossConfig

pytestmark = pytest.mark.usefixtures("one_thread")

SIDE = 24


def _pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A structured unit volume and a blurred, noisy estimate of it."""
    rng = np.random.default_rng(seed)
    truth = np.clip(gaussian_filter(rng.random((SIDE, SIDE, SIDE)), 1.5) * 3 - 1, 0, 1).astype(np.float32)
    estimate = np.clip(gaussian_filter(truth, 1.0) + rng.normal(0, 0.03, truth.shape), 0, 1).astype(np.float32)
    return estimate, truth


def _volume(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array)[None, None]


def test_plane_ssim_is_the_evaluation_ssim():
    for seed in (0, 1):
        estimate, truth = _pair(seed)
        expected = ssim3plane(estimate, truth)["mean"]
        assert float(plane_ssim(_volume(estimate), _volume(truth))) == pytest.approx(expected, abs=1e-5)
    assert float(plane_ssim(_volume(truth), _volume(truth))) == pytest.approx(1.0, abs=1e-6)


def test_random_slices_estimate_the_same_mean():
    estimate, truth = _pair()
    full = float(plane_ssim(_volume(estimate), _volume(truth)))
    torch.manual_seed(0)
    draws = [float(plane_ssim(_volume(estimate), _volume(truth), slices=4)) for _ in range(200)]
    assert np.std(draws) > 0  # the slices do change
    assert np.mean(draws) == pytest.approx(full, abs=3 * np.std(draws) / np.sqrt(len(draws)) + 1e-4)


def test_the_ssim_term_raises_ssim_when_switched_on():
    estimate, truth = _pair()
    assert "ssim" not in [name for name, _, _ in MultiPathLoss(LossConfig(contrastive=False)).voxel_terms(
        _volume(estimate), _volume(truth))]
    loss = MultiPathLoss(LossConfig(contrastive=False, lambda_ssim=1.0, ssim_slices=0, reconstruction=False,
                                    projection=False))
    fake = _volume(estimate).clone().requires_grad_()
    before = ssim3plane(estimate, truth)["mean"]
    optimiser = torch.optim.Adam([fake], lr=0.01)
    for _ in range(10):
        terms = loss.voxel_terms(fake, _volume(truth))
        assert [name for name, _, _ in terms] == ["ssim"]
        total = sum(weight * value for _, weight, value in terms)
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
    after = ssim3plane(fake.detach()[0, 0].numpy().clip(0, 1), truth)["mean"]
    assert after > before + 0.02, (before, after)
    with pytest.raises(InputError, match="ssim_slices"):
        LossConfig(ssim_slices=-1)
