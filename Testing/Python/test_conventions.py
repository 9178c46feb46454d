"""Facts defined once in DCTNetLib.conventions and used by several modules."""

from __future__ import annotations

import os
import subprocess
import sys

from DCTNetLib.conventions import derived_seed

_PRINT_SEEDS = ("from DCTNetLib.conventions import derived_seed; "
                "print(derived_seed(0, 'LIDC-IDRI-0001'), derived_seed(7, 3, 12))")


def test_derived_seeds_are_the_same_in_every_process():
    """hash() of a str changes with PYTHONHASHSEED; a derived seed must not (a DDP rank or a resumed run would
    otherwise draw other noise for the same sample)."""
    seen = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", _PRINT_SEEDS], env=env, capture_output=True, text=True,
                             check=True, timeout=120)
        seen.add(out.stdout.strip())
    assert seen == {f"{derived_seed(0, 'LIDC-IDRI-0001')} {derived_seed(7, 3, 12)}"}


def test_derived_seeds_fit_a_signed_64_bit_seed_and_tell_their_parts_apart():
    import numpy as np
    import torch

    seeds = {derived_seed(seed, epoch, index) for seed in range(3) for epoch in range(3) for index in range(20)}
    assert len(seeds) == 3 * 3 * 20
    assert derived_seed(1, 23) != derived_seed(12, 3)  # parts are separated, not concatenated
    assert all(0 <= s < 2**60 for s in seeds)
    torch.Generator().manual_seed(max(seeds))
    np.random.default_rng(max(seeds))


def test_case_and_sample_seeds_are_derived_seeds():
    """The CDM cache's per-case seed and the CDM trainer's per-sample seed come from the one derivation."""
    from DCTNetLib.training.cache import case_seed
    from DCTNetLib.training.cdm_trainer import sample_seed

    assert case_seed(5, "case02") == derived_seed(5, "case02")
    assert sample_seed(5, 2, 17) == derived_seed(5, 2, 17)


def _sources():
    """Every Python file of the product and its tools (tests excluded), but conventions.py itself."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for folder in ("DCTNetReconstruction", "DCTNetTraining", "scripts", "benchmarks"):
        for path in sorted((root / folder).rglob("*.py")):
            if path.name != "conventions.py":
                yield path


def test_volume_suffixes_and_the_detector_size_are_defined_only_in_conventions():
    """A second literal list of CT file endings, or a second 500 mm detector, would drift from the first."""
    import ast

    from DCTNetLib.conventions import DETECTOR_MM, VOLUME_READ_SUFFIXES

    suffixes = set(VOLUME_READ_SUFFIXES)
    found = []
    for path in _sources():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                strings = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
                if len(strings & suffixes) >= 2:
                    found.append(f"{path.name}:{node.lineno}: a list of volume suffixes")
            named = []
            if isinstance(node, ast.Assign):
                named = [(t.id, node.value) for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
                named = [(node.target.id, node.value)]
            elif isinstance(node, ast.arguments):
                positional = node.posonlyargs + node.args
                named = list(zip((a.arg for a in positional[len(positional) - len(node.defaults):]), node.defaults))
                named += [(a.arg, d) for a, d in zip(node.kwonlyargs, node.kw_defaults) if d is not None]
            for name, value in named:
                if ("detector" in name.lower() and isinstance(value, ast.Constant)
                        and value.value == DETECTOR_MM):
                    found.append(f"{path.name}:{value.lineno}: {name} = {value.value}")
    assert not found, "defined outside DCTNetLib.conventions: " + "; ".join(found)
