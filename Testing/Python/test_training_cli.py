"""``dctnet train-cdm`` / ``dctnet train`` end to end on a tiny prepared folder (32³ CTs, 32² radiographs).

Also home of :func:`write_tiny_prepared`, the fake prepared-data folder the other training tests import.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from DCTNetLib.cli import main as dctnet

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = 32  # tiny preset: 32² radiographs, 32³ volumes


def write_tiny_prepared(root: Path, n_train: int = 4, n_val: int = 1, size: int = TINY, seed: int = 0) -> Path:
    """A prepared-data folder in the io engineer's format (``DCTNetLib.data.prepared_cases``) with tiny random phantoms.

    Each CT is a smooth blob plus a bright "spine" rod; the DRRs are its normalised mean projections along the
    PA (axis 1) and lateral (axis 2) axes, the bone-suppressed DRRs the same without the rod.
    """
    from DCTNetLib.data.case_splits import write_splits
    from DCTNetLib.data.prepared_cases import write_case

    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, size)] * 3, indexing="ij"))
    ids = [f"case{i:02d}" for i in range(n_train + n_val)]
    for case_id in ids:
        centre = rng.uniform(-0.3, 0.3, size=(3, 1, 1, 1))
        body = np.exp(-((grid - centre) ** 2).sum(0) / rng.uniform(0.2, 0.5)).astype(np.float32) * 0.5
        rod = ((grid[1] - 0.5) ** 2 + grid[2] ** 2 < 0.02).astype(np.float32) * 0.5
        ct = np.clip(body + rod, 0, 1)

        def drrs(volume: np.ndarray) -> np.ndarray:
            pair = np.stack([volume.mean(axis=1), volume.mean(axis=2)])
            return (pair / pair.max(axis=(1, 2), keepdims=True)).astype(np.float32)

        write_case(root / "cases" / case_id, ct, drrs(ct), drrs(body), {"case_id": case_id, "source": "test"})
    write_splits(root, {"train": ids[:n_train], "val": ids[n_train:], "test": []})
    return root


def read_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return write_tiny_prepared(tmp_path_factory.mktemp("prepared"))


TINY_CDM = ["--preset", "tiny", "--device", "cpu", "--set", "num_workers=0", "--set", "batch_size=2",
            "--set", "val_samples=1", "--set", "log_every=1", "--set", "progress=false"]


def test_train_cdm_writes_run_files_and_refuses_to_overwrite(prepared, tmp_path, capsys):
    run = tmp_path / "cdm"
    assert dctnet(["train-cdm", "--data", str(prepared), "--output", str(run), "--epochs", "2", *TINY_CDM]) == 0
    records = read_records(run)
    events = [r["event"] for r in records]
    assert events.count("train") == 8 and events.count("val") == 2 and events[-1] == "done"
    train = [r for r in records if r["event"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 9))
    assert all(set(r) >= {"epoch", "step", "losses", "lr", "time"} and np.isfinite(r["losses"]["loss"]) for r in train)
    val = [r for r in records if r["event"] == "val"]
    assert all(np.isfinite(r["psnr"]) and -1 <= r["ssim"] <= 1 for r in val)
    assert any(r["event"] == "checkpoint" and r["best"] for r in records)

    run_info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert run_info["config"]["size"] == "tiny" and run_info["code_version"]["dctnet"]
    assert run_info["environment"]["torch"] == torch.__version__
    saved = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert saved["kind"] == "cdm" and saved["batch_size"] == 2 and saved["epochs"] == 2
    state = torch.load(run / "latest.pt", weights_only=True)
    assert state["progress"]["step"] == 8 and state["kind"] == "cdm"
    assert (run / "best.pt").is_file()

    before = (run / "latest.pt").read_bytes()
    assert dctnet(["train-cdm", "--data", str(prepared), "--output", str(run), *TINY_CDM]) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert (run / "latest.pt").read_bytes() == before  # untouched

    # --overwrite starts again (1 epoch → 4 steps, a fresh log)
    assert dctnet(["train-cdm", "--data", str(prepared), "--output", str(run), "--overwrite", "--epochs", "1",
                   *TINY_CDM]) == 0
    assert sum(r["event"] == "train" for r in read_records(run)) == 4


def test_tiny_preset_resamples_prepared_data_of_another_size(tmp_path):
    from DCTNetLib.data.prepared_cases import PreparedCaseDataset

    data = write_tiny_prepared(tmp_path / "prep64", n_train=2, n_val=0, size=64)
    stored = PreparedCaseDataset(data, "train")[0]
    item = PreparedCaseDataset(data, "train", image_size=TINY)[0]
    assert item["drr"].shape == (2, TINY, TINY) and item["ct"].shape == (1, TINY, TINY, TINY)
    # area averaging: each 2×2 (2×2×2) block's mean, so the totals are kept
    assert torch.allclose(item["drr"], stored["drr"].reshape(2, TINY, 2, TINY, 2).mean((2, 4)), atol=1e-6)
    assert item["ct"].mean().item() == pytest.approx(stored["ct"].mean().item(), rel=1e-5)
    # the CDM's single radiographs (read without the CT) are resampled like the cases they come from
    from DCTNetLib.training.cdm_trainer import RadiographViews

    views = RadiographViews(PreparedCaseDataset(data, "train", image_size=TINY))
    for index in range(len(views)):
        case = PreparedCaseDataset(data, "train", image_size=TINY)[index // 2]
        assert torch.equal(views[index]["y"], case["drr"][index % 2:index % 2 + 1])
        assert torch.equal(views[index]["x0"], case["drr_bs"][index % 2:index % 2 + 1])
    run = tmp_path / "run"
    assert dctnet(["train-cdm", "--data", str(data), "--output", str(run), "--max-steps", "1", *TINY_CDM]) == 0
    state = torch.load(run / "latest.pt", weights_only=True)
    assert state["model_config"]["image_size"] == TINY and state["progress"]["step"] == 1


GAN_TINY = ["--preset", "tiny", "--device", "cpu", "--bs-source", "target", "--set", "num_workers=0",
            "--set", "log_every=1", "--set", "progress=false"]


def test_tiny_gan_on_prepare_sized_data_is_quick_and_leaves_best_and_latest(tmp_path, capsys):
    import warnings

    data = write_tiny_prepared(tmp_path / "prep128", n_train=2, n_val=1, size=128)
    run = tmp_path / "gan"
    assert dctnet(["train", "--data", str(data), "--output", str(run), "--max-steps", "2", *GAN_TINY]) == 0
    # stopped by --max-steps at the end of epoch 1, before any validation: both files the docs name exist
    assert (run / "latest.pt").is_file() and (run / "best.pt").is_file()
    # the tiny model ran at its own 32² / 32³ (the 128² cases resampled on load), not at the data's 128
    assert torch.load(run / "latest.pt", weights_only=True)["model_config"]["generator"]["image_size"] == TINY
    records = read_records(run)
    assert [r["step"] for r in records if r["event"] == "train"] == [1, 2]
    assert any(r["event"] == "val" for r in records)

    # resuming at the limit trains nothing more
    assert dctnet(["train", "--data", str(data), "--output", str(run), "--resume", "--max-steps", "2", *GAN_TINY]) == 0
    assert [r["step"] for r in read_records(run) if r["event"] == "train"] == [1, 2]
    assert torch.load(run / "latest.pt", weights_only=True)["progress"]["step"] == 2
    # resuming at an epoch's end steps the LR schedule first: no "lr_scheduler.step() before optimizer.step()"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert dctnet(["train", "--data", str(data), "--output", str(run), "--resume", "--max-steps", "3",
                       *GAN_TINY]) == 0
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)], [str(w.message) for w in caught]
    assert [r["step"] for r in read_records(run) if r["event"] == "train"] == [1, 2, 3]

    # dctnet plot: losses and one panel per validation metric, 400 px (5 in at 80 dpi) each
    from PIL import Image

    assert dctnet(["plot", str(run)]) == 0
    val_metrics = {k for r in read_records(run) if r["event"] == "val" for k in r if k not in ("event", "epoch", "step")}
    assert Image.open(run / "curves.png").size[0] == 400 * (1 + len(val_metrics))
    assert dctnet(["plot", str(run)]) == 2  # not replaced without --overwrite

    # evaluate and export take the run folder (best.pt there)
    from DCTNetLib.checkpoints.checkpoint import resolve_checkpoint

    assert resolve_checkpoint(run) == run / "best.pt"
    out = tmp_path / "eval"
    assert dctnet(["evaluate", "--data", str(data), "--split", "val", "--checkpoint", str(run), "--output", str(out),
                   "--no-lpips", "--device", "cpu"]) == 0
    table = (out / "table.md").read_text(encoding="utf-8")
    assert "gan/best.pt, step" in table and "(ours)" not in table
    capsys.readouterr()
    # export resolves the folder to best.pt too (this run's G(X) then needs its CDM: said in one line)
    assert dctnet(["export", "--gan", str(run), "--output", str(tmp_path / "model.pt")]) == 2
    assert f"{run / 'best.pt'} has a bone-suppressed generator" in capsys.readouterr().err


def test_checkpoint_paths_resolve_to_best_else_latest_with_clear_errors(tmp_path, capsys):
    from DCTNetLib.errors import InputError
    from DCTNetLib.checkpoints.checkpoint import resolve_checkpoint

    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(InputError, match="holds no best.pt or latest.pt"):
        resolve_checkpoint(run)
    (run / "latest.pt").write_bytes(b"x")
    assert resolve_checkpoint(run) == run / "latest.pt"
    with pytest.raises(InputError, match="pass the folder"):
        resolve_checkpoint(run / "best.pt")
    (run / "best.pt").write_bytes(b"x")
    assert resolve_checkpoint(run) == run / "best.pt"


def test_a_run_that_finds_no_data_leaves_no_folder(tmp_path, capsys):
    run = tmp_path / "run"
    assert dctnet(["train", "--data", str(tmp_path / "missing"), "--output", str(run), *GAN_TINY]) == 2
    assert dctnet(["train-cdm", "--data", str(tmp_path / "missing"), "--output", str(run), *TINY_CDM]) == 2
    assert "not found" in capsys.readouterr().err and not run.exists()
    (tmp_path / "empty").mkdir()
    assert dctnet(["prepare", "--dataset", "generic", "--source", str(tmp_path / "empty"),
                   "--output", str(tmp_path / "prep")]) == 2
    assert "no generic cases found" in capsys.readouterr().err and not (tmp_path / "prep").exists()


def test_unknown_set_key_lists_valid_keys(prepared, tmp_path, capsys):
    code = dctnet(["train-cdm", "--data", str(prepared), "--output", str(tmp_path / "r"), *TINY_CDM,
                   "--set", "learning_rate=1"])
    err = capsys.readouterr().err
    assert code == 2 and "learning_rate" in err and "batch_size" in err and "lr" in err


def test_sigterm_stops_at_a_step_boundary_with_a_valid_checkpoint(prepared, tmp_path):
    run = tmp_path / "cdm"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "DCTNetLib", "train-cdm", "--data", str(prepared), "--output", str(run),
           "--epochs", "1000", *TINY_CDM]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait for a few training steps
            log = run / "metrics.jsonl"
            if log.is_file() and log.read_text(encoding="utf-8").count('"train"') >= 3:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        stopped_after = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err  # 128 + SIGTERM, as a shell reports a process SIGTERM ended
    assert stopped_after < 20
    assert "resume with" in err and "--resume" in err
    records = read_records(run)
    assert records[-1]["event"] == "interrupted" and records[-1]["reason"] == "SIGTERM"
    state = torch.load(run / "latest.pt", weights_only=True)
    assert state["progress"]["step"] == records[-1]["step"]


def test_the_full_preset_on_a_cpu_warns_with_time_and_memory_and_points_to_small(tmp_path, monkeypatch):
    """The warning comes before any network is built: the run stops right after it here (the full networks
    would take minutes and GBs), with the steps counted from the real data and the defaults (100 epochs)."""
    from DCTNetLib.commands import train, train_common

    data = write_tiny_prepared(tmp_path / "prep128", n_train=3, n_val=1, size=128)

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(train, "bone_suppressed_sets", stop)  # the first thing after the warning
    with pytest.warns(UserWarning, match="full preset is meant for a GPU") as caught, pytest.raises(Stop):
        dctnet(["train", "--data", str(data), "--output", str(tmp_path / "run"), "--preset", "full",
                "--device", "cpu", "--bs-source", "target", "--set", "progress=false"])
    text = str(caught[0].message)
    cost = train_common.CPU_STEP_COST[("gan", "full")]
    steps = 100 * 3  # 100 epochs of 3 cases at batch 1
    assert f"these {steps:,} steps" in text and f"{steps * cost.step_s / 3600:.1f} h" in text
    assert f"{cost.peak_gb:.1f} GB" in text and "--preset small" in text
    assert train_common.warn_full_preset_on_cpu("gan", _Config("small"), torch.device("cpu"), 3) is None
    assert train_common.warn_full_preset_on_cpu("gan", _Config("full"), torch.device("cuda"), 3) is None
    # the CDM's estimate follows its batch: 2 radiographs a case, 8 a step
    with pytest.warns(UserWarning) as caught:
        train_common.warn_full_preset_on_cpu("cdm", _Config("full", batch_size=8), torch.device("cpu"), 6000)
    assert "these 75,000 steps" in str(caught[0].message) and "days" in str(caught[0].message)


class _Config:
    def __init__(self, size: str, batch_size: int = 1, epochs: int = 100, max_steps: int = 0) -> None:
        self.size, self.batch_size, self.epochs, self.max_steps = size, batch_size, epochs, max_steps
