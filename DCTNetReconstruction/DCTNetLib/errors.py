"""User-facing exceptions. Each message names the problem and the file; the CLI prints them without a traceback."""

from __future__ import annotations


class DCTNetError(Exception):
    """Base class of every error meant for a user (printed as one clear line by the CLI and Slicer)."""


class InputError(DCTNetError, ValueError):
    """An input file or array is missing, unreadable, or not what it claims to be."""


class WeightsError(DCTNetError):
    """A checkpoint or weights file is truncated, tampered with, or built for another architecture."""


class OutputError(DCTNetError, OSError):
    """An output cannot be written (folder missing, not writable, disk full)."""
