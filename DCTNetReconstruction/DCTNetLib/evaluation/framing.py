"""Does a reconstruction from films follow the patient or the framing? Edits of a film pair and body measures.

Real films frame the chest differently from the training DRRs (whose 500 mm field the body fills): a smaller
patient sits inside black margins, a film may be cropped tighter, a thin patient is narrower. Three edits mimic
this, and :func:`body_extent` / :func:`bone_stats` measure what the model made of them (issue 19's framing test):

- ``pa_narrowed_70``: the PA squeezed to 70 % of its width on its black canvas, the lateral unchanged (a patient
  narrower from right to left): the body must be *narrower*, not split into extra lung columns;
- ``both_padded_70``: both views shrunk to 70 % inside black margins (a smaller patient): the body must be
  *shorter and narrower*;
- ``both_cropped_80``: the middle 80 % of both (a tighter field): a larger body.

Body: tissue above :data:`BODY_HU` in the coronal slab through the centre. Bone: above
:data:`~DCTNetLib.evaluation.metrics.BONE_HU`, in the whole volume and in the spine's column (the middle eighth
from right to left, the back half from front to back).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..io.film_gate import facing_left
from ..io.radiograph import pad_to_square, resize_radiograph
from .metrics import BONE_HU, spine_column

__all__ = ["BODY_HU", "NARROW", "PAD", "CROP", "narrowed", "padded", "cropped", "framing_edits", "framing_inputs", "body_extent",
           "bone_stats", "measure_framing"]

# Body vs air: halfway between air (−1000 HU) and fat (~−100 HU); lung (~−850 HU) stays out of the outline only
# where it reaches the skin, which it does not in a chest.
BODY_HU = -500.0
# The edits' sizes (fractions of the film): well beyond the training poses' ±10 % per axis of v3–v6.
NARROW, PAD, CROP = 0.7, 0.7, 0.8


def _resized(image: np.ndarray, rows: int, cols: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(np.asarray(image, np.float32), mode="F").resize(
        (cols, rows), Image.Resampling.BOX), dtype=np.float32)


def narrowed(image: np.ndarray, factor: float = NARROW) -> np.ndarray:
    """``(H, W)`` → the same size: the image squeezed to ``factor`` of its width, centred, black (0) at the sides."""
    rows, cols = image.shape
    new_cols = max(1, int(round(cols * factor)))
    out = np.zeros_like(image, dtype=np.float32)
    start = (cols - new_cols) // 2
    out[:, start:start + new_cols] = _resized(image, rows, new_cols)
    return out


def padded(image: np.ndarray, factor: float = PAD) -> np.ndarray:
    """``(H, W)`` → the same size: the image shrunk to ``factor`` in the middle of a black (0) canvas."""
    rows, cols = image.shape
    small = _resized(image, int(rows * factor), int(cols * factor))
    out = np.zeros_like(image, dtype=np.float32)
    top, left = (rows - small.shape[0]) // 2, (cols - small.shape[1]) // 2
    out[top:top + small.shape[0], left:left + small.shape[1]] = small
    return out


def cropped(image: np.ndarray, factor: float = CROP) -> np.ndarray:
    """``(H, W)`` → about ``(factor H, factor W)``: the middle of the image (a tighter field)."""
    rows, cols = image.shape
    r0, c0 = int(rows * (1 - factor) / 2), int(cols * (1 - factor) / 2)
    return image[r0:rows - r0, c0:cols - c0]


def framing_edits(pa: np.ndarray, lat: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The original pair and its three edits, by name (module docstring), as films before resizing."""
    return {"original": (pa, lat), "pa_narrowed_70": (narrowed(pa), lat),
            "both_padded_70": (padded(pa), padded(lat)), "both_cropped_80": (cropped(pa), cropped(lat))}


def body_extent(hu: np.ndarray) -> dict[str, float]:
    """Width (R–L) and height (S–I) in voxels of the body in the coronal slab through the centre, and the body's
    share of the volume. Shapes: ``(D, H, W)`` HU (axes S–I, A–P, R–L)."""
    d, h, w = hu.shape
    coronal = hu[:, h // 2 - h // 16: h // 2 + h // 16, :].max(axis=1) > BODY_HU  # (D, W)
    cols = np.flatnonzero(coronal.mean(axis=0) > 0.5)
    rows = np.flatnonzero(coronal.mean(axis=1) > 0.5)
    width = float(cols.max() - cols.min() + 1) if cols.size else 0.0
    height = float(rows.max() - rows.min() + 1) if rows.size else 0.0
    return {"width_voxels": width, "height_voxels": height, "body_fraction": float((hu > BODY_HU).mean())}


def bone_stats(hu: np.ndarray) -> dict[str, float]:
    """99.9th percentile (HU), the bone share of the volume and of the spine's column. Shapes: ``(D, H, W)`` HU."""
    column = hu[spine_column(hu.shape)]
    return {"p999_hu": float(np.percentile(hu, 99.9)), "bone_fraction": float((hu > BONE_HU).mean()),
            "spine_column_bone_fraction": float((column > BONE_HU).mean())}


def framing_inputs(pa: np.ndarray, lat: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each edit (:func:`framing_edits`) as the model gets it: padded to square, resized to 128², and the lateral
    turned to face left when the *unedited* lateral faces right (:func:`~DCTNetLib.io.film_gate.facing_left`). An
    edit changes the framing, not the way the patient faces; decided edit by edit, the padded and cropped real
    laterals here fall below the image rule's contrast and would reach the model mirrored. Shapes: two films of
    any size → ``{edit: ((128, 128), (128, 128))}``."""
    _, flip = facing_left(resize_radiograph(pad_to_square(lat)))
    out = {}
    for name, (p, q) in framing_edits(pa, lat[:, ::-1] if flip else lat).items():
        out[name] = (resize_radiograph(pad_to_square(p)), resize_radiograph(pad_to_square(np.ascontiguousarray(q))))
    return out


def measure_framing(reconstruct: Callable[[np.ndarray, np.ndarray], Any], pa: np.ndarray, lat: np.ndarray,
                    on_result: Callable[[str, np.ndarray, np.ndarray, Any], None] | None = None
                    ) -> dict[str, dict[str, Any]]:
    """Body and bone measures of the reconstruction of each edit (:func:`framing_inputs`).

    Args:
        reconstruct: ``(pa, lat)`` at the model's size → a result with ``ct_hu.hu`` and ``reprojection`` (e.g.
            ``lambda p, q: model.reconstruct(p, q, check_inputs=False)`` of a
            :class:`~DCTNetLib.inference.Reconstructor`: an edit may fail the input checks on purpose).
        pa, lat: the films as read (``DCTNetLib.io.film.read_film``), any size.
        on_result: called with ``(edit, pa, lat, result)`` after each reconstruction (e.g. to draw it).

    Returns:
        ``{edit: {width_voxels, height_voxels, body_fraction, p999_hu, bone_fraction,
        spine_column_bone_fraction, reprojection}}``.
    """
    out = {}
    for name, (p, q) in framing_inputs(pa, lat).items():
        result = reconstruct(p, q)
        hu = result.ct_hu.hu
        out[name] = {**body_extent(hu), **bone_stats(hu), "reprojection": result.reprojection}
        if on_result is not None:
            on_result(name, p, q, result)
    return out
