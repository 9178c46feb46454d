"""Choose the bone-suppression preview's sampler on validation DRRs: DDIM steps × start strength × samples averaged.

For a CDM (a model bundle or a ``dctnet train-cdm`` checkpoint) and prepared validation cases, each setting is
scored as the preview is: the PA and lateral DRRs suppressed as one batch (``suppress_bones``), clamped to [0, 1],
against the bone-removed targets (SSIM and PSNR, data range 1, mean over views and cases), and timed (wall time of
the whole preview of one pair, one run after a warm-up).

The rule that picks the default (``docs/cdm.md``):

1. admissible: the preview beats the unchanged input on SSIM *and* PSNR, and takes at most ``--budget`` seconds;
2. the highest SSIM among them;
3. among settings within ``SSIM_TIE`` of it, the fewest network evaluations (steps × samples).

Prints one JSON document (``--output`` also writes it)::

    python benchmarks/cdm_sampler_sweep.py --weights runs/cdm/latest.pt --prepared WORK/prepared \\
        --cases lidc_idri_0001 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit_report, machine_info, set_threads  # noqa: E402
from cdm_bone_suppression import _ssim_psnr, cdm_of, preview  # noqa: E402

__all__ = ["score", "sweep", "choose", "main"]

SSIM_TIE = 0.0002     # not told apart: the SSIM's std over 8 sampling seeds is 0.0002-0.0003 (LIDC-IDRI-0001)
BUDGET_S = 3.0        # the preview's share of the 10 s interactive path (generators and writing take ~2 s)


def score(cdm: Any, pairs: list[tuple[np.ndarray, np.ndarray]], steps: int, strength: float,
          samples: int) -> dict[str, Any]:
    """Mean SSIM / PSNR of one setting's previews over ``pairs`` of ``((2, n, n) input, (2, n, n) target)``, and
    the wall time of one preview."""
    ssims, psnrs, seconds = [], [], []
    for drr, target in pairs:
        start = time.perf_counter()
        out = preview(cdm, drr[0], drr[1], steps, strength, samples=samples)
        seconds.append(time.perf_counter() - start)
        for view in range(2):
            ssim, psnr = _ssim_psnr(out[view], target[view])
            ssims.append(ssim)
            psnrs.append(psnr)
    return {"steps": steps, "strength": strength, "samples": samples, "evaluations": steps * samples,
            "ssim": round(float(np.mean(ssims)), 5), "psnr": round(float(np.mean(psnrs)), 3),
            "seconds": round(float(np.median(seconds)), 2)}


def input_score(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """SSIM / PSNR of the unchanged inputs against the targets (what a preview must beat)."""
    values = [_ssim_psnr(drr[v], target[v]) for drr, target in pairs for v in range(2)]
    return {"ssim": round(float(np.mean([s for s, _ in values])), 5),
            "psnr": round(float(np.mean([p for _, p in values])), 3)}


def sweep(cdm: Any, pairs: list[tuple[np.ndarray, np.ndarray]], steps: list[int], strengths: list[float],
          samples: list[int]) -> list[dict[str, Any]]:
    preview(cdm, pairs[0][0][0], pairs[0][0][1], 1, 1.0)  # warm-up: the first call allocates
    rows = []
    for n_steps in steps:
        for strength in strengths:
            for n_samples in samples:
                rows.append(score(cdm, pairs, n_steps, strength, n_samples))
                print(rows[-1], file=sys.stderr, flush=True)
    return rows


def choose(rows: list[dict[str, Any]], baseline: dict[str, float], budget_s: float = BUDGET_S,
           tie: float = SSIM_TIE) -> dict[str, Any] | None:
    """The module docstring's rule; None when no setting is admissible."""
    admissible = [r for r in rows if r["ssim"] > baseline["ssim"] and r["psnr"] > baseline["psnr"]
                  and r["seconds"] <= budget_s]
    if not admissible:
        return None
    best = max(r["ssim"] for r in admissible)
    return min((r for r in admissible if r["ssim"] >= best - tie), key=lambda r: (r["evaluations"], -r["ssim"]))


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, help="model bundle or train-cdm checkpoint (default: shipped)")
    parser.add_argument("--prepared", type=Path, required=True, help="prepared data folder holding --cases")
    parser.add_argument("--cases", default="lidc_idri_0001", help="comma-separated validation case ids")
    parser.add_argument("--steps", default="4,8")
    parser.add_argument("--strengths", default="0.35,0.5,0.7,1.0")
    parser.add_argument("--samples", default="1,2,4,8")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds allowed for one preview")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    cdm, args.weights = cdm_of(args.weights)
    pairs = []
    for case in (c for c in args.cases.split(",") if c):
        folder = args.prepared / "cases" / case
        pairs.append((np.load(folder / "drr.npy").astype(np.float32),
                      np.load(folder / "drr_bone_suppressed.npy").astype(np.float32)))
    baseline = input_score(pairs)
    with torch.inference_mode():
        rows = sweep(cdm, pairs, _ints(args.steps), [float(s) for s in args.strengths.split(",")],
                     _ints(args.samples))
    report = {"machine": machine_info(), "weights": str(args.weights), "cases": args.cases, "input": baseline,
              "budget_s": args.budget, "ssim_tie": SSIM_TIE, "rows": rows,
              "chosen": choose(rows, baseline, args.budget)}
    emit_report(report, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
