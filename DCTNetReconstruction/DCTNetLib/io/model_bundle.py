"""Model bundles: everything inference needs in one weights-only file (CDM + G(Y) + G(X) + their configs).

Training writes *checkpoints* (models, optimisers, RNG states: :mod:`DCTNetLib.training.checkpoint`); users and
the Slicer module load *bundles*: the CDM's EMA weights and both generators, each with the config that rebuilds
its architecture, plus provenance. ``dctnet export`` makes one from a CDM and a GAN checkpoint; the shipped
default lives in ``DCTNetLib/resources/weights/`` with a manifest that records its sha256 and the recipe.

File layout (a ``torch.save`` dict of tensors and plain containers, read with ``weights_only=True``)::

    {"format": "dctnet-model-bundle", "format_version": 1,
     "cdm": {"config": CDMConfig.to_dict(), "state_dict": {...}} | None,
     "generator": {"preset": GANPreset.to_dict(), "g_raw": {...}, "g_bs": {...} | None},
     "image_size": 128, "sampling_steps": 20, "meta": {...}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError, WeightsError
from ..helpers import count_parameters
from .atomic import atomic_torch_save, atomic_write_text
from .safe_load import check_sha256, check_weights_file, load_torch_file, sha256_file

__all__ = [
    "BUNDLE_FORMAT",
    "ModelBundle",
    "default_weights_path",
    "default_manifest_path",
    "load_model_bundle",
    "save_model_bundle",
    "bundle_from_checkpoints",
    "write_manifest",
]

BUNDLE_FORMAT = "dctnet-model-bundle"
BUNDLE_FORMAT_VERSION = 1
_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "resources" / "weights"
DEFAULT_BUNDLE_NAME = "dctnet_small.pt"
MANIFEST_NAME = "manifest.json"
# Limits checked on the recorded architecture *before* any network is allocated (it is first built on PyTorch's
# "meta" device, which records shapes without memory). The shipped small model holds 2.7 M parameters (10 MiB);
# the paper-size preset about 60 M. 2 GiB of float32 parameters and buffers is far above any DCT-Net model.
MAX_MODEL_BYTES = 2 * 1024**3
# Radiograph side the networks may be built for: the paper's 128 (and the small test sizes); a 3D generator's
# activations grow with the cube of it, so a recorded 4096 would ask for terabytes at the first forward pass.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 256


def default_weights_path() -> Path:
    """The shipped default bundle (small presets, trained on CPU; see its manifest)."""
    return _WEIGHTS_DIR / DEFAULT_BUNDLE_NAME


def default_manifest_path() -> Path:
    """The manifest (sha256, size, recipe, training data) of the shipped bundle."""
    return _WEIGHTS_DIR / MANIFEST_NAME


@dataclass
class ModelBundle:
    """The inference models, in eval mode on the CPU.

    Args:
        cdm: the bone-suppression :class:`~DCTNetLib.models.diffusion.ConditionalDiffusion` (EMA weights), or
            ``None`` for a single-branch model (ablation without the CDM).
        g_raw: G(Y), the generator for raw radiographs: ``(B, 2, n, n) → (B, 1, n, n, n)``.
        g_bs: G(X), the generator for bone-suppressed radiographs, or ``None``.
        image_size: radiograph side n the models expect.
        sampling_steps: default DDIM steps of the bone-suppression preview.
        cdm_config, gan_preset: the configs that rebuild the architectures (plain dicts).
        meta: provenance (data, steps, command, code version).
    """

    cdm: nn.Module | None
    g_raw: nn.Module
    g_bs: nn.Module | None
    image_size: int
    sampling_steps: int = 20
    cdm_config: dict[str, Any] | None = None
    gan_preset: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> "ModelBundle":
        """Move every model to ``device`` (in place) and return ``self``."""
        for model in (self.cdm, self.g_raw, self.g_bs):
            if model is not None:
                model.to(device)
        return self

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per model (``0`` for an absent one)."""
        return {name: count_parameters(m, trainable_only=False) if m is not None else 0
                for name, m in (("cdm", self.cdm), ("g_raw", self.g_raw), ("g_bs", self.g_bs))}


# ----------------------------------------------------------------------------------------------- building
def _build_cdm(config: dict[str, Any]) -> nn.Module:
    from ..models.diffusion import CDMConfig, ConditionalDiffusion

    return ConditionalDiffusion(CDMConfig.from_dict(config))


def _build_generator(preset: dict[str, Any]) -> nn.Module:
    from ..models.presets import GANPreset, build_generator

    return build_generator(GANPreset.from_dict(preset).generator)


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], what: str, path: Path) -> None:
    """Strict ``load_state_dict`` with a message that names the file and the differing keys/shapes.

    Every value must be a tensor and every floating-point tensor finite: NaN/inf weights would silently give an
    all-NaN CT.
    """
    check_state_dict(model, state, what, path)
    model.load_state_dict(state)


