"""Atomic file writes: every file the project writes goes through this module.

A file is first written to a temporary name in the *same* folder, flushed to disk (``fsync``) and then renamed
over the target with :func:`os.replace`, which is atomic on POSIX and Windows. A reader therefore sees either
the old complete file or the new complete file, never a half-written one: an interrupted run, a crash or a full
disk leaves the previous version intact. On any error the temporary file is removed. A run killed mid-write
(``kill -9``, a crash) cannot remove its temporary file; its name (``.tmp-<pid>-…``) names its writer, and the first
atomic write of a later run into that folder removes the ``.tmp-*`` files whose writer is gone
(:func:`remove_stale_temporary_files`).

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
import logging
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

from ..conventions import VOLUME_READ_SUFFIXES
from ..errors import InputError, OutputError
from ..processes import pid_alive

__all__ = [
    "atomic_path",
    "atomic_folder",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_torch_save",
    "check_writable_dir",
    "check_free_space",
    "check_readable",
    "check_name_length",
    "check_path_length",
    "output_error",
    "remove_stale_temporary_files",
    "write_all",
    "display_path",
    "format_bytes",
    "is_utf8_path",
    "utf8_alias",
]

log = logging.getLogger(__name__)

# errno values that mean "the disk (or the user's quota) is full".
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_TMP_PREFIX = ".tmp-"
# Longest file name most file systems take (ext4, XFS, APFS, NTFS: 255 bytes); checked before any work.
NAME_MAX = 255
# Longest path Linux takes in one call, its final NUL included (PATH_MAX): a longer one fails with ENAMETOOLONG.
PATH_MAX = 4096
# Characters of the target's name kept in a temporary file's name (plus its lower-cased format suffix).
_TMP_NAME_KEEP = 64
_FORMAT_SUFFIXES = VOLUME_READ_SUFFIXES + (".npy", ".png", ".json", ".pt", ".txt", ".md", ".csv", ".jsonl")


def is_utf8_path(path: str | os.PathLike) -> bool:
    """True when ``path``'s bytes are valid UTF-8 (Linux allows any bytes; SimpleITK's C++ layer aborts on them)."""
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@contextlib.contextmanager
def utf8_alias(path: str | os.PathLike) -> Iterator[str]:
    """A UTF-8 name for ``path`` to hand to C++ readers and writers (SimpleITK aborts the process on other bytes).

    A UTF-8 path is yielded as it is. Otherwise a temporary folder holds a symbolic link with a plain name: to the
    file itself when its own name is not UTF-8 (reading), or to its folder (so a temporary file can be written
    there under its UTF-8 name). The links are removed afterwards; the file is never copied.
    """
    if is_utf8_path(path):
        yield str(path)
        return
    import tempfile

    target = Path(os.path.abspath(path))
    holder = Path(tempfile.mkdtemp(prefix="dctnet-alias-"))
    try:
        suffix = next((s for s in _FORMAT_SUFFIXES if target.name.lower().endswith(s)), "")
        if is_utf8_path(target.name):
            os.symlink(target.parent, holder / "folder", target_is_directory=True)
            yield str(holder / "folder" / target.name)
        else:
            os.symlink(target, holder / f"file{suffix}")
            yield str(holder / f"file{suffix}")
    finally:
        shutil.rmtree(holder, ignore_errors=True)


def display_path(path: str | os.PathLike) -> str:
    """``path`` as printable text: bytes that are not UTF-8 appear as ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _shortened(text: str, keep: int = 50) -> str:
    """``text`` cut to its first and last ``keep`` characters around an ellipsis when longer than that."""
    return text if len(text) <= 2 * keep + 1 else f"{text[:keep]}…{text[-keep:]}"


def check_path_length(path: str | os.PathLike) -> None:
    """Raise :class:`OutputError` when ``path`` (made absolute) is longer than :data:`PATH_MAX` allows or one of
    its names is longer than :data:`NAME_MAX` bytes: every later call on it would fail with ``ENAMETOOLONG``, so
    it is refused before any work, in one line."""
    absolute = os.fsencode(os.path.abspath(path))
    if len(absolute) >= PATH_MAX:
        raise OutputError(f"output path is too long ({len(absolute):,} bytes, at most {PATH_MAX - 1:,}): "
                          f"{_shortened(display_path(path))}")
    longest = max(absolute.split(os.fsencode(os.sep)), key=len)
    if len(longest) > NAME_MAX:
        raise OutputError(f"a name in the output path is too long ({len(longest)} bytes, at most {NAME_MAX}): "
                          f"{_shortened(display_path(longest), 30)} in {_shortened(display_path(path))}")


