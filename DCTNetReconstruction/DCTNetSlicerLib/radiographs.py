"""CT → PA and lateral radiographs with the training geometry, and the geometry that travels with them.

"Make radiographs from CT" in DCTNetReconstruction: the CT is prepared exactly as a training case
(:func:`DCTNetLib.data.preprocess.preprocess_ct`: 1 mm resample, 320³ crop around the CT's centre, 128³ at 2.5 mm,
HU window → [0, 1]) and projected by :func:`DCTNetLib.data.drr.make_drrs` (X2CT-GAN cone-beam geometry). The
prepared 128³ volume is kept as the *reference*: the reconstruction of these radiographs lands on the same grid,
so the difference and PSNR/SSIM can be computed voxel by voxel.

The reference grid is stored as JSON (:meth:`PreparedVolume.geometry`) in a node attribute of each radiograph,
so a saved scene still knows where to put the reconstruction. Pure numpy/torch: no ``slicer`` import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "GEOMETRY_ATTRIBUTE",
    "RadiographPair",
    "radiographs_from_ct",
    "reference_ct",
    "geometry_to_json",
    "geometry_from_json",
    "radiograph_centre_ras",
]

# Node attribute holding the JSON geometry of the CT grid a radiograph pair was made from.
GEOMETRY_ATTRIBUTE = "DCTNet.ReferenceGeometry"


@dataclass
class RadiographPair:
    """Two DRRs of one CT and the model grid they belong to.

    Args:
        pa: ``(128, 128)`` float32 in [0, 1], rows superior→inferior, columns patient right→left.
        lat: ``(128, 128)`` float32 in [0, 1], columns anterior→posterior.
        prepared: the CT as the model sees it (``PreparedVolume``, 128³ unit values, 2.5 mm, centred on the CT).
    """

    pa: np.ndarray
    lat: np.ndarray
    prepared: Any


def radiographs_from_ct(ct: Any, prepared: Any = None) -> RadiographPair:
    """PA and lateral DRRs of a CT, made the way the training radiographs were.

    Args:
        ct: ``DCTNetLib.io.ct.CTVolume`` in HU (any size, spacing and position).
        prepared: an already prepared ``PreparedVolume`` of ``ct`` (skips the resampling). Defaults to
            ``preprocess_ct(ct)``.

    Returns:
        :class:`RadiographPair`.

    Shapes:
        ``ct.hu`` ``(D, H, W)`` → ``pa``, ``lat`` ``(128, 128)``.
    """
    from DCTNetLib.inference import radiographs_from_ct as core_radiographs_from_ct

    prepared, pa, lat = core_radiographs_from_ct(ct, prepared)
    return RadiographPair(pa=pa.astype(np.float32), lat=lat.astype(np.float32), prepared=prepared)


def reference_ct(prepared: Any) -> Any:
    """The prepared 128³ volume back in HU, on its own 2.5 mm grid (a ``CTVolume``)."""
    from DCTNetLib.data.preprocess import to_ct_volume

    return to_ct_volume(prepared.volume, prepared)


def geometry_to_json(prepared: Any) -> str:
    """The grid of a ``PreparedVolume`` (size, spacing, origin, direction, source) as a JSON string."""
    return json.dumps(prepared.geometry(), sort_keys=True)


def geometry_from_json(text: str | None) -> Any:
    """A voxel-free ``PreparedVolume`` from :func:`geometry_to_json` output; ``None`` for empty text.

    Raises:
        ValueError: the text is not a geometry written by :func:`geometry_to_json`.
    """
    from DCTNetLib.data.preprocess import PreparedVolume

    if not text:
        return None
    try:
        geometry = json.loads(text)
        return PreparedVolume.from_geometry(geometry)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a DCTNet reference geometry: {text[:80]!r} ({exc})") from exc


def radiograph_centre_ras(prepared: Any) -> np.ndarray:
    """RAS point (mm) where a radiograph pair of ``prepared`` is placed: the centre of the CT grid, so the
    PA image sits in the coronal plane and the lateral image in the sagittal plane through the CT's centre."""
    from DCTNetLib.io.geometry import lps_to_ras

    return lps_to_ras(prepared.centre_lps())
