"""Training configuration: typed dataclasses with the paper's defaults, file + ``--set`` overrides, JSON out.

Precedence, lowest first (nanoGPT's ``configurator.py`` idea, without ``exec``):

1. the dataclass defaults below (DCT-Net §3.1 where the paper gives a value),
1b. for ``dctnet train``, the training recipe of the Table 1 row being trained (``recipe="auto"``: X2CT-GAN's
    published recipe for the ``x2ct-baseline`` variant, DCT-Net §3.1 for DCT-Net and its ablations;
    :data:`DCTNetLib.training.recipes.RECIPES`),
2. on ``--resume``, the run's saved ``config.json``,
3. a YAML or JSON file (``--config FILE``),
4. ``--set key=value`` pairs (dotted keys reach into ``model.*``),
5. the dedicated flags (``--preset`` sets ``size``, ``--variant``, ``--epochs``, ``--max-steps``, ``--device``,
   ``--bs-source``).

The configs are strict dataclasses (:class:`~DCTNetLib.config_base.ConfigBase`): an unknown key raises
:class:`~DCTNetLib.errors.InputError` listing the valid keys, a value of the wrong type one naming the key. Text
typed by hand is first read as the field's type (``"1e-4"`` → float, ``"true"`` → bool, ``"[0.5, 0.9]"`` →
tuple). ``model`` holds overrides of the model preset's own config dataclass; the trainers check its keys
against that dataclass when they build the model. The resolved config is written to ``<run_dir>/config.json``
and stored inside every checkpoint; configs written before ``size`` and ``variant`` were fields are read by
:meth:`TrainConfig.upgrade`.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..config_base import ConfigBase
from ..errors import InputError
from ..io.atomic import atomic_write_text
from ..models.presets import SIZES, VARIANTS
from .lr_schedules import LR_SCHEDULES
from .recipes import RECIPES, TrainingRecipe, recipe_for

__all__ = [
    "TrainConfig",
    "CDMTrainConfig",
    "GANTrainConfig",
    "BEST_ON",
    "RUNTIME_KEYS",
    "load_config_file",
    "parse_set_overrides",
    "apply_overrides",
    "resolve_config",
    "training_recipe",
    "config_to_dict",
    "config_from_dict",
    "config_diff",
    "check_config_compatible",
    "save_config",
]

# Keys that may change between an interrupted run and its resumption without changing what is learned
# per step (how long to train, where, how often to write). Every other key must match the checkpoint.
RUNTIME_KEYS = frozenset({
    "epochs", "max_steps", "device", "num_workers", "checkpoint_every", "log_every", "val_every",
    "progress", "stop_after_steps",
})


@dataclass(kw_only=True)
class TrainConfig(ConfigBase):
    """Settings shared by the CDM and the GAN trainer.

    Args:
        size: model size, ``tiny`` (tests: 32² images, 32³ volumes), ``small`` (CPU) or ``full`` (GPU)
            (``--preset``). Defaults to "full".
        model: overrides of fields of the preset's model config (e.g. ``{"channels": [8, 16, 32]}``).
        seed: base seed; rank ``r`` of a distributed run uses ``seed + r`` for its random draws. Defaults to 0.
        epochs: epochs to train. Defaults to 100 (DCT-Net §3.1).
        max_steps: stop (with a checkpoint) after this many optimiser steps; 0 = no limit. Defaults to 0.
        stop_after_steps: simulate an interruption after this many steps *of this invocation* (tests and
            debugging); 0 = off. Defaults to 0.
        batch_size: samples per process and step; the global batch is ``batch_size * world_size``.
            Defaults to 1 (DCT-Net §3.1).
        lr: Adam learning rate. Defaults to 2e-4 (DCT-Net §3.1).
        betas: Adam (β1, β2). Defaults to (0.5, 0.999) (DCT-Net §3.1).
        lr_schedule: ``"constant"`` (paper) or ``"x2ct"`` (constant, then linear decay over the second half;
            X2CT-GAN). Defaults to "constant".
        grad_clip: clip the gradient norm to this value; 0 = off. Defaults to 0.
        num_workers: DataLoader worker processes per rank. Defaults to 2.
        checkpoint_every: steps between ``latest.pt`` writes (also written at every epoch end).
            Defaults to 1000.
        log_every: steps between ``train`` records in ``metrics.jsonl``. Defaults to 10.
        val_every: epochs between validations. Defaults to 1 (the issue: "validation every epoch").
        amp: mixed precision (float16 autocast + GradScaler), an explicit opt-in (``--set amp=true``); used on
            CUDA only, ignored on CPU. The paper does not mention mixed precision, so reproduction runs in
            float32. Defaults to False (its measured speed-up: ``benchmarks/gpu_check.py``,
            ``docs/reproduction.md``).
        deterministic: ``torch.use_deterministic_algorithms(True)`` and no cuDNN autotuning, for bit-exact
            resumption (slower on GPU). Defaults to False.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``. Defaults to "auto".
        progress: show a tqdm progress bar on rank 0. Defaults to True.
        augment: draw every training sample anew from its case: random pose, attenuation calibration and
            re-rendered DRRs (:mod:`DCTNetLib.data.augment`); validation is never augmented. The GAN then takes
            its bone-suppressed inputs from the re-rendered targets (``bs_source="target"``). Defaults to False.
        augment_film: with ``augment``, give every sample's radiographs a random film-like appearance (display
            LUT, edge enhancement, scatter, noise, blur, collimation, markers: :mod:`DCTNetLib.data.film_appearance`)
            so the model sees what real films look like. Defaults to False.
        augment_anisotropy: with ``augment``, largest extra scale of each patient axis on its own
            (:class:`~DCTNetLib.data.augment.AugmentConfig` ``max_anisotropy``). Defaults to 0.
        augment_elastic_mm: with ``augment``, the standard deviation in mm of a smooth random deformation of
            every sample's anatomy (:class:`~DCTNetLib.data.augment.AugmentConfig` ``elastic_mm``). 0 = off.
            Defaults to 0.
        augment_scale: with ``augment``, the range of the isotropic scale of the patient in the field
            (:class:`~DCTNetLib.data.augment.AugmentConfig` ``scale_range``). Real films are framed tighter than
            the DRRs' 500 mm detector (the chest fills a PA film: a scale of about 1.3–1.6). Defaults to
            (0.9, 1.1).
        augment_pool: with ``augment``, keep this many draws per training case and pick among them instead of
            a new draw at every access (:class:`~DCTNetLib.data.augment.AugmentedCaseDataset` ``pool``): the
            re-rendering is ~90 % of a small CDM step on a CPU. 0 = a new draw every time. Defaults to 0.
        augment_bone_gain: with ``augment``, the range of the radiographs' bone contrast relative to the CT's
            (:class:`~DCTNetLib.data.augment.AugmentConfig` ``bone_gain_range``: a film shows bone about
            1.2–2.4× brighter than a DRR of the CT). Defaults to (1, 1).
    """

    size: str = "full"
    model: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    epochs: int = 100
    max_steps: int = 0
    stop_after_steps: int = 0
    batch_size: int = 1
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    lr_schedule: str = "constant"
    grad_clip: float = 0.0
    num_workers: int = 2
    checkpoint_every: int = 1000
    log_every: int = 10
    val_every: int = 1
    amp: bool = False
    deterministic: bool = False
    device: str = "auto"
    progress: bool = True
    augment: bool = False
    augment_film: bool = False
    augment_anisotropy: float = 0.0
    augment_elastic_mm: float = 0.0
    augment_scale: tuple[float, float] = (0.9, 1.1)
    augment_pool: int = 0
    augment_bone_gain: tuple[float, float] = (1.0, 1.0)

    kind: typing.ClassVar[str] = "base"
    config_name: typing.ClassVar[str] = "training config"

    def __post_init__(self) -> None:
        super().__post_init__()
        checks = [
            (self.size in SIZES, "size", f"one of {SIZES}"),
            (self.epochs >= 1, "epochs", ">= 1"),
            (self.max_steps >= 0, "max_steps", ">= 0"),
            (self.stop_after_steps >= 0, "stop_after_steps", ">= 0"),
            (self.batch_size >= 1, "batch_size", ">= 1"),
            (self.lr > 0, "lr", "> 0"),
            (all(0 <= b < 1 for b in self.betas), "betas", "two numbers in [0, 1)"),
            (self.lr_schedule in LR_SCHEDULES, "lr_schedule", f"one of {LR_SCHEDULES}"),
            (self.grad_clip >= 0, "grad_clip", ">= 0"),
            (self.num_workers >= 0, "num_workers", ">= 0"),
            (self.checkpoint_every >= 1, "checkpoint_every", ">= 1"),
            (self.log_every >= 1, "log_every", ">= 1"),
            (self.val_every >= 1, "val_every", ">= 1"),
            (0 <= self.augment_anisotropy < 1, "augment_anisotropy", "in [0, 1)"),
            (self.augment_elastic_mm >= 0, "augment_elastic_mm", ">= 0"),
            (len(self.augment_scale) == 2 and 0 < self.augment_scale[0] <= self.augment_scale[1],
             "augment_scale", "two numbers 0 < low <= high"),
            (self.augment_pool >= 0, "augment_pool", ">= 0"),
            (len(self.augment_bone_gain) == 2 and 0 < self.augment_bone_gain[0] <= self.augment_bone_gain[1],
             "augment_bone_gain", "two numbers 0 < low <= high"),
            (self.device in ("auto", "cpu", "cuda"), "device", "auto, cpu or cuda"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise InputError(f"training config: {name} must be {expected}, got {getattr(self, name)!r}")

    @classmethod
    def upgrade(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Run configs written before ``size`` and ``variant`` were fields (a run's ``config.json``, the
        ``config`` of its checkpoints, config files and ``--set`` pairs written for them) named the size
        ``preset`` and kept the GAN variant in the model overrides (``model["variant"]``, ``--set
        model.variant=…``). A CDM config with a variant is refused as an unknown key, as it was before."""
        if "preset" in data and "size" not in data:
            data["size"] = data.pop("preset")
        if "model.variant" in data and "variant" not in data:
            data["variant"] = data.pop("model.variant")
        model = data.get("model")
        if isinstance(model, dict) and "variant" in model and "variant" not in data:
            data["model"] = {k: v for k, v in model.items() if k != "variant"}
            data["variant"] = model["variant"]
        return data


