"""CT volumes in, CT volumes out: :class:`CTVolume` and :func:`read_ct` / :func:`write_ct`.

Every CT enters the project through :func:`read_ct`, which returns Hounsfield units as float32 in the canonical
orientation of ``DCTNetLib.conventions`` (``sitk.DICOMOrient(img, "LPI")``; array ``(D, H, W)`` = (S→I, A→P,
R→L)) together with the physical geometry (spacing, origin, direction) needed to write results back in place.

Accepted inputs: a folder holding a DICOM series (searched recursively; with several series the one with the most
slices is used and the choice is logged as a warning naming the series kept and skipped), or a NIfTI (``.nii``/``.nii.gz``), NRRD (``.nrrd``/``.nhdr``) or
MetaImage (``.mha``/``.mhd``) file. DICOM rescale slope/intercept are applied by SimpleITK's ImageSeriesReader;
the series is found and its slice stack checked for missing or duplicated slices and uneven spacing first
(:mod:`DCTNetLib.io.dicom_series`).

Rejected, with an :class:`~DCTNetLib.errors.InputError` naming the problem and the file: missing paths,
unreadable files, 2D images (or a single DICOM slice), multi-component (RGB) images, NaN/inf voxels, and volumes
whose values are not CT-like (see :func:`check_ct_values`); empty folders, DICOM files without pixel data, and
damaged or truncated slices of the chosen series (GDCM silently leaves those out of a series, which would
otherwise look like a missing slice or go unnoticed).
"""

from __future__ import annotations

import logging
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..conventions import NIFTI_SUFFIXES, SITK_ORIENTATION, VOLUME_READ_SUFFIXES, VOLUME_WRITE_SUFFIXES
from ..errors import InputError, OutputError
from .atomic import (atomic_path, check_free_space, check_name_length, check_readable, check_writable_dir,
                     display_path, format_bytes, utf8_alias)
from .dicom_series import largest_ct_series
from .c_stderr import c_stderr_as_debug
from .detached_data import check_detached_data
from .geometry import CANONICAL_DIRECTION, grid_centre_lps
from .nifti_header import (NiftiLayout, check_nifti_data, check_nifti_header, data_problem, is_nifti_name,
                           read_nifti_layout)
from .radiograph import dcmread_checked, image_header, itk_reason

sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK's "WARNING: In …" lines: our checks say it in one line

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
    "MAX_CT_VOXELS",
    "MAX_CT_SIDE",
    "MIN_CT_SLICES",
    "check_ct_output",
]

log = logging.getLogger(__name__)

# CT-likeness rule (see check_ct_values): a CT of a body always contains air (≈ −1000 HU outside the body, in the
# lungs or the bowel) or scanner padding (−1024 … −3024 HU), so its minimum is far below −500 HU. MR, PET or CT
# stored without its rescale intercept (raw 0…4095) have minima ≥ 0 and are rejected.
CT_MAX_MINIMUM_HU = -500.0
# ... and at least some voxels denser than lung (soft tissue ≈ 40 HU); an all-air volume is not a usable CT.
CT_MIN_MAXIMUM_HU = -200.0
# The values a 16-bit CT can hold: signed stored values with slope 1 go down to −32768 HU, unsigned ones with the usual
# −1024 intercept up to 64511 HU. Beyond them the rescale (DICOM RescaleSlope/Intercept, NIfTI scl_slope/scl_inter)
# is wrong, e.g. a slope of 1e30 turning every voxel into 1e33 HU.
CT_HU_LIMITS = (-32768.0, 64511.0)

# Size limits, checked from the file header (or the DICOM headers) before any voxel is decoded. 512 × 512 × 1536
# covers a whole-body CT at 0.6 mm slices; reading it takes about 4 GiB (stored values, float32 HU, reoriented copy).
MAX_CT_VOXELS = 512 * 512 * 1536
MAX_CT_SIDE = 4096
# Reading holds, per voxel, the stored value and two float32 images (HU, and HU reoriented): 2 + 8 bytes for the usual
# int16 CT, so MAX_CT_VOXELS of int16 is what the budget allows; wider stored types (float64: 16 bytes a voxel) get
# proportionally fewer voxels instead of twice the memory.
_READ_COPY_BYTES = 8
MAX_CT_READ_BYTES = MAX_CT_VOXELS * (2 + _READ_COPY_BYTES)
# Fewer voxels than this along an axis is a scout, a few slices or a 2D image, not a volume a radiograph can be
# simulated from.
MIN_CT_SLICES = 8


