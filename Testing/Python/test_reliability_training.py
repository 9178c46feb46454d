"""Issue 21, training runs lose nothing: a diverged run never saves NaN/inf weights (over a finite checkpoint or at
all), a learning rate the optimiser cannot step with is refused before the run folder is made, and a run folder
in use by one run is refused to a second one."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from DCTNetLib.cli import main as dctnet
from DCTNetLib.errors import TrainingDiverged
from test_training_cli import GAN_TINY, write_tiny_prepared

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return write_tiny_prepared(tmp_path_factory.mktemp("prepared"), n_train=2, n_val=1)


def _one_error_line(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert all(fragment in err[0] for fragment in fragments), err[0]
    return err[0]


def test_a_diverged_run_keeps_its_last_finite_checkpoint_and_says_so(prepared, tmp_path, capsys):
    """lr=1e30 throws the weights to ~1e30 at step 1 and to NaN at step 2; before, latest.pt
    was then written with NaN weights and could not be resumed. Now the run stops in one line at step 2 and
    latest.pt keeps step 1, finite."""
    run = tmp_path / "run"
    code = dctnet(["train", "--data", str(prepared), "--output", str(run), "--max-steps", "4",
                   "--set", "checkpoint_every=1", "--set", "lr=1e30", *GAN_TINY])
    assert code == 2
    _one_error_line(capsys, "training diverged", "NaN/inf", "keeps the last finite state")
    state = torch.load(run / "latest.pt", weights_only=True)
    assert state["progress"]["step"] >= 1
    assert all(bool(torch.isfinite(t).all()) for weights in state["models"].values() for t in weights.values()
               if t.is_floating_point())
    assert not (run / "best.pt").exists()


def test_nan_weights_are_never_saved_over_a_finite_checkpoint(tmp_path):
    from DCTNetLib.checkpoints.checkpoint import save_checkpoint

    state = {"format": "dctnet-training-checkpoint", "models": {"g_raw": {"w": torch.ones(3)}}}
    latest = save_checkpoint(state, tmp_path / "latest.pt")
    before = latest.read_bytes()
    state["models"]["g_raw"]["w"][1] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"g_raw .*latest\.pt keeps the last finite state"):
        save_checkpoint(state, latest)
    assert latest.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


@pytest.mark.parametrize("lr", ["1e300", "inf", "nan", "0"])
def test_a_learning_rate_the_optimiser_cannot_use_is_refused_before_the_run_folder(prepared, tmp_path, capsys, lr):
    """lr=1e300 overflowed inside Adam's step with a traceback, after the run folder was made."""
    run = tmp_path / "run"
    assert dctnet(["train", "--data", str(prepared), "--output", str(run), "--set", f"lr={lr}", *GAN_TINY]) == 2
    _one_error_line(capsys, "lr")
    assert not run.exists()


def test_a_run_folder_in_use_is_refused_to_a_second_run(prepared, tmp_path, capsys):
    """Two runs into one folder both exited 0 with mixed checkpoints. Another process holds the folder's lock (as a
    running `dctnet train` does): a second run, even with --overwrite, is refused and removes nothing."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"event": "train", "step": 1}\n')
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from DCTNetLib.training.run_folder import lock_run_dir; "
                               "lock_run_dir(sys.argv[1]); print('locked', flush=True); time.sleep(120)", str(run)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = dctnet(["train", "--data", str(prepared), "--output", str(run), "--overwrite", "--max-steps", "1",
                       *GAN_TINY])
        assert code == 2
        _one_error_line(capsys, "is in use by another training run", f"pid {holder.pid}", run.name)
        assert (run / "metrics.jsonl").read_text() == '{"event": "train", "step": 1}\n'
        assert sorted(p.name for p in run.iterdir()) == [".dctnet-run.lock", "metrics.jsonl"]
    finally:
        holder.kill()
        holder.wait()
    # once the other run has ended (even by kill -9) the folder is free again
    deadline = time.monotonic() + 10
    code = dctnet(["train", "--data", str(prepared), "--output", str(run), "--overwrite", "--max-steps", "1",
                   *GAN_TINY])
    assert code == 0 and time.monotonic() < deadline + 600
    assert (run / "latest.pt").is_file()


def test_plot_and_evaluate_never_replace_a_runs_log(prepared, tmp_path, capsys):
    """`dctnet plot RUN --output RUN/metrics.jsonl --overwrite` and `dctnet evaluate --output RUN --overwrite`
    replaced the training log with a PNG or with evaluation records."""
    run = tmp_path / "run"
    assert dctnet(["train", "--data", str(prepared), "--output", str(run), "--max-steps", "1", *GAN_TINY]) == 0
    log = (run / "metrics.jsonl").read_bytes()
    capsys.readouterr()
    assert dctnet(["plot", str(run), "--output", str(run / "metrics.jsonl"), "--overwrite"]) == 2
    _one_error_line(capsys, "must end in .png", "metrics.jsonl")
    assert dctnet(["evaluate", "--data", str(prepared), "--split", "val", "--checkpoint", str(run),
                   "--output", str(run), "--overwrite", "--no-lpips", "--device", "cpu"]) == 2
    _one_error_line(capsys, "is a training run folder", run.name)
    assert (run / "metrics.jsonl").read_bytes() == log
    assert dctnet(["plot", str(run)]) == 0 and (run / "curves.png").is_file()  # control: the default output works
    assert (run / "metrics.jsonl").read_bytes() == log


def test_max_steps_0_is_refused_instead_of_training_every_epoch(prepared, tmp_path, capsys):
    run = tmp_path / "run"
    assert dctnet(["train", "--data", str(prepared), "--output", str(run), "--max-steps", "0", *GAN_TINY]) == 2
    _one_error_line(capsys, "--max-steps must be at least 1")
    assert not run.exists()