def check_name_length(path: str | os.PathLike) -> None:
    """Raise :class:`OutputError` when the file name of ``path``, or ``path`` as a whole
    (:func:`check_path_length`), is longer than the file system allows."""
    target = Path(path)
    limit = NAME_MAX
    with contextlib.suppress(OSError, ValueError, AttributeError):
        folder = target.parent if str(target.parent) else Path(".")
        limit = os.pathconf(folder, "PC_NAME_MAX") if folder.is_dir() else NAME_MAX
    size = len(os.fsencode(target.name))
    if size > limit:
        raise OutputError(f"output file name is too long ({size} bytes, at most {limit}): "
                          f"{display_path(target.name)[:60]}… in {_shortened(display_path(target.parent))}")
    check_path_length(target)


def _tmp_name(target: Path) -> str:
    """A short, UTF-8, hidden temporary name in ``target``'s folder that keeps its (lower-cased) format suffix.

    Writers that choose the format from the ending (SimpleITK, ``numpy.save``) see a lower-case ``.nii.gz`` even
    for ``OUT.NII.GZ``, the name stays under the file-name limit whatever the target's length, and a target
    name that is not UTF-8 (which SimpleITK cannot open) never reaches the writer.
    """
    name = target.name
    suffix = next((s for s in _FORMAT_SUFFIXES if name.lower().endswith(s)), "")
    stem = name[: len(name) - len(suffix)] if suffix else name
    safe = os.fsencode(stem).decode("ascii", "replace").replace("\ufffd", "_")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in safe)[:_TMP_NAME_KEEP]
    return f"{_tmp_prefix()}{safe}{suffix}"


def _tmp_prefix() -> str:
    """``.tmp-dctnet-<pid>-<8 hex>-``: the writer's process id tells a later run whether the file is still being
    written, and the word keeps other programs' ``.tmp-…`` files (in a shared folder such as /tmp) out of it."""
    return f"{_TMP_PREFIX}dctnet-{os.getpid()}-{secrets.token_hex(4)}-"


_STARTED = time.time()  # about when this process started (this module is imported before anything is written)
_CLEANED: set[str] = set()  # folders already cleaned of stale temporary files by this process
_TMP_PID = re.compile(r"\.tmp-dctnet-(\d+)-[0-9a-f]{8}-")
_TMP_WITHOUT_PID = re.compile(r"\.tmp-[0-9a-f]{8}-")  # the names of versions before the pid was in them


def _is_stale(entry: Path) -> bool:
    """A temporary file or folder of this tool that no live process is writing: its writer's pid (in its name) is
    gone, or, for an older version's name without a pid, it is older than this process."""
    match = _TMP_PID.match(entry.name)
    if match:
        return not pid_alive(int(match.group(1)))
    if not _TMP_WITHOUT_PID.match(entry.name):
        return False  # not a name this tool writes
    try:
        return entry.lstat().st_mtime < _STARTED
    except OSError:
        return False


def remove_stale_temporary_files(folder: str | os.PathLike) -> list[str]:
    """Remove the ``.tmp-*`` files and folders a run killed mid-write (``kill -9``, a crash, a power cut) left in
    ``folder``; those of live writers stay. Done once per folder and process, by the first atomic write into it.

    Returns:
        the names removed (each is also logged at INFO).
    """
    folder = Path(folder)
    key = os.path.realpath(folder)
    if key in _CLEANED:
        return []
    _CLEANED.add(key)
    removed = []
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            if entry.name.startswith(_TMP_PREFIX) and _is_stale(entry):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    _remove_quietly(entry)
                removed.append(entry.name)
    if removed:
        log.info("removed %d temporary file(s) a stopped run left in %s: %s", len(removed), display_path(folder),
                 ", ".join(sorted(removed)))
    return removed


