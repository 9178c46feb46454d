"""Issue 5, weights are data: checkpoints and weights files never run code, and damaged, tampered or mismatched
ones are refused with a message naming the file and the problem (training checkpoints, io.safe_load, and
``dctnet reconstruct --weights``)."""

from __future__ import annotations

import importlib.util
import pickle
import sys
from pathlib import Path

import pytest
import torch

from DCTNetLib import cli
from DCTNetLib.commands import reconstruct as _reconstruct_command  # noqa: F401  (a broken import fails here)
from DCTNetLib.errors import InputError, WeightsError
from DCTNetLib.io.safe_load import load_torch_file
from DCTNetLib.io.safe_load import load_numpy_pickle, sha256_file
from DCTNetLib.checkpoints.checkpoint import load_checkpoint, save_checkpoint
from DCTNetLib.training.config import TrainConfig, check_config_compatible

CORPUS_SCRIPT = Path(__file__).resolve().parents[2] / "Testing" / "Data" / "bad_inputs" / "make_corpus.py"


def _corpus_module():
    name = "dctnet_bad_input_corpus"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, CORPUS_SCRIPT)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


mc = _corpus_module()
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on protocol ≥ 3 pickles


def _training_state(channels: int = 16) -> dict:
    generator = torch.Generator().manual_seed(0)
    return {
        "format": "dctnet-training-checkpoint", "format_version": 1, "kind": "gan",
        "config": {"lr": 2e-4, "epochs": 10, "model": {"channels": channels, "depth": 4}},
        "models": {"generator": {"conv.weight": torch.randn(channels, 2, 3, 3, generator=generator)}},
        "progress": {"epoch": 3, "step": 120},
    }


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    return save_checkpoint(_training_state(), tmp_path / "latest.pt")


def test_checkpoint_round_trip_is_exact(checkpoint):
    state = load_checkpoint(checkpoint, kind="gan")
    torch.testing.assert_close(state["models"]["generator"]["conv.weight"],
                               _training_state()["models"]["generator"]["conv.weight"], rtol=0, atol=0)
    assert state["progress"] == {"epoch": 3, "step": 120}


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, -1])
def test_truncated_checkpoint_is_a_weights_error_naming_the_file(checkpoint, keep):
    data = checkpoint.read_bytes()
    cut = len(data) - 1 if keep == -1 else int(len(data) * keep)
    checkpoint.write_bytes(data[:cut])
    for loader in (load_checkpoint, load_torch_file):
        with pytest.raises(WeightsError) as info:
            loader(checkpoint)
        message = str(info.value)
        assert str(checkpoint) in message and "\n" not in message
        assert "truncated" in message or "corrupt" in message, message


def test_tampered_checkpoint_fails_its_sha256(checkpoint):
    digest = sha256_file(checkpoint)
    assert load_torch_file(checkpoint, expected_sha256=digest.upper())["kind"] == "gan"
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 3] ^= 0x01  # one bit
    checkpoint.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=rf"sha256 mismatch for {checkpoint}: expected {digest}"):
        load_torch_file(checkpoint, expected_sha256=digest)


def test_sha256_is_checked_before_unpickling(tmp_path):
    """A hostile file with a wrong digest is refused on the digest: its pickle is never opened."""
    marker = tmp_path / "ran"
    hostile = tmp_path / "model.pt"
    torch.save({"w": mc.CreatesMarkerWhenUnpickled(str(marker))}, hostile)
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        load_torch_file(hostile, expected_sha256="0" * 64)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_code_in_any_pickle_protocol_is_refused_without_running(tmp_path, protocol):
    marker = tmp_path / "ran"
    payload = {"format": "dctnet-training-checkpoint", "kind": "gan",
               "optimizers": {"adam": [mc.CreatesMarkerWhenUnpickled(str(marker))]}}  # nested deep
    torch_file, pickle_file = tmp_path / "ckpt.pt", tmp_path / "weights.pkl"
    torch.save(payload, torch_file, pickle_protocol=protocol)
    pickle_file.write_bytes(pickle.dumps(payload, protocol=protocol))
    for loader, path in [(load_checkpoint, torch_file), (load_torch_file, torch_file),
                         (load_checkpoint, pickle_file), (load_numpy_pickle, pickle_file)]:
        with pytest.raises(WeightsError, match=f"refusing to load {path}"):
            loader(path)
    assert not marker.exists()
    pickle.loads(pickle_file.read_bytes())  # and the payload is live: unsafe loading does run it
    assert marker.exists()


def test_config_mismatch_names_the_differing_key(checkpoint):
    state = load_checkpoint(checkpoint, kind="gan")
    current = TrainConfig(**_training_state(channels=32)["config"])
    with pytest.raises(InputError) as info:
        check_config_compatible(state["config"], current, checkpoint)
    message = str(info.value)
    assert str(checkpoint) in message
    assert "model.channels: 16 (checkpoint) → 32 (now)" in message
    assert "depth" not in message and "lr" not in message  # only what differs
    runtime_only = TrainConfig(**{**state["config"], "epochs": 99})  # more epochs is a legal change on resume
    check_config_compatible(state["config"], runtime_only, checkpoint)


