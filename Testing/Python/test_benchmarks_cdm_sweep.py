"""``benchmarks/cdm_sampler_sweep.py``: the rule that picks the preview's sampler, and a sweep on a tiny CDM."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from cdm_sampler_sweep import choose, input_score, sweep  # noqa: E402

from DCTNetLib.models.diffusion import CDMConfig, ConditionalDiffusion  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

BASELINE = {"ssim": 0.98, "psnr": 35.0}


def _row(steps, samples, ssim, psnr, seconds=0.5):
    return {"steps": steps, "strength": 0.5, "samples": samples, "evaluations": steps * samples, "ssim": ssim,
            "psnr": psnr, "seconds": seconds}


def test_rule_takes_the_fewest_evaluations_among_near_ties_of_the_best_admissible_ssim():
    rows = [_row(4, 1, 0.9810, 36.0),
            _row(4, 4, 0.9822, 36.0),
            _row(8, 4, 0.9823, 36.0),            # within the tie of the best: more evaluations than (4, 4)
            _row(8, 8, 0.9840, 36.0, seconds=9),  # best SSIM, but too slow
            _row(4, 8, 0.9850, 34.0)]            # best SSIM, but loses PSNR to the input
    chosen = choose(rows, BASELINE, budget_s=3.0, tie=0.0002)
    assert (chosen["steps"], chosen["samples"]) == (4, 4)
    assert choose(rows, BASELINE, budget_s=10.0, tie=0.0002)["samples"] == 8
    assert choose([_row(4, 1, 0.97, 36.0)], BASELINE) is None  # nothing beats the input


def test_sweep_scores_every_setting_against_the_input():
    torch.manual_seed(0)
    cdm = ConditionalDiffusion(CDMConfig.tiny(target="residual", residual_range=0.5)).eval()
    size = cdm.config.image_size
    yy, xx = np.mgrid[:size, :size] / size
    drr = np.stack([0.2 + 0.6 * yy, 0.2 + 0.6 * xx]).astype(np.float32)
    target = drr - 0.1 * (np.abs(xx - 0.5) < 0.1).astype(np.float32)  # a "spine" removed
    pairs = [(drr, target)]
    rows = sweep(cdm, pairs, [1, 2], [0.5, 1.0], [1, 2])
    assert [(r["steps"], r["strength"], r["samples"]) for r in rows] == [
        (s, t, k) for s in (1, 2) for t in (0.5, 1.0) for k in (1, 2)]
    assert all(r["evaluations"] == r["steps"] * r["samples"] and r["seconds"] >= 0 for r in rows)
    base = input_score(pairs)
    assert base["ssim"] < 1 and np.isfinite(base["psnr"])
    # an untrained CDM changes the images: its scores differ from the input's
    assert all(r["psnr"] != base["psnr"] for r in rows)
