"""Atomic file writes: every file the project writes goes through this module.

A file is first written to a temporary name in the *same* folder, flushed to disk (``fsync``) and then renamed
over the target with :func:`os.replace`, which is atomic on POSIX and Windows. A reader therefore sees either
the old complete file or the new complete file, never a half-written one: an interrupted run, a crash or a full
disk leaves the previous version intact. On any error the temporary file is removed.

Typical use::

    atomic_write_text(folder / "meta.json", json.dumps(meta))
    with atomic_path(folder / "volume.nii.gz") as tmp:   # tmp keeps the ".nii.gz" ending
        sitk.WriteImage(image, str(tmp))

It also holds the file-system checks done *before* reading or writing: :func:`check_readable`,
:func:`check_writable_dir`, :func:`check_free_space`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Iterator

from ..errors import InputError, OutputError

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_torch_save",
    "check_writable_dir",
    "check_free_space",
    "check_readable",
    "format_bytes",
]

# errno values that mean "the disk (or the user's quota) is full".
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}
_TMP_PREFIX = ".tmp-"


def format_bytes(nbytes: float) -> str:
    """Human-readable size with binary prefixes, e.g. ``format_bytes(3 * 2**20) == "3.0 MiB"``."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024.0 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024.0
    raise AssertionError("unreachable")


def _output_error(exc: OSError, path: Path) -> OutputError:
    """Translate an ``OSError`` raised while writing ``path`` into a one-line :class:`OutputError`."""
    if exc.errno in _DISK_FULL:
        return OutputError(f"disk full while writing {path}: {exc.strerror or exc}")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"no permission to write {path}: {exc.strerror or exc}")
    return OutputError(f"cannot write {path}: {exc.strerror or exc}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Context manager yielding a temporary path to write to; it replaces ``path`` only on success.

    The temporary file lives in the same folder (so the final :func:`os.replace` is a rename, not a copy) and its
    name *ends with* the target's name, so writers that choose the format from the extension (SimpleITK,
    ``numpy.save``) behave as for the real name. The temporary file is fsynced before the rename.

    Args:
        path: final file path. Its folder must exist and be writable.

    Raises:
        OutputError: the folder is missing or not writable, or writing failed (e.g. disk full); the message
            names ``path``. The previous content of ``path``, if any, is left untouched.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"output folder does not exist: {folder} (writing {target.name})")
    tmp = folder / f"{_TMP_PREFIX}{secrets.token_hex(4)}-{target.name}"
    try:
        yield tmp
        if not tmp.exists():
            raise OutputError(f"nothing was written to {target} (the writer produced no file)")
        _fsync_file(tmp)
        os.replace(tmp, target)
    except OSError as exc:
        _remove_quietly(tmp)
        if isinstance(exc, OutputError):
            raise
        raise _output_error(exc, target) from exc
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(folder)


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _write_all(fd: int, data: memoryview) -> None:
    """``os.write`` until every byte is written (``os.write`` may write fewer bytes than asked)."""
    while data:
        written = os.write(fd, data)
        data = data[written:]


def atomic_write_bytes(path: str | os.PathLike, data: bytes | bytearray | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`).

    Args:
        path: destination file.
        data: the complete new content.

    Returns:
        ``Path(path)``.

    Raises:
        OutputError: folder missing / not writable, or the disk is full (the old file survives intact).
    """
    target = Path(path)
    with atomic_path(target) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
        try:
            _write_all(fd, memoryview(data).cast("B"))
        finally:
            os.close(fd)
    return target


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically. Args as :func:`atomic_write_bytes`; ``encoding`` defaults to UTF-8."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` atomically: an interrupted save never leaves a truncated checkpoint behind.

    Args:
        obj: anything ``torch.save`` accepts (keep to tensors, dicts, lists and numbers so it loads with
            ``weights_only=True``).
        path: destination file.
    """
    import torch  # lazy: this module is also used by light tools that do not need torch

    target = Path(path)
    with atomic_path(target) as tmp:
        torch.save(obj, tmp)
    return target


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Check that ``path`` is an existing folder we can create files in (by creating and removing a probe file).

    ``os.access`` is not enough (it says yes to root on read-only mounts), hence the probe.

    Returns:
        ``Path(path)``.

    Raises:
        OutputError: the folder is missing, is a file, or is not writable.
    """
    folder = Path(path)
    if not folder.exists():
        raise OutputError(f"output folder does not exist: {folder}")
    if not folder.is_dir():
        raise OutputError(f"output path is not a folder: {folder}")
    probe = folder / f"{_TMP_PREFIX}probe-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
    except OSError as exc:
        raise OutputError(f"output folder is not writable: {folder} ({exc.strerror or exc})") from exc
    _remove_quietly(probe)
    return folder


def check_free_space(path: str | os.PathLike, nbytes: int) -> int:
    """Check that the file system holding ``path`` has at least ``nbytes`` free.

    Args:
        path: a file or folder; when it does not exist yet, its nearest existing parent is checked.
        nbytes: bytes about to be written.

    Returns:
        the free bytes found.

    Raises:
        OutputError: ``"not enough free disk space: need X, have Y at PATH"``.
    """
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < nbytes:
        raise OutputError(
            f"not enough free disk space: need {format_bytes(nbytes)}, have {format_bytes(free)} at {probe}"
        )
    return free


def check_readable(path: str | os.PathLike, what: str = "file") -> Path:
    """Check that ``path`` exists and can be opened for reading (a file) or listed (a folder).

    Done up front so that a permission problem is reported as such, not as "not an image" by a reader that
    swallows ``OSError`` (Pillow, GDCM's series scanner). ``os.access`` is not used: it answers for the real,
    not the effective, user and says yes to root.

    Args:
        path: file or folder about to be read.
        what: what the path is, for the message (``"CT"``, ``"radiograph"``). Defaults to ``"file"``.

    Returns:
        ``Path(path)``.

    Raises:
        InputError: ``"<what> not found: PATH"`` or ``"no permission to read <what>: PATH"``.
    """
    target = Path(path)
    if not target.exists():
        raise InputError(f"{what} not found: {target}")
    try:
        if target.is_dir():
            os.listdir(target)
        else:
            with open(target, "rb") as handle:
                handle.read(1)
    except PermissionError as exc:
        raise InputError(f"no permission to read {what}: {target}") from exc
    except OSError as exc:
        raise InputError(f"cannot read {what} {target}: {exc.strerror or exc}") from exc
    return target
