"""The training device and its backends: which device a run uses, and how cuDNN / determinism are set for it.

Everything GPU-only sits behind a device check: mixed precision (``torch.autocast`` float16 + ``GradScaler``)
and ``cudnn.benchmark`` are switched on only on CUDA; on CPU the *same* code runs with both disabled (a disabled
autocast and GradScaler are no-ops), so the tests exercise the GPU code path.
"""

from __future__ import annotations

import os

import torch

from ..errors import InputError
from .distributed import DistInfo

__all__ = ["select_device", "configure_backends"]

# cuBLAS needs a fixed workspace for deterministic results on CUDA ≥ 10.2 (PyTorch "Reproducibility" notes).
_CUBLAS_WORKSPACE = ":4096:8"


def select_device(preference: str, info: DistInfo | None = None) -> torch.device:
    """``"auto"`` → CUDA when available else CPU; ``"cuda"`` → GPU ``LOCAL_RANK``; ``"cpu"`` → CPU.

    Raises:
        InputError: ``"cuda"`` was asked for but no GPU is visible, or an unknown ``preference``.
    """
    info = info or DistInfo()
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA GPU is visible to PyTorch (use --device cpu or auto)")
        return torch.device("cuda", info.local_rank)
    if preference == "cpu":
        return torch.device("cpu")
    raise InputError(f"--device must be auto, cpu or cuda, got {preference!r}")


def configure_backends(device: torch.device, deterministic: bool) -> None:
    """Deterministic algorithms when asked; cuDNN autotuning only on CUDA and only when not deterministic."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_WORKSPACE)
    if torch.are_deterministic_algorithms_enabled() != deterministic:  # the call imports torch._inductor (slow)
        torch.use_deterministic_algorithms(deterministic)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
