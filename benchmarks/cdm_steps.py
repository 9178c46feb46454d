"""DDIM step count of the interactive bone-suppression preview: quality (SSIM) against wall time, per step count.

For the CDM (small preset unless ``--preset``) it measures, for each number of DDIM steps:

- ``ssim`` / ``psnr``: the bone-suppressed PA and lateral images against the synthetic target (the phantom's
  bone-suppressed DRRs, ``data.bone``), mean over both views (scikit-image SSIM, data range 1);
- ``batched_s``: wall time of sampling both views as one batch of two (``suppress_bones``, what the
  reconstruction does); ``separate_s``: the two views one at a time (``sample_ddim`` twice). Medians of
  ``--repeats`` runs, with CPU times.

Weights: ``--weights FILE`` (a ``dctnet train-cdm`` checkpoint, whose EMA weights are used, or a
``{"model_config", "state_dict"}`` file); otherwise a model is trained here for ``--train-steps`` steps on
phantom pairs (chest phantoms of several seeds; the evaluated phantom's seed is held out), and its online
weights are used (an EMA over so few steps would still be close to the initialisation).

Run (prints one JSON document; ``--plot`` writes the SSIM/time curve)::

    python benchmarks/cdm_steps.py --train-steps 300 --plot cdm_steps.png
    python benchmarks/cdm_steps.py --weights runs/cdm/best.pt --output cdm_steps.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, set_threads, time_repeats  # noqa: E402

__all__ = ["phantom_pairs", "train_quick", "step_curve", "recommend_steps", "main"]

DEFAULT_STEPS = (1, 2, 4, 8, 16, 32, 64)
EVAL_SEED = 1000           # phantom seed of the evaluated case, never used by the quick training here
SSIM_TOLERANCE = 0.01      # a step count "matches" the best when its SSIM is within this of the best one
INTERACTIVE_BUDGET_S = 10  # issue 6: the whole interactive path (CDM + both generators) in ≤ 10 s


def phantom_pairs(seeds: list[int], image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw and bone-suppressed DRR pairs of chest phantoms, as ``dctnet prepare`` makes them.

    Shapes:
        → two ``(len(seeds), 2, image_size, image_size)`` tensors in [0, 1].
    """
    from DCTNetLib.conventions import hu_to_unit
    from DCTNetLib.data.bone import drrs_with_bone_suppression
    from DCTNetLib.data.drr import DRRGeometry
    from DCTNetLib.data.phantom import PHANTOM_FIELD_MM, chest_phantom

    volume = 128
    raws, targets = [], []
    for seed in seeds:
        unit = np.clip(hu_to_unit(chest_phantom(volume, seed=seed)), 0, 1).astype(np.float32)
        raw, bs = drrs_with_bone_suppression(torch.from_numpy(unit)[None, None], PHANTOM_FIELD_MM / volume,
                                             geometry=DRRGeometry(image_size=image_size))
        raws.append(raw)
        targets.append(bs)
    return torch.cat(raws), torch.cat(targets)


