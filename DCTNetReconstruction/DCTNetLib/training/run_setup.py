"""Starting a training run: the device and its backends, the process group (under torchrun) and, on rank 0, the
run folder.

The device is chosen by :func:`DCTNetLib.devices.select_device` with ``missing_cuda="raise"``. Everything GPU-only
sits behind a device check: mixed precision (``torch.autocast`` float16 + ``GradScaler``) and ``cudnn.benchmark``
are switched on only on CUDA; on CPU the *same* code runs with both disabled (a disabled autocast and GradScaler
are no-ops), so the tests exercise the GPU code path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..devices import select_device
from .distributed import DistInfo, barrier, detect, init_distributed
from .run_folder import prepare_run_dir

__all__ = ["setup_run", "configure_backends"]

# cuBLAS needs a fixed workspace for deterministic results on CUDA ≥ 10.2 (PyTorch "Reproducibility" notes).
_CUBLAS_WORKSPACE = ":4096:8"


def setup_run(config: Any, run_dir: Path, *, resume: bool, overwrite: bool) -> tuple[torch.device, DistInfo]:
    """Select the device from ``config.device``, start the process group (under torchrun) and prepare the run
    folder on rank 0 (:func:`~.run_folder.prepare_run_dir`); every rank waits until the folder exists."""
    device = select_device(config.device, missing_cuda="raise", local_rank=detect().local_rank)
    info = init_distributed(use_cuda=device.type == "cuda")
    if info.is_main:
        prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
    barrier()
    return device, info


def configure_backends(device: torch.device, deterministic: bool) -> None:
    """Deterministic algorithms when asked; cuDNN autotuning only on CUDA and only when not deterministic."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_WORKSPACE)
    if torch.are_deterministic_algorithms_enabled() != deterministic:  # the call imports torch._inductor (slow)
        torch.use_deterministic_algorithms(deterministic)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