def check_state_dict(model: nn.Module, state: Any, what: str, path: Path) -> None:
    """Raise :class:`WeightsError` unless ``state`` fits ``model`` exactly (keys, shapes) with finite tensors.

    ``model`` may live on the "meta" device: only its shapes are used.
    """
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: the {what} weights are a {type(state).__name__}, not a state dict")
    not_tensors = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise WeightsError(f"{path}: the {what} weights hold values that are not tensors ({not_tensors[:3]})")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        details = "; ".join(filter(None, [
            f"missing {missing[:3]}{'…' if len(missing) > 3 else ''}" if missing else "",
            f"unexpected {unexpected[:3]}{'…' if len(unexpected) > 3 else ''}" if unexpected else "",
            f"shape mismatch {shapes[:3]}" if shapes else "",
        ]))
        raise WeightsError(f"{path}: the {what} weights do not match the architecture recorded in the file "
                           f"({details})")
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise WeightsError(f"{path}: the {what} weights hold {bad} NaN/inf value(s) (in {key}); the model would "
                               "output garbage — the training run diverged or the file is damaged")


def _eval(model: nn.Module | None) -> nn.Module | None:
    if model is not None:
        model.eval().requires_grad_(False)
    return model


def bundle_from_state(state: dict[str, Any], path: Path) -> ModelBundle:
    """Rebuild a :class:`ModelBundle` from a loaded bundle dict (architecture first, then strict weights)."""
    if not isinstance(state, dict) or state.get("format") != BUNDLE_FORMAT:
        kind = state.get("kind") if isinstance(state, dict) else None
        hint = (" — it is a training checkpoint; make a bundle with `dctnet export --cdm CDM.pt --gan GAN.pt "
                "--output model.pt`" if kind in ("cdm", "gan") else "")
        raise WeightsError(f"{path} is not a DCTNet model bundle{hint}")
    version = _recorded_int(state, "format_version", 0, path)
    if version > BUNDLE_FORMAT_VERSION:
        raise WeightsError(f"{path} has bundle format {version}, newer than this DCTNet reads "
                           f"({BUNDLE_FORMAT_VERSION}); update DCTNet")
    generator, cdm_part = state.get("generator"), state.get("cdm")
    if not isinstance(generator, dict) or (cdm_part is not None and not isinstance(cdm_part, dict)):
        raise WeightsError(f"{path}: the recorded model configuration is invalid (no generator section)")
    if not isinstance(generator.get("preset"), dict) or (cdm_part and not isinstance(cdm_part.get("config"), dict)):
        raise WeightsError(f"{path}: the recorded model configuration is invalid (a config is not a dict)")
    image_size = _recorded_int(state, "image_size", 128, path)
    sizes = {"bundle": image_size,
             "generator": _recorded_int(generator["preset"].get("generator"), "image_size", image_size, path)}
    if cdm_part:
        sizes["CDM"] = _recorded_int(cdm_part["config"], "image_size", image_size, path)
    if len(set(sizes.values())) > 1 or not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise WeightsError(f"{path}: inconsistent or impossible image size {sizes} (the networks need one size "
                           f"from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE})")
    steps = _recorded_int(state, "sampling_steps", 20, path)
    timesteps = _recorded_int(cdm_part["config"], "timesteps", 1000, path) if cdm_part else None
    if steps < 1 or (timesteps is not None and steps > timesteps):
        raise WeightsError(f"{path}: recorded sampling_steps {steps} is outside 1…{timesteps or 'T'} (the "
                           "diffusion's step count)")
    cdm = _checked_build(_build_cdm, cdm_part["config"], cdm_part.get("state_dict"), "CDM", path) if cdm_part else None
    g_raw = _checked_build(_build_generator, generator["preset"], generator.get("g_raw"), "G(Y)", path)
    g_bs = None
    if generator.get("g_bs") is not None:
        g_bs = _checked_build(_build_generator, generator["preset"], generator["g_bs"], "G(X)", path)
    return ModelBundle(cdm=_eval(cdm), g_raw=_eval(g_raw), g_bs=_eval(g_bs), image_size=image_size,
                       sampling_steps=steps, cdm_config=cdm_part["config"] if cdm_part else None,
                       gan_preset=generator["preset"],
                       meta=dict(state["meta"]) if isinstance(state.get("meta"), dict) else {})