_first_line = itk_reason


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
        return grid_centre_lps(self.shape, self.spacing, self.origin_lps, self.direction)


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
    if lo < CT_HU_LIMITS[0] or hi > CT_HU_LIMITS[1]:
        raise InputError(f"values do not look like a CT in HU ({lo:.4g} to {hi:.4g}; a 16-bit CT holds "
                         f"{CT_HU_LIMITS[0]:.0f} to {CT_HU_LIMITS[1]:.0f} HU — is its rescale slope or intercept "
                         f"wrong?): {source}")
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
    name = display_path(source) if source else "<in-memory image>"
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"CT must have one value per voxel, found {image.GetNumberOfComponentsPerPixel()} "
                         f"(a colour or vector image?): {name}")
    size = image.GetSize()
    if image.GetDimension() != 3:
        raise InputError(f"CT must be a 3D volume, found a {image.GetDimension()}D image of size {size}: {name}")
    _check_ct_size(size, image.GetSpacing(), name)
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


def _check_ct_size(size, spacing, name: str, stored_bytes: int | None = None) -> None:
    """Refuse single slices, too few slices, absurd sizes, more memory to read than :data:`MAX_CT_READ_BYTES`
    (``stored_bytes`` a voxel as stored, plus two float32 copies; None: already in memory) and non-positive voxel
    sizes (from a header)."""
    if min(size) < 2:
        raise InputError(f"CT must be a 3D volume, found a single slice (size {tuple(size)}); for DICOM pass the "
                         f"folder holding the whole series: {name}")
    if min(size) < MIN_CT_SLICES:
        raise InputError(f"CT has too few slices: size {tuple(size)}, at least {MIN_CT_SLICES} voxels along each "
                         f"axis are needed for a volume: {name}")
    voxels = int(np.prod(np.asarray(size, dtype=np.int64)))
    if max(size) > MAX_CT_SIDE or voxels > MAX_CT_VOXELS:
        raise InputError(f"CT is too large: size {tuple(size)} ({voxels / 1e6:.0f} M voxels; at most "
                         f"{MAX_CT_SIDE} a side and {MAX_CT_VOXELS / 1e6:.0f} M voxels), refused before reading: "
                         f"{name}")
    needed = voxels * ((stored_bytes or 0) + _READ_COPY_BYTES)
    if stored_bytes is not None and needed > MAX_CT_READ_BYTES:
        raise InputError(f"CT is too large to read: size {tuple(size)} of {stored_bytes}-byte values needs "
                         f"{format_bytes(needed)} (at most {format_bytes(MAX_CT_READ_BYTES)}), refused before reading: "
                         f"{name}")
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"CT has an invalid voxel size {tuple(spacing)} mm (must be positive): {name}")


def _stored_bytes(pixel_id: int) -> int:
    """Bytes a voxel of SimpleITK pixel type ``pixel_id`` takes as read (8 for a type not listed: the widest)."""
    sizes = {sitk.sitkUInt8: 1, sitk.sitkInt8: 1, sitk.sitkUInt16: 2, sitk.sitkInt16: 2, sitk.sitkUInt32: 4,
             sitk.sitkInt32: 4, sitk.sitkFloat32: 4, sitk.sitkUInt64: 8, sitk.sitkInt64: 8, sitk.sitkFloat64: 8}
    return sizes.get(pixel_id, 8)


def read_ct(path: str | os.PathLike) -> CTVolume:
    """Read a CT from a DICOM series folder or a NIfTI / NRRD / MetaImage file.

    The header is read first: size, voxel size and pixel type are checked (see :data:`MAX_CT_VOXELS`,
    :data:`MIN_CT_SLICES`) before any voxel is decoded.

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
    shown = display_path(path)
    is_nifti = path.name.lower().endswith(NIFTI_SUFFIXES)
    kind = "" if path.name.lower().endswith(VOLUME_READ_SUFFIXES + (".dcm",)) else " (unsupported format?)"
    check_detached_data(path, "CT")  # before ITK opens a data file the header names
    with image_header(path, f"cannot read CT file{kind}") as reader:
        size = reader.GetSize()
        if reader.GetNumberOfComponents() != 1:
            raise InputError(f"CT must have one value per voxel, found {reader.GetNumberOfComponents()} (a colour or "
                             f"vector image?): {shown}")
        if reader.GetDimension() != 3:
            raise InputError(f"CT must be a 3D volume, found a {reader.GetDimension()}D image of size {size}: {shown}")
        layout = _check_nifti_header(path) if is_nifti else None
        _check_ct_size(size, reader.GetSpacing(), shown, _stored_bytes(reader.GetPixelID()))
        if layout is not None:
            check_nifti_data(path, layout, "CT")
        try:
            image = reader.Execute()
        except RuntimeError as exc:
            raise InputError(f"cannot read CT file (truncated or damaged?): {shown} ({_first_line(exc)})") from exc
    return from_sitk(image, str(path))


def _check_nifti_header(path: Path) -> NiftiLayout | None:
    """:func:`~DCTNetLib.io.nifti_header.check_nifti_header`, and a warning when the sform and pixdim disagree on
    the voxel size (ITK uses pixdim)."""
    layout = check_nifti_header(path, "CT")
    if layout is not None and layout.sform_code:
        srow = np.asarray(layout.srow).reshape(3, 4)[:, :3]
        scales = np.linalg.norm(srow, axis=0)  # voxel size along each index axis according to the sform
        pixdim = np.asarray(layout.pixdim[1:4])
        if not np.allclose(scales, pixdim, rtol=1e-3):
            log.warning("NIfTI header disagrees with itself on the voxel size: sform %s mm, pixdim %s mm; the pixdim "
                        "values are used: %s", np.round(scales, 4).tolist(), np.round(pixdim, 4).tolist(),
                        display_path(path))
    return layout


def check_ct_output(path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Check, before any work, that :func:`write_ct` can write ``path``: format, name length, folder, existing file.

    Raises:
        OutputError: unsupported ending (the message lists the writable ones), a name too long for the file
            system, a missing or read-only folder, or an existing file when ``overwrite`` is False.
    """
    path = Path(path)
    if not path.name.lower().endswith(VOLUME_WRITE_SUFFIXES):
        raise OutputError(f"unsupported CT output format (use one of {', '.join(VOLUME_WRITE_SUFFIXES)}): "
                          f"{display_path(path)}")
    check_name_length(path)
    check_writable_dir(path.parent if str(path.parent) else Path("."))
    if not overwrite and os.path.lexists(path):
        raise OutputError(f"{display_path(path)} exists; pass --overwrite to replace it, or choose another output")
    return path


