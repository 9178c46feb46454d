"""CT volumes in, CT volumes out: :class:`CTVolume` and :func:`read_ct` / :func:`write_ct`.

Every CT enters the project through :func:`read_ct`, which returns Hounsfield units as float32 in the canonical
orientation of ``DCTNetLib.conventions`` (``sitk.DICOMOrient(img, "LPI")``; array ``(D, H, W)`` = (S→I, A→P,
R→L)) together with the physical geometry (spacing, origin, direction) needed to write results back in place.

Accepted inputs: a folder holding a DICOM series (searched recursively; with several series the one with the most
slices is used and the choice is logged as a warning naming the series kept and skipped), or a NIfTI (``.nii``/``.nii.gz``), NRRD (``.nrrd``/``.nhdr``) or
MetaImage (``.mha``/``.mhd``) file. DICOM rescale slope/intercept are applied by SimpleITK's ImageSeriesReader;
the slice stack is checked for missing or duplicated slices and uneven spacing first.

Rejected, with an :class:`~DCTNetLib.errors.InputError` naming the problem and the file: missing paths,
unreadable files, 2D images (or a single DICOM slice), multi-component (RGB) images, NaN/inf voxels, and volumes
whose values are not CT-like (see :func:`check_ct_values`); empty folders, DICOM files without pixel data, and
damaged or truncated slices of the chosen series (GDCM silently leaves those out of a series, which would
otherwise look like a missing slice or go unnoticed).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..conventions import SITK_ORIENTATION
from ..errors import InputError, OutputError
from .atomic import atomic_path, check_free_space, check_readable, check_writable_dir
from .radiograph import has_dicom_prefix

__all__ = [
    "CTVolume",
    "CANONICAL_DIRECTION",
    "read_ct",
    "read_dicom_series",
    "write_ct",
    "to_sitk",
    "from_sitk",
    "check_ct_values",
    "CT_MAX_MINIMUM_HU",
]

log = logging.getLogger(__name__)

# Direction cosines (SimpleITK row-major 3×3, LPS world) of an axis-aligned volume after DICOMOrient(..., "LPI"):
# x → patient Left (+x of LPS), y → Posterior (+y), z → Inferior (−z).
CANONICAL_DIRECTION: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)

# CT-likeness rule (see check_ct_values): a CT of a body always contains air (≈ −1000 HU outside the body, in the
# lungs or the bowel) or scanner padding (−1024 … −3024 HU), so its minimum is far below −500 HU. MR, PET or CT
# stored without its rescale intercept (raw 0…4095) have minima ≥ 0 and are rejected.
CT_MAX_MINIMUM_HU = -500.0
# ... and at least some voxels denser than lung (soft tissue ≈ 40 HU); an all-air volume is not a usable CT.
CT_MIN_MAXIMUM_HU = -200.0

READABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
WRITABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")  # single-file formats (an .mhd has a separate .raw)

# Slice-stack checks of a DICOM series (fractions of the median slice gap).
_DUPLICATE_GAP = 0.05  # two slices closer than 5 % of the gap are the same slice twice
_MISSING_GAP = 1.5  # a gap over 1.5× the median means at least one slice is missing
_SPACING_TOLERANCE = 0.1  # otherwise gaps must agree within ±10 %

# NIfTI on-disk float types (NIfTI-1 header ``datatype`` codes, nifti1.h: DT_FLOAT32 16, DT_FLOAT64 64). ITK's NIfTI
# reader replaces every NaN/±inf of these with 0 without a word (InsightSoftwareConsortium/ITK PR #6683, fixed only
# for ITK 6), so read_ct scans the raw voxels itself.
_NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}
_SCAN_CHUNK_BYTES = 1 << 22  # 4 MiB at a time: constant memory whatever the volume size


@dataclass
class CTVolume:
    """A CT in HU with its physical geometry, in the canonical orientation.

    Args:
        hu: ``(D, H, W)`` float32 Hounsfield units; D = superior→inferior, H = anterior→posterior,
            W = patient right→left.
        spacing: voxel size in mm along ``(D, H, W)`` (numpy order, i.e. SimpleITK's spacing reversed).
        origin_lps: ``(x, y, z)`` LPS world position in mm of the centre of voxel ``hu[0, 0, 0]``.
        direction: SimpleITK direction cosines (row-major 3×3) of the index axes (x=W, y=H, z=D). Defaults to
            the axis-aligned canonical ``diag(1, 1, -1)``.
        source: the file or folder the volume was read from ("" when built in memory).
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    origin_lps: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = CANONICAL_DIRECTION
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        self.hu = np.asarray(self.hu, dtype=np.float32)
        if self.hu.ndim != 3:
            raise ValueError(f"hu must be a (D, H, W) array, got shape {self.hu.shape}")
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]
        self.origin_lps = tuple(float(o) for o in self.origin_lps)  # type: ignore[assignment]
        self.direction = tuple(float(d) for d in self.direction)
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"spacing must be three positive mm values (D, H, W), got {self.spacing}")
        if len(self.origin_lps) != 3 or len(self.direction) != 9:
            raise ValueError("origin_lps needs 3 values and direction 9")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)  # type: ignore[return-value]

    def index_to_lps(self, index_dhw) -> np.ndarray:
        """LPS position (mm) of a (possibly fractional) ``(d, h, w)`` voxel index; ``(..., 3)`` → ``(..., 3)``."""
        ijk = np.asarray(index_dhw, dtype=np.float64)[..., ::-1]  # (x, y, z) index order
        matrix = np.asarray(self.direction).reshape(3, 3) * np.asarray(self.spacing[::-1])
        return np.asarray(self.origin_lps) + ijk @ matrix.T

    def centre_lps(self) -> np.ndarray:
        """LPS position (mm) of the geometric centre of the volume (half-way between the end voxel centres)."""
        return self.index_to_lps((np.asarray(self.shape, dtype=np.float64) - 1.0) / 2.0)


