"""Does a bone-suppressed radiograph lose its bone? Measures on one view, with or without a ground truth.

A real film has no bone-removed target, so the preview is judged by *where* it changes the image: bone shows in
a radiograph as bright ridges (ribs, clavicles, the spine's edges), which a ridge filter finds (scikit-image's
Sato filter for bright tubular structures, σ 1–3 px of the 128² image: 3.9–12 mm, rib widths). The top 20 % of
its response inside the body are the "ridges".

- :func:`bone_change_ratio`: the mean change on the ridges over the mean change elsewhere in the body. A preview
  that removes rib and spine contrast has a ratio well above 1; a uniform dimming or noise has about 1.
- :func:`ridge_contrast_removed`: the share of the input's ridge response that is gone from the preview
  (0 = unchanged, 1 = no ridge left there): what a reader sees as "the ribs are fainter".

On DRRs the same numbers computed on the *true* bone-removed target calibrate them (``benchmarks/
cdm_bone_suppression.py``).
"""

from __future__ import annotations

import numpy as np
from skimage.filters import sato

__all__ = ["RIDGE_SIGMAS", "ridge_response", "ridge_mask", "bone_change_ratio", "ridge_contrast_removed",
           "suppression_measures"]

RIDGE_SIGMAS = (1.0, 2.0, 3.0)  # px of the 128² image (3.9 mm each): rib widths of 1–3 cm
RIDGE_QUANTILE = 80.0           # the top 20 % of the body's ridge response
BODY_LEVEL = 0.1                # inside the body: brighter than this on [0, 1] (air is ~0 after the reader's min–max)


def ridge_response(image: np.ndarray) -> np.ndarray:
    """Sato response to bright ridges of a ``(H, W)`` image in [0, 1]."""
    return sato(image, sigmas=RIDGE_SIGMAS, black_ridges=False)


def _ridges(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(response, ridges, body)`` of a ``(H, W)`` radiograph: its Sato response (computed once), its top-20 %
    ridge pixels inside the body, and the body."""
    response = ridge_response(image)
    body = image > BODY_LEVEL
    if not body.any():
        raise ValueError("the image has no pixel brighter than the body level: not a radiograph in [0, 1]")
    return response, body & (response >= np.percentile(response[body], RIDGE_QUANTILE)), body


def ridge_mask(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ridges, body)`` boolean masks of a ``(H, W)`` radiograph: the body, and its top-20 % ridge pixels."""
    return _ridges(image)[1:]


def bone_change_ratio(image: np.ndarray, change: np.ndarray) -> float:
    """Mean ``change`` (e.g. ``|input − preview|``) on the input's ridges over its mean elsewhere in the body."""
    return _change_ratio(change, *ridge_mask(image))


def ridge_contrast_removed(image: np.ndarray, result: np.ndarray) -> float:
    """Share of the input's ridge response on its ridges that is gone from ``result`` (same shape)."""
    response, ridges, _ = _ridges(image)
    return _removed(response, result, ridges)


def suppression_measures(image: np.ndarray, result: np.ndarray) -> dict[str, float]:
    """All three measures of a bone-suppressed ``result`` of ``image`` (the ridges found once): ``mean_change``
    (mean ``|image − result|``), ``bone_change_ratio`` and ``ridge_contrast_removed``."""
    response, ridges, body = _ridges(image)
    change = np.abs(image - result)
    return {"mean_change": float(change.mean()), "bone_change_ratio": _change_ratio(change, ridges, body),
            "ridge_contrast_removed": _removed(response, result, ridges)}


def _change_ratio(change: np.ndarray, ridges: np.ndarray, body: np.ndarray) -> float:
    return float(change[ridges].mean() / max(change[body & ~ridges].mean(), 1e-9))


def _removed(response: np.ndarray, result: np.ndarray, ridges: np.ndarray) -> float:
    return float(1.0 - ridge_response(result)[ridges].mean() / max(response[ridges].mean(), 1e-9))
