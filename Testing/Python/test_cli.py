"""The ``dctnet`` command registry and command-level input checks."""

from __future__ import annotations

import subprocess
import sys

from DCTNetLib import cli


def test_every_registered_command_is_available_with_help():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(cli.COMMANDS), "a sub-command module failed to load"
    for name, command in sub.choices.items():
        assert command.description, f"dctnet {name} has no help text"


def test_prepare_with_no_cases_names_the_folder(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    code = cli.main(["prepare", "--dataset", "ctspine1k", "--source", str(tmp_path / "src"),
                     "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "no ctspine1k cases found" in err and str(tmp_path / "src") in err


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "DCTNetLib", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "reconstruct" in result.stdout


def test_top_level_help_and_version_are_fast_because_they_do_not_import_torch():
    code = ("import sys\nfrom DCTNetLib.cli import main\n"
            "for argv in (['--help'], ['--version']):\n"
            "    try:\n        main(argv)\n    except SystemExit as exc:\n        assert exc.code == 0, exc.code\n"
            "print('torch imported:', 'torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    from DCTNetLib import __version__

    assert f"dctnet {__version__}" in result.stdout and "reconstruct" in result.stdout
    assert result.stdout.strip().endswith("torch imported: False")


def test_every_sub_command_help_is_plain_text_with_an_example(capsys):
    import re

    import pytest

    for name in cli.COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            cli.main([name, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        for markup in ("``", ":func:", ":mod:", ":class:", "::\n"):
            assert markup not in text, f"dctnet {name} --help shows {markup!r}"
        assert re.search(rf"^\s+(dctnet|torchrun .*-m DCTNetLib) {name}\b", text, re.MULTILINE), \
            f"dctnet {name} --help has no example line"


def test_plain_text_removes_restructuredtext_markup():
    text = "Examples::\n\n    dctnet x ``--a`` :func:`~DCTNetLib.io.ct.read_ct` and `dctnet prepare`\n"
    assert cli.plain_text(text) == "Examples:\n\n    dctnet x --a DCTNetLib.io.ct.read_ct and dctnet prepare\n"


def test_only_the_command_line_sets_openmp_waiting_to_passive():
    """Importing the package (Slicer's own process, a user's script) changes no environment variable; the
    command line, which the Slicer modules start as a child, sets OMP_WAIT_POLICY=PASSIVE unless the user set it."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    probe = "import os, {m}; print(os.environ.get('OMP_WAIT_POLICY'))"
    run = lambda module, extra=None: subprocess.run(  # noqa: E731
        [sys.executable, "-c", probe.format(m=module)], env={**env, **(extra or {})}, capture_output=True,
        text=True, check=True).stdout.strip()
    assert run("DCTNetLib") == "None"
    assert run("DCTNetLib.io.radiograph") == "None"
    assert run("DCTNetLib.cli") == "PASSIVE"
    assert run("DCTNetLib.cli", {"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
