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

**Lateral orientation** (:func:`lateral_mirrored`): the model's laterals show the patient facing left, spine on
the right (the training DRRs: spine-side contrast −0.04 to +0.69). Films without a DICOM orientation are often shown
facing right — both real laterals here (−0.25, −0.19) — and a mirrored lateral gave four lung columns in the axial
slices. A lateral whose right band (rows 30–70 %, columns 70–95 %) is darker than its left band (5–30 %) by more
than :data:`MIRRORED_LATERAL_CONTRAST` is flipped back, with a warning.

**Two patients** (:func:`craniocaudal_agreement`): both views integrate the same axial slabs, so in parallel
projection each row of the PA and the same row of the lateral sum the same attenuation (the zeroth of the
Helgason–Ludwig consistency conditions). Films break the equality — their display curves are not linear, and the two
films are framed apart — but the *shape* of the rows' mean brightness from the neck to the abdomen (shoulders,
lung fields, diaphragm) survives: its best correlation over a vertical shift (:data:`PAIR_SHIFT`) and scale
(:data:`PAIR_SCALES`) of one view against the other. A pair below :data:`MIN_CRANIOCAUDAL_AGREEMENT` gets a warning
that the views may be of two patients. The threshold keeps genuine pairs quiet and catches only clear
disagreements: see the constant.

**After reconstruction** (:func:`consistency_reason`): DRRs of the reconstruction are compared with the inputs
(:func:`DCTNetLib.evaluation.metrics.reprojection_check`, Spearman's rank correlation of 32² thumbnails, which a
film's display curve, noise and edge enhancement barely change — a plain correlation refused one in five film-like
DRRs). The generator can only make
chest-shaped volumes, so a view it cannot explain — an inverted lateral, a photograph, noise — re-projects poorly.
The thresholds were set on the shipped model's scores (``benchmarks/film_gate.py`` prints them): genuine inputs
(DRRs, film-like DRRs and the real films here) against inverted, photograph, CT-slice and noise inputs.