def format_bytes(nbytes: float) -> str:
    """Human-readable size with binary prefixes, e.g. ``format_bytes(3 * 2**20) == "3.0 MiB"``."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024.0 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024.0
    raise AssertionError("unreachable")


def output_error(exc: OSError, path: Path) -> OutputError:
    """Translate an ``OSError`` raised while writing ``path`` into a one-line :class:`OutputError`."""
    shown = display_path(path)
    if exc.errno in _DISK_FULL:
        return OutputError(f"disk full while writing {shown}: {exc.strerror or exc}")
    if exc.errno == errno.EFBIG:
        return OutputError(f"file-size limit reached while writing {shown} (ulimit -f, or the largest file the file "
                           f"system takes): {exc.strerror or exc}")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"no permission to write {shown}: {exc.strerror or exc}")
    return OutputError(f"cannot write {shown}: {exc.strerror or exc}")


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


def _move_into_place(tmp: Path, target: Path, overwrite: bool) -> None:
    """Rename ``tmp`` to ``target``; with ``overwrite=False`` never replace a file that exists by then.

    The no-clobber step is ``os.link`` (fails with ``EEXIST`` atomically when the name is taken, even by a file
    that appeared a moment ago) followed by removing the temporary name. File systems without hard links fall
    back to a last existence check right before :func:`os.replace`.
    """
    if overwrite:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)
    except FileExistsError as exc:
        raise OutputError(f"{display_path(target)} appeared while this run was working (another run writing the "
                          "same output?); it was left as it is: pass --overwrite to replace it, or choose another "
                          "output") from exc
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise
        if os.path.lexists(target):
            raise OutputError(f"{display_path(target)} appeared while this run was working; it was left as it "
                              "is: pass --overwrite to replace it") from exc
        os.replace(tmp, target)
        return
    _remove_quietly(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Context manager yielding a temporary path to write to; it replaces ``path`` only on success.

    The temporary file lives in the same folder (so the final :func:`os.replace` is a rename, not a copy); its
    name is short, hidden (``.tmp-…``) and *ends with* the target's format suffix in lower case, so writers that
    choose the format from the extension (SimpleITK, ``numpy.save``) behave as for the real name. The temporary
    file is fsynced before the rename.

    Args:
        path: final file path. Its folder must exist and be writable.
        overwrite: replace an existing ``path`` (the default). ``False`` refuses, at the final rename, a file
            that exists by then, e.g. one another run wrote while this one was computing.

    Raises:
        OutputError: the folder is missing or not writable, writing failed (e.g. disk full), or ``path`` exists
            and ``overwrite`` is False; the message names ``path``. The previous content of ``path``, if any, is
            left untouched.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"output folder does not exist: {display_path(folder)} (writing "
                          f"{display_path(target.name)})")
    check_name_length(target)
    remove_stale_temporary_files(folder)
    tmp = folder / _tmp_name(target)
    try:
        yield tmp
        if not tmp.exists():
            raise OutputError(f"nothing was written to {display_path(target)} (the writer produced no file)")
        _fsync_file(tmp)
        _move_into_place(tmp, target, overwrite)
    except OSError as exc:
        _remove_quietly(tmp)
        if isinstance(exc, OutputError):
            raise
        raise output_error(exc, target) from exc
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(folder)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Context manager yielding a new hidden folder beside ``path`` to fill; it becomes ``path`` only on success.

    The folder version of :func:`atomic_path`, for outputs made of many files (a DICOM series). An existing
    ``path`` is replaced only with ``overwrite``: it is renamed aside, the new folder renamed into place, then the
    old one removed, so a reader never sees a half-written folder. On any error the temporary folder is removed.

    Raises:
        OutputError: ``path`` exists by the end and ``overwrite`` is False, or a rename failed (disk, permission);
            the previous ``path``, if any, is left untouched.
    """
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    remove_stale_temporary_files(parent)
    tmp = parent / f"{_tmp_prefix()}folder"
    try:
        tmp.mkdir()
    except OSError as exc:
        raise output_error(exc, target) from exc
    try:
        yield tmp
        if os.path.lexists(target):
            if not overwrite:
                raise OutputError(f"{display_path(target)} appeared while this run was working; it was left as it "
                                  "is: pass --overwrite to replace it")
            old = parent / f"{_tmp_prefix()}old"
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise output_error(exc, target) from exc
        raise
    _fsync_dir(parent)


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def write_all(fd: int, data: memoryview) -> None:
    """``os.write`` until every byte is written (``os.write`` may write fewer bytes than asked)."""
    while data:
        written = os.write(fd, data)
        data = data[written:]


