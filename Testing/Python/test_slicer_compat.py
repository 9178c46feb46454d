"""Slicer-version compatibility of the Slicer glue, without Slicer: fake ``slicer``/``qt`` modules stand in for
Slicer 5.12 (``slicer.packaging.pip_ensure``) and 5.10 (``slicer.util.pip_install``), and for Qt's timer.

Every version runs background work with the one runner (``DCTNetSlicerLib.tasks.SlicerTask`` over
``BackgroundProcess``); the children are real processes, so the tests check real output handling, real interrupts
and real process-tree kills. The program
started is a fake ``PythonSlicer``: like CTK's launcher, a real parent process that starts the interpreter as its
child and exits with its status.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

posix_only = pytest.mark.skipif(not hasattr(os, "setsid"), reason="POSIX sessions (Windows uses the 5.10 runner)")

JOB = """
import json, sys
print("hello from the job", flush=True)
print(json.dumps({"event": "progress", "fraction": 0.5, "message": "half way"}), flush=True)
print(json.dumps({"event": "metric", "loss": 1.25}), flush=True)
if "--fail" in sys.argv:
    print("error: broken input file x.png", flush=True)
    sys.exit(2)
print(json.dumps({"event": "progress", "fraction": 1.0, "message": "done"}), flush=True)
"""

SLEEPY = """
import os, signal, subprocess, sys, time
if "--ignore-sigterm" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; print('grandchild ready', flush=True); time.sleep(600)"])
print("ready", child.pid, os.getpid(), flush=True)
try:
    time.sleep(600)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    child.wait(timeout=20)
    sys.exit(130)
