"""Stopping a training run through its stop file (every platform), and the run lock that refuses a second run into a
busy folder and lets a GUI find a run it did not start (``DCTNetLib.training.stop_request``)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from DCTNetLib.cli import main as dctnet
from DCTNetLib.errors import InputError
from DCTNetLib.training.run_folder import prepare_run_dir
from DCTNetLib.training.stop_request import (LOCK_FILE, STOP_FILE, StopRequest, claim_run_dir, release_run_dir,
                                             request_stop, running_run)

from test_training_cdm import ARGS, phantom_prepared, records  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_stop_file_is_a_stop_request(tmp_path):
    stop = StopRequest(tmp_path / STOP_FILE)
    assert not stop.requested
    request_stop(tmp_path)
    assert stop.requested and stop.signal_name == "stop file"
    assert not StopRequest().requested  # without a stop file only signals count


@pytest.fixture
def other_process():
    """A live process that is not this one (stands in for a training started by someone else)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def _fake_lock(run_dir: Path, pid: int) -> None:
    import socket

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "x"}))


def test_a_folder_a_live_run_holds_is_refused_in_one_line_and_a_stale_lock_is_not(tmp_path, other_process):
    busy = tmp_path / "busy"
    _fake_lock(busy, other_process.pid)
    (busy / "latest.pt").write_bytes(b"keep")
    assert running_run(busy)["pid"] == other_process.pid
    for attempt in (lambda: prepare_run_dir(busy, resume=False, overwrite=True), lambda: claim_run_dir(busy)):
        with pytest.raises(InputError) as caught:
            attempt()
        assert f"pid {other_process.pid}" in str(caught.value) and "\n" not in str(caught.value)
    assert (busy / "latest.pt").read_bytes() == b"keep"  # --overwrite deleted nothing

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / "stale"
    _fake_lock(stale, int(finished.stdout))  # a run that was killed: its process is gone
    request_stop(stale)  # and an old stop request, which must not stop the next run at once
    assert running_run(stale) is None
    prepare_run_dir(stale, resume=False, overwrite=False)
    assert running_run(stale)["pid"] == __import__("os").getpid() and not (stale / STOP_FILE).exists()
    release_run_dir(stale)
    assert not (stale / LOCK_FILE).exists()


def test_a_run_stops_gracefully_through_its_stop_file_with_a_checkpoint(phantom_prepared, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    seen: dict[str, object] = {}

    def stop_when_training() -> None:  # what DCTNet Training's Stop does: write the stop file, send no signal
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            log = run / "metrics.jsonl"
            if log.is_file() and '"train"' in log.read_text(encoding="utf-8"):
                seen["lock"] = running_run(run)
                request_stop(run)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=stop_when_training)
    watcher.start()
    status = dctnet(["train-cdm", "--data", str(phantom_prepared), "--output", str(run), "--epochs", "500", *ARGS])
    watcher.join()
    assert seen["lock"] is not None and seen["lock"]["pid"] == __import__("os").getpid()
    assert status == 130
    last = records(run)[-1]
    assert last["event"] == "interrupted" and last["reason"] == "stop file"
    assert (run / "latest.pt").is_file()
    assert not (run / STOP_FILE).exists() and not (run / LOCK_FILE).exists()
    assert running_run(run) is None


def test_the_training_module_finds_a_running_run_refuses_its_folder_and_stops_it(tmp_path, other_process):
    """What DCTNet Training does after a module reload: re-attach from the run folder, refuse a second run into it,
    stop it through the stop file, kill it on a second Stop (DCTNetSlicerLib.training_runs; no Slicer needed)."""
    from DCTNetSlicerLib.training_runs import RunRequest, busy_reason, find_running

    assert find_running(tmp_path) is None and find_running("") is None
    _fake_lock(tmp_path / "gan", other_process.pid)
    run = find_running(tmp_path)
    assert run is not None and (run.stage, run.pid, run.folder) == ("gan", other_process.pid, tmp_path / "gan")
    assert run.running
    reason = busy_reason(RunRequest(stage="gan", prepared_dir="p", run_dir=str(tmp_path)))
    assert reason and f"pid {other_process.pid}" in reason and "\n" not in reason
    assert busy_reason(RunRequest(stage="cdm", prepared_dir="p", run_dir=str(tmp_path))) is None
    run.stop()
    assert (tmp_path / "gan" / STOP_FILE).is_file() and run.stopped
    run.cancel()
    assert other_process.wait(timeout=10) != 0
    assert not run.running
