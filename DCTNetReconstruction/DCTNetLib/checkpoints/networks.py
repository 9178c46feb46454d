"""Networks from stored state: the one place where the CDM and the GAN's networks are rebuilt from a training
checkpoint (:mod:`.checkpoint`) or a model bundle (:mod:`.bundle`).

Every network is rebuilt from the config recorded beside its weights, first on PyTorch's "meta" device (shapes,
no memory): a config asking for more than :data:`MAX_MODEL_BYTES`, weights that do not fit it exactly (keys,
shapes) and NaN/inf weights are refused with a :class:`~DCTNetLib.errors.WeightsError` naming the file before
the real network is allocated (:func:`build_checked`). The networks come back in eval mode with frozen
parameters, on the CPU.

Example::

    cdm, progress = load_cdm("runs/cdm/best.pt")                  # its EMA weights
    g_raw, g_bs, preset, params_m = load_gan_generators("runs/gan/best.pt")
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..errors import InputError, WeightsError
from ..io.safe_load import load_torch_file
from ..helpers import count_parameters
from ..models.diffusion import CDMConfig, ConditionalDiffusion
from ..models.presets import GANPreset, build_discriminator, build_generator
from .checkpoint import CHECKPOINT_FORMAT, check_checkpoint_state, load_checkpoint

__all__ = [
    "MAX_MODEL_BYTES",
    "MAX_MODULES",
    "CDM_WEIGHTS",
    "build_cdm",
    "build_gan_generator",
    "build_gan_discriminator",
    "check_state_dict",
    "build_checked",
    "frozen",
    "load_cdm",
    "gan_networks_from_state",
    "load_gan_generators",
]

# Limit checked on the recorded architecture before any network is allocated. The shipped small model holds 2.7 M
# parameters (10 MiB); the paper-size preset about 60 M. 2 GiB of float32 parameters and buffers is far above
# any DCT-Net model.
MAX_MODEL_BYTES = 2 * 1024**3
# Sub-modules a recorded architecture may register while it is built (also on the meta device). The largest network
# of the project, the X2CT-GAN baseline's full generator, registers 1,733 (DCT-Net's full generator 811, the CDM
# 417); five thousand leaves almost three times that for any variant, and stops a config asking for 250,000
# convolutions after 5,000 of them (seconds) instead of minutes and gigabytes.
MAX_MODULES = 5_000
CDM_WEIGHTS = ("ema", "online")
# The networks of a GAN checkpoint's "models", with the names its messages use.
GAN_NETWORKS = {"g_raw": "G(Y)", "g_bs": "G(X)", "discriminator": "D"}
_BUILD_ERRORS = (KeyError, TypeError, ValueError, AttributeError, RuntimeError, NotImplementedError)


# ----------------------------------------------------------------------------------------------- builders
def build_cdm(config: dict[str, Any]) -> nn.Module:
    """The :class:`ConditionalDiffusion` of a stored :class:`CDMConfig` dict (untrained weights)."""
    return ConditionalDiffusion(CDMConfig.from_dict(config))


def build_gan_generator(preset: dict[str, Any]) -> nn.Module:
    """A generator of a stored :class:`GANPreset` dict: ``(B, 2, n, n) → (B, 1, n, n, n)`` (untrained)."""
    return build_generator(GANPreset.from_dict(preset).generator)


def build_gan_discriminator(preset: dict[str, Any]) -> nn.Module:
    """The discriminator of a stored :class:`GANPreset` dict (untrained)."""
    return build_discriminator(GANPreset.from_dict(preset).discriminator)


_GAN_BUILDERS = {"g_raw": build_gan_generator, "g_bs": build_gan_generator, "discriminator": build_gan_discriminator}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _kind(dtype: torch.dtype) -> str:
    """A dtype's family: weights may change precision (a bundle stores float16) but never family."""
    if dtype == torch.bool:
        return "bool"
    if dtype.is_complex:
        return "complex"
    return "float" if dtype.is_floating_point else "integer"


