"""Issue 21, training runs lose nothing: a diverged run never saves NaN/inf weights (over a finite checkpoint or at
all), a learning rate the optimiser cannot step with is refused before the run folder is made, and a run folder
in use by one run is refused to a second one."""

from __future__ import annotations

import json
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


FSIZE_LIMIT = 200 * 1024  # bytes: over the run's config, run.json and log, under a tiny checkpoint (1.7 MB)


def _train_in_child(argv: list[str], fsize_limit: int | None = None) -> subprocess.CompletedProcess:
    """`dctnet train ARGV` in a child process (its run-folder lock dies with it), under a real RLIMIT_FSIZE when
    asked (set in the child only: pytest's own output may be a file that must keep growing)."""
    import os
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "DCTNetReconstruction"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "DCTNetLib", "train", *argv], capture_output=True, text=True,
                          env=env, preexec_fn=limit if fsize_limit else None, timeout=600)


def test_a_file_size_limit_during_training_is_one_line_and_keeps_the_checkpoint(prepared, tmp_path):
    """Under `ulimit -f` torch.save failed with "[enforce fail at inline_container.cc] unexpected pos" and a
    traceback (exit 1), and an append to metrics.jsonl with an OSError traceback. Now either is one line, exit 2;
    latest.pt stays byte-identical (resumable) and the log keeps its earlier records with no half line."""
    run = tmp_path / "run"
    argv = ["--data", str(prepared), "--output", str(run), "--set", "checkpoint_every=1", *GAN_TINY]
    assert _train_in_child([*argv, "--max-steps", "1"]).returncode == 0
    latest = (run / "latest.pt").read_bytes()
    done = _train_in_child([*argv, "--max-steps", "3", "--resume"], FSIZE_LIMIT)  # the checkpoint outgrows the limit
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert "file-size limit reached while writing" in lines[0] and "latest.pt" in lines[0], lines[0]
    assert (run / "latest.pt").read_bytes() == latest
    assert not [p.name for p in run.iterdir() if p.name.startswith(".tmp-")]
    log = run / "metrics.jsonl"  # now the log is at the limit: the first record of the next run cannot be appended
    log.write_bytes(log.read_bytes() + b"\n" * (FSIZE_LIMIT - 10 - log.stat().st_size))
    before = log.read_bytes()
    done = _train_in_child([*argv, "--max-steps", "3", "--resume"], FSIZE_LIMIT)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert "file-size limit reached while writing" in lines[0] and "metrics.jsonl" in lines[0], lines[0]
    assert log.read_bytes() == before  # the 10 bytes a partial write fitted were cut off again
    assert (run / "latest.pt").read_bytes() == latest


def test_sigterm_to_the_process_group_during_training_exits_143_with_a_checkpoint(prepared, tmp_path):
    """`kill -TERM -PGID` (a scheduler, a closing terminal) also hits the DataLoader workers: one died of it and the
    main process failed at its next batch with "DataLoader worker … is killed by signal: Terminated" (exit 1). Now
    the workers leave the first SIGTERM to the main process, which stops at the step boundary, writes latest.pt
    and exits 143 (128 + 15); no worker is left behind."""
    import os
    import signal

    import psutil

    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "DCTNetReconstruction"), "OMP_NUM_THREADS": "1"}
    argv = ["train", "--data", str(prepared), "--output", str(run), "--epochs", "1000", *GAN_TINY,
            "--set", "num_workers=2"]
    process = subprocess.Popen([sys.executable, "-m", "DCTNetLib", *argv], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        log = run / "metrics.jsonl"
        while not (log.is_file() and log.read_text(encoding="utf-8").count('"train"') >= 3):
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.2)
        workers = psutil.Process(process.pid).children(recursive=True)
        assert len(workers) >= 2, workers  # the loader's workers are running, in the same process group
        os.killpg(process.pid, signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 143, err[-3000:]
    assert "Traceback" not in err and "resume with" in err, err[-3000:]
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert records[-1]["event"] == "interrupted" and records[-1]["reason"] == "SIGTERM", records[-1]
    assert torch.load(run / "latest.pt", weights_only=True)["progress"]["step"] == records[-1]["step"]
    time.sleep(1)
    assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE], workers


def test_a_run_that_crashed_before_its_first_checkpoint_can_be_run_again_or_resumed(prepared, tmp_path, capsys,
                                                                                   monkeypatch):
    """A crash in the first epoch left config.json, run.json and metrics.jsonl but no checkpoint: a re-run was refused
    ("already holds a training run") and so was --resume ("latest.pt is missing"). Now both start the run afresh
    with a warning; a folder holding a real checkpoint is still refused without --resume / --overwrite."""
    from DCTNetLib.training.gan_trainer import GANTrainer

    run = tmp_path / "run"
    argv = ["train", "--data", str(prepared), "--output", str(run), "--max-steps", "1", *GAN_TINY]

    def crash_in_the_first_epoch(*extra: str) -> None:
        with monkeypatch.context() as patch:
            patch.setattr(GANTrainer, "train_step", lambda self, batch: 1 / 0)
            with pytest.raises(ZeroDivisionError):
                dctnet([*argv, *extra])
        assert {"config.json", "run.json"} <= {p.name for p in run.iterdir()} and not (run / "latest.pt").exists()

    for extra in (["--resume"], []):  # each after a crash that left the stub
        crash_in_the_first_epoch("--overwrite")
        with pytest.warns(UserWarning, match="starting the run afresh"):
            assert dctnet([*argv, *extra]) == 0
        assert (run / "latest.pt").is_file()
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
        assert [r["event"] for r in records].count("done") == 1 and records[-1]["step"] == 1  # one fresh run's log
    latest = (run / "latest.pt").read_bytes()
    capsys.readouterr()
    assert dctnet(argv) == 2
    _one_error_line(capsys, "already holds a training run", "--resume")
    assert (run / "latest.pt").read_bytes() == latest
