"""Real radiographs ("films") met halfway: the view and orientation their DICOM header states, and their physical
field of view mapped onto the training detector's.

The model was trained on DRRs of one geometry (:class:`DCTNetLib.data.drr.DRRGeometry`): a 500 mm square
detector seen at 128² (3.9 mm a pixel), PA with the patient's right on the image's left, lateral (left lateral)
with the patient facing the image's left, head up (docs/conventions.md). A film is made to match what its
header allows, and every assumption is said once:

- **Field of view.** With a plausible ``ImagerPixelSpacing`` (detector plane, preferred: the DRR detector is
  also measured there) or ``PixelSpacing``, the film is resampled to the detector's pixel pitch and centred on
  the 500 mm field (cropped when larger, padded with 0 = no attenuation when smaller), so anatomy has the size
  the model saw in training. Without one (PNG, JPEG, a DICOM header without spacing, or a spacing that makes the
  film smaller than 200 mm or larger than 600 mm, as a down-sampled export keeping its original spacing does)
  the whole image is taken as the 500 mm field, and a warning says so.
- **View.** ``ViewPosition`` PA/AP given as ``--lat``, or LL/RL given as ``--pa``, is refused (swap the
  files); AP (magnified heart) and RL (mirrored lateral) are used with a warning.
- **Orientation.** ``PatientOrientation`` (row direction, column direction) is compared with the training
  display (PA: L, F; lateral: P, F); a film stored mirrored (R / A) or upside down (H) is flipped back, and the
  warning says which flip was made. A film without it cannot be checked, and the warning says that too.
- **One patient** (:func:`pair_identity`). The two films' Patient module attributes (PatientID, PatientName's family
  and given name, PatientBirthDate, PatientSex; DICOM PS3.3 C.7.1.1) must not contradict each other: a PA and a
  lateral naming two patients give a warning that names the differing values (a CT made from two people's films
  shows neither), and ``dctnet reconstruct --dicom`` refuses to file such a CT under the PA's patient. Films of one
  patient taken on different days are said to be so. Pixels cannot tell two patients apart (README, "Two
  patients"); the headers can, when they still name the patient.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..conventions import DETECTOR_MM, IMAGE_SIZE
from ..errors import InputError
from .atomic import display_path
from . import radiograph
from .radiograph import _is_dicom, dcmread_checked

__all__ = ["FilmInfo", "PairIdentity", "film_info", "pair_identity", "map_to_detector", "read_film", "DETECTOR_MM",
           "DETECTOR_PIXELS", "FILM_MIN_MM", "FILM_MAX_MM", "EXPECTED_ORIENTATION", "IDENTITY_KEYWORDS"]

# The training detector (conventions.DETECTOR_MM, seen at the model's IMAGE_SIZE²; DRRGeometry's defaults).
DETECTOR_PIXELS = IMAGE_SIZE
# Plausible side of a chest film (mm): a spacing implying less or more is not trusted.
FILM_MIN_MM, FILM_MAX_MM = 200.0, 600.0
# PatientOrientation of the training display: (direction of increasing column, direction of increasing row).
EXPECTED_ORIENTATION = {"pa": ("L", "F"), "lat": ("P", "F")}
_OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "H": "F", "F": "H"}
_VIEW_NAMES = {"pa": "PA", "lat": "lateral"}
_LATERAL_VIEWS = {"LL", "RL", "LAT", "LATERAL", "LLD", "RLD"}
_FRONTAL_VIEWS = {"PA", "AP"}
# The Patient module's attributes that name a patient (DICOM PS3.3 C.7.1.1), compared between the two films.
IDENTITY_KEYWORDS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex")
# The day a film was taken: the first of these a header holds (PS3.3 C.7.6.1 General Image, C.7.2.1 General Study).
_DATE_KEYWORDS = ("AcquisitionDate", "ContentDate", "StudyDate")
# PatientSex "O" (other) and an empty value say nothing that could contradict another film (PS3.3 C.7.1.1).
_UNSTATED = {"", "O"}


@dataclass
class FilmInfo:
    """What a radiograph file says about itself (None where it says nothing)."""

    path: Path
    dicom: bool
    view_position: str | None = None
    orientation: tuple[str, str] | None = None
    spacing_mm: float | None = None        # trusted pixel pitch on the detector, mm (None: unknown)
    spacing_source: str | None = None      # "ImagerPixelSpacing" or "PixelSpacing"
    patient: dict[str, str] = field(default_factory=dict)  # IDENTITY_KEYWORDS the header states (normalised)
    date: str | None = None                # YYYYMMDD the film was taken (_DATE_KEYWORDS), None if not stated
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PairIdentity:
    """Whether two films' headers name one patient: ``same_patient`` is True when they agree on at least one
    identity attribute and contradict none, False when any differs, None when nothing could be compared."""

    same_patient: bool | None
    compared: tuple[str, ...] = ()         # IDENTITY_KEYWORDS both films state
    differ: tuple[str, ...] = ()           # those of them whose values differ
    days_apart: int | None = None          # |date difference| when both films state a date


def _identity_value(keyword: str, value: object) -> str:
    """A header value as compared between films: upper case, blanks squeezed; of a PersonName the family and given
    name of its alphabetic group (PS3.5 6.2.1.1: ``family^given^middle^prefix^suffix=ideographic=phonetic``), so
    ``Doe^Jane^^`` and ``DOE^JANE^M`` are one name, as one patient's films from two systems often write it."""
    text = " ".join(str(value).split()).upper()
    if keyword == "PatientName":
        text = "^".join(part.strip() for part in text.split("=")[0].split("^")[:2]).rstrip("^")
    return "" if keyword == "PatientSex" and text in _UNSTATED else text


