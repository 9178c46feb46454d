"""Exponential moving average (EMA) of model weights, used for sampling (Ho et al. 2020, Appendix B).

Every ``update_every`` calls of :meth:`EMA.update`, each floating-point parameter of the averaged copy becomes
``θ_ema ← decay · θ_ema + (1 - decay) · θ``; buffers (and integer tensors) are copied. During the first
``warmup_steps`` calls the copy simply tracks the online weights (lucidrains/ema-pytorch ``update_after_step``).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """Keeps an averaged, frozen copy of an online model.

    Args:
        model: The online model being trained (kept by reference).
        decay: EMA decay in [0, 1). Defaults to 0.9999 (Ho et al. 2020).
        update_every: Calls of :meth:`update` between averaging steps. Defaults to 1.
        warmup_steps: Calls during which the copy is set equal to the online weights. Defaults to 0.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> ema = EMA(net, decay=0.99)
        >>> ema.update()
        >>> ema.model(torch.zeros(1, 2)).shape
        torch.Size([1, 2])
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, update_every: int = 1,
                 warmup_steps: int = 0) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if update_every < 1:
            raise ValueError(f"update_every must be >= 1, got {update_every}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.online = model
        self.decay = float(decay)
        self.update_every = int(update_every)
        self.warmup_steps = int(warmup_steps)
        self.step = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def copy_from_online(self) -> None:
        """Set every EMA tensor equal to the online model's."""
        for ema_t, t in zip(self._tensors(self.model), self._tensors(self.online)):
            ema_t.copy_(t)

    @torch.no_grad()
    def update(self) -> None:
        """Count one optimiser step and average the weights when the step is a multiple of ``update_every``."""
        self.step += 1
        if self.step % self.update_every:
            return
        if self.step <= self.warmup_steps:
            self.copy_from_online()
            return
        for ema_p, p in zip(self.model.parameters(), self.online.parameters()):
            if ema_p.dtype.is_floating_point:
                ema_p.lerp_(p.detach(), 1.0 - self.decay)
            else:
                ema_p.copy_(p)
        for ema_b, b in zip(self.model.buffers(), self.online.buffers()):
            ema_b.copy_(b)

    @staticmethod
    def _tensors(module: nn.Module) -> list[torch.Tensor]:
        return [*module.parameters(), *module.buffers()]

    def to(self, device: torch.device | str) -> "EMA":
        """Move the averaged copy to ``device``."""
        self.model.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        """Averaged weights plus the counters and settings needed to resume."""
        return {"step": self.step, "decay": self.decay, "update_every": self.update_every,
                "warmup_steps": self.warmup_steps, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (weights strictly; missing counter keys raise ``KeyError``)."""
        self.model.load_state_dict(state["model"])
        self.step = int(state["step"])
        self.decay = float(state["decay"])
        self.update_every = int(state["update_every"])
        self.warmup_steps = int(state["warmup_steps"])
