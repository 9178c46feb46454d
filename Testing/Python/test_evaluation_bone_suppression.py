"""The bone-suppression measures on a synthetic radiograph whose "ribs" are known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from DCTNetLib.evaluation.bone_suppression import (bone_change_ratio, ridge_contrast_removed, ridge_mask,
                                                  suppression_measures)

SIZE = 128


def _chest(rib_contrast: float) -> np.ndarray:
    """A body (an ellipse of soft tissue, soft-edged as on a film) crossed by eight bright horizontal ribs 3 px
    wide."""
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float64)
    body = ((xx - 64) / 52) ** 2 + ((yy - 64) / 58) ** 2 < 1
    image = gaussian_filter(np.where(body, 0.45 + 0.1 * np.cos(xx / 40), 0.0), 4)
    ribs = np.zeros_like(image, dtype=bool)
    for row in range(20, 110, 12):
        ribs[row:row + 3] = True
    return np.clip(image + rib_contrast * (ribs & body), 0, 1)


def test_ridges_are_the_ribs():
    ridges, body = ridge_mask(_chest(0.2))
    ribs = _chest(0.2) > _chest(0.0) + 0.1
    assert ridges.sum() > 0 and (ridges & ribs).sum() / ridges.sum() > 0.9
    with pytest.raises(ValueError, match="body level"):
        ridge_mask(np.zeros((SIZE, SIZE)))


def test_removing_the_ribs_is_told_from_noise_and_from_no_change():
    image, without_ribs = _chest(0.2), _chest(0.0)
    noisy = np.clip(image + np.random.default_rng(0).normal(0, 0.02, image.shape), 0, 1)
    assert ridge_contrast_removed(image, image) == pytest.approx(0.0, abs=1e-9)
    assert ridge_contrast_removed(image, without_ribs) > 0.8
    assert 0.35 < ridge_contrast_removed(image, _chest(0.1)) < 0.6  # half the ribs' contrast: about half gone
    assert bone_change_ratio(image, np.abs(image - without_ribs)) > 10.0
    assert 0.7 < bone_change_ratio(image, np.abs(image - noisy)) < 1.4


def test_the_three_measures_at_once_are_the_single_ones():
    image, fainter = _chest(0.2), _chest(0.1)
    measures = suppression_measures(image, fainter)
    assert measures == {"mean_change": pytest.approx(float(np.abs(image - fainter).mean())),
                        "bone_change_ratio": pytest.approx(bone_change_ratio(image, np.abs(image - fainter))),
                        "ridge_contrast_removed": pytest.approx(ridge_contrast_removed(image, fainter))}
