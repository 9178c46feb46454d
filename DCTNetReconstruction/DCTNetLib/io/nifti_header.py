"""NIfTI headers read by hand, and the voxel data checked against them, because ITK's NIfTI reader and writer stay
silent where they should not.

ITK (through niftilib) reads a file shorter than its header says with the missing voxels as 0, turns NaN/±inf into
0 (InsightSoftwareConsortium/ITK PR #6683, fixed only for ITK 6), builds an oblique volume from a NaN qform, and
when a write fails (full disk, quota, file-size limit) prints ``** ERROR: NWAD`` and returns as if it had worked.
This module reads the 348-byte NIfTI-1 (or 540-byte NIfTI-2) header itself (:func:`read_nifti_layout`), checks
its geometry fields (:func:`header_problem`) and streams through the voxel data in constant memory to count what
is there and how many values are not finite (:func:`scan_nifti_data`). :mod:`DCTNetLib.io.ct` and
:mod:`DCTNetLib.io.radiograph` refuse what it finds before reading; :func:`DCTNetLib.io.ct.write_ct` checks every
file it wrote with it before the file replaces an earlier one.
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..conventions import NIFTI_SUFFIXES
from ..errors import InputError
from .atomic import display_path, format_bytes

__all__ = ["NiftiLayout", "read_nifti_layout", "parse_nifti_header", "header_problem", "data_problem",
           "scan_nifti_data", "most_data_held", "is_nifti_name", "check_nifti_header", "check_nifti_data",
           "NIFTI_FLOAT_TYPES"]

# Bytes per voxel of the NIfTI-1 ``datatype`` codes (nifti1.h): UINT8 2, INT16 4, INT32 8, FLOAT32 16, COMPLEX64 32,
# FLOAT64 64, RGB24 128, INT8 256, UINT16 512, UINT32 768, INT64 1024, UINT64 1280, FLOAT128 1536, COMPLEX128 1792,
# COMPLEX256 2048, RGBA32 2304.
DATATYPE_BYTES = {2: 1, 4: 2, 8: 4, 16: 4, 32: 8, 64: 8, 128: 3, 256: 1, 512: 2, 768: 4, 1024: 8, 1280: 8, 1536: 16,
                  1792: 16, 2048: 32, 2304: 4}
# The float types whose NaN/±inf ITK zeroes (numpy type letters).
NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}
# DEFLATE (gzip) cannot inflate one byte into more than 1032 (RFC 1951: a 258-byte match costs at least 2 bits), so a
# .nii.gz cannot hold more than 1032 times its own size: a bigger claim is refused without inflating anything.
MAX_DEFLATE_RATIO = 1032
_HEADER_READ = 544  # NIfTI-2 header (540) plus its 4-byte extension flag
_SCAN_CHUNK_BYTES = 1 << 22  # 4 MiB at a time: constant memory whatever the volume size


@dataclass(frozen=True)
class NiftiLayout:
    """What a NIfTI header says about the file.

    Args:
        order: numpy byte-order character (``"<"`` or ``">"``).
        header_bytes: 348 (NIfTI-1) or 540 (NIfTI-2).
        datatype: the NIfTI datatype code.
        shape: the size along each of the ``dim[0]`` axes.
        vox_offset: where the voxels start (float: NIfTI-1 stores it as float32, so it may be NaN).
        pixdim: ``pixdim[0:8]``.
        qform_code, sform_code: which transforms the header declares.
        qform: quatern_b, c, d and qoffset_x, y, z.
        srow: the 3×4 sform matrix, row by row.
    """

    order: str
    header_bytes: int
    datatype: int
    shape: tuple[int, ...]
    vox_offset: float
    pixdim: tuple[float, ...]
    qform_code: int
    sform_code: int
    qform: tuple[float, ...]
    srow: tuple[float, ...]

    @property
    def voxels(self) -> int:
        return int(np.prod(np.asarray(self.shape, dtype=object))) if self.shape else 0

    @property
    def itemsize(self) -> int | None:
        """Bytes per voxel, or None for a datatype this module does not know (ITK refuses those itself)."""
        return DATATYPE_BYTES.get(self.datatype)

    @property
    def data_bytes(self) -> int | None:
        """Bytes of voxel data the header promises (None for an unknown datatype)."""
        return None if self.itemsize is None else self.voxels * self.itemsize


def is_nifti_name(path: str | os.PathLike) -> bool:
    return Path(path).name.lower().endswith(NIFTI_SUFFIXES)


def _is_gzip(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


def _open(path: Path):
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


def _values(header: bytes, start: int, kind: str, count: int, order: str) -> np.ndarray:
    return np.frombuffer(header[start:start + np.dtype(kind).itemsize * count], f"{order}{kind}")


def parse_nifti_header(header: bytes) -> NiftiLayout | None:
    """The :class:`NiftiLayout` of the first bytes of a NIfTI-1 or NIfTI-2 file, or None when they are not one."""
    for order in "<>":
        if len(header) >= 348 and int(_values(header, 0, "i4", 1, order)[0]) == 348:
            dims = _values(header, 40, "i2", 8, order).astype(np.int64)
            datatype, offset = int(_values(header, 70, "i2", 1, order)[0]), float(_values(header, 108, "f4", 1, order)[0])
            pixdim = _values(header, 76, "f4", 8, order)
            codes = _values(header, 252, "i2", 2, order)
            qform, srow = _values(header, 256, "f4", 6, order), _values(header, 280, "f4", 12, order)
            size = 348
        elif len(header) >= 540 and int(_values(header, 0, "i4", 1, order)[0]) == 540:
            datatype, dims = int(_values(header, 12, "i2", 1, order)[0]), _values(header, 16, "i8", 8, order)
            pixdim, offset = _values(header, 104, "f8", 8, order), float(_values(header, 168, "i8", 1, order)[0])
            codes = _values(header, 344, "i4", 2, order)
            qform, srow = _values(header, 352, "f8", 6, order), _values(header, 400, "f8", 12, order)
            size = 540
        else:
            continue
        ndim = int(dims[0])
        if not 1 <= ndim <= 7:
            return None
        return NiftiLayout(order, size, datatype, tuple(int(max(d, 1)) for d in dims[1:ndim + 1]), offset,
                           tuple(float(p) for p in pixdim), int(codes[0]), int(codes[1]),
                           tuple(float(q) for q in qform), tuple(float(r) for r in srow))
    return None


def read_nifti_layout(path: str | os.PathLike) -> NiftiLayout | None:
    """The header of the NIfTI file ``path`` (None when it is not NIfTI). ``OSError``/``EOFError`` propagate."""
    path = Path(path)
    with _open(path) as handle:
        return parse_nifti_header(handle.read(_HEADER_READ))


def header_problem(layout: NiftiLayout) -> str | None:
    """What is wrong with a header's data offset or geometry in words, or None.

    Refused: a data offset that is not a finite number at or after the header (NaN, inf, negative), a voxel size
    (``pixdim``) that is 0, NaN or negative (ITK would read 1 mm or flip the axes), and a declared qform or sform
    holding NaN/inf (ITK would build an oblique or degenerate volume from it).
    """
    if not np.isfinite(layout.vox_offset) or layout.vox_offset < layout.header_bytes:
        return (f"its voxel data offset (vox_offset) is {layout.vox_offset}, not a position after the "
                f"{layout.header_bytes}-byte header")
    sizes = layout.pixdim[1:1 + min(3, len(layout.shape))]
    if not all(np.isfinite(p) and p > 0 for p in sizes):
        return (f"it gives an invalid voxel size (pixdim {list(sizes)}; must be positive mm, a reader would guess "
                f"1 mm or flip the axes)")
    if layout.qform_code > 0 and not np.isfinite(layout.qform).all():
        return f"its qform (quaternion and offset) holds NaN/inf: {list(layout.qform)}"
    if layout.sform_code > 0 and not np.isfinite(layout.srow).all():
        return "its sform matrix holds NaN/inf"
    return None


def most_data_held(path: str | os.PathLike, layout: NiftiLayout) -> int:
    """An upper bound of the voxel bytes the file can hold, from its size alone (nothing is read or inflated)."""
    path = Path(path)
    size = os.stat(path).st_size
    if _is_gzip(path):
        return max(0, size * MAX_DEFLATE_RATIO - int(layout.vox_offset))
    return max(0, size - int(layout.vox_offset))


def scan_nifti_data(path: str | os.PathLike, layout: NiftiLayout) -> tuple[int, int]:
    """``(voxel bytes present, non-finite values)`` of a NIfTI file, read in chunks (constant memory).

    The first number stops at what the header promises (:attr:`NiftiLayout.data_bytes`); a shorter one means the
    file is truncated. A gzip stream that breaks off or is damaged counts what it gave up to there. Values are
    only counted for the float types (:data:`NIFTI_FLOAT_TYPES`).
    """
    path = Path(path)
    needed = layout.data_bytes or 0
    float_type = NIFTI_FLOAT_TYPES.get(layout.datatype)
    dtype = np.dtype(f"{layout.order}{float_type}") if float_type else None
    chunk = _SCAN_CHUNK_BYTES - _SCAN_CHUNK_BYTES % (layout.itemsize or 1)
    found, bad, pending = 0, 0, b""
    with _open(path) as handle:
        try:
            handle.seek(int(layout.vox_offset))
            while found < needed:
                data = handle.read1(min(chunk, needed - found))  # read1: a broken stream keeps what came before
                if not data:
                    break
                if dtype is not None:
                    data = pending + data
                    usable = len(data) - len(data) % dtype.itemsize
                    values, pending = np.frombuffer(data[:usable], dtype), data[usable:]
                    bad += int(values.size - np.count_nonzero(np.isfinite(values)))
                found += len(data) - len(pending)
        except (EOFError, zlib.error, gzip.BadGzipFile):
            pass  # the stream breaks off here: what was found is what there is
    return found, bad


def data_problem(path: str | os.PathLike, layout: NiftiLayout) -> tuple[str | None, int]:
    """``(why the voxel data does not match the header, or None; non-finite values found)`` of a NIfTI file.

    First from the file's size (a header promising more than the file can hold is answered without reading), then
    by streaming through the data (:func:`scan_nifti_data`) where that is needed: a compressed file, or float
    values to check.
    """
    needed = layout.data_bytes
    if not needed:
        return None, 0
    most = most_data_held(path, layout)
    if most < needed:
        return (f"truncated: its header declares {format_bytes(needed)} of voxels, the file can hold at most "
                f"{format_bytes(most)}"), 0
    if not _is_gzip(Path(path)) and layout.datatype not in NIFTI_FLOAT_TYPES:
        return None, 0  # the size alone proves it complete, and integers cannot be NaN
    found, bad = scan_nifti_data(path, layout)
    if found < needed:
        return f"truncated: it holds {format_bytes(found)} of the {format_bytes(needed)} of voxels its header declares", bad
    return None, bad


def check_nifti_header(path: str | os.PathLike, what: str) -> NiftiLayout | None:
    """The header of a NIfTI file about to be read, after :func:`header_problem` (None when it is not NIfTI).

    Raises:
        InputError: ``"<what> …"``, naming the problem and the file.
    """
    try:
        layout = read_nifti_layout(path)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"cannot read {what} file (truncated or damaged?): {display_path(path)} ({exc})") from exc
    problem = header_problem(layout) if layout is not None else None
    if problem:
        raise InputError(f"{what} file's NIfTI header is unusable: {problem}: {display_path(path)}")
    return layout


def check_nifti_data(path: str | os.PathLike, layout: NiftiLayout, what: str) -> None:
    """Refuse a NIfTI file shorter than its header says (ITK reads the missing voxels as 0) or holding NaN/inf
    (ITK reads them as 0); checked from the file size first, then in a constant-memory pass (:func:`data_problem`).

    Raises:
        InputError: ``"<what> …"``, naming the problem and the file.
    """
    try:
        problem, bad = data_problem(path, layout)
    except OSError as exc:
        raise InputError(f"cannot read {what} file {display_path(path)}: {exc.strerror or exc}") from exc
    if problem:
        raise InputError(f"{what} file is {problem}: {display_path(path)}")
    if bad:
        raise InputError(f"{what} contains {bad} NaN/inf voxel(s) (a NIfTI reader would show them as 0): "
                         f"{display_path(path)}")
