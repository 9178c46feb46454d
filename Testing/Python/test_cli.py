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
