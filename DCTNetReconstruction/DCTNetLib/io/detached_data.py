"""The data file an NRRD or MetaImage header points to, checked before a reader opens it.

An NRRD header (``data file: NAME``, ``datafile: NAME``) or a MetaImage header (``ElementDataFile = NAME``) may keep
its voxels in another file. ITK opens whatever that names: a FIFO blocks the reader forever, ``/dev/zero`` or
``/dev/urandom`` is read as gigabytes of voxels, and ``../../etc/x`` or an executable elsewhere is read as a CT. A
header is therefore allowed one data file only, a regular file beside it or in a folder below it (after following
symbolic links); lists and numbered patterns of files are refused too.

Example::

    check_detached_data(Path("ct.nhdr"), "CT")     # raises InputError for "data file: /dev/zero"
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..conventions import HEADER_SUFFIXES, NRRD_SUFFIXES
from ..errors import InputError
from .atomic import display_path

__all__ = ["detached_data_name", "check_detached_data", "HEADER_SUFFIXES"]

# Headers are text of a few hundred bytes; reading this much finds the data-file line of any real one.
_HEADER_READ_BYTES = 1 << 16
_NRRD_KEYS = ("data file", "datafile")
_META_KEY = "elementdatafile"
_IN_HEADER = "local"  # MetaImage: the voxels follow the header in the same file


def detached_data_name(header: str, is_nrrd: bool) -> str | None:
    """The data-file value of an NRRD or MetaImage header text, or None when the voxels are in the file itself."""
    for line in header.splitlines():
        if is_nrrd and not line.strip():
            break  # the blank line that ends an NRRD header
        key, sep, value = line.partition(":" if is_nrrd else "=")
        if not sep or (is_nrrd and value.startswith("=")):  # "key:=value" lines are NRRD key/value pairs
            continue
        key = key.strip().lower()
        if (is_nrrd and key in _NRRD_KEYS) or (not is_nrrd and key == _META_KEY):
            value = value.strip()
            return None if not is_nrrd and value.lower() == _IN_HEADER else value
    return None


def check_detached_data(path: Path, what: str) -> None:
    """Refuse an NRRD / MetaImage header whose data file is not a regular file beside it or below it.

    Raises:
        InputError: naming the data file, why it is refused, and the header.
    """
    name = path.name.lower()
    if not name.endswith(HEADER_SUFFIXES):
        return
    try:
        with open(path, "rb") as handle:
            text = handle.read(_HEADER_READ_BYTES).decode("latin-1")
    except OSError as exc:
        raise InputError(f"cannot read {what} file {display_path(path)}: {exc.strerror or exc}") from exc
    value = detached_data_name(text, name.endswith(NRRD_SUFFIXES))
    if value is None:
        return
    shown = display_path(path)
    if value.split()[0].upper() == "LIST" or "%" in value or len(value.split()) > 1:
        raise InputError(f"{what} header names several data files ({value[:60]!r}); only one data file beside the "
                         f"header is read: {shown}")
    folder = Path(os.path.realpath(path.parent))
    data = Path(value) if os.path.isabs(value) else path.parent / value
    real = Path(os.path.realpath(data))
    if folder != real.parent and folder not in real.parents:
        raise InputError(f"{what} header's data file {value!r} is outside the header's folder; only a file beside "
                         f"the header or below it is read: {shown}")
    try:
        mode = os.stat(real).st_mode
    except OSError as exc:
        raise InputError(f"{what} header's data file {value!r} cannot be found ({exc.strerror or exc}): "
                         f"{shown}") from exc
    if not stat.S_ISREG(mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(
            mode) else "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise InputError(f"{what} header's data file {value!r} is {kind}, not a file: {shown}")
