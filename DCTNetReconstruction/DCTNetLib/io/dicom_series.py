"""Finding the CT series in a folder of DICOM files, and checking its slices before any pixel is decoded.

:func:`largest_ct_series` walks the folder (GDCM lists the series of each sub-folder), keeps the series with the
most slices (logging which were skipped), and refuses, with an :class:`~DCTNetLib.errors.InputError` naming the
file and the folder, what would otherwise be read wrong or not at all: names that are not UTF-8, broken links,
FIFOs, damaged or truncated slices GDCM silently leaves out, Enhanced (multi-frame) objects, non-CT modalities,
and slice stacks with duplicated or missing slices or uneven spacing. Reading the pixels is
:func:`DCTNetLib.io.ct.read_dicom_series`.
"""

from __future__ import annotations

import errno
import logging
import os
import stat as stat_module
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .atomic import display_path, is_utf8_path
from .c_stderr import c_stderr_as_debug
from .radiograph import dcmread_checked, has_dicom_prefix

__all__ = ["largest_ct_series", "find_dicom_series"]

# What is found while looking for the series is part of reading a CT: it is said under the CT reader's name.
log = logging.getLogger("DCTNetLib.io.ct")

# Slice-stack checks of a DICOM series (fractions of the median slice gap).
_DUPLICATE_GAP = 0.05  # two slices closer than 5 % of the gap are the same slice twice
_MISSING_GAP = 1.5  # a gap over 1.5× the median means at least one slice is missing
_SPACING_TOLERANCE = 0.1  # otherwise gaps must agree within ±10 %
_SHEAR_TOLERANCE = 0.5  # slices may drift sideways by at most half a pixel over the stack (gantry tilt)


def largest_ct_series(folder: Path) -> tuple[Path, list[str]]:
    """The folder holding the largest DICOM series under ``folder`` and its slice files, checked and sorted along
    the slice normal.

    Raises:
        InputError: no series, damaged or incomplete series, a multi-frame object, a single slice, not a CT.
    """
    _check_series_tree(folder)
    series = find_dicom_series(folder)
    if not series:
        raise InputError(_why_no_series(folder))
    series.sort(key=lambda s: len(s[2]), reverse=True)
    uid, series_folder, files = series[0]
    if len(series) > 1:
        skipped = "; ".join(f"{s[0]} ({len(s[2])} files) in {s[1]}" for s in series[1:])
        log.warning("%d DICOM series under %s; using the largest: %s (%d files) in %s; skipped: %s",
                    len(series), folder, uid, len(files), series_folder, skipped)
    _check_left_out_files(series_folder, uid, files)
    enhanced = _enhanced_ct_message(files, series_folder)
    if enhanced:
        raise InputError(enhanced)
    if len(files) < 2:
        raise InputError(f"DICOM series has a single slice; a CT needs a stack of slices: {series_folder}")
    return series_folder, _sorted_slices(files, series_folder)


