"""The torch device a command runs on: one rule for inference and training, with the missing-GPU policy explicit."""

from __future__ import annotations

import warnings

import torch

from .errors import InputError

__all__ = ["MISSING_CUDA_POLICIES", "select_device"]

# What a request for CUDA does when PyTorch sees no GPU: "cpu" runs on the CPU after a RuntimeWarning (a
# reconstruction is still worth having), "raise" stops with an InputError (a training run meant for a GPU would
# otherwise spend days on the CPU).
MISSING_CUDA_POLICIES = ("cpu", "raise")


def select_device(preference: str | torch.device = "auto", *, missing_cuda: str,
                  local_rank: int | None = None) -> torch.device:
    """``"auto"`` → CUDA when available, else the CPU; ``"cpu"``; ``"cuda"`` or ``"cuda:N"``.

    Args:
        preference: the requested device (a name or a ``torch.device``). Defaults to "auto".
        missing_cuda: one of :data:`MISSING_CUDA_POLICIES`, for a CUDA request without a visible GPU.
        local_rank: GPU index of this process (DDP's ``LOCAL_RANK``), used for ``"auto"`` and ``"cuda"``; None
            leaves the index to torch's current device. Defaults to None.

    Raises:
        InputError: an unknown ``preference``, or CUDA requested without a GPU under ``missing_cuda="raise"``.
        ValueError: an unknown ``missing_cuda`` policy.
    """
    if missing_cuda not in MISSING_CUDA_POLICIES:
        raise ValueError(f"missing_cuda must be one of {MISSING_CUDA_POLICIES}, got {missing_cuda!r}")
    name = str(preference)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name != "cuda" and not name.startswith("cuda:"):
        raise InputError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {preference!r}")
    if not torch.cuda.is_available():
        if missing_cuda == "raise":
            raise InputError(f"device {name!r}: no CUDA GPU is visible to PyTorch (use the cpu or auto device)")
        warnings.warn("CUDA was requested but is not available; using the CPU", RuntimeWarning, stacklevel=2)
        return torch.device("cpu")
    if name == "cuda" and local_rank is not None:
        return torch.device("cuda", local_rank)
    return torch.device(name)
