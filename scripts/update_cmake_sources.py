#!/usr/bin/env python3
"""Regenerate the file lists of the Slicer modules' CMakeLists.txt from the files on disk.

Slicer installs only the files a module's ``CMakeLists.txt`` names (``slicerMacroBuildScriptedModule``
``SCRIPTS`` and ``RESOURCES``), so a new ``DCTNetLib`` file that is not listed works in a checkout and is
missing from the built extension. The lists live between marker comments::

    # BEGIN GENERATED MODULE_PYTHON_SCRIPTS (scripts/update_cmake_sources.py)
    ...
    # END GENERATED MODULE_PYTHON_SCRIPTS

Usage::

    python scripts/update_cmake_sources.py          # rewrite the blocks
    python scripts/update_cmake_sources.py --check  # exit 1 and print the difference if a list is stale

A module's scripts are its ``*.py`` files outside ``Testing/``; its resources are every file under
``Resources/`` and under the core's ``DCTNetLib/resources/`` (shipped weights). In a git checkout only files
git tracks or would track count (ignored files such as caches and build outputs are never listed).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MODULES = ("DCTNetReconstruction", "DCTNetTraining")
BLOCKS = ("MODULE_PYTHON_SCRIPTS", "MODULE_PYTHON_RESOURCES")
RESOURCE_DIRS = ("Resources", "DCTNetLib/resources")
EXCLUDED_PARTS = {"__pycache__", "Testing", ".pytest_cache"}
EXCLUDED_SUFFIXES = (".pyc", ".pyo")

_BLOCK_RE = r"(?P<head>^[ \t]*# BEGIN GENERATED {name}[^\n]*\n)(?P<body>.*?)(?P<tail>^[ \t]*# END GENERATED {name}[^\n]*$)"


def _git_files(module_dir: Path) -> list[Path] | None:
    """Tracked and untracked-but-not-ignored files below ``module_dir``; None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", "."],
            cwd=module_dir, capture_output=True, check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    names = [name for name in out.decode("utf-8").split("\0") if name]
    return [module_dir / name for name in names if (module_dir / name).is_file()]


def _walk_files(module_dir: Path) -> list[Path]:
    return [path for path in module_dir.rglob("*") if path.is_file()]


def module_files(module_dir: Path) -> dict[str, list[str]]:
    """``{"MODULE_PYTHON_SCRIPTS": [...], "MODULE_PYTHON_RESOURCES": [...]}`` as sorted POSIX paths
    relative to ``module_dir``."""
    module_dir = Path(module_dir)
    files = _git_files(module_dir)
    if files is None:
        files = _walk_files(module_dir)
    scripts, resources = set(), set()
    for path in files:
        rel = path.relative_to(module_dir)
        if EXCLUDED_PARTS.intersection(rel.parts) or rel.name.endswith(EXCLUDED_SUFFIXES):
            continue
        posix = rel.as_posix()
        if any(posix.startswith(folder + "/") for folder in RESOURCE_DIRS):
            resources.add(posix)
        elif rel.suffix == ".py":
            scripts.add(posix)
    main_script = f"{module_dir.name}.py"
    ordered_scripts = ([main_script] if main_script in scripts else []) + sorted(scripts - {main_script})
    return {"MODULE_PYTHON_SCRIPTS": ordered_scripts, "MODULE_PYTHON_RESOURCES": sorted(resources)}


def listed_files(cmake_text: str) -> dict[str, list[str]]:
    """The entries currently between the markers of each block (a missing block raises ValueError)."""
    listed = {}
    for name in BLOCKS:
        match = re.search(_BLOCK_RE.format(name=name), cmake_text, flags=re.M | re.S)
        if match is None:
            raise ValueError(f"CMakeLists.txt has no '# BEGIN GENERATED {name}' … '# END GENERATED {name}' block")
        listed[name] = [line.strip() for line in match.group("body").splitlines()
                        if line.strip() and not line.strip().startswith("#")]
    return listed


def render(cmake_text: str, files: dict[str, list[str]]) -> str:
    """``cmake_text`` with each generated block replaced by ``files``."""
    for name in BLOCKS:
        pattern = re.compile(_BLOCK_RE.format(name=name), flags=re.M | re.S)
        match = pattern.search(cmake_text)
        if match is None:
            raise ValueError(f"CMakeLists.txt has no generated block {name}")
        indent = re.match(r"[ \t]*", match.group("head")).group(0)
        body = "".join(f"{indent}{entry}\n" for entry in files[name])
        cmake_text = cmake_text[: match.start("body")] + body + cmake_text[match.end("body"):]
    return cmake_text


def stale_entries(module_dir: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Per block: (files on disk that are not listed, listed entries that are not on disk)."""
    cmake_text = (module_dir / "CMakeLists.txt").read_text(encoding="utf-8")
    on_disk, listed = module_files(module_dir), listed_files(cmake_text)
    return {
        name: (sorted(set(on_disk[name]) - set(listed[name])), sorted(set(listed[name]) - set(on_disk[name])))
        for name in BLOCKS
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale lists (exit 1 if any)")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root (default: this checkout)")
    args = parser.parse_args(argv)
    status = 0
    for module in MODULES:
        module_dir = args.root / module
        cmake_path = module_dir / "CMakeLists.txt"
        text = cmake_path.read_text(encoding="utf-8")
        new_text = render(text, module_files(module_dir))
        if new_text == text:
            continue
        if args.check:
            status = 1
            for name, (missing, extra) in stale_entries(module_dir).items():
                for entry in missing:
                    print(f"{cmake_path}: {name} is missing {entry}")
                for entry in extra:
                    print(f"{cmake_path}: {name} lists {entry}, which does not exist")
        else:
            temp = cmake_path.with_name(f".tmp-{cmake_path.name}")  # write-then-rename, like DCTNetLib.io.atomic
            temp.write_text(new_text, encoding="utf-8")
            os.replace(temp, cmake_path)
            print(f"updated {cmake_path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
