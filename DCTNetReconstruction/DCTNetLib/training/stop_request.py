"""Ctrl-C and SIGTERM during training: the first asks the loop to stop at the next step boundary (after writing
a checkpoint), a second Ctrl-C aborts at once."""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import Any

__all__ = ["StopRequest"]


class StopRequest:
    """Turns the first Ctrl-C / SIGTERM into a polite request checked at the next step boundary.

    A second Ctrl-C raises ``KeyboardInterrupt`` at once (the previous ``latest.pt`` stays valid). Handlers are
    installed only in the main thread and restored on exit.
    """

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        print(f"\n{self.signal_name} received: stopping after the current step and writing a checkpoint "
              "(press Ctrl-C again to abort at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> "StopRequest":
        for name in self.SIGNALS:
            signum = getattr(signal, name, None)
            if signum is None:
                continue
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread (e.g. called from a GUI worker)
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            with contextlib.suppress(ValueError):
                signal.signal(signum, handler)
        self._previous.clear()
