"""The chest atlas bank: real chest CTs on the model grid, the anatomy the atlas prior registers to a patient's films.

A bank is two files side by side: ``NAME.npz`` (``volumes``: ``(K, 128, 128, 128)`` uint8, the unit volume × 255;
``names``: the cases' ids) and ``NAME.json`` (its sha256, and per atlas its source and licence). The shipped bank
(``resources/atlases/chest_atlases.npz``, written by ``scripts/make_atlas_bank.py``) holds the training chests whose
licence allows redistribution with attribution (CC BY); it is loaded without pickles and checked against its sha256.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import WeightsError
from .safe_load import check_sha256

__all__ = ["AtlasBank", "default_atlas_bank_path", "load_atlas_bank", "ATLAS_SCALE"]

# uint8 storage of unit values: a step of 2500 HU / 255 ≈ 10 HU, far below what a registered atlas mean resolves.
ATLAS_SCALE = 255.0


@dataclass(frozen=True)
class AtlasBank:
    """Atlas volumes and where they come from.

    Args:
        volumes: ``(K, D, H, W)`` unit values in [0, 1] (float32), canonical axis order.
        names: the K case ids.
        sources: per atlas, its collection, licence and attribution (from the bank's JSON).
    """

    volumes: np.ndarray
    names: tuple[str, ...]
    sources: tuple[dict, ...] = ()


def default_atlas_bank_path() -> Path:
    """The shipped bank, inside the package's resources."""
    return Path(__file__).resolve().parents[1] / "resources" / "atlases" / "chest_atlases.npz"


def load_atlas_bank(path: str | Path | None = None) -> AtlasBank:
    """Load and check an atlas bank (``None``: the shipped one).

    The bank read last is kept while its two files are unchanged (size and modification time), so a worker that
    reconstructs case after case decompresses it once; its arrays are shared: do not modify them in place.

    Raises:
        WeightsError: the file or its JSON is missing, its sha256 differs from the JSON's, or its arrays are not
            ``(K, D, H, W)`` uint8 volumes with K names.
    """
    path = Path(path) if path is not None else default_atlas_bank_path()
    sidecar = path.with_suffix(".json")
    if not path.is_file() or not sidecar.is_file():
        raise WeightsError(f"atlas bank {path} (and its {sidecar.name}) not found: the atlas prior needs both "
                           f"(scripts/make_atlas_bank.py writes them)")
    stamps = tuple((f.stat().st_size, f.stat().st_mtime_ns) for f in (path, sidecar))
    return _read_bank(str(path.resolve()), stamps)


@lru_cache(maxsize=1)
def _read_bank(name: str, stamps: tuple) -> AtlasBank:
    """:func:`load_atlas_bank`'s checks and reading, for one version (``stamps``) of the files."""
    path = Path(name)
    sidecar = path.with_suffix(".json")
    try:
        description = json.loads(sidecar.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"atlas bank description {sidecar} is not readable JSON: {exc}") from exc
    if not isinstance(description, dict) or not description.get("sha256"):
        raise WeightsError(f"atlas bank description {sidecar} names no sha256 of {path.name}")
    check_sha256(path, description["sha256"])
    try:
        with np.load(path, allow_pickle=False) as archive:
            volumes, names = archive["volumes"], archive["names"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise WeightsError(f"atlas bank {path} is not a valid bank (volumes, names): {exc}") from exc
    if volumes.ndim != 4 or volumes.dtype != np.uint8 or len(names) != len(volumes) or not len(volumes):
        raise WeightsError(f"atlas bank {path}: expected (K, D, H, W) uint8 volumes and K names, got "
                           f"{volumes.shape} {volumes.dtype} and {len(names)} names")
    return AtlasBank(volumes=volumes.astype(np.float32) / ATLAS_SCALE, names=tuple(str(n) for n in names),
                     sources=tuple(description.get("atlases", ())))
