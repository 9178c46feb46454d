"""Is it a chest radiograph, and do the two views belong together? Checks on model-ready images.

Two kinds of checks, both on the ``(n, n)`` images in [0, 1] that the generator receives:

**Before reconstruction** (:func:`non_chest_reason`), from the image alone:

- *large-scale structure*: the correlation of the image with itself shifted by 1/16 of its side (8 px of 128²,
  3 cm on the 500 mm detector). Radiographs are smooth at that scale (0.60–0.94 on the 13 real CTs' DRRs, their film-like variants
  and the 7 real films here); uniform or smoothed noise is below 0.03. Refused below :data:`MIN_STRUCTURE`.
- *PA polarity*: on a PA (or AP) film the mediastinum and spine (the middle column) are brighter than the two lung
  fields beside them: +0.07 to +0.80 on every PA here (DRRs, film-like DRRs, real films), −0.07 to −0.80 on their
  inverted copies. A film shown as a negative (a MONOCHROME1 image read as MONOCHROME2, an inverted export) is
  refused when this difference is ≤ :data:`MIN_PA_POLARITY`.
- *PA top band*: a PA chest film shows the shoulders and neck at the top (tissue over ≥ 62 % of rows 12–22 % in
  every PA here, below the 12 % a collimator may blank); an axial CT slice or most photographs show air there.

**Lateral orientation** (:func:`lateral_orientation`): the model's laterals show the patient facing left, spine on
the right (the training DRRs: spine-side contrast −0.04 to +0.69). Films without a DICOM orientation are often shown
facing right — both real laterals here (−0.25, −0.19) — and a mirrored lateral gave four lung columns in the axial
slices. The spine-side contrast (right band, rows 30–70 % and columns 70–95 %, minus the left band, columns
5–30 %) decides when it is clear: at least :data:`CLEAR_SPINE_SIDE` either way. Many DRR laterals are not clear
(a field that cuts the body leaves the spine at the edge: below 0.1 on six of the 21 prepared CTs), and with the
image rule alone 10 of their 21 mirrored DRR laterals went through unflipped. An unclear lateral is decided by the model
instead (:meth:`DCTNetLib.inference.Reconstructor.orient_lateral`): G(Y) is run on the pair as given and with the
lateral mirrored, and the orientation whose reconstruction re-projects closer to the lateral
(:func:`mirrored_explains_better`) is kept.

**After reconstruction** (:func:`consistency_reason`): DRRs of the reconstruction are compared with the inputs
(:func:`DCTNetLib.evaluation.metrics.reprojection_check`, Spearman's rank correlation of 32² thumbnails, which a
film's display curve, noise and edge enhancement barely change — a plain correlation refused one in five film-like
DRRs — read on the cells inside the film's field, shutters and markers left out:
:func:`DCTNetLib.inference.film_reprojection`; over the whole image, 10 of 42 film-like DRR pairs were refused, 0 so).
The generator can only make
chest-shaped volumes, so a view it cannot explain — an inverted lateral, a photograph, noise — re-projects poorly.
The thresholds were set on the shipped model's scores (``benchmarks/film_gate.py`` prints them): genuine inputs
(DRRs, film-like DRRs and the real films here) against inverted, photograph, CT-slice and noise inputs.

The numbers were measured with ``benchmarks/film_gate.py`` (the bad inputs it builds: uniform and smoothed noise,
scikit-image's sample photographs, axial CT slices, inverted films and DRRs).
"""

from __future__ import annotations

import numpy as np

__all__ = ["MIN_STRUCTURE", "MIN_PA_POLARITY", "MIN_PA_TOP_TISSUE", "MIN_REPROJECTION_RANK", "CLEAR_SPINE_SIDE",
           "structure", "pa_polarity", "pa_top_tissue", "spine_side", "lateral_orientation", "lateral_mirrored",
           "facing_left", "mirrored_explains_better", "non_chest_reason", "consistency_reason"]

STRUCTURE_LAG = 1 / 16      # of the image side: 8 px of 128²
MIN_STRUCTURE = 0.3         # radiographs ≥ 0.60, noise ≤ 0.03 (module docstring)
MIN_PA_POLARITY = 0.0       # PA films ≥ +0.07, inverted ≤ −0.07
TISSUE_LEVEL = 0.2          # brighter than air and lung on [0, 1]
TOP_BAND = (0.12, 0.22)     # rows, as fractions of the height: below what a collimator blanks (≤ 12 %)
MIN_PA_TOP_TISSUE = 0.2     # PA films ≥ 0.62; axial CT slices mostly below
# |spine-side contrast| from which the image alone decides a lateral's orientation: real laterals facing right
# ≤ −0.19; training DRR laterals −0.04 to +0.69, six of them below 0.1 (decided by the model instead)
CLEAR_SPINE_SIDE = 0.1
# Minimum rank correlation of each view with the DRR of the reconstruction (see consistency_reason).
MIN_REPROJECTION_RANK = {"pa": 0.5, "lat": 0.75}

_VIEW_NAMES = {"pa": "PA", "lat": "lateral"}


def _fraction_box(image: np.ndarray, rows: tuple[float, float], cols: tuple[float, float]) -> np.ndarray:
    n_rows, n_cols = image.shape
    return image[int(rows[0] * n_rows):int(rows[1] * n_rows), int(cols[0] * n_cols):int(cols[1] * n_cols)]