"""

# Stands in for PythonSlicer (CTK's launcher): a real parent that starts the interpreter as its child with the same
# arguments and exits with the child's status; Python's default SIGINT handling applies to it.
LAUNCHER = """#!{python}
import subprocess, sys
sys.exit(subprocess.call([{python!r}, *sys.argv[1:]]))
"""


class FakeTimer:
    """Stands in for ``qt.QTimer``: records instances and single shots; the test fires them."""

    instances: list[FakeTimer] = []
    single_shots: list[tuple[int, object]] = []

    def __init__(self) -> None:
        self.callback, self.active, self.interval = None, False, None
        FakeTimer.instances.append(self)

    def setInterval(self, ms):  # noqa: N802 (Qt API)
        self.interval = ms

    def connect(self, signal, callback):
        assert signal == "timeout()"
        self.callback = callback

    def start(self):
        self.active = True

    def stop(self):
        self.active = False

    @staticmethod
    def singleShot(ms, callback):  # noqa: N802 (Qt API)
        FakeTimer.single_shots.append((ms, callback))


def _gone(pid: int, within_s: float = 5.0) -> bool:
    """True once ``pid`` has exited (or is a zombie awaiting its parent) — a SIGKILL is delivered asynchronously,
    so a loaded machine may need a moment."""
    import psutil

    deadline = time.monotonic() + within_s
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def old_launch_console_process(args, useStartupEnvironment=True, updateEnvironment=None, cwd=None):  # noqa: N803
    raise AssertionError("the blocking launchConsoleProcess of Slicer 5.10 must not be used by SlicerTask")


@pytest.fixture
def fake_slicer(monkeypatch, tmp_path):
    """Fake ``slicer``, ``slicer.util``, ``slicer.packaging`` and ``qt``; child modules live in ``tmp_path``."""
    (tmp_path / "fake_job.py").write_text(JOB)
    (tmp_path / "sleepy_job.py").write_text(SLEEPY)
    launcher = tmp_path / "PythonSlicer"
    launcher.write_text(LAUNCHER.format(python=sys.executable))
    launcher.chmod(0o755)
    monkeypatch.setenv("DCTNET_PYTHON", str(launcher))
    startup_env = dict(os.environ, PYTHONPATH=str(tmp_path))
    util = types.ModuleType("slicer.util")
    util.startupEnvironment = lambda: dict(startup_env)
    util.launchConsoleProcess = old_launch_console_process
    packaging_api = types.ModuleType("slicer.packaging")
    slicer = types.ModuleType("slicer")
    slicer.util, slicer.packaging = util, packaging_api
    qt = types.ModuleType("qt")
    qt.QTimer = FakeTimer
    monkeypatch.setattr(FakeTimer, "instances", [])
    monkeypatch.setattr(FakeTimer, "single_shots", [])
    for name, module in {"slicer": slicer, "slicer.util": util, "slicer.packaging": packaging_api, "qt": qt}.items():
        monkeypatch.setitem(sys.modules, name, module)
    return types.SimpleNamespace(slicer=slicer, util=util, packaging=packaging_api, startup_env=startup_env)


def recording_task(args, module):
    from DCTNetSlicerLib.tasks import SlicerTask

    records: list[tuple] = []
    task = SlicerTask(args, module=module, on_log=lambda line: records.append(("log", line)),
                      on_progress=lambda f, m: records.append(("progress", f, m)),
                      on_event=lambda e: records.append(("event", e)),
                      on_finished=lambda ok, msg: records.append(("finished", ok, msg)))
    return task, records


def finished(records) -> bool:
    return any(r[0] == "finished" for r in records)


def run_fallback(task, records, timeout=60.0):
    task.start()
    (timer,) = FakeTimer.instances
    deadline = time.monotonic() + timeout
    while not finished(records) and time.monotonic() < deadline:
        timer.callback()
        time.sleep(0.02)
    assert finished(records) and not timer.active


def normalised(records):
    """Records per kind, in order, without what legitimately differs between runners: the command echo, the
    run time, and the interleaving of lines with events (the 5.10 runner hands over each poll's lines first)."""
    out: dict[str, list] = {}
    for record in records:
        if record[0] == "log" and record[1].startswith("$ "):
            continue
        if record[0] == "finished" and record[2].startswith("Finished in "):
            record = ("finished", record[1], "Finished")
        out.setdefault(record[0], []).append(record)
    return out


@pytest.mark.parametrize("fail", [False, True])
def test_one_runner_feeds_lines_events_progress_and_the_end_to_the_handlers(fake_slicer, fail):
    """Every Slicer version runs the child the same way: BackgroundProcess, drained by a QTimer on the GUI thread;
    Slicer's blocking launchConsoleProcess is never called (the fake one fails the test)."""
    args = ["--fail"] if fail else []
    task, records = recording_task(args, "fake_job")
    run_fallback(task, records)
    assert FakeTimer.instances[0].interval == 100
    expected_progress = [("progress", 0.5, "half way")] + ([] if fail else [("progress", 1.0, "done")])
    assert [r for r in records if r[0] == "progress"] == expected_progress
    assert ("log", "hello from the job") in records
    assert all(r[1].get("event") != "session" for r in records if r[0] == "event")  # internal, swallowed
    assert ("event", {"event": "metric", "loss": 1.25}) in records
    end = records[-1]
    if fail:
        assert end == ("finished", False, "error: broken input file x.png")
    else:
        assert end[:2] == ("finished", True) and end[2].startswith("Finished in ")


def _start(fake_slicer, args):
    """A sleepy job through the fake PythonSlicer; returns the task, its records and a pump(until)."""
    task, records = recording_task(args, "sleepy_job")
    task.start()

    def pump(until, timeout=60.0):
        deadline = time.monotonic() + timeout
        while not until() and time.monotonic() < deadline:
            for timer in FakeTimer.instances:
                if timer.active:
                    timer.callback()
            time.sleep(0.02)
        assert until(), "timed out waiting for the child"

    return task, records, pump


def _line(records, prefix):
    return next((r[1] for r in records if r[0] == "log" and str(r[1]).startswith(prefix)), None)


@posix_only
def test_stop_interrupts_the_interpreter_not_the_launcher(fake_slicer):
    """PythonSlicer starts the interpreter as a child: Stop must reach the interpreter (which exits cleanly, 130)
    and leave the launcher alone (which then exits with the interpreter's status, not killed by a signal)."""
    import psutil

    task, records, pump = _start(fake_slicer, [])
    pump(lambda: _line(records, "grandchild ready") is not None)
    _, grandchild, interpreter = _line(records, "ready ").split()
    assert task.interrupt_pid == int(interpreter) != task.process.pid  # the launcher is another process
    assert psutil.Process(int(interpreter)).ppid() == task.process.pid
    task.stop(grace_s=30)
    pump(lambda: finished(records))
    assert records[-1] == ("finished", False, "Stopped")
    assert any(kind == "log" and "interrupted" in str(text) for kind, text in records)
    assert task.process.returncode == 130  # the launcher passed on the interpreter's clean exit
    assert _gone(int(grandchild))


@posix_only
def test_cancel_returns_at_once_and_kills_launcher_interpreter_and_workers(fake_slicer):
    """Cancel runs on the GUI thread: it must not wait for processes to die (a run that ignores SIGTERM made the
    old terminate-wait-kill take seconds)."""
    import psutil

    task, records, pump = _start(fake_slicer, ["--ignore-sigterm"])
    pump(lambda: _line(records, "grandchild ready") is not None)
    _, grandchild, interpreter = _line(records, "ready ").split()
    started = time.monotonic()
    task.cancel()
    assert time.monotonic() - started < 0.5
    pump(lambda: finished(records))
    assert records[-1] == ("finished", False, "Cancelled")
    for pid in (int(grandchild), int(interpreter)):
        assert _gone(pid)
    assert task.process.returncode not in (0, None)


# -- first-use install ----------------------------------------------------------------------------------------

MISSING = "dctnet-compat-test-absent-package>=1.2"


@pytest.fixture
def installed(monkeypatch):
    """Pretend-installed distributions: what the fake installers add is then seen as satisfied."""
    from DCTNetSlicerLib import install

    names: set[str] = set()
    real = install._satisfied
    monkeypatch.setattr(install, "_satisfied",
                        lambda requirement: install._split(requirement)[0] in names or real(requirement))
    return names


def _pins(text: str) -> dict[str, str]:
    return dict(line.split("==") for line in text.splitlines() if line.strip())


def _installed_protected() -> dict[str, str]:
    import importlib.metadata

    from DCTNetSlicerLib import install

    found = {}
    for name in install.PROTECTED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def test_protected_packages_are_pinned_to_what_is_installed():
    from DCTNetSlicerLib import install

    pins = _pins(install.constraints_text())
    assert {"torch", "numpy", "SimpleITK"} <= set(pins)  # installed here, so pinned
    assert pins == _installed_protected()
    assert set(install.PROTECTED) >= {"torch", "torchvision", "numpy", "SimpleITK", "vtk"}


def test_reconstruction_installs_less_than_training():
    from DCTNetSlicerLib import install

    names = {purpose: {install._split(r)[0] for r in install.requirements_for(purpose)}
             for purpose in ("reconstruction", "training")}
    assert {"lpips", "PyYAML"} & names["reconstruction"] == set()  # evaluation / training only
    assert names["reconstruction"] < names["training"] and {"lpips", "PyYAML"} <= names["training"]
    assert not names["training"] & {n for n in install.PROTECTED}
    assert "pydicom" in names["reconstruction"]
    assert install._split(next(r for r in install.RECONSTRUCTION_REQUIREMENTS if r.startswith("pydicom")))[1] == ""
    with pytest.raises(ValueError, match="purpose"):
        install.requirements_for("evaluation")


def test_a_restart_is_offered_only_when_it_fixes_the_problem(fake_slicer, installed, monkeypatch):
    from DCTNetSlicerLib import install

    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # no PyTorch extension
    monkeypatch.setattr(install, "torch_status", lambda: "missing")
    with pytest.raises(install.InstallError, match="PyTorch' extension") as missing_extension:
        install.ensure_torch()
    assert not missing_extension.value.restartRequired
    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=lambda: None))
    monkeypatch.setattr(install, "torch_status", lambda: "too old")
    with pytest.raises(install.InstallError, match="uninstall PyTorch") as too_old:
        install.ensure_torch()
    assert not too_old.value.restartRequired  # restarting alone would load the same old torch
    # a package already imported in this session was updated: only a restart loads the new version
    fake_slicer.util.confirmOkCancelDisplay = lambda text, title: True
    fake_slicer.util.pip_install = lambda requirements: installed.update(["pytest"])
    monkeypatch.setattr(install, "_satisfied", lambda r: install._split(r)[0] in installed)
    with pytest.raises(install.InstallError, match="restart Slicer") as updated:
        install.ensure_python_packages("DCTNet", requirements=["pytest>=1"])
    assert updated.value.restartRequired


