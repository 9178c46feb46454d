"""``benchmarks/cdm_bone_suppression.py``: the DRRs it scores a CDM on, as prepared or with film-strength bone."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from cdm_bone_suppression import case_drrs  # noqa: E402

from DCTNetLib.conventions import hu_to_unit  # noqa: E402
from DCTNetLib.data.bone import drrs_with_bone_suppression  # noqa: E402
from DCTNetLib.data.phantom import chest_phantom  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_case_drrs_as_prepared_and_with_the_bone_contrast_raised(tmp_path):
    unit = hu_to_unit(chest_phantom(size=128, spacing_mm=2.5, seed=1)).astype(np.float16)
    raw, removed = drrs_with_bone_suppression(torch.from_numpy(unit.astype(np.float32))[None, None])
    np.save(tmp_path / "ct_unit.npy", unit)
    np.save(tmp_path / "drr.npy", raw[0].numpy())
    np.save(tmp_path / "drr_bone_suppressed.npy", removed[0].numpy())

    same_raw, same_removed = case_drrs(tmp_path)
    assert np.array_equal(same_raw, raw[0].numpy()) and np.array_equal(same_removed, removed[0].numpy())

    raw2, removed2 = case_drrs(tmp_path, bone_gain=2.0)
    for view in range(2):
        # the bone-removed image is the same projection on the brighter raw image's scale: one ratio below 1
        body = same_removed[view] > 0.2
        ratio = removed2[view][body] / same_removed[view][body]
        assert ratio.max() < 1.0 and ratio.std() < 1e-4
        # on that common scale, the bone component (raw − bone-removed) doubles
        component1 = (same_raw[view] - same_removed[view])[body]
        component2 = (raw2[view] - removed2[view])[body] / ratio.mean()
        bone = component1 > 0.02
        assert bone.sum() > 200
        np.testing.assert_allclose(component2[bone], 2.0 * component1[bone], rtol=0.02, atol=2e-3)
