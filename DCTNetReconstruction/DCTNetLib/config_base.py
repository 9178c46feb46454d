"""Strict dataclass configs: the one (de)serialiser of every config stored in checkpoints, bundles and run folders.

A config is a dataclass that inherits :class:`ConfigBase`::

    @dataclass(frozen=True)
    class BlockConfig(ConfigBase):
        config_name: ClassVar[str] = "block config"   # named in error messages
        widths: tuple[int, ...] = (8, 16)
        dropout: float = 0.0

    BlockConfig.from_dict({"widths": [8, 16, 32]})     # BlockConfig(widths=(8, 16, 32), dropout=0.0)
    BlockConfig.from_dict({"width": 8})                # InputError: block config: unknown key 'width'; valid keys: …
    BlockConfig(dropout="0.1")                         # InputError: block config: dropout expects float, got '0.1'

- Every field is checked against its annotation when the dataclass is built (directly or by :meth:`from_dict`):
  ``bool``, ``int``, ``float`` (an ``int`` is widened), ``str``, ``tuple[X, ...]`` / ``tuple[X, Y]`` (a JSON
  list becomes a tuple), ``dict``, ``Any``, ``X | None`` and nested :class:`ConfigBase` dataclasses (a dict
  becomes one). A value of another type raises :class:`~DCTNetLib.errors.InputError` naming the key.
- :meth:`ConfigBase.to_dict` is plain JSON (tuples become lists, nested configs dicts); ``from_dict(to_dict())``
  gives an equal config.
- Layouts written by older versions: :meth:`ConfigBase.upgrade` is the one place where a config class accepts an
  old key (it rewrites the stored dict to the current layout before the keys are checked).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, ClassVar, TypeVar

from .errors import InputError

__all__ = ["ConfigBase"]

C = TypeVar("C", bound="ConfigBase")


class _Mismatch(Exception):
    """A value does not fit an annotation (turned into an :class:`InputError` naming the key)."""


@lru_cache(maxsize=None)
def _field_types(cls: type) -> dict[str, Any]:
    """``{field name: resolved annotation}`` of dataclass ``cls``, in declaration order."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _type_name(annotation: Any) -> str:
    """``int``, ``tuple[int, ...]``, ``float | None``: the annotation as it is written."""
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _convert_tuple(value: Any, args: tuple[Any, ...], what: str) -> tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise _Mismatch
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_convert(item, args[0], what) for item in value)
    if len(value) != len(args):
        raise _Mismatch
    return tuple(_convert(item, arg, what) for item, arg in zip(value, args))


def _convert_union(value: Any, args: tuple[Any, ...], what: str) -> Any:
    if value is None and type(None) in args:
        return None
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _convert(value, arg, what)
        except _Mismatch:
            continue
    raise _Mismatch


def _convert(value: Any, annotation: Any, what: str) -> Any:
    """``value`` as an instance of ``annotation`` (see the module docstring); raises :class:`_Mismatch`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin is typing.Union or origin is types.UnionType:
        return _convert_union(value, args, what)
    if origin is tuple:
        return _convert_tuple(value, args, what)
    if annotation is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch
        return dict(value)
    if isinstance(annotation, type) and issubclass(annotation, ConfigBase):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, Mapping):
            raise _Mismatch
        return annotation.from_dict(value, source=what)
    if annotation is bool:
        if not isinstance(value, bool):
            raise _Mismatch
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Mismatch
        return float(value)
    if annotation in (int, str):
        if isinstance(value, bool) or not isinstance(value, annotation):
            raise _Mismatch
        return value
    raise TypeError(f"{what}: ConfigBase cannot check fields annotated {_type_name(annotation)}")


def _plain(value: Any) -> Any:
    """JSON-ready copy: configs → dicts, tuples → lists, containers copied."""
    if isinstance(value, ConfigBase):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


class ConfigBase:
    """Base of the project's dataclass configs (see the module docstring).

    Subclasses are dataclasses (frozen or not); one that defines ``__post_init__`` calls
    ``super().__post_init__()`` first, so its own checks see converted values.
    """

    config_name: ClassVar[str] = "config"

    def __post_init__(self) -> None:
        for name, annotation in _field_types(type(self)).items():
            value = getattr(self, name)
            converted = self._checked(name, value, annotation, self.config_name)
            if converted is not value:
                object.__setattr__(self, name, converted)  # works for frozen dataclasses too

    @staticmethod
    def _checked(name: str, value: Any, annotation: Any, what: str) -> Any:
        try:
            return _convert(value, annotation, what)
        except _Mismatch:
            raise InputError(f"{what}: {name} expects {_type_name(annotation)}, got {value!r}") from None

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        """``{key: annotation}`` of the config, in declaration order (annotations resolved to types)."""
        return dict(_field_types(cls))

    @classmethod
    def field_names(cls) -> list[str]:
        """The config's keys, in declaration order."""
        return list(_field_types(cls))

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict of every field (tuples become lists, nested configs dicts)."""
        return {name: _plain(getattr(self, name)) for name in _field_types(type(self))}

    @classmethod
    def upgrade(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Rewrite a dict saved by an older version to the current layout (default: unchanged).

        The one place where a config class accepts an old key: a subclass overrides it and documents which
        versions wrote what. It receives a copy and may change it.
        """
        return data

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any], *, source: str | None = None) -> C:
        """Rebuild from :meth:`to_dict` output (or an older layout :meth:`upgrade` knows).

        Args:
            data: ``{key: value}``; values of the field types (JSON lists for tuples, dicts for nested configs).
            source: where ``data`` comes from (a file, ``--set``), named before the config in error messages.

        Raises:
            InputError: ``data`` is not a mapping, has a key that is not a field (the message lists the valid
                ones), lacks a field that has no default, holds a value of the wrong type (the message names the
                key), or the config's own checks fail.
        """
        what = f"{source}: {cls.config_name}" if source else cls.config_name
        if not isinstance(data, Mapping):
            raise InputError(f"{what}: expected a mapping of keys, got {type(data).__name__}")
        data = cls.upgrade(dict(data))
        types_ = _field_types(cls)
        unknown = sorted(str(key) for key in set(data) - set(types_))
        if unknown:
            raise InputError(f"{what}: unknown key{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(map(repr, unknown))}; valid keys: {', '.join(types_)}")
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in data
                   and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise InputError(f"{what}: missing key{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}")
        return cls(**{key: cls._checked(key, value, types_[key], what) for key, value in data.items()})