def to_sitk(ct: CTVolume) -> sitk.Image:
    """The volume as a float32 SimpleITK image with its spacing, origin and direction."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(ct.hu, dtype=np.float32))
    image.SetSpacing(tuple(reversed(ct.spacing)))
    image.SetOrigin(ct.origin_lps)
    image.SetDirection(ct.direction)
    return image


def check_ct_values(hu: np.ndarray, source: str) -> None:
    """Reject arrays that are not finite CT values in HU.

    Rule: a body CT must contain air, so its minimum must be ≤ ``CT_MAX_MINIMUM_HU`` (−500 HU), and something
    denser than lung, so its maximum must be ≥ ``CT_MIN_MAXIMUM_HU`` (−200 HU). MR volumes, PET and CT data
    missing its rescale intercept fail the first test.

    Raises:
        InputError: naming the problem and ``source``.
    """
    finite = np.isfinite(hu)
    if not finite.all():
        bad = int(hu.size - np.count_nonzero(finite))
        raise InputError(f"CT contains {bad} NaN/inf voxel(s): {source}")
    lo, hi = float(hu.min()), float(hu.max())
    if lo > CT_MAX_MINIMUM_HU:
        raise InputError(
            f"values do not look like a CT in HU (minimum {lo:.0f} > {CT_MAX_MINIMUM_HU:.0f}; a body CT contains "
            f"air near -1000 HU — is this an MR image or a CT without rescale intercept?): {source}"
        )
    if hi < CT_MIN_MAXIMUM_HU:
        raise InputError(f"values do not look like a CT in HU (maximum {hi:.0f} HU, no tissue at all): {source}")


def from_sitk(image: sitk.Image, source: str = "") -> CTVolume:
    """Validate a SimpleITK image and turn it into a canonical :class:`CTVolume` (float32 HU).

    Args:
        image: a 3D scalar image in HU, any orientation.
        source: file name used in error messages.

    Raises:
        InputError: 2D, 4D or multi-component images; NaN/inf; values that are not CT-like.
    """
    name = source or "<in-memory image>"
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"CT must have one value per voxel, found {image.GetNumberOfComponentsPerPixel()} "
                         f"(a colour or vector image?): {name}")
    size = image.GetSize()
    if image.GetDimension() != 3:
        raise InputError(f"CT must be a 3D volume, found a {image.GetDimension()}D image of size {size}: {name}")
    if min(size) < 2:
        raise InputError(f"CT must be a 3D volume, found a single slice (size {size}); for DICOM pass the folder "
                         f"holding the whole series: {name}")
    image = sitk.DICOMOrient(sitk.Cast(image, sitk.sitkFloat32), SITK_ORIENTATION)
    hu = sitk.GetArrayFromImage(image)  # (z, y, x) = (D, H, W)
    check_ct_values(hu, name)
    return CTVolume(
        hu=hu,
        spacing=tuple(reversed(image.GetSpacing())),
        origin_lps=image.GetOrigin(),
        direction=image.GetDirection(),
        source=source,
    )


def read_ct(path: str | os.PathLike) -> CTVolume:
    """Read a CT from a DICOM series folder or a NIfTI / NRRD / MetaImage file.

    Args:
        path: folder (DICOM) or file.

    Returns:
        canonical float32 HU :class:`CTVolume`.

    Raises:
        InputError: see the module docstring; the message names the problem and the file or folder.
    """
    path = check_readable(path, "CT")
    if path.is_dir():
        return read_dicom_series(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        kind = "" if path.name.lower().endswith(READABLE_SUFFIXES + (".dcm",)) else " (unsupported format?)"
        raise InputError(f"cannot read CT file{kind}: {path} ({_first_line(exc)})") from exc
    if path.name.lower().endswith((".nii", ".nii.gz")):
        bad = nifti_nonfinite_count(path)
        if bad:
            raise InputError(f"CT contains {bad} NaN/inf voxel(s) (a NIfTI reader would show them as 0 HU): {path}")
    return from_sitk(image, str(path))


def _nifti_layout(header: bytes) -> tuple[str, int, int, int] | None:
    """``(byte order, datatype, voxel count, data offset)`` of a NIfTI-1/-2 header, or None if not NIfTI."""
    for order in "<>":
        size = int(np.frombuffer(header[:4], f"{order}i4")[0])
        if size == 348 and len(header) >= 348:  # NIfTI-1: dim int16[8] @40, datatype int16 @70, vox_offset f4 @108
            dims = np.frombuffer(header[40:56], f"{order}i2").astype(np.int64)
            datatype = int(np.frombuffer(header[70:72], f"{order}i2")[0])
            offset = int(np.frombuffer(header[108:112], f"{order}f4")[0])
        elif size == 540 and len(header) >= 540:  # NIfTI-2: datatype int16 @12, dim int64[8] @16, vox_offset @168
            datatype = int(np.frombuffer(header[12:14], f"{order}i2")[0])
            dims = np.frombuffer(header[16:80], f"{order}i8")
            offset = int(np.frombuffer(header[168:176], f"{order}i8")[0])
        else:
            continue
        ndim = int(dims[0])
        if not 1 <= ndim <= 7:
            return None
        return order, datatype, int(np.prod(np.maximum(dims[1:ndim + 1], 1))), offset
    return None


def nifti_nonfinite_count(path: str | os.PathLike) -> int:
    """Number of NaN/±inf voxels stored in a float NIfTI file (0 for integer files, which cannot hold any).

    Reads the raw data in chunks (constant memory), because ITK's reader zeroes non-finite values on load.
    """
    import gzip

    path = Path(path)
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        layout = _nifti_layout(handle.read(544))
        if layout is None or layout[1] not in _NIFTI_FLOAT_TYPES:
            return 0
        order, datatype, count, offset = layout
        dtype = np.dtype(f"{order}{_NIFTI_FLOAT_TYPES[datatype]}")
        handle.seek(offset)
        remaining, bad = count * dtype.itemsize, 0
        chunk = _SCAN_CHUNK_BYTES - _SCAN_CHUNK_BYTES % dtype.itemsize
        while remaining > 0:
            data = handle.read(min(chunk, remaining))
            if not data:
                break  # short file: ITK has already refused it or will
            usable = len(data) - len(data) % dtype.itemsize
            values = np.frombuffer(data[:usable], dtype)
            bad += int(values.size - np.count_nonzero(np.isfinite(values)))
            remaining -= len(data)
    return bad


def write_ct(ct: CTVolume, path: str | os.PathLike) -> Path:
    """Write ``ct`` (float32 HU) atomically as NIfTI, NRRD or MHA, chosen by the file ending (``.gz`` compresses).

    Raises:
        OutputError: unsupported ending, folder missing / not writable, disk full.
    """
    path = Path(path)
    if not path.name.lower().endswith(WRITABLE_SUFFIXES):
        raise OutputError(f"unsupported CT output format (use one of {', '.join(WRITABLE_SUFFIXES)}): {path}")
    check_writable_dir(path.parent)
    check_free_space(path.parent, ct.hu.nbytes)  # uncompressed size: an upper bound of what is written
    with atomic_path(path) as tmp:
        try:
            sitk.WriteImage(to_sitk(ct), str(tmp), useCompression=path.name.lower().endswith(".gz"))
        except RuntimeError as exc:
            raise OutputError(f"cannot write CT {path}: {_first_line(exc)}") from exc
    return path


# ----------------------------------------------------------------------------------------------------- DICOM


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # ITK messages start with a "file.cxx:123:" location; the last line carries the reason.
    return lines[-1] if lines else type(exc).__name__


def find_dicom_series(folder: Path) -> list[tuple[str, Path, list[str]]]:
    """All DICOM series under ``folder`` (recursively) as ``(series_uid, series_folder, file_names)``."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        if not files:  # DICOM files often have no extension at all (TCIA downloads): ask GDCM
            continue
        for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(root):
            names = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(root, uid))
            if names:
                found.append((uid, Path(root), names))
    return found


