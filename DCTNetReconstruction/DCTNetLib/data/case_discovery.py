"""Discovery of the CTs to prepare in a source dataset: LIDC-IDRI as downloaded from TCIA (DICOM series),
CTSpine1K-style NIfTI folders, and your own CTs ("generic": a folder, or a CSV / JSON case list).

Every CT found becomes a :class:`Case` (id, source, dataset, patient, the split a case list gave it). ``dctnet
prepare`` (:mod:`DCTNetLib.data.prepare`) writes each case into the prepared-case store
(:mod:`DCTNetLib.data.prepared_cases`) and deals the finished ones into splits (:mod:`DCTNetLib.data.case_splits`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..conventions import DATASETS, NIFTI_SUFFIXES, VOLUME_READ_SUFFIXES, strip_suffix
from ..errors import InputError
from .case_splits import SPLITS

__all__ = [
    "Case",
    "LIDC_UNITS",
    "discover_cases",
    "discover_lidc_cases",
    "discover_ctspine1k_cases",
    "discover_generic_cases",
    "mark_duplicate_ids",
    "given_splits",
]

# What one LIDC-IDRI case is. "scan": every CT series (the paper's 1,018 are scans: LIDC-IDRI holds 1,018 CT
# scans of 1,010 patients, Armato et al. 2011, the paper's ref. [32]); "patient": one series per patient folder
# (the one with the most slices), at most 1,010 cases.
LIDC_UNITS = ("scan", "patient")

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
    stem = strip_suffix(path.name, NIFTI_SUFFIXES)
    return path.stem if stem is None else stem


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
    stem = strip_suffix(path.name, VOLUME_READ_SUFFIXES)
    return path.name if stem is None else stem


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
