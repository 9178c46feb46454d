"""The backends of a training run's device: how cuDNN and determinism are set (the device itself is chosen by
:func:`DCTNetLib.devices.select_device` with ``missing_cuda="raise"``).

Everything GPU-only sits behind a device check: mixed precision (``torch.autocast`` float16 + ``GradScaler``)
and ``cudnn.benchmark`` are switched on only on CUDA; on CPU the *same* code runs with both disabled (a disabled
autocast and GradScaler are no-ops), so the tests exercise the GPU code path.
"""

from __future__ import annotations

import os

import torch

__all__ = ["configure_backends"]

# cuBLAS needs a fixed workspace for deterministic results on CUDA ≥ 10.2 (PyTorch "Reproducibility" notes).
_CUBLAS_WORKSPACE = ":4096:8"


def configure_backends(device: torch.device, deterministic: bool) -> None:
    """Deterministic algorithms when asked; cuDNN autotuning only on CUDA and only when not deterministic."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_WORKSPACE)
    if torch.are_deterministic_algorithms_enabled() != deterministic:  # the call imports torch._inductor (slow)
        torch.use_deterministic_algorithms(deterministic)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
