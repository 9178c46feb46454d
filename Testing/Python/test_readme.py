"""README.md's commands and code run as written: the Python block end to end, every ``dctnet`` line through the
real argument parser (a renamed or removed option fails here, not in a newcomer's terminal)."""

from __future__ import annotations

import re
import shlex

import numpy as np
import pytest

from DCTNetLib import cli


def _blocks(readme: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", readme, flags=re.S)


@pytest.fixture(scope="module")
def readme(repo_root) -> str:
    return (repo_root / "README.md").read_text(encoding="utf-8")


def test_the_python_block_reads_films_reconstructs_and_writes_the_ct(readme, tmp_path, monkeypatch, tiny_phantom_ct):
    from DCTNetLib.io.radiograph import write_png
    from DCTNetLib.inference import Reconstructor, radiographs_from_ct
    from DCTNetLib.io.ct import read_ct

    block = next(b for b in _blocks(readme, "python") if "Reconstructor" in b)
    _, pa, lat = radiographs_from_ct(tiny_phantom_ct)
    write_png(tmp_path / "pa.png", pa)
    write_png(tmp_path / "lat.png", lat)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})  # noqa: S102 — the README's own example
    written = read_ct(tmp_path / "ct.nii.gz")
    assert written.shape == (128, 128, 128)
    from DCTNetLib.io.radiograph import read_radiograph

    expected = Reconstructor.load(device="cpu").reconstruct(read_radiograph(tmp_path / "pa.png"),
                                                           read_radiograph(tmp_path / "lat.png"))
    np.testing.assert_allclose(written.hu, expected.ct_hu.hu, atol=1e-2)


def _dctnet_lines(readme: str) -> list[list[str]]:
    lines = []
    for block in _blocks(readme, "bash"):
        for line in block.splitlines():
            command = line.split("  #")[0].strip()
            if command.startswith("dctnet ") and "..." not in command:
                lines.append(shlex.split(command)[1:])
            for part in command.split("&&"):  # the install one-liners end in `.venv/bin/dctnet …`
                part = part.strip()
                if part.startswith(".venv/bin/dctnet "):
                    lines.append(shlex.split(part)[1:])
    return lines


def test_every_dctnet_line_of_the_readme_parses(readme):
    lines = _dctnet_lines(readme)
    assert len(lines) >= 12 and {"reconstruct", "train", "prepare", "demo"} <= {line[0] for line in lines}
    for argv in lines:
        try:
            cli.build_parser(argv[0]).parse_args(argv)
        except SystemExit as exc:  # argparse exits 2 on an unknown option or a bad value
            pytest.fail(f"README line `dctnet {' '.join(argv)}` does not parse (exit {exc.code})")


def test_the_parser_check_catches_an_unknown_option():
    with pytest.raises(SystemExit):
        cli.build_parser("reconstruct").parse_args(["reconstruct", "--output", "x.nii.gz", "--no-such-option"])