def test_checkpoint_of_another_kind_or_format(checkpoint, tmp_path):
    with pytest.raises(WeightsError, match=rf"{checkpoint} is a 'gan' checkpoint, expected 'cdm'"):
        load_checkpoint(checkpoint, kind="cdm")
    newer = save_checkpoint({**_training_state(), "format_version": 99}, tmp_path / "newer.pt")
    with pytest.raises(WeightsError, match="newer than this DCTNet reads"):
        load_checkpoint(newer)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("weights_corpus")
    mc.make_corpus(folder)
    return folder


@pytest.mark.parametrize("name", ["w_code.pt", "w_code.pkl", "w_truncated.pt", "w_text.pt", "w_missing.pt",
                                  "w_not_checkpoint.pt"])
def test_reconstruct_cli_refuses_bad_weights(name, corpus, tmp_path, capsys):
    capsys.readouterr()
    code = cli.main(["reconstruct", "--pa", str(corpus / "good_pa.png"), "--lat", str(corpus / "good_lat.png"),
                     "--output", str(tmp_path / "ct.nii.gz"), "--weights", str(corpus / name), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and name in err, err
    assert not (corpus / mc.MARKER_NAME).exists()
    assert not (tmp_path / "ct.nii.gz").exists()


def test_checkpoint_save_checks_free_space_and_keeps_the_old_file(checkpoint, monkeypatch):
    import shutil
    from collections import namedtuple

    from DCTNetLib.errors import OutputError

    before = checkpoint.read_bytes()
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9, 1024))
    with pytest.raises(OutputError, match=rf"not enough free disk space: need .*, have 1\.0 KiB at {checkpoint.parent}"):
        save_checkpoint(_training_state(channels=64), checkpoint)
    assert checkpoint.read_bytes() == before
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == [checkpoint.name]  # no temporary file


# ------------------------------------------------------------------------------------------------ issue 21
_WRONG_KIND = {
    "int64": lambda v: v.round().to(torch.int64),
    "bool": lambda v: v > 0,
    "sparse": lambda v: v.to_sparse(),
    "meta": lambda v: torch.empty_like(v, device="meta"),
    "quantized": lambda v: torch.quantize_per_tensor(v, 0.1, 0, torch.qint8),
}


@pytest.mark.parametrize("kind", sorted(_WRONG_KIND))
@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")  # deprecated; building the bad file only
def test_weights_of_the_right_shapes_but_the_wrong_kind_are_refused(tiny_bundle_path, tmp_path, kind, capsys):
    """int64 or bool weights of the right shapes gave a constant volume with exit 0; sparse, meta and quantized
    tensors a traceback. Each is now one line naming the tensor and the file, from the library and the command."""
    from DCTNetLib.checkpoints.bundle import load_model_bundle

    state = torch.load(tiny_bundle_path, weights_only=True)
    load_model_bundle(tiny_bundle_path)  # control: the unaltered bundle loads
    weights = state["generator"]["g_raw"]
    key = next(k for k, v in weights.items() if v.is_floating_point() and v.dim() >= 2)
    weights[key] = _WRONG_KIND[kind](weights[key])
    bad = tmp_path / f"{kind}.pt"
    torch.save(state, bad)
    with pytest.raises(WeightsError, match=rf"{bad.name}: the G\(Y\) weights hold .* in {key}"):
        load_model_bundle(bad)
    from PIL import Image

    film = tmp_path / "pa.png"
    Image.fromarray((mc.synthetic_views()[0] * 255).astype("uint8")).save(film)
    code = cli.main(["reconstruct", "--pa", str(film), "--lat", str(film), "--weights", str(bad),
                     "--output", str(tmp_path / "ct.nii.gz"), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and bad.name in err[0] and key in err[0], err
    assert not (tmp_path / "ct.nii.gz").exists()


def test_a_recorded_architecture_of_too_many_layers_stops_within_seconds(tmp_path):
    """A 3 KB bundle asking for 250,000 residual blocks took 77 s and 3.2 GB building on the meta device; the
    module budget stops it at MAX_MODULES (the corpus case is b_module_bomb.pt)."""
    import time

    from DCTNetLib.checkpoints.bundle import load_model_bundle
    from DCTNetLib.checkpoints.networks import MAX_MODULES

    bundle = tmp_path / "b_module_bomb.pt"
    mc.write_module_bomb(bundle)
    start = time.perf_counter()
    with pytest.raises(WeightsError, match=f"more than {MAX_MODULES} layers"):
        load_model_bundle(bundle)
    assert time.perf_counter() - start < 30  # the full build is minutes on this machine (97 s for 200 blocks)


def test_dctnet_info_shows_no_card_for_a_file_its_manifest_does_not_describe(tiny_bundle_path, tmp_path, capsys):
    """A manifest beside a bundle recording another sha256 was displayed as the bundle's card."""
    import json
    import shutil

    bundle = shutil.copy(tiny_bundle_path, tmp_path / "model.pt")
    manifest = {"file": "model.pt", "sha256": sha256_file(bundle), "model_card": {"intended_use": "tests"}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert cli.main(["info", "--weights", str(bundle)]) == 0  # control: the true sha256 shows the card
    assert "tests" in capsys.readouterr().out
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "sha256": "0" * 64}))
    assert cli.main(["info", "--weights", str(bundle)]) == 2
    out, err = capsys.readouterr()
    assert "sha256 mismatch" in err and "model.pt" in err and len(err.strip().splitlines()) == 1 and out == ""
