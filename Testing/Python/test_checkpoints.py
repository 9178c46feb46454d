"""DCTNetLib.checkpoints: the training-checkpoint format and the networks rebuilt from it (tiny presets, CPU).

Damaged files (truncated, a flipped weight, NaN weights, the wrong kind) are refused with a WeightsError naming
the file; intact ones give back exactly the stored weights; presets stored in the old layout still load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from DCTNetLib.checkpoints.bundle import bundle_from_checkpoints
from DCTNetLib.checkpoints.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_VERSION, save_checkpoint
from DCTNetLib.checkpoints.networks import load_cdm, load_gan_generators
from DCTNetLib.errors import InputError, WeightsError
from DCTNetLib.helpers import count_parameters
from DCTNetLib.models.diffusion import CDMConfig, ConditionalDiffusion
from DCTNetLib.models.presets import build_discriminator, build_generator, gan_preset


def _record(kind: str, model_config: dict, models: dict, **extra) -> dict:
    return {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_FORMAT_VERSION, "kind": kind,
            "model_config": model_config, "models": models, "progress": {"epoch": 1, "step": 4}, **extra}


@pytest.fixture(scope="module")
def gan_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    preset = gan_preset("tiny")
    models = {"g_raw": build_generator(preset.generator).state_dict(),
              "g_bs": build_generator(preset.generator).state_dict(),
              "discriminator": build_discriminator(preset.discriminator).state_dict()}
    return save_checkpoint(_record("gan", preset.to_dict(), models), tmp_path_factory.mktemp("gan") / "latest.pt")


@pytest.fixture(scope="module")
def cdm_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = CDMConfig.tiny()
    online, ema = ConditionalDiffusion(config).state_dict(), ConditionalDiffusion(config).state_dict()
    state = _record("cdm", config.to_dict(), {"diffusion": online}, ema={"diffusion": {"model": ema, "step": 4}})
    return save_checkpoint(state, tmp_path_factory.mktemp("cdm") / "latest.pt")


def _stored(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_generators_are_the_stored_weights_with_the_trained_parameter_count(gan_checkpoint):
    g_raw, g_bs, preset, params_m = load_gan_generators(gan_checkpoint)
    stored = _stored(gan_checkpoint)["models"]
    assert all(torch.equal(v, stored["g_raw"][k]) for k, v in g_raw.state_dict().items())
    assert all(torch.equal(v, stored["g_bs"][k]) for k, v in g_bs.state_dict().items())
    assert not g_raw.training and not any(p.requires_grad for p in g_raw.parameters())
    expected = 2 * count_parameters(build_generator(preset.generator)) + \
        count_parameters(build_discriminator(preset.discriminator))
    assert params_m == pytest.approx(expected / 1e6) and preset == gan_preset("tiny")


@pytest.mark.parametrize("weights, source", [("ema", "ema"), ("online", "models")])
def test_cdm_gets_the_chosen_weights(cdm_checkpoint, weights, source):
    cdm, progress = load_cdm(cdm_checkpoint, weights)
    stored = _stored(cdm_checkpoint)
    expected = stored["ema"]["diffusion"]["model"] if source == "ema" else stored["models"]["diffusion"]
    assert all(torch.equal(v, expected[k]) for k, v in cdm.state_dict().items())
    assert progress == {"epoch": 1, "step": 4, "weights": weights}
    with pytest.raises(InputError, match="CDM weights must be one of"):
        load_cdm(cdm_checkpoint, "average")


def test_cdm_from_a_plain_config_and_state_dict_file(cdm_checkpoint, tmp_path):
    stored = _stored(cdm_checkpoint)
    plain = tmp_path / "plain.pt"
    torch.save({"config": stored["model_config"], "state_dict": stored["models"]["diffusion"]}, plain)
    cdm, progress = load_cdm(plain)
    assert progress == {} and cdm.config == CDMConfig.tiny()


@pytest.mark.parametrize("loader", [load_cdm, lambda p: load_gan_generators(p)])
def test_truncated_checkpoint_is_refused_naming_the_file(cdm_checkpoint, gan_checkpoint, tmp_path, loader):
    source = cdm_checkpoint if loader is load_cdm else gan_checkpoint
    cut = tmp_path / "cut.pt"
    cut.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(WeightsError, match=r"cut\.pt.*truncated or corrupt"):
        loader(cut)


def test_tampered_weights_are_refused_naming_the_network(gan_checkpoint, cdm_checkpoint, tmp_path):
    state = _stored(gan_checkpoint)
    key = next(k for k, v in state["models"]["g_bs"].items() if v.is_floating_point())
    state["models"]["g_bs"][key][(0,) * state["models"]["g_bs"][key].ndim] = float("nan")
    nan = tmp_path / "nan.pt"
    torch.save(state, nan)  # as a damaged file or another tool would hold it: save_checkpoint refuses NaN weights
    with pytest.raises(WeightsError, match=rf"nan\.pt: the G\(X\) weights hold 1 NaN/inf value.*{key}"):
        load_gan_generators(nan)
    with pytest.raises(WeightsError, match=r"nan\.pt: the G\(X\) weights hold"):
        bundle_from_checkpoints(nan, cdm_checkpoint)  # export reads the same networks the same way
    state = _stored(gan_checkpoint)
    state["models"]["g_raw"][key] = state["models"]["g_raw"][key][..., :1]
    with pytest.raises(WeightsError, match=r"shape\.pt: the G\(Y\) weights do not match the architecture"):
        load_gan_generators(save_checkpoint(state, tmp_path / "shape.pt"))


def test_a_checkpoint_of_the_other_kind_is_refused(gan_checkpoint, cdm_checkpoint):
    with pytest.raises(WeightsError, match=rf"{gan_checkpoint} is a 'gan' checkpoint, expected 'cdm'"):
        load_cdm(gan_checkpoint)
    with pytest.raises(WeightsError, match=rf"{cdm_checkpoint} is a 'cdm' checkpoint, expected 'gan'"):
        load_gan_generators(cdm_checkpoint)


def test_gan_checkpoint_with_the_old_preset_name_key_loads_the_same_networks(gan_checkpoint, tmp_path):
    """Checkpoints written before variant/size were preset fields store "name": "VARIANT@SIZE" (or "tiny")."""
    state = _stored(gan_checkpoint)
    old = {k: v for k, v in state["model_config"].items() if k not in ("variant", "size")}
    state["model_config"] = {"name": "tiny", **old}
    g_raw, _, preset, _ = load_gan_generators(save_checkpoint(state, tmp_path / "old.pt"))
    assert (preset.variant, preset.size) == ("dctnet", "tiny")
    assert all(torch.equal(v, state["models"]["g_raw"][k]) for k, v in g_raw.state_dict().items())


def test_bundle_from_checkpoints_holds_the_current_preset_layout(gan_checkpoint, cdm_checkpoint):
    bundle = bundle_from_checkpoints(gan_checkpoint, cdm_checkpoint, sampling_strength=0.5)
    assert bundle.gan_preset["variant"] == "dctnet" and "name" not in bundle.gan_preset
    assert bundle.cdm.config.sampling_strength == bundle.cdm_config["sampling_strength"] == 0.5
    assert bundle.image_size == CDMConfig.tiny().image_size and bundle.meta["cdm_progress"]["weights"] == "ema"
    with pytest.raises(InputError, match="--strength 1.5"):
        bundle_from_checkpoints(gan_checkpoint, cdm_checkpoint, sampling_strength=1.5)
    averaged = bundle_from_checkpoints(gan_checkpoint, cdm_checkpoint, sampling_samples=4)
    assert averaged.cdm.config.sampling_samples == averaged.cdm_config["sampling_samples"] == 4
    with pytest.raises(InputError, match="--samples 0"):
        bundle_from_checkpoints(gan_checkpoint, cdm_checkpoint, sampling_samples=0)