def structure(image: np.ndarray, lag: float = STRUCTURE_LAG) -> float:
    """Mean correlation of an ``(H, W)`` image with itself shifted by ``lag`` of its side along each axis."""
    image = np.asarray(image, dtype=np.float64)
    lag = max(1, int(round(lag * min(image.shape))))
    pairs = ((image[:, :-lag], image[:, lag:]), (image[:-lag], image[lag:]))
    values = []
    for a, b in pairs:
        a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
        norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
        values.append(float((a * b).sum() / norm) if norm > 0 else 0.0)
    return float(np.mean(values))


def pa_polarity(image: np.ndarray) -> float:
    """Median of the middle column (mediastinum, spine) minus the mean of the two lung fields' medians, over rows
    25–65 % of an ``(H, W)`` image: positive on a PA film, negative on its negative."""
    rows = (0.25, 0.65)
    middle = np.median(_fraction_box(image, rows, (0.44, 0.56)))
    lungs = (np.median(_fraction_box(image, rows, (0.18, 0.34))) + np.median(_fraction_box(image, rows, (0.66, 0.82))))
    return float(middle - lungs / 2)


def pa_top_tissue(image: np.ndarray) -> float:
    """Fraction of pixels brighter than air and lung in rows 12–22 % of an ``(H, W)`` image (shoulders, neck)."""
    return float((_fraction_box(image, TOP_BAND, (0.0, 1.0)) > TISSUE_LEVEL).mean())


def spine_side(image: np.ndarray) -> float:
    """Median of the right band minus the median of the left band, rows 30–70 % of an ``(H, W)`` lateral: positive
    when the spine (bright, posterior) is on the right, as in the training laterals."""
    rows = (0.3, 0.7)
    return float(np.median(_fraction_box(image, rows, (0.7, 0.95))) - np.median(_fraction_box(image, rows, (0.05, 0.3))))


def lateral_orientation(image: np.ndarray) -> str:
    """Which way an ``(H, W)`` lateral faces by its spine-side contrast: ``"left"`` (the model's orientation),
    ``"right"`` (mirrored) or ``"unclear"`` (less than :data:`CLEAR_SPINE_SIDE` either way)."""
    value = spine_side(image)
    if value >= CLEAR_SPINE_SIDE:
        return "left"
    return "right" if value <= -CLEAR_SPINE_SIDE else "unclear"


def mirrored_explains_better(as_given: dict[str, float], mirrored: dict[str, float]) -> bool:
    """Whether a reconstruction from the mirrored lateral re-projects closer to it than one from the lateral as
    given: the correlation ``lat_ncc`` of :func:`~DCTNetLib.evaluation.metrics.reprojection_check` for each. The
    generator draws chest-shaped volumes facing left; from a mirrored lateral it draws one that explains it less well
    (with the image rule first, ``benchmarks/film_gate.py`` on the 21 prepared CTs: 21 of 21 mirrored DRR laterals
    and 41 of 42 film-like ones flipped back, 1 false flip among the 63 genuine ones). A tie keeps the film as given."""
    return mirrored["lat_ncc"] > as_given["lat_ncc"]


def lateral_mirrored(image: np.ndarray) -> bool:
    """True when an ``(H, W)`` lateral shows the patient facing right (spine on the left): see the module docstring."""
    return lateral_orientation(image) == "right"


def facing_left(lateral: np.ndarray) -> tuple[np.ndarray, bool]:
    """The ``(H, W)`` lateral in the model's orientation by the image rule alone, and whether it had to be flipped
    (:func:`lateral_mirrored`; an unclear lateral is kept as given: what needs no model, e.g. the framing edits of
    :mod:`DCTNetLib.evaluation.framing`. Reconstructions decide unclear laterals with the model:
    :meth:`DCTNetLib.inference.Reconstructor.orient_lateral`)."""
    if lateral_mirrored(lateral):
        return np.ascontiguousarray(lateral[:, ::-1]), True
    return lateral, False


def non_chest_reason(image: np.ndarray, view: str) -> str | None:
    """Why an ``(n, n)`` model-ready image in [0, 1] is not a chest radiograph of ``view`` ("pa" or "lat"), or
    ``None`` when it passes (module docstring)."""
    name = _VIEW_NAMES[view]
    value = structure(image)
    if value < MIN_STRUCTURE:
        return (f"the {name} image is not a radiograph: it has no large-scale structure (self-similarity "
                f"{value:.2f} < {MIN_STRUCTURE}; noise or an empty image?)")
    if view == "pa":
        value = pa_polarity(image)
        if value <= MIN_PA_POLARITY:
            return (f"the PA image looks inverted: its lung fields are brighter than the mediastinum (contrast "
                    f"{value:+.2f}); give the film as displayed for reading (bone white, lungs dark)")
        value = pa_top_tissue(image)
        if value < MIN_PA_TOP_TISSUE:
            return (f"the PA image does not look like a chest radiograph: no shoulders or neck across its top "
                    f"(tissue over {value:.0%} of it; a CT slice or a photograph?)")
    return None


def consistency_reason(reprojection: dict[str, float]) -> str | None:
    """Why the reconstruction cannot explain its inputs, from :func:`reprojection_check`'s ``pa_rank`` and
    ``lat_rank``, or ``None`` when both views reach :data:`MIN_REPROJECTION_RANK`."""
    for view, minimum in MIN_REPROJECTION_RANK.items():
        value = reprojection.get(f"{view}_rank")
        if value is not None and not value >= minimum:
            return (f"the {_VIEW_NAMES[view]} image is not explained by any chest the model can reconstruct "
                    f"(re-projection correlation {value:.2f} < {minimum}): is it a chest {_VIEW_NAMES[view]} "
                    "radiograph, displayed bone white?")
    return None