@dataclass(kw_only=True)
class CDMTrainConfig(TrainConfig):
    """Settings of ``dctnet train-cdm`` (the paper gives none for the CDM; sources below).

    Args:
        lr: Adam learning rate. Defaults to 1e-4 (lucidrains/denoising-diffusion-pytorch ``Trainer.train_lr``).
        betas: Adam betas. Defaults to (0.9, 0.99) (same source, ``adam_betas``).
        batch_size: radiographs per process and step (each case gives two: PA and lateral). Defaults to 8.
        val_samples: validation radiographs DDIM-sampled per validation to measure PSNR/SSIM against their
            bone-suppressed targets (sampling is the slow part). Defaults to 8.
        val_sampling_steps: DDIM steps for those samples; 0 = the model config's ``sampling_steps``.
            Defaults to 0.
    """

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    batch_size: int = 8
    val_samples: int = 8
    val_sampling_steps: int = 0

    kind: typing.ClassVar[str] = "cdm"


# Validation metrics of the GAN trainer that may select best.pt (GANTrainer.validate's keys; higher is better),
# each with how a message names its value.
BEST_ON = {"psnr": "PSNR {:.3f} dB", "ssim": "SSIM {:.3f}", "bone_dice": "bone Dice {:.3f}"}


@dataclass(kw_only=True)
class GANTrainConfig(TrainConfig):
    """Settings of ``dctnet train`` (the dual-generator reconstruction GAN, DCT-Net §2.2–2.3, §3.1).

    Args:
        variant: the row of DCT-Net Table 1 to train: ``dctnet`` or an entry of
            :data:`~DCTNetLib.models.presets.ABLATIONS` (``--variant``). Defaults to "dctnet".
        bs_source: where the bone-suppressed inputs X come from: ``"cdm"`` (the trained CDM's DDIM samples,
            computed once per case and cached) or ``"target"`` (the prepared synthetic bone-suppressed DRRs;
            quick runs and tests). Defaults to "cdm".
        cdm_sampling_steps: DDIM steps for the cached CDM samples; 0 = the CDM config's ``sampling_steps``.
            Defaults to 0.
        cdm_seed: seed of the cached CDM samples. Defaults to 0.
        gx_supervised: also apply the reconstruction and projection losses to G(X) against the ground truth
            (see :mod:`DCTNetLib.training.gan_trainer` for this reading of eq. 10b). Defaults to True.
        loss: overrides of the multi-path loss weights/config (e.g. ``{"lambda_recon": 10}``).
        recipe: training recipe layered under the user's settings by :func:`resolve_config`: ``"auto"`` (the
            variant's own, :func:`~DCTNetLib.training.recipes.recipe_for`: X2CT-GAN's for ``x2ct-baseline`` —
            β2 0.99, batch 4, 50 + 50 epochs with linear decay — DCT-Net §3.1 for the other rows), ``"dctnet"``
            or ``"x2ct"``. The resolved config records the concrete name. Building this dataclass directly
            applies no recipe (its defaults are DCT-Net's). Defaults to "auto".
        product_lr_scale: learning rate of the generators' product path
            (:class:`~DCTNetLib.models.generator.ViewProductPath`, when the preset has one) as a multiple of ``lr``.
            Its mix starts at zero and its signal is a small part of the loss, so at the generators' lr it hardly
            moves: fine-tuned from v3 at lr 5e-4 its mix weights had reached ~0.003 after 250 steps (bone Dice on
            the validation CT 0.044); at 10× lr for the path alone, 25 steps took the Dice to 0.16 and the 99.9th
            percentile from 332 to 457 HU. Defaults to 10.0.
        best_on: the validation metric that selects ``best.pt`` (higher is better): ``"psnr"``, ``"ssim"`` or
            ``"bone_dice"`` (Dice of the ``> 300 HU`` masks; the v5 fine-tune showed bone at step 164, Dice 0.108
            on the validation CT, and lost it by step 902, Dice 0.037, while its PSNR rose). Defaults to "psnr".
    """

    variant: str = "dctnet"
    bs_source: str = "cdm"
    cdm_sampling_steps: int = 0
    cdm_seed: int = 0
    gx_supervised: bool = True
    loss: dict[str, Any] = field(default_factory=dict)
    recipe: str = "auto"
    product_lr_scale: float = 10.0
    best_on: str = "psnr"

    kind: typing.ClassVar[str] = "gan"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.variant not in VARIANTS:
            raise InputError(f"training config: variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.bs_source not in ("cdm", "target"):
            raise InputError(f"training config: bs_source must be 'cdm' or 'target', got {self.bs_source!r}")
        if not self.product_lr_scale > 0:
            raise InputError(f"training config: product_lr_scale must be > 0, got {self.product_lr_scale!r}")
        if self.best_on not in BEST_ON:
            raise InputError(f"training config: best_on must be one of {', '.join(BEST_ON)}, got {self.best_on!r}")
        if self.recipe not in ("auto", *RECIPES):
            raise InputError(f"training config: recipe must be one of auto, {', '.join(RECIPES)}, "
                             f"got {self.recipe!r}")


# ---------------------------------------------------------------------------------------------- conversion
_BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def _parse_text(text: str) -> Any:
    """A ``--set`` value as JSON, else YAML, else the raw string (``"1e-4"``, ``"[8, 16]"``, ``"true"``)."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        import yaml

        return yaml.safe_load(text)
    except Exception:  # noqa: BLE001 — any YAML problem means "treat as a string"
        return text


def _from_text(value: Any, annotation: Any) -> Any:
    """A value typed by hand (``--set``, a YAML/JSON file) read as the field type where that is unambiguous.

    ``"1e-4"`` → 0.0001 (YAML reads it as a string), ``"yes"`` / ``1`` → True, ``"[0.5, 0.9]"`` → a list,
    ``5.0`` → 5 for an integer field. Anything else is returned unchanged for the config's own type check.
    """
    if isinstance(value, str) and annotation is bool:
        return _BOOL_WORDS.get(value.strip().lower(), value)
    if isinstance(value, str) and annotation in (int, float):
        try:
            return annotation(value.strip())
        except ValueError:
            value = _parse_text(value)
    elif isinstance(value, str) and annotation is not str:
        value = _parse_text(value)
    if annotation is bool and type(value) is int and value in (0, 1):
        return bool(value)
    if annotation is int and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain-JSON dict of ``config`` (tuples become lists) plus its ``kind``."""
    return {**config.to_dict(), "kind": config.kind}


def apply_overrides(config: TrainConfig, overrides: dict[str, Any], source: str = "overrides") -> TrainConfig:
    """A copy of ``config`` with ``overrides`` applied; dotted keys ``model.x`` / ``loss.x`` set one sub-key.

    Args:
        config: the config to start from.
        overrides: ``{key: value}``; values may be strings (read as the field type, :func:`_from_text`); keys
            of older layouts are accepted (:meth:`TrainConfig.upgrade`).
        source: where the overrides come from, named in error messages (a file path, ``--set``).

    Raises:
        InputError: an unknown key (the message lists the valid ones) or a value of the wrong type.
    """
    cls = type(config)
    types = cls.field_types()
    overrides = cls.upgrade(dict(overrides))
    kind = overrides.pop("kind", config.kind)
    if kind != config.kind:
        raise InputError(f"{source}: this is a {kind!r} config, expected {config.kind!r}")
    values = {name: (dict(value) if isinstance(value, dict) else value)
              for name, value in ((name, getattr(config, name)) for name in types)}
    for key, value in overrides.items():
        head, _, sub = key.partition(".")
        if head not in types:
            raise InputError(f"{source}: unknown training config key {key!r}; valid keys: "
                             f"{', '.join(sorted(types))}")
        if sub:
            if typing.get_origin(types[head]) is not dict:
                raise InputError(f"{source}: {head!r} has no sub-keys (got {key!r})")
            values[head][sub] = _parse_text(value) if isinstance(value, str) else value
        else:
            values[head] = _from_text(value, types[head])
    return cls.from_dict(values, source=source)


def config_from_dict(cls: type[TrainConfig], data: dict[str, Any], source: str = "config") -> TrainConfig:
    """Rebuild a config of class ``cls`` from :func:`config_to_dict` output (keys checked as in overrides)."""
    return apply_overrides(cls(), data, source)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def config_diff(saved: dict[str, Any], current: dict[str, Any], ignore: Iterable[str] = ()) -> list[str]:
    """Readable lines ``"  key: <checkpoint value> → <current value>"`` for every differing key.

    Nested dicts (``model``, ``loss``) are compared key by key (``model.channels``). Keys in ``ignore`` are skipped.
    """
    ignored = set(ignore)
    old, new = _flatten(saved), _flatten(current)
    lines = []
    for key in sorted(set(old) | set(new)):
        if key in ignored:
            continue
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if a != b:
            lines.append(f"  {key}: {a!r} (checkpoint) → {b!r} (now)")
    return lines


def check_config_compatible(saved: dict[str, Any], current: TrainConfig, path: str | Path) -> None:
    """Refuse to resume from ``path`` when its config differs from ``current`` beyond :data:`RUNTIME_KEYS`.

    ``saved`` (a checkpoint's ``config``) is first read as a config of ``current``'s class, so keys of an older
    layout and keys it did not have yet (at their defaults) compare as what they mean.

    Raises:
        InputError: naming ``path`` and listing every difference.
    """
    saved_config = apply_overrides(type(current)(), saved, f"the training config saved in {path}")
    lines = config_diff(config_to_dict(saved_config), config_to_dict(current), ignore=RUNTIME_KEYS)
    if lines:
        raise InputError(
            f"cannot resume from {path}: the training config differs from the one it was written with:\n"
            + "\n".join(lines)
            + "\nRun with the original settings (drop the --set/--config changes), or start a new --output folder."
        )


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or JSON file holding a mapping of config keys.

    Raises:
        InputError: the file is missing, unreadable or not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 — report any parse problem with the file name
        raise InputError(f"cannot parse config file {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def parse_set_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """``["lr=1e-4", "model.channels=[8,16]"]`` → ``{"lr": "1e-4", "model.channels": "[8,16]"}``.

    Raises:
        InputError: a pair without ``=``.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def resolve_config(
    cls: type[TrainConfig],
    *,
    saved: dict[str, Any] | None = None,
    config_file: str | Path | None = None,
    set_pairs: Iterable[str] = (),
    flags: dict[str, Any] | None = None,
) -> TrainConfig:
    """Build the run's config following the precedence in the module docstring.

    Args:
        cls: :class:`CDMTrainConfig` or :class:`GANTrainConfig`.
        saved: the resolved config of the run being resumed (its ``config.json``), if any.
        config_file: a YAML/JSON file of overrides.
        set_pairs: ``key=value`` strings from ``--set``.
        flags: values of dedicated command-line flags; ``None`` values are ignored.
    """
    def layered(base: TrainConfig) -> TrainConfig:
        config = base
        if saved:
            config = apply_overrides(config, saved, "saved run config")
        if config_file:
            config = apply_overrides(config, load_config_file(config_file), str(config_file))
        config = apply_overrides(config, parse_set_overrides(set_pairs), "--set")
        if flags:
            config = apply_overrides(config, {k: v for k, v in flags.items() if v is not None}, "command line")
        return config

    config = layered(cls())
    if isinstance(config, GANTrainConfig):  # the row's recipe goes under every user layer (module docstring)
        recipe = training_recipe(config)
        config = layered(apply_overrides(cls(), {**recipe.overrides(), "recipe": recipe.name}, "recipe"))
        if config.recipe == "auto":
            config = apply_overrides(config, {"recipe": recipe.name}, "recipe")
    return config


def training_recipe(config: GANTrainConfig) -> TrainingRecipe:
    """The :class:`~DCTNetLib.training.recipes.TrainingRecipe` named by ``config.recipe`` (``"auto"``: the one of
    ``config.variant``)."""
    if config.recipe != "auto":
        return RECIPES[config.recipe]
    return recipe_for(config.variant)


def save_config(config: TrainConfig, path: str | Path) -> Path:
    """Write the resolved config as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(config_to_dict(config), indent=2, sort_keys=True) + "\n")
