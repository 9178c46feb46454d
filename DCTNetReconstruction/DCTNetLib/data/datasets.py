"""Prepared datasets: case discovery in the raw downloads, the prepared-case folder format, split files and
:class:`PreparedCaseDataset`.

Layout written by ``dctnet prepare`` (see ``DCTNetLib.data.prepare``)::

    OUTPUT/
      cases/<case_id>/ct_unit.npy                 (128, 128, 128) float16, HU window → [0, 1], canonical axes
                      drr.npy                     (2, 128, 128) float32 [0, 1]: PA, lateral
                      drr_bone_suppressed.npy     (2, 128, 128) float32 [0, 1]: same views, bones removed
                      meta.json                   written last: its presence marks the case as done
      splits/train.txt, val.txt, test.txt         one case id per line
      splits/split.json                           how the split was made: dataset, discovery unit, seed, counts,
                                                  sizes against the paper's, sha256 of the three lists
      failed.txt                                  cases that could not be read, with the reason

``ct_unit`` is stored as float16: its rounding error is below 2.5e-4 on [0, 1] (≤ 0.6 HU on the 2500 HU
window, PSNR > 80 dB, checked in the tests), far under what any reconstruction reaches (~25–30 dB), and it
halves the disk use (4 MiB instead of 8 MiB a case).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..conventions import DATASETS, NIFTI_SUFFIXES, VOLUME_READ_SUFFIXES
from .case_arrays import load_case_array
from ..errors import InputError
from ..io.atomic import atomic_path, atomic_write_text

__all__ = [
    "Case",
    "CASE_FILES",
    "DATASETS",
    "SPLITS",
    "PAPER_SPLIT_SIZES",
    "LIDC_UNITS",
    "discover_cases",
    "discover_lidc_cases",
    "discover_ctspine1k_cases",
    "write_case",
    "read_meta",
    "is_case_done",
    "split_sizes",
    "make_splits",
    "write_splits",
    "split_record",
    "write_split_record",
    "describe_split",
    "read_split",
    "PreparedCaseDataset",
]

log = logging.getLogger(__name__)

CASE_FILES = {"ct": "ct_unit.npy", "drr": "drr.npy", "drr_bs": "drr_bone_suppressed.npy", "meta": "meta.json"}
CASES_DIR = "cases"
SPLITS_DIR = "splits"
SPLITS = ("train", "val", "test")
CT_STORE_DTYPE = np.float16

# Train / val / test sizes of DCT-Net §3.1: LIDC-IDRI 1,018 CTs → 854/72/92; CTSpine1K 784 CTs → 650/60/74.
PAPER_SPLIT_SIZES = {"lidc-idri": (854, 72, 92), "ctspine1k": (650, 60, 74)}
# Your own CTs ("generic"): LIDC-IDRI's proportions (84 / 7 / 9 %) unless a split is given.
PAPER_SPLIT_SIZES["generic"] = PAPER_SPLIT_SIZES["lidc-idri"]
# What one LIDC-IDRI case is. "scan": every CT series (the paper's 1,018 are scans: LIDC-IDRI holds 1,018 CT
# scans of 1,010 patients, Armato et al. 2011, the paper's ref. [32]); "patient": one series per patient folder
# (the one with the most slices), at most 1,010 cases.
LIDC_UNITS = ("scan", "patient")
SPLIT_RECORD = "split.json"

_LIDC_CASE = re.compile(r"^LIDC-IDRI-\d{4}$")
# CTSpine1K ships label maps next to the images ("*_seg.nii.gz", folders "gt"/"label"): not CTs.
_LABEL_WORDS = re.compile(r"(^|[_\-.])(seg|segmentation|label|labels|mask|gt)([_\-.]|$)", re.IGNORECASE)
_LABEL_DIRS = {"gt", "label", "labels", "mask", "masks", "seg", "segmentation", "segmentations"}


@dataclass(frozen=True)
class Case:
    """One CT to prepare: ``source`` is a DICOM series folder or a NIfTI file."""

    case_id: str
    source: Path
    dataset: str
    patient: str = ""  # the patient the scan belongs to ("" = its own); scans of one patient share a split
    duplicate_of: Path | None = None  # another source that maps to the same case id (this one is not prepared)
    split: str = ""  # the split a case list assigned ("" = dealt by the seeded split)

    @property
    def group(self) -> str:
        """Split group: the patient when known, else the case itself."""
        return self.patient or self.case_id


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


def _ct_series_folders(case_dir: Path) -> list[Path]:
    """Every CT series folder under ``case_dir`` in path order; failing that (nothing readable as CT), the
    folder :func:`_pick_ct_series` falls back to, so that reading it fails and the case is reported."""
    folders = sorted((folder for folder, _ in _series_folders(case_dir)), key=str)
    found = [folder for folder in folders if _modality(folder) == "CT"]
    return found or [_pick_ct_series(case_dir)]


def discover_lidc_cases(source: str | os.PathLike, unit: str = "scan") -> list[Case]:
    """LIDC-IDRI as downloaded from TCIA: ``.../LIDC-IDRI-XXXX/<study>/<series>/*.dcm``.

    Patient folders are found by name anywhere under ``source`` (so the TCIA ``manifest-*/LIDC-IDRI/`` wrapper
    may be kept). LIDC patients also hold CR/DX radiograph series, and a few hold two CT scans.

    Args:
        source: the download.
        unit: ``"scan"`` (default): one case per CT series, as DCT-Net counted its 1,018 CTs; a patient with one
            CT scan keeps the id ``LIDC-IDRI-XXXX``, one with several gets ``LIDC-IDRI-XXXX_s1``, ``_s2`` … in
            the order of the series folders' paths. ``"patient"``: one case per patient, the CT series with the
            most slices. Every case records its patient, so the split keeps a patient's scans together.

    Raises:
        InputError: unknown ``unit``.
    """
    if unit not in LIDC_UNITS:
        raise InputError(f"unknown LIDC-IDRI discovery unit {unit!r}; choose one of {', '.join(LIDC_UNITS)}")
    source = Path(source)
    case_dirs = []
    for root, dirs, _files in os.walk(source):
        dirs.sort()
        for name in list(dirs):
            if _LIDC_CASE.match(name):
                case_dirs.append(Path(root) / name)
                dirs.remove(name)  # do not descend into a case folder
    cases = []
    for folder in sorted(case_dirs, key=lambda p: p.name):
        if unit == "patient":
            cases.append(Case(folder.name, _pick_ct_series(folder), "lidc-idri", folder.name))
            continue
        series = _ct_series_folders(folder)
        for index, path in enumerate(series, start=1):
            case_id = folder.name if len(series) == 1 else f"{folder.name}_s{index}"
            cases.append(Case(case_id, path, "lidc-idri", folder.name))
    return cases


def _nifti_stem(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def discover_ctspine1k_cases(source: str | os.PathLike) -> list[Case]:
    """CTSpine1K-style NIfTI folders: every ``*.nii.gz`` / ``*.nii`` under ``source`` that is not a label map.

    The case id is the file name without ``.nii(.gz)``; when two files share a name (different sub-datasets),
    their parent folders' names are prefixed, as many as it takes to tell them apart (``siteA/imgs/case001`` and
    ``siteB/imgs/case001`` become ``siteA_imgs_case001`` and ``siteB_imgs_case001``). A name whose bytes are not
    UTF-8 is read as Latin-1 for its id (the file itself is read under its real name).
    """
    source = Path(source)
    files = []
    for root, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d.lower() not in _LABEL_DIRS)
        for name in sorted(names):
            path = Path(root) / name
            if name.lower().endswith(NIFTI_SUFFIXES) and not _LABEL_WORDS.search(_nifti_stem(path)):
                files.append(path)
    by_stem: dict[str, list[Path]] = {}
    for path in files:
        by_stem.setdefault(_utf8_id(_nifti_stem(path)), []).append(path)
    cases = []
    for stem, group in by_stem.items():
        folders = [path.relative_to(source).parent.parts for path in group]
        depth = 0
        while len(group) > 1 and depth < max(len(parts) for parts in folders):
            depth += 1
            if len({parts[len(parts) - depth:] for parts in folders}) == len(group):
                break
        for path, parts in zip(group, folders):
            case_id = "_".join((*parts[len(parts) - depth:], stem)) if depth else stem
            cases.append(Case(_utf8_id(case_id), path, "ctspine1k"))
    return sorted(cases, key=lambda c: (c.case_id, str(c.source)))


_LIST_SUFFIXES = (".csv", ".json")


def _volume_stem(path: Path) -> str:
    name = path.name
    for suffix in VOLUME_READ_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _safe_id(text: str) -> str:
    """A case id usable as a folder name: path separators and spaces become ``_``."""
    return re.sub(r"[\\/\s:]+", "_", text).strip("._") or "case"


def discover_generic_cases(source: str | os.PathLike) -> list[Case]:
    """Your own CTs: a folder of CT files and DICOM series, or a CSV / JSON list of them.

    Folder: every CT volume file (``.nii(.gz)``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``) that is not a label map
    (see :func:`discover_ctspine1k_cases`), and every folder whose DICOM files are a CT series, at any depth; the
    case id is the path below ``source`` with ``_`` for ``/`` (``site1/ct01.nii.gz`` → ``site1_ct01``).

    List (like nnU-Net's ``dataset.json``): a CSV with a header row and the columns ``path`` (required), ``id``,
    ``split`` (``train`` / ``val`` / ``test``) and ``patient`` (all optional), or a JSON file holding either a list
    or ``{"cases": [...]}`` whose items are paths or objects with the same keys. Relative paths are relative to
    the list file. A case's ``split`` fixes its split; cases of one ``patient`` share a split.

    Raises:
        InputError: an unreadable list, an item without a path, a split name that is not train/val/test.
    """
    source = Path(source)
    if source.is_file():
        return _cases_from_list(source)
    cases = []
    for root, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d.lower() not in _LABEL_DIRS and not d.startswith("."))
        folder = Path(root)
        volumes = [folder / name for name in sorted(names)
                   if name.lower().endswith(VOLUME_READ_SUFFIXES) and not _LABEL_WORDS.search(_volume_stem(folder / name))]
        for path in volumes:
            cases.append(Case(_safe_id(_utf8_id(str(path.relative_to(source).parent / _volume_stem(path)))), path,
                              "generic"))
        others = [name for name in names if not name.startswith(".") and not name.lower().endswith(
            VOLUME_READ_SUFFIXES + (".raw", ".zraw", ".txt", ".xml", ".json", ".csv", ".md"))]
        if others and _modality(folder) == "CT":
            rel = folder.relative_to(source)
            cases.append(Case(_safe_id(_utf8_id(str(rel) if str(rel) != "." else source.name)), folder, "generic"))
    return sorted(cases, key=lambda c: (c.case_id, str(c.source)))


def _cases_from_list(path: Path) -> list[Case]:
    import csv

    if not path.name.lower().endswith(_LIST_SUFFIXES):
        raise InputError(f"--source {path}: a generic dataset is a folder, or a case list ending in .csv or .json")
    try:
        text = path.read_text(encoding="utf-8-sig")
        if path.name.lower().endswith(".json"):
            data = json.loads(text)
            items = data.get("cases") if isinstance(data, dict) else data
            if not isinstance(items, list):
                raise ValueError('expected a list of cases, or {"cases": [...]}')
            rows = [{"path": item} if isinstance(item, str) else item for item in items]
        else:
            rows = list(csv.DictReader(text.splitlines()))
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
        raise InputError(f"cannot read the case list {path}: {exc}") from exc
    cases = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not str(row.get("path") or "").strip():
            raise InputError(f"case list {path}, item {number}: no 'path' given")
        source = Path(str(row["path"]).strip())
        source = source if source.is_absolute() else path.parent / source
        split = str(row.get("split") or "").strip().lower()
        if split and split not in SPLITS:
            raise InputError(f"case list {path}, item {number}: split {split!r} is not one of {', '.join(SPLITS)}")
        case_id = str(row.get("id") or "").strip() or _volume_stem(source)
        cases.append(Case(_safe_id(case_id), source, "generic", str(row.get("patient") or "").strip(), split=split))
    return cases


def _utf8_id(name: str) -> str:
    """``name`` as UTF-8 text: a name whose bytes are not UTF-8 (one Latin-1 byte, legal on Linux) read as Latin-1."""
    raw = os.fsencode(name)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def mark_duplicate_ids(cases: list[Case]) -> list[Case]:
    """Cases with the same id (the same LIDC-IDRI patient folder in two places, ``x.nii`` beside ``x.nii.gz``):
    the first, in path order, keeps the id; the others are marked ``duplicate_of`` it, so that ``prepare``
    reports them instead of letting one silently replace the other."""
    first: dict[str, Path] = {}
    for case in cases:
        if case.case_id not in first or str(case.source) < str(first[case.case_id]):
            first[case.case_id] = case.source
    return [case if case.source == first[case.case_id] else dataclasses.replace(case, duplicate_of=first[case.case_id])
            for case in cases]


def discover_cases(dataset: str, source: str | os.PathLike, unit: str = "scan") -> list[Case]:
    """Cases of ``dataset`` (``"lidc-idri"``, ``"ctspine1k"`` or ``"generic"``) under ``source``.

    Args:
        dataset: which layout to read.
        source: the download.
        unit: LIDC-IDRI only: ``"scan"`` or ``"patient"`` (:func:`discover_lidc_cases`); CTSpine1K files are
            scans already. Defaults to "scan".

    Raises:
        InputError: unknown dataset or unit, or ``source`` is not a folder.
    """
    if dataset not in DATASETS:
        raise InputError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if dataset == "generic" and Path(source).is_file():
        return mark_duplicate_ids(discover_generic_cases(source))
    if not Path(source).is_dir():
        raise InputError(f"dataset source folder not found: {source}")
    if unit not in LIDC_UNITS:
        raise InputError(f"unknown discovery unit {unit!r}; choose one of {', '.join(LIDC_UNITS)}")
    discover = {"lidc-idri": lambda: discover_lidc_cases(source, unit), "ctspine1k": lambda: discover_ctspine1k_cases(source),
                "generic": lambda: discover_generic_cases(source)}[dataset]
    cases = discover()
    return mark_duplicate_ids(cases)


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


def given_splits(cases: list[Case], finished: list[str]) -> dict[str, list[str]] | None:
    """The splits a case list fixed (its ``split`` column), over the ``finished`` cases; None when no case has one.
    Finished cases without a split go to train."""
    if not any(case.split for case in cases):
        return None
    done = set(finished)
    splits: dict[str, list[str]] = {name: [] for name in SPLITS}
    for case in cases:
        if case.case_id in done and case.duplicate_of is None:
            splits[case.split or "train"].append(case.case_id)
    return {name: sorted(ids) for name, ids in splits.items()}


# Seed of the train/val/test split (`dctnet prepare --seed`).
SPLIT_SEED = 2025


def make_splits(case_ids: list[str], dataset: str, seed: int = SPLIT_SEED,
                groups: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Deterministic random split of ``case_ids`` with the paper's sizes (see :func:`split_sizes`).

    The ids are sorted before shuffling with ``numpy.random.default_rng(seed)``, so the split depends only on
    the set of ids and the seed, not on discovery order. Each list is returned sorted.

    Args:
        case_ids: the prepared cases.
        dataset: ``"lidc-idri"`` or ``"ctspine1k"`` (which paper sizes).
        seed: shuffling seed. Defaults to 2025.
        groups: case id → group (patient); cases of one group always land in the same split, so no patient is
            both trained and tested on (ours: the paper does not say how it split). The groups, ordered by
            their smallest id, are shuffled and dealt to train, then val, then test, each group to the first
            split it still fits in. With one case per group (or ``groups=None``) this is exactly a shuffle of
            the ids; with some pairs, a size can end one case off the target (the record says so).
    """
    ids = sorted(set(case_ids))
    targets = split_sizes(len(ids), PAPER_SPLIT_SIZES[dataset])
    members: dict[str, list[str]] = {}
    for case_id in ids:
        members.setdefault((groups or {}).get(case_id, case_id), []).append(case_id)
    ordered = sorted(members.values(), key=lambda group: group[0])
    order = np.random.default_rng(seed).permutation(len(ordered))
    dealt: dict[str, list[str]] = {name: [] for name in SPLITS}
    for index in order:
        group = ordered[index]
        fits = [name for name, target in zip(SPLITS, targets) if len(dealt[name]) + len(group) <= target]
        # none fits (a group larger than every remaining gap): the split furthest below its target
        name = fits[0] if fits else max(SPLITS, key=lambda n: targets[SPLITS.index(n)] - len(dealt[n]))
        dealt[name].extend(group)
    return {name: sorted(dealt[name]) for name in SPLITS}


def write_splits(root: str | os.PathLike, splits: dict[str, list[str]]) -> Path:
    """Write ``root/splits/{train,val,test}.txt`` atomically (one id per line)."""
    folder = Path(root) / SPLITS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        ids = splits.get(name, [])
        atomic_write_text(folder / f"{name}.txt", "".join(f"{case_id}\n" for case_id in ids))
    return folder


def split_record(splits: dict[str, list[str]], dataset: str, *, seed: int, unit: str,
                 groups: dict[str, str] | None = None) -> dict:
    """What :func:`write_split_record` stores: how the split was made and how it compares with the paper's.

    Args:
        splits: ``{"train": [...], "val": [...], "test": [...]}``.
        dataset: ``"lidc-idri"`` or ``"ctspine1k"``.
        seed: the split seed.
        unit: discovery unit (``"scan"`` or ``"patient"``; CTSpine1K: ``"scan"``).
        groups: case id → patient, as given to :func:`make_splits`.
    """
    import hashlib

    ids = [case_id for name in SPLITS for case_id in splits.get(name, [])]
    paper = PAPER_SPLIT_SIZES[dataset]
    sizes = {name: len(splits.get(name, [])) for name in SPLITS}
    return {
        "dataset": dataset,
        "unit": unit,
        "seed": seed,
        "cases": len(set(ids)),
        "groups": len({(groups or {}).get(case_id, case_id) for case_id in ids}),
        "sizes": sizes,
        "paper_cases": sum(paper),
        "paper_sizes": dict(zip(SPLITS, paper)),
        "matches_paper": tuple(sizes[name] for name in SPLITS) == tuple(paper),
        "grouped_by_patient": groups is not None,
        "sha256": {name: hashlib.sha256("".join(f"{c}\n" for c in splits.get(name, [])).encode()).hexdigest()
                   for name in SPLITS},
    }


def write_split_record(root: str | os.PathLike, record: dict) -> Path:
    """Write ``root/splits/split.json`` atomically."""
    folder = Path(root) / SPLITS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(folder / SPLIT_RECORD, json.dumps(record, indent=2, sort_keys=True) + "\n")


def describe_split(record: dict) -> str:
    """One line for people: counts, unit, sizes and whether they are the paper's."""
    sizes = " / ".join(f"{name} {record['sizes'][name]}" for name in SPLITS)
    paper = " / ".join(str(record["paper_sizes"][name]) for name in SPLITS)
    unit = "one case per CT scan" if record["unit"] == "scan" else "one case per patient"
    verdict = ("the paper's sizes" if record["matches_paper"] else
               f"the paper's proportions; the paper used {record['paper_cases']} cases → {paper}")
    return (f"{record['cases']} {record['dataset']} cases ({unit}, {record['groups']} patients/groups); "
            f"split {sizes} = {verdict} (seed {record['seed']})")


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
