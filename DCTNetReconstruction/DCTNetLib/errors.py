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


class TrainingDiverged(DCTNetError):
    """Training produced NaN/inf weights; the last finite checkpoint is kept and never replaced by them."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, ``kill``, a closing session) turned into an interrupt, so that it unwinds like Ctrl-C:
    temporary files are removed, workers are stopped and the command exits with 143 instead of vanishing."""


def raise_terminated(signum: int, frame: object) -> None:
    """A ``signal.signal`` handler for SIGTERM that raises :class:`Terminated` (install it in the main thread)."""
    raise Terminated(f"terminated by signal {signum}")
