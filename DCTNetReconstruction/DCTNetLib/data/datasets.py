"""Prepared datasets: case discovery in the raw downloads, the prepared-case folder format, split files and
:class:`PreparedCaseDataset`.

Layout written by ``dctnet prepare`` (see ``DCTNetLib.commands.prepare``)::

    OUTPUT/
      cases/<case_id>/ct_unit.npy                 (128, 128, 128) float16, HU window → [0, 1], canonical axes
                      drr.npy                     (2, 128, 128) float32 [0, 1]: PA, lateral
                      drr_bone_suppressed.npy     (2, 128, 128) float32 [0, 1]: same views, bones removed
                      meta.json                   written last: its presence marks the case as done
      splits/train.txt, val.txt, test.txt         one case id per line
      failed.txt                                  cases that could not be read, with the reason

``ct_unit`` is stored as float16: its rounding error is below 2.5e-4 on [0, 1] (≤ 0.6 HU on the 2500 HU
window, PSNR > 80 dB, checked in the tests), far under what any reconstruction reaches (~25–30 dB), and it
halves the disk use (4 MiB instead of 8 MiB a case).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import InputError
from ..io.atomic import atomic_path, atomic_write_text
from .preprocess import PREPROCESSING_VERSION

__all__ = [
    "Case",
    "CASE_FILES",
    "DATASETS",
    "SPLITS",
    "PAPER_SPLIT_SIZES",
    "discover_cases",
    "discover_lidc_cases",
    "discover_ctspine1k_cases",
    "write_case",
    "read_meta",
    "is_case_done",
    "split_sizes",
    "make_splits",
    "write_splits",
    "read_split",
    "PreparedCaseDataset",
]

log = logging.getLogger(__name__)

CASE_FILES = {"ct": "ct_unit.npy", "drr": "drr.npy", "drr_bs": "drr_bone_suppressed.npy", "meta": "meta.json"}
CASES_DIR = "cases"
SPLITS_DIR = "splits"
SPLITS = ("train", "val", "test")
DATASETS = ("lidc-idri", "ctspine1k")
CT_STORE_DTYPE = np.float16

# Train / val / test sizes of DCT-Net §3.1: LIDC-IDRI 1,018 CTs → 854/72/92; CTSpine1K 784 CTs → 650/60/74.
PAPER_SPLIT_SIZES = {"lidc-idri": (854, 72, 92), "ctspine1k": (650, 60, 74)}

_LIDC_CASE = re.compile(r"^LIDC-IDRI-\d{4}$")
_NIFTI = (".nii.gz", ".nii")
# CTSpine1K ships label maps next to the images ("*_seg.nii.gz", folders "gt"/"label"): not CTs.
_LABEL_WORDS = re.compile(r"(^|[_\-.])(seg|segmentation|label|labels|mask|gt)([_\-.]|$)", re.IGNORECASE)
_LABEL_DIRS = {"gt", "label", "labels", "mask", "masks", "seg", "segmentation", "segmentations"}


@dataclass(frozen=True)
class Case:
    """One CT to prepare: ``source`` is a DICOM series folder or a NIfTI file."""

    case_id: str
    source: Path
    dataset: str


# --------------------------------------------------------------------------------------------------- discovery


def _series_folders(case_dir: Path) -> list[tuple[Path, int]]:
    """Folders under ``case_dir`` that hold files, with their file count (candidate DICOM series)."""
    found = []
    for root, dirs, files in os.walk(case_dir):
        dirs.sort()
        count = sum(1 for name in files if not name.startswith(".") and not name.lower().endswith((".xml", ".txt")))
        if count:
            found.append((Path(root), count))
    return found


def _modality(series_dir: Path) -> str | None:
    """Modality of the first readable DICOM file in ``series_dir`` (None when none is readable)."""
    import pydicom

    for name in sorted(os.listdir(series_dir)):
        try:
            ds = pydicom.dcmread(series_dir / name, stop_before_pixels=True, specific_tags=["Modality"])
        except Exception:  # not DICOM or damaged: try the next file
            continue
        return str(ds.get("Modality", "")).upper() or None
    return None


def _pick_ct_series(case_dir: Path) -> Path:
    """The CT series with the most slices; failing that (damaged files) the folder with the most files."""
    folders = sorted(_series_folders(case_dir), key=lambda item: (-item[1], str(item[0])))
    if not folders:
        return case_dir
    for folder, _ in folders:
        if _modality(folder) == "CT":
            return folder
    return folders[0][0]  # nothing readable: reading it will fail and the case is reported


def discover_lidc_cases(source: str | os.PathLike) -> list[Case]:
    """LIDC-IDRI as downloaded from TCIA: ``.../LIDC-IDRI-XXXX/<study>/<series>/*.dcm``.

    Case folders are found by name anywhere under ``source`` (so the TCIA ``manifest-*/LIDC-IDRI/`` wrapper
    may be kept). For each case the CT series with the most slices is used (LIDC cases also hold CR/DX
    radiograph series, and a few hold two CT series).
    """
    source = Path(source)
    case_dirs = []
    for root, dirs, _files in os.walk(source):
        dirs.sort()
        for name in list(dirs):
            if _LIDC_CASE.match(name):
                case_dirs.append(Path(root) / name)
                dirs.remove(name)  # do not descend into a case folder
    return [Case(d.name, _pick_ct_series(d), "lidc-idri") for d in sorted(case_dirs, key=lambda p: p.name)]


def _nifti_stem(path: Path) -> str:
    name = path.name
    for suffix in _NIFTI:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def discover_ctspine1k_cases(source: str | os.PathLike) -> list[Case]:
    """CTSpine1K-style NIfTI folders: every ``*.nii.gz`` / ``*.nii`` under ``source`` that is not a label map.

    The case id is the file name without ``.nii(.gz)``; when two files share a name (different sub-datasets),
    their parent folder's name is prefixed.
    """
    source = Path(source)
    files = []
    for root, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d.lower() not in _LABEL_DIRS)
        for name in sorted(names):
            path = Path(root) / name
            if name.lower().endswith(_NIFTI) and not _LABEL_WORDS.search(_nifti_stem(path)):
                files.append(path)
    stems: dict[str, int] = {}
    for path in files:
        stems[_nifti_stem(path)] = stems.get(_nifti_stem(path), 0) + 1
    cases = []
    for path in files:
        stem = _nifti_stem(path)
        case_id = stem if stems[stem] == 1 else f"{path.parent.name}_{stem}"
        cases.append(Case(case_id, path, "ctspine1k"))
    return sorted(cases, key=lambda c: c.case_id)


def discover_cases(dataset: str, source: str | os.PathLike) -> list[Case]:
    """Cases of ``dataset`` (``"lidc-idri"`` or ``"ctspine1k"``) under ``source``.

    Raises:
        InputError: unknown dataset, or ``source`` is not a folder.
    """
    if dataset not in DATASETS:
        raise InputError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if not Path(source).is_dir():
        raise InputError(f"dataset source folder not found: {source}")
    return discover_lidc_cases(source) if dataset == "lidc-idri" else discover_ctspine1k_cases(source)


# ------------------------------------------------------------------------------------------------ case folders


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
    meta = read_meta(case_dir)
    if meta is None or meta.get("preprocessing_version") != PREPROCESSING_VERSION:
        return False
    return all((Path(case_dir) / name).is_file() for name in CASE_FILES.values())


# ------------------------------------------------------------------------------------------------------ splits


def split_sizes(n: int, paper_sizes: tuple[int, int, int]) -> tuple[int, int, int]:
    """Train / val / test sizes for ``n`` cases.

    With exactly the paper's number of cases, the paper's sizes. Otherwise the paper's *proportions*:
    val and test get ``round(n · p)`` cases, at least one each; train gets the rest. Fewer than 3 cases all go
    to train.
    """
    total = sum(paper_sizes)
    if n == total:
        return tuple(paper_sizes)  # type: ignore[return-value]
    if n < 3:  # too few to hold out anything: all cases train
        return n, 0, 0
    val = max(1, round(n * paper_sizes[1] / total))
    test = max(1, round(n * paper_sizes[2] / total))
    return n - val - test, val, test


def make_splits(case_ids: list[str], dataset: str, seed: int = 2025) -> dict[str, list[str]]:
    """Deterministic random split of ``case_ids`` with the paper's sizes (see :func:`split_sizes`).

    The ids are sorted before shuffling with ``numpy.random.default_rng(seed)``, so the split depends only on
    the set of ids and the seed, not on discovery order. Each list is returned sorted.
    """
    ids = sorted(set(case_ids))
    n_train, n_val, _ = split_sizes(len(ids), PAPER_SPLIT_SIZES[dataset])
    order = np.random.default_rng(seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    return {
        "train": sorted(shuffled[:n_train]),
        "val": sorted(shuffled[n_train:n_train + n_val]),
        "test": sorted(shuffled[n_train + n_val:]),
    }


def write_splits(root: str | os.PathLike, splits: dict[str, list[str]]) -> Path:
    """Write ``root/splits/{train,val,test}.txt`` atomically (one id per line)."""
    folder = Path(root) / SPLITS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        ids = splits.get(name, [])
        atomic_write_text(folder / f"{name}.txt", "".join(f"{case_id}\n" for case_id in ids))
    return folder


def read_split(root: str | os.PathLike, split: str) -> list[str]:
    """Case ids of ``split`` under a prepared ``root``.

    Raises:
        InputError: unknown split name or missing split file.
    """
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    path = Path(root) / SPLITS_DIR / f"{split}.txt"
    if not path.is_file():
        raise InputError(f"split file not found (run `dctnet prepare` first): {path}")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ----------------------------------------------------------------------------------------------------- dataset


class PreparedCaseDataset(Dataset):
    """Prepared cases of one split as a torch ``Dataset``.

    Each item is ``dict(ct=(1, 128, 128, 128) float32 [0, 1], drr=(2, 128, 128), drr_bs=(2, 128, 128),
    case_id=str)`` (tensors; float16 storage is widened to float32).

    Args:
        root: folder written by ``dctnet prepare``.
        split: ``"train"``, ``"val"`` or ``"test"``.

    Raises:
        InputError: missing split file, or a listed case that is not prepared (named in the message).
    """

    def __init__(self, root: str | os.PathLike, split: str) -> None:
        super().__init__()
        self.root = Path(root)
        self.split = split
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
        case_id = self.case_ids[index]
        folder = self.case_dir(case_id)
        try:
            ct = np.load(folder / CASE_FILES["ct"]).astype(np.float32)
            drr = np.load(folder / CASE_FILES["drr"]).astype(np.float32)
            drr_bs = np.load(folder / CASE_FILES["drr_bs"]).astype(np.float32)
        except (OSError, ValueError) as exc:
            raise InputError(f"damaged prepared case {case_id}: {folder} ({exc})") from exc
        return {
            "ct": torch.from_numpy(ct)[None],
            "drr": torch.from_numpy(drr),
            "drr_bs": torch.from_numpy(drr_bs),
            "case_id": case_id,
        }
