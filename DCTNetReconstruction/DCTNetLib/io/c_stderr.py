"""What C and C++ libraries print straight to the process's standard error (file descriptor 2), caught.

niftilib prints ``** ERROR: NWAD …`` when a write fails, MetaIO ``MetaImage: M_WriteElementsData …``; Python's
``sys.stderr`` never sees these lines, so they reach the terminal beside the one line a refusal should be. Around
such a call, :func:`captured_c_stderr` points descriptor 2 at a temporary file and hands back its lines, which the
caller turns into its own message or a debug log line.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Iterator

__all__ = ["captured_c_stderr"]


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
