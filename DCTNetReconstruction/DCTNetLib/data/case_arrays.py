"""The arrays of a prepared case (``ct_unit.npy``, ``drr.npy``, ``drr_bone_suppressed.npy``) read as data that may
be damaged or hostile: the ``.npy`` header is checked against the file and against what ``dctnet prepare`` writes
before numpy allocates anything, and the values are checked after.

A 128-byte header can claim 4096³ values; ``numpy.load`` would allocate them (256 GiB of float32) before finding
the file short. :func:`check_case_array` reads the header only; :func:`load_case_array` then loads and refuses
NaN/inf (an all-NaN ``drr.npy`` made training fail with a traceback). Both raise
:class:`~DCTNetLib.errors.InputError` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["check_case_array", "load_case_array", "MAX_CASE_SIDE", "CASE_ARRAY_SHAPES"]

# `dctnet prepare` writes 128² radiographs and 128³ volumes; 512 a side (a 512³ float32 volume is 512 MiB) is the
# most a training sample may hold, so a prepared case of another resolution still loads.
MAX_CASE_SIDE = 512
# Dimensions of each array: the CT is (D, H, W); the radiographs are (2 views, H, W).
CASE_ARRAY_SHAPES = {"ct": (None, None, None), "drr": (2, None, None), "drr_bs": (2, None, None)}


def _header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data offset)`` from the ``.npy`` header of ``path``, reading nothing else."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"npy format version {version} is not one numpy.save writes for numbers")
        return tuple(shape), dtype, handle.tell()


def check_case_array(path: str | os.PathLike, kind: str) -> tuple[int, ...]:
    """The shape of a prepared-case array after checking its header (kind: a key of :data:`CASE_ARRAY_SHAPES`).

    Raises:
        InputError: unreadable header, not numbers, the wrong number of dimensions or views, a side over
            :data:`MAX_CASE_SIDE`, or a file shorter than the header says.
    """
    path = Path(path)
    try:
        shape, dtype, offset = _header(path)
        size = os.stat(path).st_size
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"prepared array {path.name} is unreadable ({str(exc).splitlines()[0]}): {path}") from exc
    expected = CASE_ARRAY_SHAPES[kind]
    if dtype.kind not in "fiub":
        raise InputError(f"prepared array {path.name} holds {dtype}, not numbers: {path}")
    if len(shape) != len(expected) or any(want is not None and got != want for got, want in zip(shape, expected)):
        raise InputError(f"prepared array {path.name} has shape {shape}, expected "
                         f"{tuple('n' if want is None else want for want in expected)}: {path}")
    if max(shape) > MAX_CASE_SIDE or min(shape) < 1:
        raise InputError(f"prepared array {path.name} claims shape {shape} (sides 1 to {MAX_CASE_SIDE}); refused "
                         f"before loading: {path}")
    needed = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size < needed:
        raise InputError(f"prepared array {path.name} is truncated ({size} of {needed} bytes): {path}")
    return shape


def load_case_array(path: str | os.PathLike, kind: str) -> np.ndarray:
    """A prepared-case array as float32, after :func:`check_case_array`, refusing NaN/inf values.

    Raises:
        InputError: see :func:`check_case_array`; or the values are not all finite.
    """
    path = Path(path)
    check_case_array(path, kind)
    try:
        array = np.load(path, allow_pickle=False).astype(np.float32)
    except (OSError, ValueError) as exc:
        raise InputError(f"prepared array {path.name} is unreadable ({exc}): {path}") from exc
    finite = np.isfinite(array)
    if not finite.all():
        raise InputError(f"prepared array {path.name} holds {array.size - int(np.count_nonzero(finite))} NaN/inf "
                         f"value(s) (re-run `dctnet prepare` for this case): {path}")
    return array