def _sorted_slices(files: list[str], folder: Path) -> list[str]:
    """Sort the slices along the slice normal and check the stack is complete and evenly spaced.

    Raises:
        InputError: unreadable file, mixed slice sizes/orientations, duplicated or missing slices, uneven spacing.
    """
    import pydicom  # lazy: only DICOM input needs it

    tags = ["ImagePositionPatient", "ImageOrientationPatient", "Rows", "Columns", "Modality"]
    headers = []
    for name in files:
        try:
            ds = pydicom.dcmread(name, stop_before_pixels=True, specific_tags=tags)
        except Exception as exc:  # pydicom raises many types for damaged files
            raise InputError(f"unreadable DICOM file {Path(name).name} in series folder {folder}: {exc}") from exc
        headers.append(ds)
    modality = str(headers[0].get("Modality", "CT")).upper()
    if modality in {"MR", "PT", "NM", "US", "CR", "DX", "MG", "XA", "RF"}:
        raise InputError(f"DICOM series is {modality}, not CT: {folder}")
    if len({(ds.get("Rows"), ds.get("Columns")) for ds in headers}) > 1:
        raise InputError(f"DICOM series mixes slice sizes: {folder}")
    if any(ds.get("ImagePositionPatient") is None or ds.get("ImageOrientationPatient") is None for ds in headers):
        log.warning("DICOM series without slice positions; slice order and spacing not checked: %s", folder)
        return files
    orientation = np.array([[float(v) for v in ds.ImageOrientationPatient] for ds in headers])
    if np.abs(orientation - orientation[0]).max() > 1e-3:
        raise InputError(f"DICOM series mixes slice orientations: {folder}")
    normal = np.cross(orientation[0, :3], orientation[0, 3:])
    position = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in headers]) @ normal
    order = np.argsort(position, kind="stable")
    position = position[order]
    files = [files[i] for i in order]
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