def _tensor_problem(value: torch.Tensor, expected: torch.Tensor) -> str | None:
    """What makes a stored tensor unusable where the network has ``expected``, in words (None when it fits)."""
    if value.layout != torch.strided:
        return f"a {str(value.layout).removeprefix('torch.')} tensor (not dense values)"
    if value.is_meta:
        return "a meta tensor (a shape without values)"
    if value.is_quantized:
        return f"a quantized {value.dtype} tensor"
    if _kind(value.dtype) != _kind(expected.dtype):
        return f"{str(value.dtype).removeprefix('torch.')} values where the network has {_kind(expected.dtype)}s"
    return None


def check_state_dict(model: nn.Module, state: Any, what: str, path: str | Path) -> None:
    """Raise :class:`WeightsError` unless ``state`` fits ``model`` exactly (keys, shapes) with finite tensors.

    NaN/inf weights would silently give an all-NaN CT. ``model`` may live on the "meta" device: only its shapes
    are used.
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
    for key in sorted(state):
        problem = _tensor_problem(state[key], own[key])
        if problem:
            raise WeightsError(f"{path}: the {what} weights hold {problem} in {key}; a network cannot compute with "
                               "them (the file was not written by DCTNet, or was altered)")
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise WeightsError(f"{path}: the {what} weights hold {bad} NaN/inf value(s) (in {key}); the model would "
                               "output garbage — the training run diverged or the file is damaged")


def build_checked(build: Callable[[Any], nn.Module], config: Any, weights: Any, what: str,
                  path: str | Path) -> nn.Module:
    """Build one network from its recorded ``config`` and load ``weights`` into it, checking before allocating.

    Args:
        build: config → untrained network (:func:`build_cdm`, :func:`build_gan_generator`, …).
        config: the recorded config (a dict).
        weights: the recorded state dict.
        what: the network's name in messages (``"G(Y)"``, ``"CDM (EMA)"``).
        path: the file, named in messages.

    Raises:
        WeightsError: the config is invalid or too large, or the weights do not fit it or are not finite.
    """
    try:
        with torch.device("meta"), _module_budget(MAX_MODULES):
            shape_only = build(config)
    except _TooManyModules as exc:
        raise WeightsError(f"{path}: the recorded {what} architecture asks for more than {MAX_MODULES} layers "
                           f"(modules), more than any DCT-Net model has; refused before building it") from exc
    except _BUILD_ERRORS as exc:
        raise WeightsError(f"{path}: the recorded {what} configuration is invalid ({_first_line(exc)})") from exc
    nbytes = sum(t.numel() * t.element_size() for t in (*shape_only.parameters(), *shape_only.buffers()))
    if nbytes > MAX_MODEL_BYTES:
        raise WeightsError(f"{path}: the recorded {what} architecture needs {nbytes / 1024**3:.1f} GiB of weights, "
                           f"more than the {MAX_MODEL_BYTES // 1024**3} GiB any DCT-Net model has")
    check_state_dict(shape_only, weights, what, path)
    model = build(config)
    model.load_state_dict(weights)
    return model


class _TooManyModules(Exception):
    """Raised inside a network's constructor once it has created more than its budget of modules."""


@contextlib.contextmanager
def _module_budget(limit: int) -> Iterator[None]:
    """Stop any network built inside the block once it has registered more than ``limit`` sub-modules.

    Building on the meta device allocates no weights, but every layer is still a Python object: a recorded config
    of a few KB asking for 250,000 convolutions takes minutes and gigabytes before its size could be measured.
    """
    count = 0

    def count_one(module: nn.Module, name: str, submodule: nn.Module | None) -> None:
        nonlocal count
        count += 1
        if count > limit:
            raise _TooManyModules(count)

    handle = torch.nn.modules.module.register_module_module_registration_hook(count_one)
    try:
        yield
    finally:
        handle.remove()


def frozen(model: nn.Module | None) -> nn.Module | None:
    """``model`` in eval mode with parameters that need no gradient (``None`` stays ``None``)."""
    if model is not None:
        model.eval().requires_grad_(False)
    return model


