"""Model bundles: everything inference needs in one weights-only file (CDM + G(Y) + G(X) + their configs).

Training writes *checkpoints* (models, optimisers, RNG states: :mod:`.checkpoint`); users and the Slicer module
load *bundles*: the CDM's EMA weights and both generators, each with the config that rebuilds its architecture,
plus provenance. ``dctnet export`` makes one from a CDM and a GAN checkpoint; the shipped
default lives in ``DCTNetLib/resources/weights/`` with a manifest that records its sha256 and the recipe.

File layout (a ``torch.save`` dict of tensors and plain containers, read with ``weights_only=True``)::

    {"format": "dctnet-model-bundle", "format_version": 1,
     "cdm": {"config": CDMConfig.to_dict(), "state_dict": {...}} | None,
     "generator": {"preset": GANPreset.to_dict(), "g_raw": {...}, "g_bs": {...} | None},
     "image_size": 128, "sampling_steps": 20, "meta": {...}}
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..conventions import IMAGE_SIZE
from ..errors import InputError, WeightsError
from ..helpers import count_parameters
from ..io.atomic import atomic_torch_save, atomic_write_text
from ..io.safe_load import check_weights_file, load_torch_file, sha256_file
from .checkpoint import load_checkpoint, recorded_int, resolve_checkpoint
from .manifest import MANIFEST_NAME, manifest_beside, read_manifest, recorded_sha256
from .networks import build_cdm, build_checked, build_gan_generator, frozen, gan_networks_from_state, load_cdm

__all__ = [
    "BUNDLE_FORMAT",
    "ModelBundle",
    "default_weights_path",
    "default_manifest_path",
    "load_model_bundle",
    "save_model_bundle", "with_output_smoothing",
    "bundle_from_checkpoints",
    "load_generators",
    "load_initial_cdm",
    "write_manifest",
]

BUNDLE_FORMAT = "dctnet-model-bundle"
BUNDLE_FORMAT_VERSION = 1
_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "resources" / "weights"
DEFAULT_BUNDLE_NAME = "dctnet_small.pt"
DEFAULT_SAMPLING_STEPS = 20  # DDIM steps of a bundle that records none (CDMConfig's default)
# Radiograph side the networks may be built for, checked before any network is allocated (the size of the weights
# is checked by networks.build_checked): the paper's 128 (and the small test sizes); a 3D generator's activations
# grow with the cube of it, so a recorded 4096 would ask for terabytes at the first forward pass.
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
    sampling_steps: int = DEFAULT_SAMPLING_STEPS
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


# ----------------------------------------------------------------------------------------------- loading
def _checked_record(state: Any, path: Path) -> tuple[dict[str, Any], dict[str, Any] | None, int, int]:
    """``(generator section, CDM section or None, image size, sampling steps)`` of a loaded bundle dict, after
    checking its format and every recorded number the networks are built from."""
    if not isinstance(state, dict) or state.get("format") != BUNDLE_FORMAT:
        kind = state.get("kind") if isinstance(state, dict) else None
        hint = (" — it is a training checkpoint; make a bundle with `dctnet export --cdm CDM.pt --gan GAN.pt "
                "--output model.pt`" if kind in ("cdm", "gan") else "")
        raise WeightsError(f"{path} is not a DCTNet model bundle{hint}")
    version = recorded_int(state, "format_version", 0, path)
    if version > BUNDLE_FORMAT_VERSION:
        raise WeightsError(f"{path} has bundle format {version}, newer than this DCTNet reads "
                           f"({BUNDLE_FORMAT_VERSION}); update DCTNet")
    generator, cdm_part = state.get("generator"), state.get("cdm")
    if not isinstance(generator, dict) or (cdm_part is not None and not isinstance(cdm_part, dict)):
        raise WeightsError(f"{path}: the recorded model configuration is invalid (no generator section)")
    if not isinstance(generator.get("preset"), dict) or (cdm_part and not isinstance(cdm_part.get("config"), dict)):
        raise WeightsError(f"{path}: the recorded model configuration is invalid (a config is not a dict)")
    image_size = recorded_int(state, "image_size", IMAGE_SIZE, path)
    sizes = {"bundle": image_size,
             "generator": recorded_int(generator["preset"].get("generator"), "image_size", image_size, path)}
    if cdm_part:
        sizes["CDM"] = recorded_int(cdm_part["config"], "image_size", image_size, path)
    if len(set(sizes.values())) > 1 or not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise WeightsError(f"{path}: inconsistent or impossible image size {sizes} (the networks need one size "
                           f"from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE})")
    steps = recorded_int(state, "sampling_steps", DEFAULT_SAMPLING_STEPS, path)
    timesteps = recorded_int(cdm_part["config"], "timesteps", 1000, path) if cdm_part else None
    if steps < 1 or (timesteps is not None and steps > timesteps):
        raise WeightsError(f"{path}: recorded sampling_steps {steps} is outside 1…{timesteps or 'T'} (the "
                           "diffusion's step count)")
    return generator, cdm_part or None, image_size, steps


def bundle_from_state(state: dict[str, Any], path: Path) -> ModelBundle:
    """Rebuild a :class:`ModelBundle` from a loaded bundle dict (architecture first, then strict weights)."""
    generator, cdm_part, image_size, steps = _checked_record(state, path)
    cdm = build_checked(build_cdm, cdm_part["config"], cdm_part.get("state_dict"), "CDM", path) if cdm_part else None
    g_raw = build_checked(build_gan_generator, generator["preset"], generator.get("g_raw"), "G(Y)", path)
    g_bs = None
    if generator.get("g_bs") is not None:
        g_bs = build_checked(build_gan_generator, generator["preset"], generator["g_bs"], "G(X)", path)
    return ModelBundle(cdm=frozen(cdm), g_raw=frozen(g_raw), g_bs=frozen(g_bs), image_size=image_size,
                       sampling_steps=steps, cdm_config=cdm_part["config"] if cdm_part else None,
                       gan_preset=generator["preset"],
                       meta=dict(state["meta"]) if isinstance(state.get("meta"), dict) else {})


def load_model_bundle(path: str | Path | None = None, expected_sha256: str | None = None) -> ModelBundle:
    """Load a bundle with ``weights_only=True``; ``None`` loads the shipped default. A ``manifest.json`` beside the
    bundle that records its sha256 (the shipped one, or one ``dctnet export --manifest`` wrote) is checked before
    anything is unpickled; ``expected_sha256`` replaces it.

    Raises:
        WeightsError: missing, truncated, tampered (sha256), foreign, or architecture/weights mismatch.
    """
    if path is None:
        path = default_weights_path()
        if not path.is_file():
            raise WeightsError(f"the shipped default weights are missing: {path} (reinstall DCTNet, or pass a "
                               "bundle made with `dctnet export`)")
    path = Path(path)
    if expected_sha256 is None:
        check_weights_file(path)  # a FIFO or a folder is named before the manifest beside it is read
        manifest_path = manifest_beside(path)
        manifest = read_manifest(manifest_path)
        expected_sha256 = recorded_sha256(manifest, path, manifest_path) if manifest is not None else None
    state = load_torch_file(path, expected_sha256)  # the file check, then the sha256, then weights_only
    if isinstance(state, dict) and state.get("kind") == "gan" and state.get("format") != BUNDLE_FORMAT:
        return _bundle_from_gan_checkpoint(state, path)
    return bundle_from_state(state, path)


def load_generators(path: str | Path) -> tuple[dict[str, Any], dict[str, nn.Module]]:
    """The GAN preset (as a dict) and generators ``{"g_raw", "g_bs"}`` (G(X) only where present) of a model
    bundle, a ``dctnet train`` checkpoint or a run folder — the starting point of a fine-tuning run.

    Raises:
        InputError: no such file or run folder.
        WeightsError: neither a bundle nor a GAN checkpoint, or weights that do not fit their architecture.
    """
    path = resolve_checkpoint(path)
    state = load_torch_file(path)
    if isinstance(state, dict) and state.get("kind") == "gan" and state.get("format") != BUNDLE_FORMAT:
        preset, built = gan_networks_from_state(state, path)
        return preset.to_dict(), built
    bundle = bundle_from_state(state, path)
    generators = {"g_raw": bundle.g_raw, **({"g_bs": bundle.g_bs} if bundle.g_bs is not None else {})}
    return dict(bundle.gan_preset or {}), generators


def load_initial_cdm(path: str | Path) -> nn.Module:
    """The bone-suppression CDM of a model bundle, or the online weights of a ``dctnet train-cdm`` checkpoint or
    run folder — the starting point of a fine-tuning run.

    Raises:
        InputError: no such file or run folder.
        WeightsError: neither holds a CDM, or weights that do not fit their configuration.
    """
    path = resolve_checkpoint(path)
    state = load_torch_file(path)
    if isinstance(state, dict) and state.get("format") == BUNDLE_FORMAT:
        cdm = bundle_from_state(state, path).cdm
        if cdm is None:
            raise WeightsError(f"{path} is a model bundle without a CDM (a single-branch model)")
        return cdm
    return load_cdm(path, weights="online")[0]


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


def with_output_smoothing(bundle: ModelBundle) -> ModelBundle:
    """The same bundle with its generators' fixed output filter switched on (``output_smoothing`` of
    :class:`~DCTNetLib.models.presets.GeneratorConfig`: [1, 2, 1] / 4 per axis, no weights): the generators are
    rebuilt from the changed preset and given the same weights, strictly.

    Raises:
        InputError: the bundle records no preset, or its generators are not DCT-Net generators.
    """
    if bundle.gan_preset is None:
        raise InputError("with_output_smoothing: the bundle has no gan_preset to rebuild its generators from")
    preset = copy.deepcopy(bundle.gan_preset)
    generator = preset.setdefault("generator", {})
    if generator.get("arch", "dctnet") != "dctnet":
        raise InputError(f"output smoothing is a DCT-Net generator option; this bundle's generators are "
                         f"{generator.get('arch')!r}")
    generator["output_smoothing"] = True

    def rebuilt(model: nn.Module | None) -> nn.Module | None:
        if model is None:
            return None
        smoothed = build_gan_generator(preset)
        smoothed.load_state_dict(model.state_dict(), strict=True)
        return frozen(smoothed)

    return dataclasses.replace(bundle, g_raw=rebuilt(bundle.g_raw), g_bs=rebuilt(bundle.g_bs), gan_preset=preset)


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


def bundle_from_checkpoints(gan_checkpoint: str | Path, cdm_checkpoint: str | Path | None,
                            sampling_steps: int | None = None, meta: dict[str, Any] | None = None,
                            cdm_weights: str = "ema", gan_state: dict[str, Any] | None = None,
                            sampling_strength: float | None = None,
                            sampling_samples: int | None = None) -> ModelBundle:
    """Assemble a bundle from training checkpoints (the CDM's EMA or online weights, both generators).

    ``gan_state``: the GAN checkpoint already loaded from ``gan_checkpoint`` (not read again).
    ``sampling_strength``, ``sampling_samples``: where the CDM's DDIM starts and how many samples the preview
    averages (``CDMConfig``'s fields of those names), stored in its config.
    """
    if gan_state is None:
        gan_state = load_checkpoint(gan_checkpoint, kind="gan")
    preset, generators = gan_networks_from_state(gan_state, Path(gan_checkpoint))
    g_raw, g_bs = generators["g_raw"], generators.get("g_bs")
    cdm, cdm_progress = load_cdm(cdm_checkpoint, cdm_weights) if cdm_checkpoint is not None else (None, {})
    for option, field, value in (("--strength", "sampling_strength", sampling_strength),
                                 ("--samples", "sampling_samples", sampling_samples)):
        if cdm is not None and value is not None:
            try:  # validates the value; the sampler reads it from the model's config
                cdm.config = dataclasses.replace(cdm.config, **{field: value})
            except InputError as exc:
                raise InputError(f"{option} {value}: {exc}") from exc
    if g_bs is not None and cdm is None:
        raise InputError(f"{gan_checkpoint} has a bone-suppressed generator G(X): pass the CDM checkpoint that "
                         "makes its inputs (--cdm)")
    cdm_config = cdm.config.to_dict() if cdm is not None else None
    steps = int(sampling_steps or (cdm.config.sampling_steps if cdm is not None else DEFAULT_SAMPLING_STEPS))
    info = {"gan_checkpoint": Path(gan_checkpoint).name, "gan_progress": dict(gan_state.get("progress") or {}),
            "cdm_checkpoint": Path(cdm_checkpoint).name if cdm_checkpoint else None, "cdm_progress": cdm_progress,
            **(meta or {})}
    return ModelBundle(cdm=cdm, g_raw=g_raw, g_bs=g_bs, image_size=preset.image_size, sampling_steps=steps,
                       cdm_config=cdm_config, gan_preset=preset.to_dict(), meta=info)


def write_manifest(bundle_path: str | Path, recipe: dict[str, Any], manifest_path: str | Path | None = None) -> Path:
    """Record the bundle's sha256 and size with the recipe that made it (next to it by default)."""
    bundle_path = Path(bundle_path)
    manifest_path = Path(manifest_path) if manifest_path else bundle_path.with_name(MANIFEST_NAME)
    manifest = {"file": bundle_path.name, "sha256": sha256_file(bundle_path),
                "bytes": bundle_path.stat().st_size, **recipe}
    return atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