def write_ct(ct: CTVolume, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write ``ct`` (float32 HU) atomically as NIfTI, NRRD or MHA, chosen by the file ending (``.gz`` compresses).

    Args:
        ct: the volume; it must be finite (a NaN/inf volume is refused rather than written).
        path: destination (the ending may be in any case: ``CT.NII.GZ``).
        overwrite: replace an existing file (default). ``False`` refuses one that exists, checked again at the
            final rename so a file that appeared meanwhile is never replaced.

    Raises:
        OutputError: unsupported ending, name too long, folder missing / not writable, disk full, the file exists
            (``overwrite=False``) or the volume holds NaN/inf.
    """
    path = check_ct_output(path, overwrite)
    finite = np.isfinite(ct.hu)
    if not finite.all():
        raise OutputError(f"refusing to write a CT with {ct.hu.size - int(np.count_nonzero(finite))} NaN/inf voxel(s) "
                          f"(the model produced garbage; are its weights damaged?): {display_path(path)}")
    check_free_space(path.parent, ct.hu.nbytes)  # uncompressed size: an upper bound of what is written
    with atomic_path(path, overwrite) as tmp, utf8_alias(tmp) as name:
        with c_stderr_as_debug(log, f"writing {display_path(path)}") as chatter:
            try:
                sitk.WriteImage(to_sitk(ct), name, useCompression=path.name.lower().endswith(".gz"))
            except RuntimeError as exc:
                raise OutputError(f"cannot write CT {display_path(path)}: {_first_line(exc)}") from exc
        if is_nifti_name(path):
            _check_written_nifti(tmp, path, chatter)
    return path


def _check_written_nifti(tmp: Path, path: Path, chatter: list[str]) -> None:
    """Raise :class:`OutputError` unless the NIfTI file just written to ``tmp`` holds every voxel of its header:
    ITK's NIfTI writer reports a failed write (full disk, quota, file-size limit) only on stderr."""
    try:
        layout = read_nifti_layout(tmp)
        problem = data_problem(tmp, layout)[0] if layout is not None else "not a NIfTI file"
    except (OSError, EOFError, zlib.error) as exc:
        problem = f"unreadable ({exc})"
    if problem:
        said = f"; the writer said: {chatter[-1].strip()}" if chatter else ""
        raise OutputError(f"cannot write CT {display_path(path)}: the file written is {problem} (disk full, quota "
                          f"or file-size limit?){said}")


# ----------------------------------------------------------------------------------------------------- DICOM


def read_dicom_series(folder: str | os.PathLike) -> CTVolume:
    """Read the largest DICOM series found under ``folder`` (rescale slope/intercept applied), canonical HU.

    Raises:
        InputError: no series, damaged or incomplete series, not a CT.
    """
    folder = check_readable(folder, "CT folder")
    series_folder, files = largest_ct_series(folder)
    first = dcmread_checked(files[0], stop_before_pixels=True, specific_tags=["Rows", "Columns", "BitsAllocated"])
    rows, cols, bits = (int(first.get(key) or 0) for key in ("Rows", "Columns", "BitsAllocated"))
    _check_ct_size((cols, rows, len(files)), (1.0, 1.0, 1.0), str(series_folder),  # before decoding any slice
                   max(bits // 8, 1))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    failure = None
    with c_stderr_as_debug(log, f"reading {display_path(series_folder)}") as chatter:  # GDCM's codecs print there
        try:
            image = reader.Execute()
        except RuntimeError as exc:
            failure = exc
    if failure is not None:  # the codec's lines are known once the block has ended
        reason = (f"a slice's compressed pixel data cannot be decoded (damaged?; the codec said: {chatter[0]})"
                  if chatter else _first_line(failure))
        raise InputError(f"cannot read DICOM series in {series_folder}: {reason}") from failure
    return from_sitk(image, str(series_folder))