def _checked_build(build: Any, config: dict[str, Any], weights: Any, what: str, path: Path) -> nn.Module:
    """Build one network from its recorded config and load ``weights`` into it, checking before allocating.

    The network is first built on PyTorch's "meta" device (shapes, no memory): a config asking for more than
    :data:`MAX_MODEL_BYTES`, or weights that do not fit it, are refused before the real network exists.
    """
    try:
        with torch.device("meta"):
            shape_only = build(config)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, NotImplementedError) as exc:
        raise WeightsError(f"{path}: the recorded {what} configuration is invalid ({_first_line(exc)})") from exc
    nbytes = sum(t.numel() * t.element_size() for t in (*shape_only.parameters(), *shape_only.buffers()))
    if nbytes > MAX_MODEL_BYTES:
        raise WeightsError(f"{path}: the recorded {what} architecture needs {nbytes / 1024**3:.1f} GiB of weights, "
                           f"more than the {MAX_MODEL_BYTES // 1024**3} GiB any DCT-Net model has")
    check_state_dict(shape_only, weights, what, path)
    model = build(config)
    model.load_state_dict(weights)
    return model


def _recorded_int(record: Any, key: str, default: int, path: Path) -> int:
    """An integer field of a loaded bundle (``default`` when absent); anything else is a :class:`WeightsError`."""
    value = record.get(key, default) if isinstance(record, dict) else default
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or value != value
            or abs(value) == float("inf") or value != int(value)):
        raise WeightsError(f"{path}: recorded {key} is {value!r}, not a whole number")
    return int(value)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def load_model_bundle(path: str | Path | None = None, expected_sha256: str | None = None) -> ModelBundle:
    """Load a bundle with ``weights_only=True``; ``None`` loads the shipped default and checks its manifest.

    Raises:
        WeightsError: missing, truncated, tampered (sha256), foreign, or architecture/weights mismatch.
    """
    if path is None:
        path = default_weights_path()
        if not path.is_file():
            raise WeightsError(f"the shipped default weights are missing: {path} (reinstall DCTNet, or pass a "
                               "bundle made with `dctnet export`)")
        manifest = json.loads(default_manifest_path().read_text()) if default_manifest_path().is_file() else {}
        expected_sha256 = expected_sha256 or manifest.get("sha256")
    path = Path(path)
    check_weights_file(path)
    check_sha256(path, expected_sha256)
    state = load_torch_file(path)
    if isinstance(state, dict) and state.get("kind") == "gan" and state.get("format") != BUNDLE_FORMAT:
        return _bundle_from_gan_checkpoint(state, path)
    return bundle_from_state(state, path)


def _bundle_from_gan_checkpoint(state: dict[str, Any], path: Path) -> ModelBundle:
    """A ``dctnet train`` checkpoint used directly: its generators plus the CDM checkpoint the run recorded."""
    cdm_path = (state.get("cdm") or {}).get("path")
    if cdm_path is not None and not Path(cdm_path).is_file():
        raise WeightsError(f"{path} was trained with the CDM {cdm_path}, which is not there any more; make a "
                           "bundle with `dctnet export --gan ... --cdm CDM.pt --output model.pt`")
    if cdm_path is None and (state.get("models") or {}).get("g_bs") is not None:
        raise WeightsError(f"{path} records no CDM checkpoint (trained on the prepared bone-suppressed targets); "
                           "make a bundle with `dctnet export --gan ... --cdm CDM.pt --output model.pt`")
    return bundle_from_checkpoints(path, cdm_path, gan_state=state)


def save_model_bundle(bundle: ModelBundle, path: str | Path, half: bool = False, overwrite: bool = True) -> Path:
    """Write ``bundle`` atomically. ``half=True`` stores float16 weights (loaded back as float32);
    ``overwrite=False`` never replaces a file, even one that appeared while the bundle was being made."""

    def weights(model: nn.Module) -> dict[str, torch.Tensor]:
        out = {}
        for key, value in model.state_dict().items():
            value = value.detach().cpu()
            out[key] = value.half() if half and value.is_floating_point() else value.clone()
        return out

    if bundle.gan_preset is None:
        raise InputError("save_model_bundle: the bundle has no gan_preset to rebuild its generators from")
    state = {
        "format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION,
        "cdm": ({"config": bundle.cdm_config, "state_dict": weights(bundle.cdm)} if bundle.cdm is not None else None),
        "generator": {"preset": bundle.gan_preset, "g_raw": weights(bundle.g_raw),
                      "g_bs": weights(bundle.g_bs) if bundle.g_bs is not None else None},
        "image_size": int(bundle.image_size), "sampling_steps": int(bundle.sampling_steps), "meta": bundle.meta,
    }
    return atomic_torch_save(state, Path(path), overwrite)


CDM_WEIGHTS = ("ema", "online")


