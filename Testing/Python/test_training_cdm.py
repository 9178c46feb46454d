"""``dctnet train-cdm`` on a tiny prepared folder made from the chest phantom: run files, the trained CDM, resume.

The folder is built the way ``dctnet prepare`` builds one (phantom CT → bone mask → raw and bone-suppressed DRR
pairs → ``write_case``), at 32³ / 32² so the tiny CDM preset trains in seconds on the CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from DCTNetLib.cli import main as dctnet

TINY = 32
N_TRAIN, N_VAL = 3, 1  # 3 cases → 6 radiographs → 3 steps per epoch at batch 2
ARGS = ["--preset", "tiny", "--device", "cpu", "--set", "num_workers=0", "--set", "batch_size=2",
        "--set", "val_samples=2", "--set", "val_sampling_steps=2", "--set", "log_every=1",
        "--set", "progress=false", "--set", "deterministic=true", "--set", "checkpoint_every=2"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def phantom_prepared(tmp_path_factory) -> Path:
    """Prepared folder of ``N_TRAIN + N_VAL`` phantom cases (different seeds) with 32² DRR pairs."""
    from DCTNetLib.conventions import hu_to_unit
    from DCTNetLib.data.bone import drrs_with_bone_suppression
    from DCTNetLib.data.case_splits import write_splits
    from DCTNetLib.data.prepared_cases import write_case
    from DCTNetLib.data.drr import DRRGeometry
    from DCTNetLib.data.phantom import PHANTOM_FIELD_MM, chest_phantom

    root = tmp_path_factory.mktemp("phantom_prepared")
    ids = [f"phantom{i}" for i in range(N_TRAIN + N_VAL)]
    for seed, case_id in enumerate(ids):
        unit = np.clip(hu_to_unit(chest_phantom(TINY, seed=seed)), 0, 1).astype(np.float32)
        raw, bs = drrs_with_bone_suppression(torch.from_numpy(unit)[None, None], PHANTOM_FIELD_MM / TINY,
                                             geometry=DRRGeometry(image_size=TINY))
        assert float((raw - bs).max()) > 0.05  # the bone really changes the radiograph
        write_case(root / "cases" / case_id, unit, raw[0].numpy(), bs[0].numpy(),
                   {"case_id": case_id, "source": "chest_phantom"})
    write_splits(root, {"train": ids[:N_TRAIN], "val": ids[N_TRAIN:], "test": []})
    return root


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def test_train_cdm_end_to_end_gives_a_usable_model(phantom_prepared, tmp_path):
    from DCTNetLib.checkpoints.networks import load_cdm

    run = tmp_path / "cdm"
    assert dctnet(["train-cdm", "--data", str(phantom_prepared), "--output", str(run), "--epochs", "2", *ARGS]) == 0
    for name in ("latest.pt", "best.pt", "metrics.jsonl", "config.json", "run.json"):
        assert (run / name).is_file(), name
    log = records(run)
    train = [r for r in log if r["event"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 7))
    assert all(np.isfinite(r["losses"]["loss"]) and r["losses"]["loss"] > 0 for r in train)
    val = [r for r in log if r["event"] == "val"]
    assert len(val) == 2 and all(np.isfinite(v["loss"]) and np.isfinite(v["psnr"]) and -1 <= v["ssim"] <= 1
                                 for v in val)
    assert log[-1]["event"] == "done"

    state = torch.load(run / "latest.pt", weights_only=True)
    assert state["kind"] == "cdm" and state["progress"]["step"] == 6
    assert state["model_config"]["image_size"] == TINY and state["model_config"]["objective"] == "v"
    online, ema = state["models"]["diffusion"], state["ema"]["diffusion"]["model"]
    assert online.keys() == ema.keys() and state["ema"]["diffusion"]["step"] == 6
    assert any(not torch.equal(online[k], ema[k]) for k in online)  # EMA averages, not copies

    model, _ = load_cdm(run / "best.pt")  # the EMA weights, as `dctnet train` uses them
    case = np.load(phantom_prepared / "cases" / "phantom3" / "drr.npy")
    out = model.suppress_bones(torch.from_numpy(case)[None], steps=2, seed=0)
    assert out.shape == (1, 2, TINY, TINY) and bool(((out >= 0) & (out <= 1)).all())


def test_resume_matches_an_uninterrupted_run(phantom_prepared, tmp_path):
    """Stopped after 4 of 6 steps (mid-epoch, after one validation) and resumed = bit-identical to one run."""
    full, split = tmp_path / "full", tmp_path / "split"
    common = ["--data", str(phantom_prepared), "--epochs", "2", *ARGS]
    assert dctnet(["train-cdm", "--output", str(full), *common]) == 0
    assert dctnet(["train-cdm", "--output", str(split), *common, "--set", "stop_after_steps=4"]) == 130
    stopped = torch.load(split / "latest.pt", weights_only=True)
    assert stopped["progress"]["step"] == 4 and records(split)[-1]["event"] == "interrupted"
    assert dctnet(["train-cdm", "--output", str(split), *common, "--resume"]) == 0

    a = torch.load(full / "latest.pt", weights_only=True)
    b = torch.load(split / "latest.pt", weights_only=True)
    assert a["progress"]["step"] == b["progress"]["step"] == 6
    for group in ("models", "ema"):
        flat_a = {k: v for k, v in _flatten(a[group]).items() if torch.is_tensor(v)}
        flat_b = {k: v for k, v in _flatten(b[group]).items() if torch.is_tensor(v)}
        assert flat_a.keys() == flat_b.keys() and flat_a
        assert all(torch.equal(flat_a[k], flat_b[k]) for k in flat_a), group
    moved = _flatten(stopped["models"])
    assert any(not torch.equal(moved[k], _flatten(a["models"])[k]) for k in moved)  # the last 2 steps did change
    losses_a = [r["losses"]["loss"] for r in records(full) if r["event"] == "train"]
    losses_b = [r["losses"]["loss"] for r in records(split) if r["event"] == "train"]
    assert losses_a == losses_b


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_a_samples_timestep_and_noise_do_not_depend_on_its_batch():
    """Drawn from (seed, epoch, sample index) alone: one batch of four samples gets what two ranks with two samples
    each get, whichever samples share a batch; another epoch draws anew."""
    from DCTNetLib.training.cdm_trainer import draw_timesteps_and_noise

    shape, timesteps, seed = (1, 8, 8), 1000, 3
    t_all, noise_all = draw_timesteps_and_noise(torch.tensor([0, 1, 2, 3]), shape, timesteps, seed, epoch=1)
    for ranks in ([0, 2], [3, 1]):
        t_rank, noise_rank = draw_timesteps_and_noise(torch.tensor(ranks), shape, timesteps, seed, epoch=1)
        assert torch.equal(t_rank, t_all[ranks]) and torch.equal(noise_rank, noise_all[ranks])
    _, noise_next = draw_timesteps_and_noise(torch.tensor([0, 1, 2, 3]), shape, timesteps, seed, epoch=2)
    assert not torch.equal(noise_next, noise_all)


def test_init_takes_a_bundles_cdm_whatever_its_sampler(tmp_path):
    """``train-cdm --init BUNDLE`` fine-tunes the shipped kind of bundle, whose sampler (steps, strength, the mean
    of several samples) differs from a training run's defaults: the network is what must match."""
    import dataclasses

    from DCTNetLib.checkpoints.bundle import save_model_bundle
    from DCTNetLib.commands.train_cdm import initialise_cdm
    from DCTNetLib.errors import InputError
    from DCTNetLib.models.diffusion import CDMConfig, ConditionalDiffusion
    from DCTNetLib.training.cdm_trainer import build_cdm_model
    from conftest import make_tiny_bundle

    bundle = make_tiny_bundle(seed=3)
    config = CDMConfig.tiny(sampling_steps=4, sampling_strength=0.5, sampling_samples=4)
    bundle = dataclasses.replace(bundle, cdm=ConditionalDiffusion(config).eval(), cdm_config=config.to_dict())
    path = save_model_bundle(bundle, tmp_path / "bundle.pt")
    diffusion = build_cdm_model("tiny", {})
    assert diffusion.config.sampling_samples != 4
    initialise_cdm(diffusion, path)
    for name, value in bundle.cdm.state_dict().items():
        assert torch.equal(diffusion.state_dict()[name], value), name
    with pytest.raises(InputError, match="configuration differs"):
        initialise_cdm(build_cdm_model("tiny", {"num_res_blocks": 2}), path)
