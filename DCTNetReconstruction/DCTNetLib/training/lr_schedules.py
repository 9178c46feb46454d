"""Learning-rate schedules of the GAN and CDM optimisers (not the diffusion noise schedules of
:mod:`DCTNetLib.models.diffusion.schedules`), as ``torch.optim.lr_scheduler.LambdaLR`` stepped once per epoch.

- ``"constant"`` — DCT-Net §3.1: Adam at 2e-4 for all 100 epochs, no decay is mentioned.
- ``"x2ct"``     — X2CT-GAN (Ying et al., CVPR 2019; kylekma/X2CT ``3DGAN/lib/model/factory.py`` ``get_scheduler``
  policy ``lambda`` with ``niter: 50, niter_decay: 50`` in ``experiment/multiview2500/d2_multiview2500.yml``):
  the initial rate for the first half of the epochs, then a linear decay towards 0 over the second half.
  The factor after epoch ``e`` (0-based) is ``1 - max(0, e + 1 - n_constant) / (n_decay + 1)``, the
  pix2pix/X2CT formula, so the last epoch runs at ``1 / (n_decay + 1)`` of the initial rate.

The multipliers are module-level functions bound with :func:`functools.partial`, so a scheduler's
``state_dict`` holds only numbers (``LambdaLR`` skips plain functions and partials) and loads with
``weights_only=True``.
"""

from __future__ import annotations

import functools

import torch

__all__ = ["LR_SCHEDULES", "constant_factor", "x2ct_factor", "build_scheduler"]

LR_SCHEDULES = ("constant", "x2ct")


def constant_factor(epoch: int) -> float:
    """Multiplier of the paper's schedule: always 1."""
    return 1.0


def x2ct_factor(epoch: int, *, n_constant: int, n_decay: int) -> float:
    """Multiplier of X2CT-GAN's schedule after ``epoch`` completed epochs.

    Args:
        epoch: number of completed epochs (``LambdaLR.last_epoch``), 0 at the start.
        n_constant: epochs at the initial rate.
        n_decay: epochs of linear decay that follow.
    """
    return 1.0 - max(0, epoch + 1 - n_constant) / float(n_decay + 1)


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule ``name`` for a run of ``epochs`` epochs, stepped once at the end of every epoch.

    Args:
        optimizer: the optimiser whose learning rate is scheduled.
        name: one of :data:`LR_SCHEDULES`.
        epochs: total epochs of the run; ``"x2ct"`` keeps the rate for ``epochs // 2`` epochs and
            decays over the remaining ``epochs - epochs // 2``.

    Raises:
        ValueError: unknown ``name`` or ``epochs < 1``.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if name == "constant":
        factor = constant_factor
    elif name == "x2ct":
        n_constant = epochs // 2
        factor = functools.partial(x2ct_factor, n_constant=n_constant, n_decay=epochs - n_constant)
    else:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {name!r}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=factor)
