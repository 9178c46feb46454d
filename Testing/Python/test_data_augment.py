"""On-the-fly augmentation (``DCTNetLib.data.augment``): poses move the CT and its bone mask together, air stays
air, a mirror is a real R↔L mirror of the volume, and the radiographs are re-rendered from the augmented volume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from DCTNetLib.conventions import AXIS_RL, hu_to_unit, unit_to_hu
from DCTNetLib.data.augment import (AugmentConfig, AugmentedCaseDataset, augment_volume, random_displacement,
                                    random_pose)
from DCTNetLib.data.bone import boost_bone, bone_mask, drrs_given_bone_mask, drrs_with_bone_suppression
from DCTNetLib.data.drr import default_projector, make_drrs
from DCTNetLib.data.phantom import chest_phantom
from DCTNetLib.errors import InputError
from DCTNetLib.training.config import GANTrainConfig
from DCTNetLib.training.data_splits import load_splits, training_splits
from test_training_cli import write_tiny_prepared

pytestmark = pytest.mark.usefixtures("one_thread")

IDENTITY = AugmentConfig(max_rotation_deg=(0.0, 0.0, 0.0), scale_range=(1.0, 1.0), max_shift_mm=0.0,
                         flip_probability=0.0, max_attenuation_change=0.0)


@pytest.fixture(scope="module")
def phantom_case():
    """A 64³ chest phantom at 5 mm (the 320 mm field) in unit values, its bone mask and a prepared-case item."""
    hu = chest_phantom(size=64, spacing_mm=5.0, seed=3)
    unit = torch.from_numpy(hu_to_unit(hu).astype(np.float32))[None]
    mask = torch.from_numpy(bone_mask(hu, 5.0))[None]
    return unit, mask


def test_identity_pose_changes_nothing(phantom_case):
    unit, mask = phantom_case
    theta = random_pose(IDENTITY, 64, 5.0)
    torch.testing.assert_close(theta, torch.cat([torch.eye(3), torch.zeros(3, 1)], dim=1))
    out, out_mask = augment_volume(unit, mask, IDENTITY, 5.0)
    torch.testing.assert_close(out, unit, atol=1e-5, rtol=0)
    assert torch.equal(out_mask, mask)


def test_mirror_flips_the_right_left_axis_only(phantom_case):
    unit, mask = phantom_case
    mirror = AugmentConfig(max_rotation_deg=(0.0, 0.0, 0.0), scale_range=(1.0, 1.0), max_shift_mm=0.0,
                           flip_probability=1.0, max_attenuation_change=0.0)
    out, out_mask = augment_volume(unit, mask, mirror, 5.0)
    torch.testing.assert_close(out, unit.flip(1 + AXIS_RL), atol=1e-5, rtol=0)
    assert torch.equal(out_mask, mask.flip(1 + AXIS_RL))


def test_random_pose_keeps_air_and_moves_the_mask_with_the_bone(phantom_case):
    unit, mask = phantom_case
    torch.manual_seed(5)
    out, out_mask = augment_volume(unit, mask, AugmentConfig(flip_probability=0.5), 5.0)
    assert out.shape == unit.shape and out_mask.dtype == torch.bool
    assert float(out.min()) >= 0.0 and int((out == 0).sum()) > int((unit == 0).sum())  # what moves in is air
    assert not torch.equal(out, unit)  # the pose did change the volume
    # the moved mask still sits on the moved bone: as bright as the original bone, brighter than under the
    # mask left where it was
    assert float(out[out_mask].mean()) > 0.9 * float(unit[mask].mean())
    assert float(out[out_mask].mean()) > float(out[mask].mean()) + 0.05
    # the same generator state gives the same augmentation (resumed runs draw the same samples)
    torch.manual_seed(5)
    again, _ = augment_volume(unit, mask, AugmentConfig(flip_probability=0.5), 5.0)
    assert torch.equal(out, again)


def test_attenuation_change_scales_above_air_only(phantom_case):
    unit, mask = phantom_case
    gain = AugmentConfig(max_rotation_deg=(0.0, 0.0, 0.0), scale_range=(1.0, 1.0), max_shift_mm=0.0,
                         flip_probability=0.0, max_attenuation_change=0.1)
    torch.manual_seed(0)
    out, _ = augment_volume(unit, mask, gain, 5.0)
    inside = (unit > 0.05) & (unit < 0.9)
    ratio = out[inside] / unit[inside]
    assert float(ratio.std()) < 1e-4 and 0.9 <= float(ratio.mean()) <= 1.1 and float(ratio.mean()) != 1.0
    assert float(out[unit == 0].abs().max()) < 1e-5  # air stays air (up to interpolation rounding)


def test_given_mask_drrs_equal_the_segmenting_path(phantom_case):
    unit, mask = phantom_case
    raw, bs = drrs_with_bone_suppression(unit[None], 5.0)
    raw2, bs2 = drrs_given_bone_mask(unit[None], mask[None], 5.0)
    torch.testing.assert_close(raw2, raw)
    torch.testing.assert_close(bs2, bs)


def test_boost_bone_scales_only_the_bones_excess_over_soft_tissue(phantom_case):
    unit, mask = phantom_case
    hu = unit_to_hu(unit)
    boosted = boost_bone(hu, mask, 2.0, soft_tissue_hu=40.0)
    assert torch.equal(boosted[~mask], hu[~mask])  # lung, soft tissue, air: as they were
    bone = mask & (hu > 40.0)
    assert bone.sum() > 100
    torch.testing.assert_close(boosted[bone], 40.0 + 2.0 * (hu[bone] - 40.0))
    below = mask & (hu <= 40.0)  # the mask's rim in lung or fat stays
    assert torch.equal(boosted[below], hu[below])
    assert torch.equal(boost_bone(hu, mask, 1.0), hu)
    with pytest.raises(ValueError, match="gain"):
        boost_bone(hu, mask, 0.0)


def test_bone_gain_brightens_the_raw_radiographs_bone_and_keeps_the_bone_removed_ones(phantom_case):
    unit, mask = phantom_case
    raw1, bs1 = drrs_given_bone_mask(unit[None], mask[None], 5.0)
    raw2, bs2 = drrs_given_bone_mask(unit[None], mask[None], 5.0, bone_gain=2.0)
    # both images are divided by the raw DRR's maximum: undo it with the unnormalised projections
    projector = default_projector("cpu")
    hu = unit_to_hu(unit[None])
    scale1 = projector(hu, 5.0).amax(dim=(-2, -1), keepdim=True)
    scale2 = projector(boost_bone(hu, mask[None], 2.0), 5.0).amax(dim=(-2, -1), keepdim=True)
    assert (scale2 > scale1).all()  # the brightest ray crosses the spine
    torch.testing.assert_close(bs2 * scale2, bs1 * scale1, atol=1e-3 * float(scale1.max()), rtol=0)
    # the bone component (raw − bone-removed, in projection units) doubles: the projector is linear in HU
    component1, component2 = (raw1 - bs1) * scale1, (raw2 - bs2) * scale2
    assert float(component1.max()) > 0.05 * float(scale1.max())
    torch.testing.assert_close(component2, 2.0 * component1, atol=2e-3 * float(scale1.max()), rtol=0)


class _Cases(torch.utils.data.Dataset):
    def __init__(self, unit):
        self.unit = unit

    def __len__(self):
        return 1

    def __getitem__(self, index):
        return {"ct": self.unit, "drr": None, "drr_bs": None, "case_id": "phantom"}


def test_dataset_renders_the_radiographs_of_the_augmented_volume(phantom_case):
    unit, _ = phantom_case
    full = torch.nn.functional.interpolate(unit[None], size=(128, 128, 128), mode="trilinear")[0]
    dataset = AugmentedCaseDataset(_Cases(full))
    torch.manual_seed(1)
    item = dataset[0]
    assert item["ct"].shape == (1, 128, 128, 128) and item["drr"].shape == item["drr_bs"].shape == (2, 128, 128)
    # the radiographs are the DRRs of the returned (augmented) CT, not of the prepared one
    torch.testing.assert_close(item["drr"], make_drrs(item["ct"][None])[0], atol=1e-5, rtol=0)
    assert (item["drr"] - make_drrs(full[None])[0]).abs().max() > 0.02
    # bone suppression only ever darkens, and only where rays cross bone
    assert float((item["drr"] - item["drr_bs"]).min()) >= -1e-6 and float((item["drr"] - item["drr_bs"]).max()) > 0
    assert len(dataset._masks) == 1  # segmented once, reused for every pose


def test_pool_reuses_seeded_draws_and_leaves_the_global_generator_to_the_picks(phantom_case):
    unit, _ = phantom_case
    full = torch.nn.functional.interpolate(unit[None], size=(128, 128, 128), mode="trilinear")[0]

    def accesses(dataset, n=6):
        torch.manual_seed(5)
        return [dataset[0] for _ in range(n)], torch.rand(())

    pooled = AugmentedCaseDataset(_Cases(full), pool=2, pool_seed=7)
    items, after = accesses(pooled)
    assert len(pooled._pool) == 2  # six accesses, two distinct draws
    distinct = {round(float(item["drr"].sum()), 3) for item in items}
    assert len(distinct) == 2
    # a new dataset (a resumed run) rebuilds the same draws and, from the same generator state, picks the same ones
    again, after_again = accesses(AugmentedCaseDataset(_Cases(full), pool=2, pool_seed=7))
    for a, b in zip(items, again):
        assert torch.equal(a["drr"], b["drr"]) and torch.equal(a["ct"], b["ct"])
    # the draws do not consume the global generator: only the picks do (one randint per access)
    torch.manual_seed(5)
    for _ in range(6):
        torch.randint(2, ())
    assert torch.equal(after, torch.rand(())) and torch.equal(after, after_again)
    # a draw of the pool is an augmentation like any other: its radiographs are the DRRs of its CT (float16)
    torch.testing.assert_close(items[0]["drr"], make_drrs(items[0]["ct"][None])[0], atol=2e-3, rtol=0)
    # another seed, other draws
    other, _ = accesses(AugmentedCaseDataset(_Cases(full), pool=2, pool_seed=8))
    assert {round(float(item["drr"].sum()), 3) for item in other}.isdisjoint(distinct)
    with pytest.raises(ValueError):
        AugmentedCaseDataset(_Cases(full), pool=-1)


def test_dataset_draws_the_bone_gain_and_leaves_the_ct_and_targets_alone(phantom_case):
    unit, _ = phantom_case
    full = torch.nn.functional.interpolate(unit[None], size=(128, 128, 128), mode="trilinear")[0]

    def item(config):
        torch.manual_seed(11)
        return AugmentedCaseDataset(_Cases(full), config)[0]

    plain, fixed, boosted = item(AugmentConfig()), item(AugmentConfig(bone_gain_range=(1.0, 1.0))), item(
        AugmentConfig(bone_gain_range=(1.5, 2.0)))
    assert all(torch.equal(plain[k], fixed[k]) for k in ("ct", "drr", "drr_bs"))  # a fixed gain draws nothing
    assert torch.equal(boosted["ct"], plain["ct"])  # the same pose (the gain is drawn after it); the CT as it is
    # brighter bone: the raw radiograph gains over the bone-removed one (both on the raw image's own scale)
    gain_plain = (plain["drr"] - plain["drr_bs"]).sum() / plain["drr_bs"].sum()
    gain_boosted = (boosted["drr"] - boosted["drr_bs"]).sum() / boosted["drr_bs"].sum()
    assert float(gain_boosted) > 1.4 * float(gain_plain)

def test_elastic_deformation_is_smooth_sized_as_asked_and_keeps_the_mask_on_the_bone(phantom_case):
    unit, mask = phantom_case
    elastic = AugmentConfig(max_rotation_deg=(0.0, 0.0, 0.0), scale_range=(1.0, 1.0), max_shift_mm=0.0,
                            flip_probability=0.0, max_attenuation_change=0.0, elastic_mm=8.0, elastic_points=5)
    torch.manual_seed(1)
    field = random_displacement(elastic, 64, 5.0)
    assert field.shape == (1, 64, 64, 64, 3)
    mm = field * (64 * 5.0 / 2)  # normalised units -> mm
    # the control points carry N(0, 8 mm) draws; trilinear interpolation between them only lowers the spread
    assert 4.0 < float(mm.std()) < 10.0
    # smooth: neighbouring voxels (5 mm apart) move alike, far less than the control points do (80 mm apart)
    assert float((mm[:, 1:] - mm[:, :-1]).abs().max()) < 0.25 * float(mm.abs().max())
    torch.manual_seed(1)
    out, out_mask = augment_volume(unit, mask, elastic, 5.0)
    assert not torch.equal(out, unit)  # the anatomy moved
    assert float(out[out_mask].mean()) > 0.9 * float(unit[mask].mean())  # the mask followed the bone
    assert float(out[out_mask].mean()) > float(out[mask].mean()) + 0.02  # ... and not stayed where it was
    # off (the default) draws nothing: runs without it keep their random stream and their poses
    torch.manual_seed(1)
    plain, _ = augment_volume(unit, mask, AugmentConfig(), 5.0)
    after_plain = torch.rand(())
    torch.manual_seed(1)
    again, _ = augment_volume(unit, mask, AugmentConfig(elastic_mm=0.0), 5.0)
    assert torch.equal(plain, again) and torch.equal(after_plain, torch.rand(()))


def test_config_rejects_impossible_ranges():
    with pytest.raises(ValueError):
        AugmentConfig(bone_gain_range=(2.0, 1.0))
    with pytest.raises(ValueError):
        AugmentConfig(scale_range=(1.1, 0.9))
    with pytest.raises(ValueError):
        AugmentConfig(flip_probability=1.5)
    with pytest.raises(ValueError):
        AugmentConfig(elastic_mm=-1.0)
    with pytest.raises(ValueError):
        AugmentConfig(elastic_points=1)


def test_training_config_passes_the_pool_to_the_training_split(tmp_path):
    data = write_tiny_prepared(tmp_path / "prep", n_train=2, n_val=1, size=16)
    train, val = load_splits(data, augment=True, pool=3, seed=4)
    assert isinstance(train, AugmentedCaseDataset) and (train.pool, train.pool_seed) == (3, 4)
    assert not isinstance(val, AugmentedCaseDataset)
    assert GANTrainConfig(augment_pool=3).augment_pool == 3
    with pytest.raises(InputError, match="augment_pool"):
        GANTrainConfig(augment_pool=-1)
    boosted, _ = load_splits(data, augment=True, bone_gain=(1.0, 2.0))
    assert boosted.config.bone_gain_range == (1.0, 2.0)
    with pytest.raises(InputError, match="augment_bone_gain"):
        GANTrainConfig(augment_bone_gain=(2.0, 1.0))
    deformed, _ = load_splits(data, augment=True, elastic_mm=6.0)
    assert deformed.config.elastic_mm == 6.0
    with pytest.raises(InputError, match="augment_elastic_mm"):
        GANTrainConfig(augment_elastic_mm=-1.0)
    # what train and train-cdm call: the config's augment fields and seed reach the training split
    from_config, _ = training_splits(data, GANTrainConfig(augment=True, augment_elastic_mm=6.0, augment_pool=2,
                                                          seed=7, augment_bone_gain=(1.0, 2.0)), None)
    assert (from_config.config.elastic_mm, from_config.config.bone_gain_range) == (6.0, (1.0, 2.0))
    assert (from_config.pool, from_config.pool_seed) == (2, 7)