def find_dicom_series(folder: Path) -> list[tuple[str, Path, list[str]]]:
    """All DICOM series under ``folder`` (recursively) as ``(series_uid, series_folder, file_names)``."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        if not files:  # DICOM files often have no extension at all (TCIA downloads): ask GDCM
            continue
        with c_stderr_as_debug(log, f"listing {display_path(root)}"):  # its codecs print on undecodable slices
            for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(root):
                names = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(root, uid))
                if names:
                    found.append((uid, Path(root), names))
    return found


def _check_series_tree(folder: Path) -> None:
    """Refuse, before GDCM scans ``folder``, what it would choke on or silently skip.

    GDCM (C++) aborts the process on a name that is not UTF-8, blocks forever opening a FIFO, and silently leaves
    out a broken or self-referencing symbolic link, which then looks like a missing or truncated healthy slice.

    Raises:
        InputError: naming the offending entry and the folder.
    """
    if not is_utf8_path(folder):
        raise InputError(f"the CT folder's name is not valid UTF-8 (GDCM cannot open it; rename it): "
                         f"{display_path(folder)}")
    for root, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            path = Path(root) / name
            if not is_utf8_path(name):
                raise InputError(f"file name '{display_path(name)}' is not valid UTF-8 (GDCM cannot open it; rename "
                                 f"it) in CT folder {display_path(root)}")
            try:
                mode = os.stat(path).st_mode
            except OSError as exc:  # ENOENT: dangling link; ELOOP: a link to itself (or a loop of links)
                reason = {errno.ENOENT: "points to nothing", errno.ELOOP: "points to itself"}.get(
                    exc.errno, exc.strerror or str(exc))
                raise InputError(f"broken symbolic link {name} ({reason}) in CT folder {root}") from exc
            if not (stat_module.S_ISREG(mode) or stat_module.S_ISDIR(mode)):
                raise InputError(f"{name} is not a regular file (a FIFO, socket or device) in CT folder {root}")


def _enhanced_ct_message(files: list[str], folder: Path) -> str | None:
    """Why a one-file "series" is not a stack of slices: an Enhanced (multi-frame) CT/MR object, if it is one."""
    try:
        ds = dcmread_checked(files[0], stop_before_pixels=True,
                             specific_tags=["SOPClassUID", "NumberOfFrames", "Modality"])
    except InputError:
        return None
    frames = str(ds.get("NumberOfFrames", "") or "1")
    sop = str(ds.get("SOPClassUID", ""))
    if sop in _ENHANCED_SOP_CLASSES or (frames.isdigit() and int(frames) > 1):
        kind = _ENHANCED_SOP_CLASSES.get(sop, f"multi-frame {ds.get('Modality', '')}".strip())
        return (f"DICOM file {Path(files[0]).name} is an {kind} object ({frames} frames in one file), which DCTNet "
                f"does not read; convert it to a one-file-per-slice series or to NIfTI (e.g. with dcm2niix): {folder}")
    return None


# Enhanced (multi-frame) SOP classes: a whole volume in one file, geometry in per-frame functional groups.
_ENHANCED_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR",
}


def _numbers(ds, keyword: str, count: int, path: str) -> list[float]:
    """A multi-valued decimal attribute (ImagePositionPatient …) with exactly ``count`` finite numbers."""
    values = ds.get(keyword)
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise InputError(f"DICOM file {Path(path).name} has a malformed {keyword} ({str(values)[:60]!r}, not numbers) "
                         f"in series folder {Path(path).parent}") from exc
    if len(numbers) != count or not np.isfinite(numbers).all():
        raise InputError(f"DICOM file {Path(path).name} has a malformed {keyword} ({len(numbers)} values, need "
                         f"{count} finite numbers) in series folder {Path(path).parent}")
    return numbers


def _sorted_slices(files: list[str], folder: Path) -> list[str]:
    """Sort the slices along the slice normal and check the stack is complete and evenly spaced.

    Raises:
        InputError: unreadable file, malformed position/orientation, mixed slice sizes/orientations, duplicated or
            missing slices, uneven spacing.
    """
    tags = ["ImagePositionPatient", "ImageOrientationPatient", "Rows", "Columns", "Modality", "PatientID",
            "PixelSpacing", "BitsAllocated", "SamplesPerPixel"]
    headers = []
    for name in files:
        try:
            ds = dcmread_checked(name, stop_before_pixels=True, specific_tags=tags)
        except InputError as exc:
            raise InputError(f"unreadable DICOM file {Path(name).name} in series folder {folder}: "
                             f"{str(exc).rsplit(': ', 1)[0]}") from exc
        headers.append(ds)
    modality = str(headers[0].get("Modality", "CT")).upper()
    if modality in {"MR", "PT", "NM", "US", "CR", "DX", "MG", "XA", "RF"}:
        raise InputError(f"DICOM series is {modality}, not CT: {folder}")
    if len({(ds.get("Rows"), ds.get("Columns")) for ds in headers}) > 1:
        raise InputError(f"DICOM series mixes slice sizes: {folder}")
    patients = sorted({str(ds.get("PatientID", "")) for ds in headers})
    if len(patients) > 1:
        raise InputError(f"DICOM series mixes {len(patients)} patients (PatientID {', '.join(map(repr, patients[:3]))}"
                         f"); one series is one patient's scan: {folder}")
    for ds, name in zip(headers, files):
        _check_pixel_spacing(ds, name)
        _check_pixel_data_fits(ds, name)
    if any(ds.get("ImagePositionPatient") is None or ds.get("ImageOrientationPatient") is None for ds in headers):
        log.warning("DICOM series without slice positions; slice order and spacing not checked: %s", folder)
        return files
    orientation = np.array([_numbers(ds, "ImageOrientationPatient", 6, name) for ds, name in zip(headers, files)])
    if np.abs(orientation - orientation[0]).max() > 1e-3:
        raise InputError(f"DICOM series mixes slice orientations: {folder}")
    normal = np.cross(orientation[0, :3], orientation[0, 3:])
    if not np.linalg.norm(normal) > 0.5:
        raise InputError(f"DICOM series has a degenerate ImageOrientationPatient {orientation[0].tolist()} (its row "
                         f"and column directions are parallel): {folder}")
    points = np.array([_numbers(ds, "ImagePositionPatient", 3, name) for ds, name in zip(headers, files)])
    position = points @ normal
    order = np.argsort(position, kind="stable")
    position, points = position[order], points[order]
    files = [files[i] for i in order]
    _check_not_sheared(points, normal, headers[0], folder)
    gaps = np.diff(position)
    if gaps.size == 0:
        return files
    typical = float(np.median(gaps))
    if typical <= 0:
        raise InputError(f"DICOM series has its slices at one position (duplicated files?): {folder}")
    dup = np.flatnonzero(gaps < _DUPLICATE_GAP * typical)
    if dup.size:
        i = int(dup[0])
        raise InputError(f"DICOM series has {dup.size} duplicated slice(s) (e.g. {Path(files[i]).name} and "
                         f"{Path(files[i + 1]).name} at {position[i]:.2f} mm): {folder}")
    miss = np.flatnonzero(gaps > _MISSING_GAP * typical)
    if miss.size:
        i = int(miss[0])
        raise InputError(f"DICOM series has missing slice(s): gap of {gaps[i]:.2f} mm between {position[i]:.2f} and "
                         f"{position[i + 1]:.2f} mm where slices are {typical:.2f} mm apart: {folder}")
    uneven = np.abs(gaps - typical) > _SPACING_TOLERANCE * typical
    if uneven.any():
        raise InputError(f"DICOM series has inconsistent slice spacing ({gaps.min():.2f} to {gaps.max():.2f} mm): "
                         f"{folder}")
    return files


def _check_pixel_spacing(ds, name: str) -> None:
    """Refuse a PixelSpacing that is not two positive numbers (GDCM reads 0 as 1 mm without a word)."""
    if ds.get("PixelSpacing") is None:
        return
    spacing = _numbers(ds, "PixelSpacing", 2, name)
    if min(spacing) <= 0:
        raise InputError(f"DICOM file {Path(name).name} has an invalid PixelSpacing {spacing} (must be positive mm; "
                         f"a reader would take 1 mm) in series folder {Path(name).parent}")


def _check_pixel_data_fits(ds, name: str) -> None:
    """Refuse a slice whose file is smaller than the uncompressed image its Rows × Columns declare: GDCM would
    allocate the declared size (a 2048² header over 512² data) and fill the rest with nothing real."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or syntax.is_compressed or syntax.is_deflated:
        return  # encapsulated or deflated pixel data: its size on disk says nothing about the image's
    try:
        declared = (int(ds.get("Rows") or 0) * int(ds.get("Columns") or 0) * max(int(ds.get("BitsAllocated") or 8) // 8, 1)
                    * int(ds.get("SamplesPerPixel") or 1))
    except (TypeError, ValueError):
        return  # malformed numbers: GDCM refuses the slice itself
    size = os.stat(name).st_size
    if size < declared:
        raise InputError(f"DICOM file {Path(name).name} declares a {ds.get('Rows')} × {ds.get('Columns')} image "
                         f"({declared} bytes) but the whole file is {size} bytes, in series folder "
                         f"{Path(name).parent}")


def _check_not_sheared(points: np.ndarray, normal: np.ndarray, first, folder: Path) -> None:
    """Refuse a stack whose slices drift sideways (gantry tilt): readers place every slice under the first one,
    so the volume would be sheared. Tolerated: a drift under half a pixel over the whole stack."""
    offsets = points - points[0]
    sideways = offsets - np.outer(offsets @ normal, normal)
    drift = float(np.linalg.norm(sideways, axis=1).max())
    spacing = first.get("PixelSpacing")
    pixel = min(float(v) for v in spacing) if spacing is not None else 1.0
    if drift > _SHEAR_TOLERANCE * pixel:
        along = float(np.abs(offsets @ normal).max())
        angle = float(np.degrees(np.arctan2(drift, along)))
        raise InputError(f"DICOM series is tilted (gantry tilt about {angle:.1f}°: its slices drift {drift:.1f} mm "
                         f"sideways over {along:.1f} mm, which a reader would ignore); resample it to an upright grid "
                         f"first (e.g. dcm2niix corrects gantry tilt): {folder}")


def _why_no_series(folder: Path) -> str:
    """The message for a folder where GDCM finds no image series: empty, no DICOM, or DICOM without pixels."""
    files = [Path(root) / name for root, _, names in os.walk(folder) for name in sorted(names)]
    if not files:
        return f"no readable DICOM series found: the CT folder is empty: {folder}"
    dicom = [path for path in files if has_dicom_prefix(path)]
    if not dicom:
        return f"no readable DICOM series found in folder ({len(files)} file(s), none of them DICOM): {folder}"
    try:
        ds = dcmread_checked(dicom[0], defer_size=1024)
    except InputError as exc:
        return (f"no readable DICOM series found in folder: {dicom[0].name} is damaged or truncated "
                f"({str(exc).rsplit(': ', 1)[0]}): {folder}")
    if "PixelData" not in ds:
        return (f"no readable DICOM series found in folder: its {len(dicom)} DICOM file(s) hold no pixel data "
                f"(e.g. {dicom[0].name}, modality {ds.get('Modality', '?')}): {folder}")
    return f"no readable DICOM series found in folder ({len(dicom)} DICOM file(s), none readable by GDCM): {folder}"


def _check_left_out_files(series_folder: Path, uid: str, files: list[str]) -> None:
    """Refuse a series when a DICOM file beside it is damaged or is one of its slices that GDCM left out.

    GDCM's series scanner silently skips files it cannot parse (a truncated download), so the series it returns
    looks complete or merely "missing a slice". Any DICOM-prefixed file of the folder outside the series is read
    with pydicom: unreadable, or belonging to the same series, means a damaged slice.

    Raises:
        InputError: naming the damaged file and the folder.
    """
    listed = {Path(name).name for name in files}
    for name in sorted(os.listdir(series_folder)):
        path = series_folder / name
        if name in listed or not path.is_file() or not has_dicom_prefix(path):
            continue
        try:
            ds = dcmread_checked(path, stop_before_pixels=True)
        except InputError as exc:
            raise InputError(f"unreadable DICOM file {name} ({str(exc).rsplit(': ', 1)[0]}) in series folder "
                             f"{series_folder}") from exc
        if len(ds) == 0:  # only the preamble and file meta survived: cut off after the header
            raise InputError(f"unreadable DICOM file {name} (truncated: it ends after its file header) in series "
                             f"folder {series_folder}")
        if str(ds.get("SeriesInstanceUID", "")) == uid:
            raise InputError(f"DICOM slice {name} of the series is truncated or damaged (its pixel data cannot be "
                             f"read): {series_folder}")
