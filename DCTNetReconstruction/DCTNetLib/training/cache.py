"""Cached CDM outputs: the bone-suppressed inputs X of the GAN's second branch, sampled once per case.

DDIM sampling is the slow part of the pipeline, so ``dctnet train`` runs the trained CDM (EMA weights) once over
the training and validation cases and stores each result next to the case::

    <prepared_root>/cases/<case_id>/drr_cdm_<key>.npy      (2, H, W) float32 in [0, 1]: PA, lateral

``key`` hashes the CDM weights, the DDIM steps, η and the seed (:func:`cache_key`), so another CDM or other
sampling settings never reuse stale files, and a rerun (or a resume) finds the work already done. Each case's
noise comes from a seed derived from ``(seed, case_id)``, so its output does not depend on batching or on which
rank computed it; under DDP every rank samples its share of the cases, then all wait at a barrier. Files are
written atomically.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..conventions import derived_seed
from ..errors import InputError
from ..io.atomic import atomic_path
from .distributed import DistInfo, barrier

__all__ = ["CACHE_PREFIX", "cache_key", "cache_file", "case_seed", "precompute_cdm_outputs", "CachedBoneSuppressed"]

CACHE_PREFIX = "drr_cdm_"
_KEY_HEX = 16  # 64 bits of sha256: collisions between a project's few CDMs are not a concern


def cache_key(model: torch.nn.Module, steps: int, seed: int, eta: float) -> str:
    """Hex key of the CDM's weights (every tensor of its state dict, in key order) and the sampling settings."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(f"steps={int(steps)};seed={int(seed)};eta={float(eta)!r}".encode())
    return digest.hexdigest()[:_KEY_HEX]


def cache_file(case_dir: str | Path, key: str) -> Path:
    """``<case_dir>/drr_cdm_<key>.npy``."""
    return Path(case_dir) / f"{CACHE_PREFIX}{key}.npy"


def case_seed(seed: int, case_id: str) -> int:
    """Sampling seed of one case: stable across runs, processes and batch compositions."""
    return derived_seed(seed, case_id)


def _case_dir(dataset: Any, case_id: str) -> Path:
    if not hasattr(dataset, "case_dir"):
        raise InputError("the CDM cache needs a PreparedCaseDataset (with case folders)")
    return Path(dataset.case_dir(case_id))


@torch.no_grad()
def precompute_cdm_outputs(dataset: Any, model: torch.nn.Module, *, steps: int, seed: int, eta: float,
                           info: DistInfo | None = None, progress: bool = True) -> str:
    """Sample and cache the bone-suppressed pair of every case of ``dataset`` that has no cache file yet.

    Args:
        dataset: a :class:`~DCTNetLib.data.prepared_cases.PreparedCaseDataset` (``case_ids``, ``case_dir``, items
            with ``drr``).
        model: the CDM (``suppress_bones``), in eval mode.
        steps: DDIM steps.
        seed: base sampling seed (see :func:`case_seed`).
        eta: DDIM η.
        info: rank information; rank ``r`` of ``w`` handles cases ``r, r + w, …``.
        progress: tqdm bar on rank 0.

    Returns:
        the cache key.
    """
    info = info or DistInfo()
    key = cache_key(model, steps, seed, eta)
    device = next(model.parameters()).device
    todo = [i for i in range(info.rank, len(dataset), info.world_size)
            if not cache_file(_case_dir(dataset, dataset.case_ids[i]), key).is_file()]
    bar = None
    if progress and info.is_main and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="CDM bone suppression (cached)", unit="case", dynamic_ncols=True)
    for i in todo:
        case_id = dataset.case_ids[i]
        drr = torch.as_tensor(dataset[i]["drr"], dtype=torch.float32)[None].to(device)
        out = model.suppress_bones(drr, steps=steps, seed=case_seed(seed, case_id), eta=eta)
        with atomic_path(cache_file(_case_dir(dataset, case_id), key)) as tmp:
            np.save(tmp, out[0].float().cpu().numpy())
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    barrier()
    return key


class CachedBoneSuppressed(Dataset):
    """A prepared-case dataset whose ``drr_bs`` is replaced by the cached CDM output.

    Args:
        cases: the :class:`~DCTNetLib.data.prepared_cases.PreparedCaseDataset`.
        key: cache key returned by :func:`precompute_cdm_outputs`.

    Raises (on access):
        InputError: a case has no cache file (precompute first); the message names the file.
    """

    def __init__(self, cases: Any, key: str) -> None:
        self.cases = cases
        self.key = key

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.cases[index])
        path = cache_file(_case_dir(self.cases, item["case_id"]), self.key)
        try:
            item["drr_bs"] = torch.from_numpy(np.load(path).astype(np.float32))
        except (OSError, ValueError) as exc:
            raise InputError(f"cached CDM output missing or damaged: {path} ({exc}); rerun `dctnet train`") from exc
        return item