The numbers were measured with ``benchmarks/film_gate.py`` (the bad inputs it builds: uniform and smoothed noise,
scikit-image's sample photographs, axial CT slices, inverted films and DRRs).
"""

from __future__ import annotations

import numpy as np

__all__ = ["MIN_STRUCTURE", "MIN_PA_POLARITY", "MIN_PA_TOP_TISSUE", "MIN_REPROJECTION_RANK", "structure",
           "pa_polarity", "pa_top_tissue", "spine_side", "lateral_mirrored", "facing_left", "non_chest_reason", "consistency_reason",
           "PAIR_SCALES", "PAIR_SHIFT", "MIN_CRANIOCAUDAL_AGREEMENT", "craniocaudal_agreement", "two_patients_reason"]

STRUCTURE_LAG = 1 / 16      # of the image side: 8 px of 128²
MIN_STRUCTURE = 0.3         # radiographs ≥ 0.60, noise ≤ 0.03 (module docstring)
MIN_PA_POLARITY = 0.0       # PA films ≥ +0.07, inverted ≤ −0.07
TISSUE_LEVEL = 0.2          # brighter than air and lung on [0, 1]
TOP_BAND = (0.12, 0.22)     # rows, as fractions of the height: below what a collimator blanks (≤ 12 %)
MIN_PA_TOP_TISSUE = 0.2     # PA films ≥ 0.62; axial CT slices mostly below
MIRRORED_LATERAL_CONTRAST = -0.1  # training laterals ≥ −0.04, real laterals facing right ≤ −0.19
# Minimum rank correlation of each view with the DRR of the reconstruction (see consistency_reason).
MIN_REPROJECTION_RANK = {"pa": 0.5, "lat": 0.75}

# Two patients: the lateral's row profile is matched to the PA's over a scale and a shift, because two films of one
# patient are framed apart (collimation, the patient's height on the stand); the ranges are design choices, wide
# enough for a tighter or looser field on either film.
PAIR_SCALES = (0.8, 1.25)   # relative craniocaudal magnification / framing of the two views
PAIR_SHIFT = 0.16           # of the height, either way
BLANK_ROW_STD = 1e-3        # a row whose pixels vary less than this is a blank band, left out of the profiles
PAIR_OVERLAP = 0.6          # rows that must overlap after the shift and scale, as a fraction of the shown rows
# Set on the twelve training chests' DRR pairs in a random film-like appearance (data.film_appearance, 20 draws
# each): their 1st percentile, 0.66, rounded down. There, genuine DRR pairs score ≥ 0.85, film-like ones 1 % below
# 0.66, pairs of two of those chests a median of 0.80 (a quarter below 0.66); the two real pairs here 0.75 and 0.77.
MIN_CRANIOCAUDAL_AGREEMENT = 0.65

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


def lateral_mirrored(image: np.ndarray) -> bool:
    """True when an ``(H, W)`` lateral shows the patient facing right (spine on the left): see the module docstring."""
    return spine_side(image) < MIRRORED_LATERAL_CONTRAST


def facing_left(lateral: np.ndarray) -> tuple[np.ndarray, bool]:
    """The ``(H, W)`` lateral in the model's orientation, and whether it had to be flipped
    (:func:`lateral_mirrored`)."""
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


def _row_profile(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean brightness of each row of an ``(H, W)`` image, from the top (neck) down, and which rows show anything
    (not a blank collimator band: a row of one value)."""
    image = np.asarray(image, dtype=np.float64)
    return image.mean(axis=1), image.std(axis=1) > BLANK_ROW_STD


def craniocaudal_agreement(pa: np.ndarray, lat: np.ndarray, scales: tuple[float, float] = PAIR_SCALES,
                           shift: float = PAIR_SHIFT, steps: int = 19) -> float:
    """Best correlation of the PA's and the lateral's row profiles over a scale and shift of the lateral's
    (module docstring): near 1 for two views of one patient, lower when the shoulders, lungs and diaphragm of the
    two views do not line up.

    Args:
        pa, lat: ``(H, W)`` images in [0, 1] with the same number of rows (model-ready images).
        scales: smallest and largest relative scale of the lateral's rows.
        shift: largest shift, as a fraction of the height, either way.
        steps: scales tried (evenly spaced in log scale); shifts are tried every 1/64 of the height.

    Returns:
        The best Pearson correlation, in [−1, 1] (0 when a profile is flat).
    """
    (a, shown_a), (b, shown_b) = _row_profile(pa), _row_profile(lat)
    if a.shape != b.shape:
        raise ValueError(f"the two views need the same number of rows, got {a.shape[0]} and {b.shape[0]}")
    n = a.shape[0]
    rows = np.arange(n, dtype=np.float64)
    scale = np.exp(np.linspace(np.log(scales[0]), np.log(scales[1]), steps))[:, None, None]
    offsets = np.arange(-shift, shift + 1e-9, 1 / 64)[None, :, None] * n
    source = (rows[None, None, :] - n / 2) / scale + n / 2 + offsets  # row of the lateral seen at each PA row
    inside = (source >= 0) & (source <= n - 1) & shown_a & (np.interp(source, rows, shown_b.astype(float)) == 1)
    warped = np.interp(source, rows, b)
    weight = inside / np.maximum(inside.sum(axis=-1, keepdims=True), 1)
    mean_a, mean_b = (weight * a).sum(-1, keepdims=True), (weight * warped).sum(-1, keepdims=True)
    da, db = (a - mean_a) * inside, (warped - mean_b) * inside
    denominator = np.sqrt((da * da).sum(-1) * (db * db).sum(-1))
    correlation = np.where(denominator > 0, (da * db).sum(-1) / np.maximum(denominator, 1e-300), 0.0)
    correlation[inside.sum(-1) < PAIR_OVERLAP * min(shown_a.sum(), shown_b.sum())] = -1.0
    return float(correlation.max())


def two_patients_reason(pa: np.ndarray, lat: np.ndarray) -> str | None:
    """A warning when the two ``(H, W)`` views' row profiles disagree (:func:`craniocaudal_agreement` below
    :data:`MIN_CRANIOCAUDAL_AGREEMENT`), else ``None``."""
    value = craniocaudal_agreement(pa, lat)
    if value < MIN_CRANIOCAUDAL_AGREEMENT:
        return (f"the PA and lateral radiographs may be of two different patients: their shoulders, lungs and "
                f"diaphragm do not line up from top to bottom (agreement {value:.2f} < {MIN_CRANIOCAUDAL_AGREEMENT})")
    return None
