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
