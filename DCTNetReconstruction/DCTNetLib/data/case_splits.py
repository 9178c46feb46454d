"""Train / val / test splits of the prepared cases: the paper's sizes, the seeded split that keeps a patient's
scans together, and the split files under a prepared folder::

    OUTPUT/splits/train.txt, val.txt, test.txt    one case id per line
    OUTPUT/splits/split.json                      how the split was made: dataset, discovery unit, seed, counts,
                                                  sizes against the paper's, sha256 of the three lists
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_write_text

__all__ = [
    "SPLITS",
    "SPLITS_DIR",
    "SPLIT_RECORD",
    "SPLIT_SEED",
    "PAPER_SPLIT_SIZES",
    "split_sizes",
    "make_splits",
    "write_splits",
    "split_record",
    "write_split_record",
    "describe_split",
    "read_split",
]

SPLITS_DIR = "splits"
SPLITS = ("train", "val", "test")
SPLIT_RECORD = "split.json"

# Train / val / test sizes of DCT-Net §3.1: LIDC-IDRI 1,018 CTs → 854/72/92; CTSpine1K 784 CTs → 650/60/74.
PAPER_SPLIT_SIZES = {"lidc-idri": (854, 72, 92), "ctspine1k": (650, 60, 74)}
# Your own CTs ("generic"): LIDC-IDRI's proportions (84 / 7 / 9 %) unless a split is given.
PAPER_SPLIT_SIZES["generic"] = PAPER_SPLIT_SIZES["lidc-idri"]


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
