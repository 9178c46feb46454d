"""The training and validation sets of a prepared-data folder, at the size the model expects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..data.augment import AugmentConfig, AugmentedCaseDataset
from ..data.film_appearance import FilmAppearanceConfig
from ..data.prepared_cases import PreparedCaseDataset
from ..errors import InputError

__all__ = ["load_splits", "training_splits", "check_image_size"]


def load_splits(data: Path, augment: bool = False, image_size: int | None = None, *, film: bool = False,
                anisotropy: float = 0.0, scale: tuple[float, float] = (0.9, 1.1), pool: int = 0,
                seed: int = 0, bone_gain: tuple[float, float] = (1.0, 1.0),
                elastic_mm: float = 0.0) -> tuple[Any, Any]:
    """Training and validation :class:`PreparedCaseDataset` (validation None when its split is empty), resampled
    on load to the model's ``image_size`` when the prepared size differs; with ``augment`` the training cases
    are drawn anew at every access (:class:`AugmentedCaseDataset`), with ``film`` in a film-like appearance and
    with ``anisotropy`` scaled per axis, the patient scaled within ``scale``, and with ``pool`` > 0 picked from
    that many draws per case, seeded by ``seed``, the raw radiographs' bone contrast scaled within
    ``bone_gain`` and the anatomy deformed by ``elastic_mm`` (validation is never augmented)."""
    if not data.is_dir():
        raise InputError(f"prepared data folder not found: {data}")
    train = PreparedCaseDataset(data, "train", image_size=image_size)
    val = PreparedCaseDataset(data, "val", image_size=image_size)
    if augment and image_size and len(train):
        prepared_size = tuple(PreparedCaseDataset(data, "train")[0]["drr"].shape[-2:])
        if prepared_size != (image_size, image_size):
            raise InputError(f"augment=true re-renders the radiographs at the prepared size, which differs from "
                             f"the model's {image_size}×{image_size}: choose the preset of the prepared data's size")
    if augment and len(train):
        augment_config = AugmentConfig(scale_range=tuple(scale), max_anisotropy=anisotropy,
                                       bone_gain_range=tuple(bone_gain), elastic_mm=elastic_mm)
        train = AugmentedCaseDataset(train, augment_config,
                                     film=FilmAppearanceConfig() if film else None, pool=pool, pool_seed=seed)
    return train, (val if len(val) else None)


def training_splits(data: Path, config: Any, image_size: int | None) -> tuple[Any, Any]:
    """:func:`load_splits` with a training config's ``augment*`` settings and seed (``dctnet train`` and
    ``train-cdm`` read the same fields of :class:`~DCTNetLib.training.config.TrainConfig`)."""
    return load_splits(data, config.augment, image_size, film=config.augment_film,
                       anisotropy=config.augment_anisotropy, scale=config.augment_scale, pool=config.augment_pool,
                       seed=config.seed, bone_gain=config.augment_bone_gain, elastic_mm=config.augment_elastic_mm)


def check_image_size(dataset: Any, expected: int, what: str) -> None:
    """Refuse prepared radiographs whose size differs from the model's (e.g. the tiny preset on 128² data)."""
    if len(dataset) == 0:
        raise InputError(f"the training split of {getattr(dataset, 'root', 'the data')} is empty")
    size = tuple(dataset[0]["drr"].shape[-2:])
    if size != (expected, expected):
        raise InputError(f"prepared radiographs in {getattr(dataset, 'root', 'the data')} are {size[0]}×{size[1]} "
                         f"but the {what} expects {expected}×{expected}; choose another --preset or "
                         f"--set model.image_size={size[0]}")
