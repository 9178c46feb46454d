"""The training progress bar (rank 0): steps of the whole run, the current epoch, the loss terms and the ETA."""

from __future__ import annotations

import sys

__all__ = ["Progress"]


class Progress:
    """tqdm bar over the run's steps with the loss terms and the ETA; silent off rank 0 or when disabled.

    Args:
        total: steps of the whole run.
        initial: steps already done (resume).
        enabled: show the bar.
    """

    def __init__(self, total: int, initial: int = 0, enabled: bool = True) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, smoothing=0.1)

    def update(self, epoch: int, epochs: int, losses: dict[str, float]) -> None:
        if self.bar is None:
            return
        self.bar.set_description(f"epoch {epoch + 1}/{epochs}", refresh=False)
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in losses.items()}, refresh=False)
        self.bar.update(1)

    def write(self, message: str) -> None:
        if self.bar is None:
            print(message, file=sys.stderr, flush=True)
        else:
            self.bar.write(message, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
