"""Tiny helper vocabulary shared across the package (lucidrains style, defined once)."""

from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

T = TypeVar("T")


def exists(value: Any) -> bool:
    """True when ``value`` is not None."""
    return value is not None


def default(value: T | None, fallback: T | Callable[[], T]) -> T:
    """``value`` if it exists, else ``fallback`` (called lazily when callable)."""
    if exists(value):
        return value  # type: ignore[return-value]
    return fallback() if callable(fallback) else fallback


def cast_tuple(value: T | Sequence[T], length: int = 1) -> tuple[T, ...]:
    """Return ``value`` as a tuple, repeating a scalar ``length`` times."""
    if isinstance(value, tuple):
        return value
    if isinstance(value, list):
        return tuple(value)
    return (value,) * length  # type: ignore[return-value]


def count_parameters(*modules: Any, trainable_only: bool = True) -> int:
    """Number of parameters of torch ``modules`` together, each shared parameter counted once.

    Args:
        modules: ``torch.nn.Module`` objects (on any device, "meta" included).
        trainable_only: count only parameters with ``requires_grad``. Defaults to True.
    """
    seen: dict[int, int] = {}
    for module in modules:
        for parameter in module.parameters():
            if parameter.requires_grad or not trainable_only:
                seen[id(parameter)] = parameter.numel()
    return sum(seen.values())