def atomic_write_bytes(path: str | os.PathLike, data: bytes | bytearray | memoryview, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`).

    Args:
        path: destination file.
        data: the complete new content.
        overwrite: see :func:`atomic_path`. Defaults to True.

    Returns:
        ``Path(path)``.

    Raises:
        OutputError: folder missing / not writable, or the disk is full (the old file survives intact).
    """
    target = Path(path)
    with atomic_path(target, overwrite) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
        try:
            write_all(fd, memoryview(data).cast("B"))
        finally:
            os.close(fd)
    return target


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8", overwrite: bool = True) -> Path:
    """Write ``text`` to ``path`` atomically. Args as :func:`atomic_write_bytes`; ``encoding`` defaults to UTF-8.

    Characters the encoding cannot hold (the undecodable bytes of a non-UTF-8 file name quoted in a report) are
    written as ``\\xNN`` escapes instead of failing the write.
    """
    return atomic_write_bytes(path, text.encode(encoding, "backslashreplace"), overwrite)


def atomic_torch_save(obj: Any, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """``torch.save(obj, path)`` atomically: an interrupted save never leaves a truncated checkpoint behind.

    Args:
        obj: anything ``torch.save`` accepts (keep to tensors, dicts, lists and numbers so it loads with
            ``weights_only=True``).
        path: destination file.
        overwrite: see :func:`atomic_path`. Defaults to True.
    """
    import torch  # lazy: this module is also used by light tools that do not need torch

    target = Path(path)
    with atomic_path(target, overwrite) as tmp, open(tmp, "wb") as handle:
        try:
            torch.save(obj, handle)  # through a Python file, so a failed write is an OSError, not a C++ message
        except RuntimeError as exc:
            failure = os_error_behind(exc)
            if failure is None:
                raise
            raise failure from exc  # atomic_path turns it into one OutputError naming the file
    return target


def os_error_behind(exc: BaseException) -> OSError | None:
    """The ``OSError`` a library wrapped into another exception (torch.save's "unexpected pos" after a failed
    write: the file's ``EFBIG`` or ``ENOSPC`` is its context), or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def check_writable_dir(path: str | os.PathLike) -> Path:
    """Check that ``path`` is an existing folder we can create files in (by creating and removing a probe file).

    ``os.access`` is not enough (it says yes to root on read-only mounts), hence the probe.

    Returns:
        ``Path(path)``.

    Raises:
        OutputError: the folder is missing, is a file, or is not writable.
    """
    check_path_length(path)
    folder = Path(path)
    if not folder.exists():
        raise OutputError(f"output folder does not exist: {folder}")
    if not folder.is_dir():
        raise OutputError(f"output path is not a folder: {folder}")
    probe = folder / f"{_tmp_prefix()}probe"
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
    import stat as stat_module

    target = Path(path)
    try:
        mode = os.stat(target).st_mode  # follows symbolic links; never opens anything
    except FileNotFoundError:
        broken = os.path.islink(target)
        raise InputError(f"{what} not found{' (a broken symbolic link)' if broken else ''}: "
                         f"{display_path(target)}") from None
    except OSError as exc:  # ELOOP (a link to itself), ENAMETOOLONG, ENOTDIR ...
        raise InputError(f"cannot read {what} {display_path(target)}: {exc.strerror or exc}") from exc
    if not (stat_module.S_ISDIR(mode) or stat_module.S_ISREG(mode)):
        kind = ("a FIFO (named pipe)" if stat_module.S_ISFIFO(mode) else "a socket" if stat_module.S_ISSOCK(mode)
                else "a device" if stat_module.S_ISCHR(mode) or stat_module.S_ISBLK(mode) else "not a regular file")
        raise InputError(f"{what} is {kind}, not a file or folder: {display_path(target)}")
    try:
        if stat_module.S_ISDIR(mode):
            os.listdir(target)
        else:
            with open(target, "rb") as handle:
                handle.read(1)
    except PermissionError as exc:
        raise InputError(f"no permission to read {what}: {display_path(target)}") from exc
    except OSError as exc:
        raise InputError(f"cannot read {what} {display_path(target)}: {exc.strerror or exc}") from exc
    return target