def test_pip_ensure_is_used_with_the_missing_packages_when_present(fake_slicer, installed):
    from packaging.requirements import Requirement

    from DCTNetSlicerLib import install

    calls = []

    def pip_ensure(requirements, constraints=None, skip_packages=None, prompt_install=True, prompt_restart=True,
                   requester=None, skip_in_testing=True, show_progress=True):
        calls.append(dict(requirements=requirements, prompt_install=prompt_install, prompt_restart=prompt_restart,
                          requester=requester, skip_in_testing=skip_in_testing, skip_packages=skip_packages,
                          constraints=Path(constraints).read_text() if constraints else None))
        installed.update(r.name for r in requirements)

    fake_slicer.packaging.pip_ensure = pip_ensure
    fake_slicer.util.pip_install = lambda *a, **k: pytest.fail("pip_install must not be used on Slicer ≥ 5.12")
    fake_slicer.util.confirmOkCancelDisplay = lambda *a, **k: pytest.fail("pip_ensure asks, not install.py")
    assert install.ensure_python_packages("DCTNet", askConfirmation=True,
                                          requirements=["pytest>=1", MISSING]) == [MISSING]
    (call,) = calls
    assert [str(r) for r in call["requirements"]] == [MISSING]  # only what is missing, as Requirement objects
    assert all(isinstance(r, Requirement) for r in call["requirements"])
    assert call == dict(call, prompt_install=True, prompt_restart=False, requester="DCTNet", skip_in_testing=False)
    # torch, numpy, SimpleITK... never come in as someone's dependency: pinned by constraints alone (no
    # skip_packages, which Slicer documents as a discouraged workaround)
    assert call["skip_packages"] is None
    assert _pins(call["constraints"]) == _installed_protected()

    installed.clear()
    fake_slicer.packaging.pip_ensure = lambda requirements, **kw: (_ for _ in ()).throw(RuntimeError("declined"))
    fake_slicer.packaging.pip_ensure.__signature__ = __import__("inspect").signature(pip_ensure)
    with pytest.raises(install.InstallError, match="cannot run without: " + MISSING):
        install.ensure_python_packages("DCTNet", requirements=[MISSING])


