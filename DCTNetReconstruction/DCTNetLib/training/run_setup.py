"""Starting a training run: the device, the process group (under torchrun) and, on rank 0, the run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..devices import select_device
from .distributed import DistInfo, barrier, detect, init_distributed
from .run_folder import prepare_run_dir

__all__ = ["setup_run"]


def setup_run(config: Any, run_dir: Path, *, resume: bool, overwrite: bool) -> tuple[torch.device, DistInfo]:
    """Select the device from ``config.device``, start the process group (under torchrun) and prepare the run
    folder on rank 0 (:func:`~.run_folder.prepare_run_dir`); every rank waits until the folder exists."""
    device = select_device(config.device, missing_cuda="raise", local_rank=detect().local_rank)
    info = init_distributed(use_cuda=device.type == "cuda")
    if info.is_main:
        prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
    barrier()
    return device, info
