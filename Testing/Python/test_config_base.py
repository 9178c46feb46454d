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


def test_a_field_without_default_must_be_present():
    @dataclass(frozen=True, kw_only=True)
    class Required(ConfigBase):
        size: str
        rate: float = 1.0

    assert Required.from_dict({"size": "small"}) == Required(size="small")
    with pytest.raises(InputError, match="config: missing key 'size'"):
        Required.from_dict({"rate": 2.0})


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


# ---------------------------------------------------------------------------------------------- the project's configs
def test_every_project_config_round_trips_and_refuses_unknown_keys():
    from DCTNetLib.models.diffusion import CDMConfig
    from DCTNetLib.models.presets import gan_preset
    from DCTNetLib.training.config import CDMTrainConfig, GANTrainConfig

    configs = [gan_preset("ablation-no-perceptual@tiny"), gan_preset("small").generator, CDMConfig.small(),
               GANTrainConfig(size="tiny", variant="x2ct-baseline", model={"fusion_rank": 8}), CDMTrainConfig()]
    for config in configs:
        data = json.loads(json.dumps(config.to_dict()))
        assert type(config).from_dict(data) == config
        with pytest.raises(InputError, match="unknown key 'bogus'"):
            type(config).from_dict({**data, "bogus": 1})


@pytest.mark.parametrize("build, key", [
    (lambda: __import__("DCTNetLib.models.diffusion", fromlist=["CDMConfig"]).CDMConfig(channels=(8, "16")),
     "CDM config: channels expects"),
    (lambda: __import__("DCTNetLib.models.presets", fromlist=["gan_preset"]).gan_preset("tiny", fusion_rank="8"),
     "generator config: fusion_rank expects int | None"),
    (lambda: __import__("DCTNetLib.training.config", fromlist=["resolve_config"]).resolve_config(
        __import__("DCTNetLib.training.config", fromlist=["GANTrainConfig"]).GANTrainConfig, set_pairs=["lr=fast"]),
     "--set: training config: lr expects float, got 'fast'"),
])
def test_project_configs_refuse_a_wrong_type_naming_the_key(build, key):
    with pytest.raises(InputError, match=key.replace("|", r"\|")):
        build()


def test_shipped_bundle_preset_with_the_old_name_key_loads_as_before():
    """Bundles up to v2 stored their GAN preset as {"name": "dctnet@small", …}; the shipped bundle (v3 on) stores
    variant and size. Both layouts read as the same preset: the small one, with the shipped model's own settings
    (v7: the product path and the bone terms) on top."""
    from DCTNetLib.checkpoints.bundle import default_weights_path
    from DCTNetLib.io.safe_load import load_torch_file
    from DCTNetLib.models.presets import GANPreset, gan_preset

    stored = load_torch_file(default_weights_path())["generator"]["preset"]
    assert (stored["variant"], stored["size"]) == ("dctnet", "small") and "name" not in stored
    old_layout = {**{k: v for k, v in stored.items() if k not in ("variant", "size")}, "name": "dctnet@small"}
    preset = GANPreset.from_dict(old_layout)
    assert (preset.variant, preset.size) == ("dctnet", "small") and preset == GANPreset.from_dict(stored)
    assert preset.discriminator == gan_preset("small").discriminator
    assert preset.generator.decoder_channels == gan_preset("small").generator.decoder_channels
    assert GANPreset.from_dict({**old_layout, "name": "x2ct-baseline"}).size == "full"  # a bare ablation was @full
    with pytest.raises(InputError, match="unknown GAN preset 'bogus'"):
        GANPreset.from_dict({**old_layout, "name": "bogus"})


def test_cdm_config_without_objective_was_saved_before_v_prediction():
    from DCTNetLib.models.diffusion import CDMConfig

    legacy = CDMConfig.small().to_dict()
    del legacy["objective"]
    assert CDMConfig.from_dict(legacy).objective == "eps" and CDMConfig.small().objective == "v"


def test_training_config_keys_of_older_runs_are_read_as_size_and_variant(tmp_path):
    """Runs written before size/variant were fields: config.json and --set used "preset" and model.variant."""
    from DCTNetLib.training.config import (CDMTrainConfig, GANTrainConfig, check_config_compatible, config_to_dict,
                                           resolve_config)

    config = resolve_config(GANTrainConfig, flags={"size": "tiny", "variant": "ablation-no-perceptual",
                                                   "model": {"fusion_rank": 8}})
    new = config_to_dict(config)
    old = {k: v for k, v in new.items() if k not in ("size", "variant")}  # what that run's config.json holds
    old.update(preset="tiny", model={"variant": "ablation-no-perceptual", "fusion_rank": 8})
    assert resolve_config(GANTrainConfig, saved=old) == config
    assert resolve_config(GANTrainConfig, set_pairs=["preset=small", "model.variant=x2ct-baseline"]).variant \
        == "x2ct-baseline"
    assert "preset" not in new and "variant" not in new["model"]
    check_config_compatible(old, config, tmp_path / "latest.pt")  # resuming such a run: nothing differs
    other = resolve_config(GANTrainConfig, flags={"size": "tiny", "model": {"fusion_rank": 8}})
    with pytest.raises(InputError, match="variant: 'ablation-no-perceptual' \\(checkpoint\\) → 'dctnet' \\(now\\)"):
        check_config_compatible(old, other, tmp_path / "latest.pt")
    with pytest.raises(InputError, match="unknown training config key 'variant'"):
        resolve_config(CDMTrainConfig, saved={"model": {"variant": "dctnet"}})  # the CDM never had one