# ----------------------------------------------------------------------------------------------- the CDM
def _cdm_record(state: Any, path: Path, weights: str) -> tuple[Any, Any, str, dict[str, Any]]:
    """``(config, state dict, name, progress)`` of the CDM in a loaded file (see :func:`load_cdm`)."""
    if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
        check_checkpoint_state(state, path, kind="cdm")
        progress = dict(state.get("progress") or {})
        ema = (state.get("ema") or {}).get("diffusion")
        models = state.get("models") or {}
        if weights == "ema" and ema:
            return state.get("model_config"), ema.get("model"), "CDM (EMA)", {**progress, "weights": "ema"}
        return state.get("model_config"), models.get("diffusion"), "CDM", {**progress, "weights": "online"}
    if isinstance(state, dict) and "state_dict" in state and ("model_config" in state or "config" in state):
        return state.get("model_config", state.get("config")), state["state_dict"], "CDM", {}
    raise WeightsError(f"{path} holds no CDM weights (expected a `dctnet train-cdm` checkpoint)")


def load_cdm(path: str | Path, weights: str = "ema") -> tuple[nn.Module, dict[str, Any]]:
    """The bone-suppression CDM of a ``dctnet train-cdm`` checkpoint, frozen on the CPU, and its progress.

    Args:
        path: the checkpoint, or a plain ``{"model_config" or "config": CDMConfig dict, "state_dict": weights}``
            file.
        weights: ``"ema"`` (the usual choice; the online weights when the checkpoint has no EMA) or
            ``"online"``. The online weights are the better choice early in a run: an EMA with decay 0.995 every
            10 steps (the small preset) still carries ~80 % of its initial random weights after 400 steps.

    Returns:
        ``(cdm, progress)``: the :class:`ConditionalDiffusion` and the checkpoint's progress record with the
        weights used (``{}`` for a plain file).

    Raises:
        InputError: ``weights`` is not one of :data:`CDM_WEIGHTS`.
        WeightsError: missing, damaged, of another kind, or weights that do not fit their config.
    """
    if weights not in CDM_WEIGHTS:
        raise InputError(f"CDM weights must be one of {CDM_WEIGHTS}, got {weights!r}")
    path = Path(path)
    config, state_dict, what, progress = _cdm_record(load_torch_file(path), path, weights)
    return frozen(build_checked(build_cdm, config, state_dict, what, path)), progress


# ----------------------------------------------------------------------------------------------- the GAN
def gan_networks_from_state(state: Any, path: str | Path, names: tuple[str, ...] = ("g_raw", "g_bs")
                            ) -> tuple[GANPreset, dict[str, nn.Module]]:
    """The preset and the networks ``names`` (of :data:`GAN_NETWORKS`) of a loaded ``dctnet train`` checkpoint.

    A network the checkpoint does not hold (G(X) of a single-branch variant, D of a run without one) is left out
    of the returned dict; G(Y) must be there.

    Raises:
        WeightsError: not a GAN training checkpoint, no G(Y), an invalid preset, or weights that do not fit it.
    """
    check_checkpoint_state(state, path, kind="gan")
    preset, models = state.get("model_config"), state.get("models")
    if not isinstance(preset, dict) or not isinstance(models, dict):
        raise WeightsError(f"{path}: the recorded model configuration is invalid (no model_config or models)")
    if models.get("g_raw") is None:
        raise WeightsError(f"{path} holds no G(Y) weights (models: {sorted(models)})")
    built = {name: frozen(build_checked(_GAN_BUILDERS[name], preset, models[name], GAN_NETWORKS[name], path))
             for name in names if models.get(name) is not None}
    return GANPreset.from_dict(preset), built


def load_gan_generators(path: str | Path, device: torch.device | str = "cpu"
                        ) -> tuple[nn.Module, nn.Module | None, GANPreset, float]:
    """G(Y), G(X) (None for single-branch variants), the preset and the trained parameter count of a checkpoint.

    Args:
        path: ``latest.pt`` / ``best.pt`` of a ``dctnet train`` run.
        device: where to put the generators (frozen, in eval mode).

    Returns:
        ``(g_raw, g_bs, preset, params_m)``; ``params_m`` counts every trained network (G(Y), G(X), D) in
        millions, the paper's "Params (M)" (Table 2).

    Raises:
        WeightsError: not a GAN training checkpoint, or weights that do not fit the stored architecture.
    """
    preset, built = gan_networks_from_state(load_checkpoint(path, kind="gan"), path, tuple(GAN_NETWORKS))
    params_m = sum(count_parameters(module, trainable_only=False) for module in built.values()) / 1e6
    g_bs = built.get("g_bs")
    return built["g_raw"].to(device), g_bs.to(device) if g_bs is not None else None, preset, params_m