def _spacing(ds, keyword: str) -> float | None:
    value = ds.get(keyword)
    try:
        rows, cols = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if not (np.isfinite(rows) and np.isfinite(cols)) or rows <= 0 or cols <= 0:
        return None
    return (rows + cols) / 2 if abs(rows - cols) <= 0.01 * max(rows, cols) else None


def film_info(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> FilmInfo:
    """Header facts of a radiograph file: view, orientation and a trusted pixel spacing (see the module doc).

    Args:
        path: the radiograph file.
        shape: its ``(rows, cols)`` in pixels, to judge whether a spacing is plausible (read from the header when
            omitted).
    """
    path = Path(path)
    if not _is_dicom(path):
        return FilmInfo(path, False, warnings=[
            f"{display_path(path)} has no DICOM header: its view, orientation and pixel spacing cannot be checked; "
            f"it is used as given, the whole image as the training detector's {DETECTOR_MM:.0f} mm field"])
    ds = dcmread_checked(path, stop_before_pixels=True)
    info = FilmInfo(path, True)
    view = str(ds.get("ViewPosition") or "").strip().upper()
    info.view_position = view or None
    parts = [str(v).strip().upper() for v in (ds.get("PatientOrientation") or [])]
    if len(parts) == 2 and all(parts):
        info.orientation = (parts[0], parts[1])
    rows, cols = shape or (int(ds.get("Rows") or 0), int(ds.get("Columns") or 0))
    for keyword in ("ImagerPixelSpacing", "PixelSpacing"):
        spacing = _spacing(ds, keyword)
        if spacing is None:
            continue
        side = max(rows, cols) * spacing
        if FILM_MIN_MM <= side <= FILM_MAX_MM:
            info.spacing_mm, info.spacing_source = spacing, keyword
            break
        info.warnings.append(f"{display_path(path)}: {keyword} {spacing:.3f} mm makes the film {side:.0f} mm wide, "
                             f"not a chest film's {FILM_MIN_MM:.0f}-{FILM_MAX_MM:.0f} mm; not trusted")
    for keyword in IDENTITY_KEYWORDS:
        value = _identity_value(keyword, ds.get(keyword) or "")
        if value:
            info.patient[keyword] = value
    info.date = next((str(ds.get(k)).strip() for k in _DATE_KEYWORDS if str(ds.get(k) or "").strip()), None)
    if info.spacing_mm is None:
        info.warnings.append(f"{display_path(path)}: pixel spacing unknown, so the image is taken as the whole "
                             f"{DETECTOR_MM:.0f} mm training field (anatomy may be larger or smaller than in training)")
    return info


def check_view(info: FilmInfo, view: str) -> tuple[bool, bool, list[str]]:
    """``(flip_columns, flip_rows, warnings)`` for a film given as ``view`` ("pa" or "lat").

    Raises:
        InputError: ViewPosition names the other view (a PA given as ``--lat`` or a lateral as ``--pa``).
    """
    where, name = display_path(info.path), _VIEW_NAMES[view]
    messages: list[str] = []
    position = info.view_position
    if position:
        wrong = position in _LATERAL_VIEWS if view == "pa" else position in _FRONTAL_VIEWS
        if wrong:
            other = "--lat" if view == "pa" else "--pa"
            raise InputError(f"{where}: its DICOM ViewPosition is {position}, but it was given as the {name} "
                             f"radiograph (--{view}); pass it as {other}")
        if position == "AP":
            messages.append(f"{where}: an AP film (ViewPosition AP); the model was trained on PA views, whose heart "
                            "shadow is smaller")
        elif position == "RL":
            messages.append(f"{where}: a right lateral (ViewPosition RL); the model was trained on left laterals")
    elif info.dicom:
        messages.append(f"{where}: no ViewPosition in the DICOM header: that this is a {name} view cannot be checked")
    flip_cols = flip_rows = False
    if info.orientation:
        expected = EXPECTED_ORIENTATION[view]
        across, down = info.orientation[0][:1], info.orientation[1][:1]
        if across == _OPPOSITE[expected[0]]:
            flip_cols = True
        elif across != expected[0]:
            messages.append(f"{where}: PatientOrientation {'/'.join(info.orientation)} is not a {name} view's "
                            f"({'/'.join(expected)}); used as stored")
        if down == _OPPOSITE[expected[1]]:
            flip_rows = True
        if flip_cols or flip_rows:
            flips = " and ".join(text for text, done in (("left-right", flip_cols), ("upside down", flip_rows)) if done)
            messages.append(f"{where}: PatientOrientation {'/'.join(info.orientation)}: flipped {flips} to the "
                            f"training orientation {'/'.join(expected)}")
    elif info.dicom:
        messages.append(f"{where}: no PatientOrientation in the DICOM header: its left-right and up-down "
                        f"orientation cannot be checked (expected {'/'.join(EXPECTED_ORIENTATION[view])})")
    return flip_cols, flip_rows, messages


def _days_apart(first: str | None, second: str | None) -> int | None:
    try:
        days = [datetime.datetime.strptime(d[:8], "%Y%m%d").date() for d in (first, second)]
    except (TypeError, ValueError):
        return None
    return abs((days[0] - days[1]).days)


def pair_identity(pa: FilmInfo, lat: FilmInfo) -> tuple[PairIdentity, list[str]]:
    """Whether a PA and a lateral film name one patient, and the warnings to give (see the module doc).

    Returns:
        the :class:`PairIdentity` and human-readable warnings: the films name two patients (with the values that
        differ), or one patient's films were taken on different days. Nothing is said when a film has no header
        (its own warning already says that nothing can be checked).
    """
    compared = tuple(k for k in IDENTITY_KEYWORDS if k in pa.patient and k in lat.patient)
    differ = tuple(k for k in compared if pa.patient[k] != lat.patient[k])
    days = _days_apart(pa.date, lat.date)
    identity = PairIdentity(None if not compared else not differ, compared, differ, days)
    where = f"the PA ({display_path(pa.path)}) and the lateral ({display_path(lat.path)})"
    if differ:
        values = "; ".join(f"{k} {pa.patient[k]!r} against {lat.patient[k]!r}" for k in differ)
        return identity, [f"{where} name two patients ({values}): a CT made from two people's radiographs shows "
                          "neither; check that both films are this patient's"]
    if days:
        return identity, [f"{where} were taken {days} day{'s' if days > 1 else ''} apart ({pa.date} and "
                          f"{lat.date}): the chest may have changed between them"]
    return identity, []


def map_to_detector(image: np.ndarray, spacing_mm: float, detector_mm: float = DETECTOR_MM,
                    pixels: int = DETECTOR_PIXELS) -> np.ndarray:
    """Resample a film of pixel pitch ``spacing_mm`` to the detector's pitch (``detector_mm / pixels``) and centre
    it on the ``pixels``² detector: cropped where it is larger, 0 (no attenuation) where it is smaller.

    Shrinking averages areas (Pillow BOX), enlarging is bilinear. Returns ``(pixels, pixels)`` float32.
    """
    from PIL import Image

    image = np.asarray(image, dtype=np.float32)
    scale = spacing_mm * pixels / detector_mm  # output pixels per input pixel
    rows, cols = (max(1, int(round(side * scale))) for side in image.shape)
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    resized = np.asarray(Image.fromarray(image, mode="F").resize((cols, rows), resample=resample), np.float32)
    out = np.zeros((pixels, pixels), np.float32)

    def window(size: int) -> tuple[slice, slice]:  # (source, destination) of a centred copy along one axis
        if size >= pixels:
            start = (size - pixels) // 2
            return slice(start, start + pixels), slice(0, pixels)
        start = (pixels - size) // 2
        return slice(0, size), slice(start, start + size)

    (src_r, dst_r), (src_c, dst_c) = window(rows), window(cols)
    out[dst_r, dst_c] = resized[src_r, src_c]
    return np.clip(out, 0.0, 1.0)


def read_film(path: str | os.PathLike, view: str) -> tuple[np.ndarray, FilmInfo]:
    """Read a radiograph given as ``view`` ("pa" or "lat") and bring it to the training display and field.

    Returns:
        the image in [0, 1] (``DETECTOR_PIXELS``² when its spacing is known, else as stored) and its
        :class:`FilmInfo`, whose ``warnings`` list every check that could not be made and every change made.

    Raises:
        InputError: what :func:`~DCTNetLib.io.radiograph.read_radiograph` refuses, or a contradicting ViewPosition.
    """
    if view not in _VIEW_NAMES:
        raise ValueError(f"view must be 'pa' or 'lat', got {view!r}")
    image = radiograph.read_radiograph(path)  # looked up at call time (tests replace it)
    info = film_info(path, image.shape)
    flip_cols, flip_rows, messages = check_view(info, view)
    info.warnings.extend(messages)
    if flip_cols:
        image = image[:, ::-1]
    if flip_rows:
        image = image[::-1, :]
    if info.spacing_mm is not None:
        image = map_to_detector(image, info.spacing_mm)
    return np.ascontiguousarray(image), info
