"""The prepared-case store that ``dctnet prepare`` writes (see :mod:`DCTNetLib.data.prepare`), and
:class:`PreparedCaseDataset`, which reads one split of it for training and evaluation::

    OUTPUT/
      cases/<case_id>/ct_unit.npy                 (128, 128, 128) float16, HU window → [0, 1], canonical axes
                      drr.npy                     (2, 128, 128) float32 [0, 1]: PA, lateral
                      drr_bone_suppressed.npy     (2, 128, 128) float32 [0, 1]: same views, bones removed
                      meta.json                   written last: its presence marks the case as done
      splits/                                     the split files (:mod:`DCTNetLib.data.case_splits`)
      failed.txt                                  cases that could not be read, with the reason

``ct_unit`` is stored as float16: its rounding error is below 2.5e-4 on [0, 1] (≤ 0.6 HU on the 2500 HU
window, PSNR > 80 dB, checked in the tests), far under what any reconstruction reaches (~25–30 dB), and it
halves the disk use (4 MiB instead of 8 MiB a case).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_path, atomic_write_text
from .case_arrays import load_case_array
from .case_splits import read_split

__all__ = [
    "CASE_FILES",
    "CASES_DIR",
    "CT_STORE_DTYPE",
    "write_case",
    "read_meta",
    "is_case_done",
    "PreparedCaseDataset",
    "resample",
]

CASE_FILES = {"ct": "ct_unit.npy", "drr": "drr.npy", "drr_bs": "drr_bone_suppressed.npy", "meta": "meta.json"}
CASES_DIR = "cases"
CT_STORE_DTYPE = np.float16


def write_case(case_dir: str | os.PathLike, ct_unit: np.ndarray, drr: np.ndarray, drr_bs: np.ndarray,
               meta: dict) -> Path:
    """Write one prepared case atomically, ``meta.json`` last (the "done" marker).

    Args:
        case_dir: the case folder (created if missing).
        ct_unit: ``(D, H, W)`` unit volume; stored as float16.
        drr: ``(2, H, W)`` PA + lateral DRRs in [0, 1]; stored as float32.
        drr_bs: ``(2, H, W)`` bone-suppressed DRRs in [0, 1]; stored as float32.
        meta: JSON-serialisable description; ``preprocessing_version`` is added.
    """
    case_dir = Path(case_dir)
    case_dir.mkdir(parents=True, exist_ok=True)
    arrays = {
        "ct": np.asarray(ct_unit, dtype=CT_STORE_DTYPE),
        "drr": np.asarray(drr, dtype=np.float32),
        "drr_bs": np.asarray(drr_bs, dtype=np.float32),
    }
    for key, array in arrays.items():
        with atomic_path(case_dir / CASE_FILES[key]) as tmp:
            np.save(tmp, array)
    from .preprocess import PREPROCESSING_VERSION  # lazy: preprocessing needs torch, discovery does not

    meta = {**meta, "preprocessing_version": PREPROCESSING_VERSION,
            "files": {CASE_FILES[key]: {"shape": list(a.shape), "dtype": str(a.dtype)} for key, a in arrays.items()}}
    atomic_write_text(case_dir / CASE_FILES["meta"], json.dumps(meta, indent=2) + "\n")
    return case_dir


def read_meta(case_dir: str | os.PathLike) -> dict | None:
    """The case's ``meta.json`` as a dict, or None when missing or unreadable."""
    try:
        return json.loads((Path(case_dir) / CASE_FILES["meta"]).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_case_done(case_dir: str | os.PathLike) -> bool:
    """True when the case folder is complete and was made by the current preprocessing version."""
    from .preprocess import PREPROCESSING_VERSION  # lazy, as in write_case

    meta = read_meta(case_dir)
    if meta is None or meta.get("preprocessing_version") != PREPROCESSING_VERSION:
        return False
    return all((Path(case_dir) / name).is_file() for name in CASE_FILES.values())


class PreparedCaseDataset:
    """Prepared cases of one split as a map-style torch dataset (``len`` and indexing; torch is imported on the
    first item, so discovering and listing cases stays light).

    Each item is ``dict(ct=(1, 128, 128, 128) float32 [0, 1], drr=(2, 128, 128), drr_bs=(2, 128, 128),
    case_id=str)`` (tensors; float16 storage is widened to float32).

    Args:
        root: folder written by ``dctnet prepare``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        image_size: when given and different from the stored size, every item is resampled on load: the
            radiographs to ``image_size``², the CT to ``image_size``³ (area averaging when shrinking, linear
            interpolation when enlarging), so a smaller model preset (``tiny``: 32) trains on ``prepare``'s
            128² output directly.

    Raises:
        InputError: missing split file, or a listed case that is not prepared (named in the message).
    """

    def __init__(self, root: str | os.PathLike, split: str, image_size: int | None = None) -> None:
        self.root = Path(root)
        self.split = split
        self.image_size = image_size
        self.case_ids = read_split(self.root, split)
        for case_id in self.case_ids:
            if not is_case_done(self.case_dir(case_id)):
                raise InputError(f"case {case_id} of split {split} is not prepared (re-run `dctnet prepare`): "
                                 f"{self.case_dir(case_id)}")

    def case_dir(self, case_id: str) -> Path:
        return self.root / CASES_DIR / case_id

    def __len__(self) -> int:
        return len(self.case_ids)

    def __getitem__(self, index: int) -> dict:
        import torch

        case_id = self.case_ids[index]
        folder = self.case_dir(case_id)

        ct, drr, drr_bs = (load_case_array(folder / CASE_FILES[kind], kind) for kind in ("ct", "drr", "drr_bs"))
        item = {
            "ct": torch.from_numpy(ct)[None],
            "drr": torch.from_numpy(drr),
            "drr_bs": torch.from_numpy(drr_bs),
            "case_id": case_id,
        }
        if self.image_size and tuple(drr.shape[-2:]) != (self.image_size, self.image_size):
            item.update(ct=resample(item["ct"], self.image_size), drr=resample(item["drr"], self.image_size),
                        drr_bs=resample(item["drr_bs"], self.image_size))
        return item


def resample(array, size: int):
    """A (C, H, W) image stack or (C, D, H, W) volume tensor resampled to side ``size``: area averaging when
    shrinking (each output pixel/voxel is the mean of the ones it covers), (bi/tri)linear when enlarging."""
    import torch.nn.functional as F

    spatial = array.shape[1:]
    shrinking = all(side >= size for side in spatial)
    mode = "area" if shrinking else ("bilinear" if len(spatial) == 2 else "trilinear")
    kwargs = {} if shrinking else {"align_corners": False}
    return F.interpolate(array[None].float(), size=(size,) * len(spatial), mode=mode, **kwargs)[0].contiguous()