def ct_pair(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw and bone-suppressed DRR pairs of a real CT (``dctnet prepare``'s preprocessing and targets).

    Shapes:
        → two ``(1, 2, 128, 128)`` tensors in [0, 1].
    """
    from DCTNetLib.data.bone import drrs_with_bone_suppression
    from DCTNetLib.data.preprocess import preprocess_ct
    from DCTNetLib.io.ct import read_ct

    prepared = preprocess_ct(read_ct(path))
    with torch.inference_mode():
        return drrs_with_bone_suppression(torch.from_numpy(prepared.volume)[None, None], prepared.spacing_mm)


def train_quick(config: Any, raw: torch.Tensor, target: torch.Tensor, steps: int, lr: float,
                seed: int = 0) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train a :class:`ConditionalDiffusion` on the given pairs (one random pair per step, Adam)."""
    from DCTNetLib.models.diffusion import ConditionalDiffusion

    torch.manual_seed(seed)
    model = ConditionalDiffusion(config)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    losses, start = [], time.perf_counter()
    for _ in range(steps):
        i = int(torch.randint(0, raw.shape[0], ()))
        loss = model.pair_loss(target[i:i + 1], raw[i:i + 1])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    window = max(1, min(20, steps // 5))
    info = {"train_steps": steps, "lr": lr, "train_s": round(time.perf_counter() - start, 1),
            "loss_first": float(np.mean(losses[:window])) if losses else None,
            "loss_last": float(np.mean(losses[-window:])) if losses else None}
    return model.eval(), info


def _quality(out: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Mean SSIM and PSNR over the views of ``(1, 2, H, W)`` images."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a, b = out[0].double().numpy(), target[0].double().numpy()
    ssim = [structural_similarity(a[v], b[v], data_range=1.0) for v in range(a.shape[0])]
    psnr = [peak_signal_noise_ratio(b[v], a[v], data_range=1.0) for v in range(a.shape[0])]
    return {"ssim": round(float(np.mean(ssim)), 4), "psnr": round(float(np.mean(psnr)), 2),
            "ssim_pa": round(float(ssim[0]), 4), "ssim_lat": round(float(ssim[1]), 4)}


def step_curve(model: torch.nn.Module, raw: torch.Tensor, target: torch.Tensor, steps_list: list[int],
               repeats: int = 3, seed: int = 0, strength: float | None = None) -> list[dict[str, Any]]:
    """Quality and time of DDIM at each step count for one ``(1, 2, H, W)`` pair (see the module docstring)."""
    from DCTNetLib.conventions import VIEW_LAT, VIEW_PA

    rows = []
    for steps in steps_list:
        with torch.inference_mode():
            # one sample (samples=1) whatever the model's default, as the separate path below draws one per view;
            # benchmarks/cdm_sampler_sweep.py measures the mean of several samples
            out = model.suppress_bones(raw, steps=steps, seed=seed, strength=strength, samples=1)
            batched = time_repeats(lambda: model.suppress_bones(raw, steps=steps, seed=seed, strength=strength,
                                                                samples=1),
                                   repeats)
            separate = time_repeats(lambda: (model.sample_ddim(raw[:, 0:1], VIEW_PA, steps=steps, seed=seed,
                                                               strength=strength),
                                             model.sample_ddim(raw[:, 1:2], VIEW_LAT, steps=steps, seed=seed + 1,
                                                               strength=strength)),
                                    repeats)
        rows.append({"steps": steps, **_quality(out, target),
                     "batched_s": batched["median_s"], "batched_cpu_s": batched["median_cpu_s"],
                     "separate_s": separate["median_s"], "separate_cpu_s": separate["median_cpu_s"],
                     "separate_over_batched": round(separate["median_s"] / max(batched["median_s"], 1e-9), 3)})
        print(f"steps {steps:3d}: SSIM {rows[-1]['ssim']:.4f}  PSNR {rows[-1]['psnr']:.2f} dB  "
              f"batched {batched['median_s']:.3f} s  separate {separate['median_s']:.3f} s", file=sys.stderr)
    return rows


def recommend_steps(rows: list[dict[str, Any]], tolerance: float = SSIM_TOLERANCE) -> int:
    """Fewest steps whose SSIM is within ``tolerance`` of the best SSIM measured."""
    best = max(r["ssim"] for r in rows)
    return min(r["steps"] for r in rows if r["ssim"] >= best - tolerance)


def _plot(rows: list[dict[str, Any]], baseline: dict[str, float], path: Path, case: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from DCTNetLib.io.atomic import atomic_path

    steps = [r["steps"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for ax, key, unit in ((axes[0], "ssim", ""), (axes[1], "psnr", " (dB)")):
        ax.plot(steps, [r[key] for r in rows], "o-", color="tab:blue", label=f"{key.upper()}: CDM vs target")
        ax.axhline(baseline[key], color="tab:blue", ls=":", label=f"{key.upper()}: input unchanged vs target")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("DDIM steps")
        ax.set_ylabel(key.upper() + unit, color="tab:blue")
    twin = axes[0].twinx()
    twin.plot(steps, [r["batched_s"] for r in rows], "s--", color="tab:red", label="time, PA+LAT batched")
    twin.set_ylabel("seconds", color="tab:red")
    lines = axes[0].get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    axes[0].legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="lower right")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Bone-suppression CDM on {case}: DDIM steps vs quality and time", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, help="CDM checkpoint (dctnet train-cdm) or config+state_dict file")
    parser.add_argument("--preset", default="small", choices=("tiny", "small", "full"),
                        help="CDM preset when training here (default small)")
    parser.add_argument("--train-steps", type=int, default=300, help="training steps without --weights")
    parser.add_argument("--train-cases", type=int, default=4, help="phantom seeds to train on")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of the quick training")
    parser.add_argument("--steps", default=",".join(map(str, DEFAULT_STEPS)), help="comma-separated DDIM steps")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per step count (median reported)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--eval-seed", type=int, default=EVAL_SEED,
                        help="phantom seed of the evaluated case: pick one the --weights never saw (the shipped model "
                             "trained on seeds 1000-1031; use e.g. 2000)")
    parser.add_argument("--ct", type=Path, help="evaluate on the DRRs of this real CT (one the CDM never saw, e.g. "
                                                "LIDC-IDRI-0001) instead of a phantom")
    parser.add_argument("--strength", type=float, help="where DDIM starts, fraction of T (default: the model's "
                                                       "sampling_strength; < 1 starts from the noised input)")
    parser.add_argument("--plot", type=Path, help="write the SSIM/time curve as PNG")
    parser.add_argument("--output", type=Path, help="also write the JSON report here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    from DCTNetLib.helpers import count_parameters
    from DCTNetLib.models.diffusion import CDMConfig

    steps_list = sorted({int(s) for s in args.steps.split(",") if s.strip()})
    if args.weights is not None:
        from DCTNetLib.checkpoints.networks import load_cdm

        model, _ = load_cdm(args.weights)
        source: dict[str, Any] = {"weights": str(args.weights)}
    else:
        config = getattr(CDMConfig, args.preset)()
        raw_train, target_train = phantom_pairs(list(range(args.train_cases)), config.image_size)
        model, source = train_quick(config, raw_train, target_train, args.train_steps, args.lr)
        source = {"weights": f"trained here ({args.preset} preset, online weights)", **source}
    config = model.config
    if args.ct is not None:
        raw, target = ct_pair(args.ct)
        case = f"{args.ct.name} PA+LAT DRRs, target = synthetic bone-suppressed DRRs"
    else:
        raw, target = phantom_pairs([args.eval_seed], config.image_size)
        case = f"chest_phantom(seed={args.eval_seed}) PA+LAT, target = synthetic bone-suppressed DRRs"
    baseline = _quality(raw, target)
    rows = step_curve(model, raw, target, steps_list, args.repeats, args.seed, args.strength)
    fastest_ok = recommend_steps(rows)
    report = {
        "benchmark": "cdm_steps",
        "machine": machine_info(),
        "strength": args.strength if args.strength is not None else config.sampling_strength,
        "model": {"preset_objective": config.objective, "target": config.target, "image_size": config.image_size, "timesteps": config.timesteps,
                  "parameters_m": round(count_parameters(model, trainable_only=False) / 1e6, 3),
                  "config_sampling_steps": config.sampling_steps, **source},
        "eval_case": case,
        "input_vs_target": baseline,
        "curve": rows,
        "recommended_steps": fastest_ok,
        "recommendation_rule": f"fewest steps with SSIM within {SSIM_TOLERANCE} of the best measured",
        "interactive_budget_s": INTERACTIVE_BUDGET_S,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        from DCTNetLib.io.atomic import atomic_write_text

        atomic_write_text(args.output, text + "\n")
    if args.plot:
        _plot(rows, baseline, args.plot, args.ct.name if args.ct is not None else f"phantom {args.eval_seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
