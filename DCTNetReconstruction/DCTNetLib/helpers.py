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


def divisible_by(numerator: int, denominator: int) -> bool:
    return (numerator % denominator) == 0