def _why_no_series(folder: Path) -> str:
    """The message for a folder where GDCM finds no image series: empty, no DICOM, or DICOM without pixels."""
    import pydicom

    files = [Path(root) / name for root, _, names in os.walk(folder) for name in sorted(names)]
    if not files:
        return f"no readable DICOM series found: the CT folder is empty: {folder}"
    dicom = [path for path in files if has_dicom_prefix(path)]
    if not dicom:
        return f"no readable DICOM series found in folder ({len(files)} file(s), none of them DICOM): {folder}"
    try:
        ds = pydicom.dcmread(dicom[0], defer_size=1024)
    except Exception as exc:  # pydicom raises many types for damaged files
        return f"no readable DICOM series found in folder: {dicom[0].name} is damaged or truncated ({exc}): {folder}"
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
    import pydicom

    listed = {Path(name).name for name in files}
    for name in sorted(os.listdir(series_folder)):
        path = series_folder / name
        if name in listed or not path.is_file() or not has_dicom_prefix(path):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:  # pydicom raises many types for damaged files
            raise InputError(f"unreadable DICOM file {name} (truncated or damaged: {exc}) in series folder "
                             f"{series_folder}") from exc
        if len(ds) == 0:  # only the preamble and file meta survived: cut off after the header
            raise InputError(f"unreadable DICOM file {name} (truncated: it ends after its file header) in series "
                             f"folder {series_folder}")
        if str(ds.get("SeriesInstanceUID", "")) == uid:
            raise InputError(f"DICOM slice {name} of the series is truncated or damaged (its pixel data cannot be "
                             f"read): {series_folder}")


def read_dicom_series(folder: str | os.PathLike) -> CTVolume:
    """Read the largest DICOM series found under ``folder`` (rescale slope/intercept applied), canonical HU.

    Raises:
        InputError: no series, damaged or incomplete series, not a CT.
    """
    folder = check_readable(folder, "CT folder")
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
    if len(files) < 2:
        raise InputError(f"DICOM series has a single slice; a CT needs a stack of slices: {series_folder}")
    files = _sorted_slices(files, series_folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"cannot read DICOM series in {series_folder}: {_first_line(exc)}") from exc
    return from_sitk(image, str(series_folder))