def test_pip_install_after_confirmation_on_5_10(fake_slicer, installed):
    from DCTNetSlicerLib import install

    # An early pip_ensure (slicer.util/pydeps style, ``prompt=``) does not count as the 5.12 API.
    fake_slicer.packaging.pip_ensure = lambda requirements, prompt=True, requester=None: pytest.fail("old API")
    questions, pip_calls = [], []
    answer = {"ok": False}
    fake_slicer.util.confirmOkCancelDisplay = lambda text, title: questions.append(text) or answer["ok"]
    def pip_install(requirements):
        assert requirements[0] == "-c"  # a constraints file first, then what is missing
        pip_calls.append((_pins(Path(requirements[1]).read_text()), requirements[2:]))
        installed.update(install._split(r)[0] for r in requirements[2:])

    fake_slicer.util.pip_install = pip_install

    with pytest.raises(install.InstallError, match="cannot run without"):
        install.ensure_python_packages("DCTNet", requirements=[MISSING, "pytest>=1"])
    assert len(questions) == 1 and MISSING in questions[0] and "pytest" not in questions[0]
    assert pip_calls == []  # declined: nothing installed

    answer["ok"] = True
    assert install.ensure_python_packages("DCTNet", requirements=[MISSING, "pytest>=1"]) == [MISSING]
    assert pip_calls == [(_installed_protected(), [MISSING])] and len(questions) == 2
    assert install.ensure_python_packages("DCTNet", requirements=[MISSING]) == []  # now satisfied: no question
    assert len(questions) == 2

    del fake_slicer.packaging.pip_ensure  # no slicer.packaging.pip_ensure at all: same 5.10 path
    installed.clear()
    assert install.ensure_python_packages("DCTNet", askConfirmation=False, requirements=[MISSING]) == [MISSING]
    assert pip_calls[-1][1] == [MISSING] and len(questions) == 2  # askConfirmation=False: no dialog
