"""Complete, atomic training checkpoints: ``<run_dir>/latest.pt`` and ``<run_dir>/best.pt``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (so it loads with
``torch.load(weights_only=True)``)::

    format            "dctnet-training-checkpoint"
    format_version    1
    kind              "cdm" | "gan"
    version           DCTNetLib.__version__ that wrote it
    config            the resolved training config (dict)
    model_config      the model's config (dict), enough to rebuild the architecture
    models            {name: state_dict}           e.g. {"diffusion": …} or {"generators": …, "discriminator": …}
    ema               {name: state_dict}           CDM only
    optimizers        {name: state_dict}
    schedulers        {name: state_dict}
    scalers           {name: GradScaler state_dict}
    rng               [per-rank RNG states]        torch / numpy / python / cuda (see engine.capture_rng_state)
    progress          {epoch, step, epoch_step, best_metric, best_epoch, world_size, samples_done}

Writes go through :func:`DCTNetLib.io.atomic.atomic_torch_save` after a free-space check, so an interruption or
a full disk leaves the previous file intact. Reads go through :func:`DCTNetLib.io.safe_load.load_torch_file`
(``weights_only=True``: a file that would run code, or a truncated or corrupt one, is a
:class:`~DCTNetLib.errors.WeightsError` naming it) and then check the format and kind. Resuming compares the
stored config with the current one (:func:`DCTNetLib.training.config.check_config_compatible`); the networks are
rebuilt from ``model_config`` by :mod:`.networks`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, TrainingDiverged, WeightsError
from ..io.atomic import atomic_torch_save, check_free_space
from ..io.safe_load import load_torch_file

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_VERSION",
    "LATEST",
    "BEST",
    "estimate_nbytes",
    "non_finite_models",
    "save_checkpoint",
    "resolve_checkpoint",
    "load_checkpoint",
    "check_checkpoint_state",
    "recorded_int",
    "CheckpointManager",
]

CHECKPOINT_FORMAT = "dctnet-training-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
LATEST = "latest.pt"
BEST = "best.pt"

# Head-room on top of the estimated size: pickle framing, and the old file that stays until os.replace.
_SPACE_FACTOR = 2
_SPACE_MARGIN_BYTES = 16 * 2**20


def estimate_nbytes(obj: Any) -> int:
    """Bytes of all tensors inside ``obj`` (nested dicts/lists/tuples): a lower bound of its saved size."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(estimate_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(estimate_nbytes(v) for v in obj)
    return 0


def non_finite_models(models: dict[str, Any]) -> list[str]:
    """Names of the state dicts in ``models`` (name → state dict) holding a NaN/inf floating-point tensor."""
    return [name for name, state in models.items()
            if any(torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())
                   for v in (state or {}).values())]


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically after checking there is room for it.

    Raises:
        TrainingDiverged: a network of ``state["models"]`` holds NaN/inf (nothing is written).
        OutputError: not enough free space (checked first: nothing is written), or the write failed; the
            previous file at ``path`` is intact either way.
    """
    path = Path(path)
    diverged = non_finite_models(state.get("models") or {})
    if diverged:
        kept = f"{path} keeps the last finite state" if path.is_file() else "nothing was saved"
        raise TrainingDiverged(f"training diverged: the weights of {', '.join(diverged)} are NaN/inf (learning rate "
                               f"too high?); refusing to save them as {path}: {kept}")
    check_free_space(path.parent, _SPACE_FACTOR * estimate_nbytes(state) + _SPACE_MARGIN_BYTES)
    return atomic_torch_save(state, path)


def resolve_checkpoint(path: str | Path) -> Path:
    """``path`` itself when it is a file; for a run folder its ``best.pt``, else its ``latest.pt``.

    Raises:
        InputError: no such file, or a folder holding neither checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        for name in (BEST, LATEST):
            if (path / name).is_file():
                return path / name
        raise InputError(f"run folder {path} holds no {BEST} or {LATEST} (was the run started?)")
    if not path.is_file():
        hint = ""
        if path.name in (BEST, LATEST) and (path.parent / LATEST).is_file():
            hint = f"; the run folder {path.parent} has {LATEST}: pass the folder to use its best or latest"
        raise InputError(f"checkpoint not found: {path}{hint}")
    return path


def load_checkpoint(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Load a training checkpoint with ``weights_only=True`` and check its format (and ``kind`` if given).

    Raises:
        WeightsError: the file is missing, truncated, not a training checkpoint, or of another kind.
    """
    path = Path(path)
    try:
        state = load_torch_file(path)  # missing, a folder, a FIFO or a device: one line, never opened
    except WeightsError:
        raise
    except Exception as exc:  # noqa: BLE001 — any unpickling problem means a damaged or foreign file
        raise WeightsError(f"cannot read checkpoint {path} (truncated or not a DCTNet checkpoint): {exc}") from exc
    return check_checkpoint_state(state, path, kind)


def check_checkpoint_state(state: Any, path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Check an already loaded object is a training checkpoint of a format this code reads (and of ``kind``).

    Raises:
        WeightsError: not a DCTNet training checkpoint, a newer format, or another kind.
    """
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(f"{path} is not a DCTNet training checkpoint (no format={CHECKPOINT_FORMAT!r})")
    if recorded_int(state, "format_version", 0, path) > CHECKPOINT_FORMAT_VERSION:
        raise WeightsError(f"{path} has checkpoint format {state.get('format_version')}, newer than this "
                           f"DCTNet reads ({CHECKPOINT_FORMAT_VERSION}); update DCTNet")
    if kind is not None and state.get("kind") != kind:
        raise WeightsError(f"{path} is a {state.get('kind')!r} checkpoint, expected {kind!r}")
    return state


def recorded_int(record: Any, key: str, default: int, path: str | Path) -> int:
    """An integer field of a loaded checkpoint or bundle (``default`` when absent, or when ``record`` is no dict).

    Raises:
        WeightsError: the value is not a whole number (text, NaN, infinite, fractional, a bool).
    """
    value = record.get(key, default) if isinstance(record, dict) else default
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or value != value
            or abs(value) == float("inf") or value != int(value)):
        raise WeightsError(f"{path}: recorded {key} is {value!r}, not a whole number")
    return int(value)


class CheckpointManager:
    """Keeps ``latest.pt`` (every N steps and at epoch ends) and ``best.pt`` (best validation metric) in a run.

    Args:
        run_dir: the run folder (must exist).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)

    @property
    def latest_path(self) -> Path:
        return self.run_dir / LATEST

    @property
    def best_path(self) -> Path:
        return self.run_dir / BEST

    def save(self, state: dict[str, Any], best: bool = False) -> list[Path]:
        """Write ``latest.pt`` and, when ``best``, ``best.pt`` too; returns the paths written."""
        written = [save_checkpoint(state, self.latest_path)]
        if best:
            written.append(save_checkpoint(state, self.best_path))
        return written

    def load_latest(self, kind: str | None = None) -> dict[str, Any]:
        """The state in ``latest.pt`` (see :func:`load_checkpoint`)."""
        return load_checkpoint(self.latest_path, kind)