def _cdm_from_checkpoint(path: Path, weights: str = "ema") -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """The CDM of a ``train-cdm`` checkpoint: its EMA weights (the usual choice) or the online ones.

    The online weights are the better choice early in a run: an EMA with decay 0.995 every 10 steps (the small
    preset) still carries ~80 % of its initial random weights after 400 steps.
    """
    from ..training.checkpoint import load_checkpoint

    if weights not in CDM_WEIGHTS:
        raise InputError(f"CDM weights must be one of {CDM_WEIGHTS}, got {weights!r}")
    state = load_checkpoint(path, kind="cdm")
    config = state["model_config"]
    cdm = _build_cdm(config)
    ema = state.get("ema", {}).get("diffusion")
    if weights == "ema" and ema:
        _load_state(cdm, ema["model"], "CDM (EMA)", path)
    else:
        _load_state(cdm, state["models"]["diffusion"], "CDM", path)
    return cdm, config, {**state.get("progress", {}), "weights": weights if ema else "online"}


def _generators_from_state(state: dict[str, Any], path: Path
                           ) -> tuple[nn.Module, nn.Module | None, dict[str, Any], dict[str, Any]]:
    """G(Y), G(X), the preset and the progress of a loaded ``dctnet train`` checkpoint."""
    from ..training.checkpoint import check_checkpoint_state

    check_checkpoint_state(state, path, kind="gan")
    preset = state["model_config"]
    models = state["models"]
    g_raw = _checked_build(_build_generator, preset, models["g_raw"], "G(Y)", path)
    g_bs = None
    if models.get("g_bs") is not None:
        g_bs = _checked_build(_build_generator, preset, models["g_bs"], "G(X)", path)
    return g_raw, g_bs, preset, state.get("progress", {})


def bundle_from_checkpoints(gan_checkpoint: str | Path, cdm_checkpoint: str | Path | None,
                            sampling_steps: int | None = None, meta: dict[str, Any] | None = None,
                            cdm_weights: str = "ema", gan_state: dict[str, Any] | None = None,
                            sampling_strength: float | None = None) -> ModelBundle:
    """Assemble a bundle from training checkpoints (the CDM's EMA or online weights, both generators).

    ``gan_state``: the GAN checkpoint already loaded from ``gan_checkpoint`` (not read again).
    ``sampling_strength``: where the CDM's DDIM starts (``CDMConfig.sampling_strength``), stored in its config.
    """
    if gan_state is None:
        from ..training.checkpoint import load_checkpoint

        gan_state = load_checkpoint(gan_checkpoint, kind="gan")
    g_raw, g_bs, preset, gan_progress = _generators_from_state(gan_state, Path(gan_checkpoint))
    cdm = cdm_config = None
    cdm_progress: dict[str, Any] = {}
    if cdm_checkpoint is not None:
        cdm, cdm_config, cdm_progress = _cdm_from_checkpoint(Path(cdm_checkpoint), cdm_weights)
        if sampling_strength is not None:
            from ..models.diffusion.config import CDMConfig

            cdm_config = {**cdm_config, "sampling_strength": float(sampling_strength)}
            try:
                cdm.config = CDMConfig.from_dict(cdm_config)  # validates the value; the sampler reads it from here
            except ValueError as exc:
                raise InputError(f"--strength {sampling_strength}: {exc}") from exc
    if g_bs is not None and cdm is None:
        raise InputError(f"{gan_checkpoint} has a bone-suppressed generator G(X): pass the CDM checkpoint that "
                         "makes its inputs (--cdm)")
    steps = int(sampling_steps or (cdm_config or {}).get("sampling_steps", 20))
    image_size = int((cdm_config or {}).get("image_size", preset.get("generator", {}).get("image_size", 128)))
    info = {"gan_checkpoint": Path(gan_checkpoint).name, "gan_progress": gan_progress,
            "cdm_checkpoint": Path(cdm_checkpoint).name if cdm_checkpoint else None, "cdm_progress": cdm_progress,
            **(meta or {})}
    return ModelBundle(cdm=_eval(cdm), g_raw=_eval(g_raw), g_bs=_eval(g_bs), image_size=image_size,
                       sampling_steps=steps, cdm_config=cdm_config, gan_preset=preset, meta=info)


def write_manifest(bundle_path: str | Path, recipe: dict[str, Any], manifest_path: str | Path | None = None) -> Path:
    """Record the bundle's sha256 and size with the recipe that made it (next to it by default)."""
    bundle_path = Path(bundle_path)
    manifest_path = Path(manifest_path) if manifest_path else bundle_path.with_name(MANIFEST_NAME)
    manifest = {"file": bundle_path.name, "sha256": sha256_file(bundle_path),
                "bytes": bundle_path.stat().st_size, **recipe}
    return atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
