"""Film-like appearance of training radiographs (``DCTNetLib.data.film_appearance``) and the per-axis patient scale
of the augmentation: what real films look like reaches the model, while the raw / bone-suppressed pair stays a
pair and the patient's geometry stays the CT's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from DCTNetLib.conventions import hu_to_unit
from DCTNetLib.data.augment import AugmentConfig, AugmentedCaseDataset, augment_volume
from DCTNetLib.data.bone import bone_mask, drrs_with_bone_suppression
from DCTNetLib.data.film_appearance import FilmAppearanceConfig, film_like, gaussian_blur
from DCTNetLib.data.phantom import chest_phantom

pytestmark = pytest.mark.usefixtures("one_thread")

PLAIN = FilmAppearanceConfig(scatter_fraction=(0.0, 0.0), blur_sigma_px=(0.0, 0.0), noise_std=(0.0, 0.0),
                             window_low=(0.0, 0.0), window_high=(1.0, 1.0), gamma=(1.0, 1.0),
                             unsharp_amount=(0.0, 0.0), collimation_probability=0.0, marker_probability=0.0)


@pytest.fixture(scope="module")
def phantom_pair():
    """A 64³ phantom (5 mm) in unit values with its PA and lateral DRRs, raw and bone-suppressed (128²)."""
    hu = chest_phantom(size=64, spacing_mm=5.0, seed=5)
    unit = torch.from_numpy(hu_to_unit(hu).astype(np.float32))[None, None]
    raw, suppressed = drrs_with_bone_suppression(unit, 5.0)
    return unit[0], raw[0], suppressed[0]


def test_neutral_settings_only_renormalise(phantom_pair):
    _, raw, suppressed = phantom_pair
    out = film_like(torch.stack([raw[0], suppressed[0]]), PLAIN)
    low, high = raw[0].min(), raw[0].max()
    torch.testing.assert_close(out[0], (raw[0] - low) / (high - low), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1], ((suppressed[0] - low) / (high - low)).clamp(0, 1), atol=1e-6, rtol=0)


def test_a_draw_changes_the_look_but_keeps_the_pair_a_pair(phantom_pair):
    _, raw, suppressed = phantom_pair
    torch.manual_seed(7)
    out = film_like(torch.stack([raw[0], suppressed[0]]))
    assert out.shape == raw[:2].shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float(out[0].min()) == 0.0 and float(out[0].max()) == 1.0  # min–max of the raw image, as a film reader
    assert float((out[0] - raw[0] / raw[0].max()).abs().mean()) > 0.01  # the appearance really changed
    # one draw for the whole stack: the raw image comes out the same whatever else is in the stack, and the
    # bone-suppressed image stays darker (bone removed) on average
    torch.manual_seed(7)
    alone = film_like(torch.stack([raw[0], raw[0]]))
    torch.testing.assert_close(alone[0], out[0])
    torch.testing.assert_close(alone[1], out[0])
    assert float(out[1].mean()) < float(out[0].mean())


def test_draws_follow_the_global_seed(phantom_pair):
    _, raw, _ = phantom_pair
    torch.manual_seed(11)
    a = film_like(raw[:1])
    torch.manual_seed(11)
    b = film_like(raw[:1])
    torch.manual_seed(12)
    c = film_like(raw[:1])
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_gaussian_blur_keeps_the_mean_and_removes_fine_detail():
    torch.manual_seed(0)
    image = torch.rand(1, 32, 32)
    blurred = gaussian_blur(image, 2.0)
    assert abs(float(blurred.mean() - image.mean())) < 0.01
    assert float(blurred.std()) < 0.5 * float(image.std())
    assert torch.equal(gaussian_blur(image, 0.0), image)


def test_config_rejects_impossible_ranges():
    with pytest.raises(ValueError):
        FilmAppearanceConfig(gamma=(0.0, 1.0))
    with pytest.raises(ValueError):
        FilmAppearanceConfig(window_low=(0.0, 0.9), window_high=(0.85, 1.0))
    with pytest.raises(ValueError):
        FilmAppearanceConfig(marker_probability=1.5)


def test_anisotropic_scale_changes_the_body_width_and_not_its_height(phantom_pair):
    unit, _, _ = phantom_pair
    mask = torch.zeros_like(unit, dtype=torch.bool)
    base = dict(max_rotation_deg=(0.0, 0.0, 0.0), scale_range=(1.0, 1.0), max_shift_mm=0.0, flip_probability=0.0,
                max_attenuation_change=0.0)
    body = lambda v: (v[0] > 0.3)  # noqa: E731 - tissue, not air
    torch.manual_seed(3)
    plain, _ = augment_volume(unit, mask, AugmentConfig(**base), 5.0)
    widths, heights = [], []
    for seed in range(6):
        torch.manual_seed(seed)
        moved, _ = augment_volume(unit, mask, AugmentConfig(**base, max_anisotropy=0.2), 5.0)
        widths.append(int(body(moved).any(dim=(0, 1)).sum()))   # extent along W (R–L)
        heights.append(int(body(moved).any(dim=(1, 2)).sum()))  # extent along D (S–I)
    assert len(set(widths)) > 1  # each axis scaled on its own
    assert int(body(plain).any(dim=(0, 1)).sum()) in range(min(widths), max(widths) + 1)


def test_dataset_renders_film_like_radiographs(phantom_pair, tmp_path):
    unit, _, _ = phantom_pair
    item = {"ct": unit, "drr": torch.zeros(2, 64, 64), "drr_bs": torch.zeros(2, 64, 64), "case_id": "p"}

    class One(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            return item

    identity = AugmentConfig(max_rotation_deg=(0.0, 0.0, 0.0), scale_range=(1.0, 1.0), max_shift_mm=0.0,
                             flip_probability=0.0, max_attenuation_change=0.0)
    plain = AugmentedCaseDataset(One(), identity)
    filmed = AugmentedCaseDataset(One(), identity, film=FilmAppearanceConfig())
    torch.manual_seed(0)
    a = plain[0]
    torch.manual_seed(0)
    b = filmed[0]
    torch.testing.assert_close(a["ct"], b["ct"])  # the CT is never touched by the appearance
    assert float((a["drr"] - b["drr"]).abs().mean()) > 0.01
    for view in range(2):
        assert float(b["drr"][view].min()) == 0.0 and float(b["drr"][view].max()) == 1.0
        assert bool((b["drr_bs"][view] <= b["drr"][view] + 0.05).float().mean() > 0.95)
    mask = torch.from_numpy(bone_mask(np.asarray(unit[0]) * 2500 - 1024, 5.0))
    assert mask.any()  # the phantom has bone, so the bone-suppressed inputs differ
