"""The strict config base (DCTNetLib.config_base): unknown keys, wrong types, round trips, nested configs, and the
upgrade hook through which a config accepts a key written by an older version."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from DCTNetLib.config_base import ConfigBase
from DCTNetLib.errors import InputError


@dataclass(frozen=True)
class Inner(ConfigBase):
    config_name: ClassVar[str] = "inner config"

    widths: tuple[int, ...] = (8, 16)
    rate: float = 0.5
    flags: tuple[bool, ...] | None = None


@dataclass(frozen=True)
class Outer(ConfigBase):
    config_name: ClassVar[str] = "outer config"

    name: str = "outer"
    inner: Inner = field(default_factory=Inner)
    rank: int | None = 4
    betas: tuple[float, float] = (0.5, 0.999)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def upgrade(cls, data: dict[str, Any]) -> dict[str, Any]:
        if "title" in data:  # the old spelling of "name"
            data["name"] = data.pop("title")
        return data


def test_round_trip_through_json_is_equal_and_plain():
    config = Outer(name="x", inner=Inner(widths=(1, 2, 3), rate=2, flags=(True, False)), rank=None,
                   extra={"k": [1, 2]})
    data = config.to_dict()
    assert data["inner"] == {"widths": [1, 2, 3], "rate": 2.0, "flags": [True, False]}
    assert data["betas"] == [0.5, 0.999] and data["rank"] is None
    assert Outer.from_dict(json.loads(json.dumps(data))) == config
    assert isinstance(Outer.from_dict(data).inner.widths, tuple)


def test_unknown_key_is_refused_naming_it_and_the_valid_ones():
    with pytest.raises(InputError) as info:
        Outer.from_dict({"name": "x", "nmae": "y"})
    message = str(info.value)
    assert message.startswith("outer config: unknown key 'nmae'") and "valid keys: name, inner, rank" in message


def test_unknown_key_of_a_nested_config_is_refused():
    with pytest.raises(InputError, match="inner config: unknown key 'width'"):
        Outer.from_dict({"inner": {"width": 3}})


@pytest.mark.parametrize("data, key", [
    ({"name": 3}, "name expects str"),
    ({"rank": 2.5}, "rank expects int | None"),
    ({"rank": True}, "rank expects int | None"),
    ({"betas": [0.5]}, "betas expects tuple[float, float]"),
    ({"betas": "0.5,0.9"}, "betas expects tuple[float, float]"),
    ({"inner": {"widths": [8, "16"]}}, "widths expects tuple[int, ...]"),
    ({"inner": {"rate": "fast"}}, "rate expects float"),
    ({"inner": {"flags": [1, 0]}}, "flags expects tuple[bool, ...] | None"),
    ({"inner": 3}, "inner expects Inner"),
    ({"extra": [1]}, "extra expects dict"),
])
def test_wrong_type_is_an_input_error_naming_the_key(data, key):
    with pytest.raises(InputError, match=key.replace("[", r"\[").replace("|", r"\|")):
        Outer.from_dict(data)


def test_direct_construction_is_checked_too():
    with pytest.raises(InputError, match="inner config: rate expects float, got '0.1'"):
        Inner(rate="0.1")
    assert Inner(widths=[4, 8]).widths == (4, 8)  # a list from a caller is stored as the annotated tuple


def test_source_is_named_before_the_config():
    with pytest.raises(InputError, match="^run.json: outer config: unknown key"):
        Outer.from_dict({"bogus": 1}, source="run.json")
    with pytest.raises(InputError, match="expected a mapping"):
        Outer.from_dict(["name"])


def test_old_key_is_accepted_through_the_upgrade_hook_only():
    assert Outer.from_dict({"title": "legacy"}).name == "legacy"
    assert "title" not in Outer.from_dict({"title": "legacy"}).to_dict()
    with pytest.raises(InputError, match="unknown key 'title'"):
        Inner.from_dict({"title": "legacy"})  # a class without that history refuses it
