"""Background process runner (DCTNetSlicerLib.process), tested with real child processes."""

from __future__ import annotations

import os
import sys
import textwrap
import time

import psutil
import pytest

from DCTNetSlicerLib.process import BackgroundProcess, child_environment, module_command, parse_event


def _python(code: str) -> list[str]:
    return [sys.executable, "-u", "-c", textwrap.dedent(code)]


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # killed, not yet reaped by init
    except psutil.NoSuchProcess:
        return True


def test_lines_and_events_arrive_in_order_with_the_exit_status():
    proc = BackgroundProcess(_python("""
        import json, sys
        for i in range(5):
            print(f"line {i}")
            print(json.dumps({"event": "progress", "fraction": (i + 1) / 5, "message": f"step {i}"}))
        print("to stderr", file=sys.stderr)
        sys.exit(3)
    """)).start()
    update = proc.wait(timeout=30)
    assert update.finished and update.returncode == 3 and not proc.running
    assert update.lines == [f"line {i}" for i in range(5)] + ["to stderr"]
    assert [e["fraction"] for e in update.events] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert update.events[-1]["message"] == "step 4"
    # no "error:" line: the summary is the last lines of plain output, events left out
    assert proc.error_summary(max_lines=2) == "line 4\nto stderr"


def test_poll_never_blocks_and_delivers_incrementally():
    proc = BackgroundProcess(_python("""
        import time
        print("first", flush=True)
        time.sleep(1.0)
        print("second", flush=True)
    """)).start()
    seen, started = [], time.monotonic()
    max_poll_s = 0.0
    while True:
        t0 = time.monotonic()
        update = proc.poll()
        max_poll_s = max(max_poll_s, time.monotonic() - t0)
        seen.append((time.monotonic() - started, update.lines))
        if update.finished:
            break
        time.sleep(0.02)
        assert time.monotonic() - started < 30
    assert max_poll_s < 0.1
    first_at = next(t for t, lines in seen if "first" in lines)
    second_at = next(t for t, lines in seen if "second" in lines)
    assert second_at - first_at > 0.5  # "first" was delivered while the child was still sleeping
    assert proc.returncode == 0


def test_cancel_kills_the_child_and_its_grandchild_within_seconds(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    proc = BackgroundProcess(_python(f"""
        import subprocess, sys, time
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pid_file)!r}, "w").write(str(grandchild.pid))
        print("started", flush=True)
        time.sleep(120)
    """)).start()
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text(encoding="utf-8"):
        assert time.monotonic() < deadline, "child never started its grandchild"
        time.sleep(0.05)
    grandchild_pid = int(pid_file.read_text(encoding="utf-8"))
    child_pid = proc.pid
    assert not _gone(grandchild_pid) and not _gone(child_pid)

    t0 = time.monotonic()
    proc.cancel()
    update = proc.wait(timeout=10)
    elapsed = time.monotonic() - t0
    assert update.finished and proc.cancelled
    assert update.returncode != 0
    assert elapsed < 5.0
    deadline = time.monotonic() + 5
    while not (_gone(child_pid) and _gone(grandchild_pid)):
        assert time.monotonic() < deadline, "a process of the tree survived cancel()"
        time.sleep(0.05)


def test_cancel_also_reaches_grandchildren_whose_parent_already_exited(tmp_path):
    pid_file = tmp_path / "orphan.pid"
    proc = BackgroundProcess(_python(f"""
        import subprocess, sys
        orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pid_file)!r}, "w").write(str(orphan.pid))
    """)).start()
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text(encoding="utf-8"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    orphan_pid = int(pid_file.read_text(encoding="utf-8"))
    # the orphan keeps the output pipe open, so the run is not finished until it is gone
    time.sleep(0.3)
    assert not proc.poll().finished
    proc.cancel()
    assert proc.wait(timeout=10).finished
    deadline = time.monotonic() + 5
    while not _gone(orphan_pid):
        assert time.monotonic() < deadline, "the re-parented grandchild survived cancel()"
        time.sleep(0.05)


def test_module_command_runs_dctnetlib_in_a_child_with_the_given_pythonpath(tmp_path):
    package = tmp_path / "probe_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text("import sys; print('args', *sys.argv[1:])\n")
    env = child_environment(pythonpath=[tmp_path])
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path)
    proc = BackgroundProcess(module_command("probe_pkg", ["a", 2]), env=env).start()
    update = proc.wait(timeout=30)
    assert update.returncode == 0 and update.lines == ["args a 2"]


def test_failed_cli_run_summarises_the_error_line():
    proc = BackgroundProcess(_python("""
        import sys
        print("loading weights")
        print("dctnet reconstruct: error: weights file /x/y.pt is truncated", file=sys.stderr)
        sys.exit(2)
    """)).start()
    proc.wait(timeout=30)
    assert proc.returncode == 2
    assert proc.error_summary() == "dctnet reconstruct: error: weights file /x/y.pt is truncated"


def test_parse_event_accepts_only_event_objects():
    assert parse_event('{"event": "progress", "fraction": 0.5}') == {"event": "progress", "fraction": 0.5}
    assert parse_event('{"fraction": 0.5}') is None
    assert parse_event("[1, 2]") is None
    assert parse_event("{not json}") is None
    assert parse_event("plain text") is None


def test_invalid_use_is_refused():
    with pytest.raises(ValueError, match="argv"):
        BackgroundProcess([])
    proc = BackgroundProcess(_python("pass"))
    with pytest.raises(RuntimeError):
        proc.wait()
    proc.start()
    with pytest.raises(RuntimeError):
        proc.start()
    proc.wait(timeout=30)
