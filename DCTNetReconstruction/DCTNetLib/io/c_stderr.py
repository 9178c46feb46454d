"""What C and C++ libraries print straight to the process's standard error (file descriptor 2), caught.

niftilib prints ``** ERROR: NWAD …`` when a write fails, MetaIO ``MetaImage: M_WriteElementsData …``; Python's
``sys.stderr`` never sees these lines, so they reach the terminal beside the one line a refusal should be. Around
such a call, :func:`captured_c_stderr` points descriptor 2 at a temporary file and hands back its lines, which the
caller turns into its own message or a debug log line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from typing import Iterator

__all__ = ["captured_c_stderr", "c_stderr_as_debug"]


@contextlib.contextmanager
def captured_c_stderr() -> Iterator[list[str]]:
    """Context manager yielding a list that holds, once the block ends, the lines written to descriptor 2 in it.

    Where descriptor 2 cannot be redirected (no temporary file can be made, e.g. on a full disk), the block runs
    with the terminal's stderr unchanged and the list stays empty.
    """
    lines: list[str] = []
    try:
        sink = tempfile.TemporaryFile()
        saved = os.dup(2)
    except OSError:
        yield lines
        return
    with sink:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            with contextlib.suppress(OSError):
                sink.seek(0)
                lines.extend(sink.read().decode("utf-8", "replace").splitlines())


@contextlib.contextmanager
def c_stderr_as_debug(log: logging.Logger, what: str) -> Iterator[list[str]]:
    """:func:`captured_c_stderr` whose lines also become debug log lines ``"<what>: <line>"`` once the block ends,
    whether it ends normally or by an exception (a codec's "Stream too short" beside the caller's own refusal)."""
    lines: list[str] = []
    try:
        with captured_c_stderr() as lines:
            yield lines
    finally:
        for line in lines:
            log.debug("%s: %s", what, line)
