"""Run every DCTNet benchmark side by side in one run and write one JSON report.

Usage (from the repository root)::

    python benchmarks/run_all.py --output benchmarks/results/report.json          # full run (20-40 min on 2 cores)
    python benchmarks/run_all.py --output /tmp/smoke.json --quick                 # smoke run (tiny models)
    python benchmarks/run_all.py --output r.json --only generator drr             # a subset

Sections (``benchmarks/README.md`` explains every number): ``generator`` (DCT-Net G(Y) vs the X2CT-GAN
generator, fresh process each, + profile when the target is missed), ``interactive`` (``dctnet reconstruct``
path), ``drr`` (ours vs DiffDRR), ``prepare`` (DICOM → 128³ → four DRRs), ``training`` (GAN / CDM steps),
``threads`` (thread settings on a busy CPU), ``cdm_steps`` (SSIM vs DDIM steps, ``cdm_steps.py``), ``cuda``.
Times are medians of several repeats; wall and CPU seconds are both kept (the CPU may be shared).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import HERE, REPO, machine_info, ratio, run_in_subprocess, set_threads, skipped  # noqa: E402

SECTIONS = ("generator", "interactive", "drr", "prepare", "training", "threads", "cdm_steps", "cuda")
TARGETS = {"generator_time_ratio_max": 0.35, "generator_peak_rss_gb_max": 2.0, "interactive_s_max": 10.0,
           "drr_throughput_ratio_min": 3.0}


class Runner:
    """Calls ``module:function`` in a fresh process (full run) or in this process (``--quick``)."""

    def __init__(self, quick: bool, threads: int | None) -> None:
        self.quick, self.threads = quick, threads

    def fresh(self, target: str, **kwargs: Any) -> dict[str, Any]:
        """Always a fresh process: peak RSS must not mix between models."""
        return run_in_subprocess(target, kwargs, self.threads)

    def __call__(self, target: str, **kwargs: Any) -> dict[str, Any]:
        if not self.quick:
            return self.fresh(target, **kwargs)
        import importlib

        module, _, function = target.partition(":")
        try:
            return getattr(importlib.import_module(module), function)(**kwargs)
        except Exception as exc:  # one failing benchmark must not lose the others' numbers
            return {"error": f"{type(exc).__name__}: {exc}"}


# ------------------------------------------------------------------------------------------------ sections
def generator(run: Runner) -> dict[str, Any]:
    size, repeats = ("tiny", 1) if run.quick else ("full", 3)
    dct = run.fresh("bench_generator:forward", model="dctnet", size=size, repeats=repeats)
    x2ct = run.fresh("bench_generator:forward", model="x2ct", size=size, repeats=repeats)
    out: dict[str, Any] = {"dctnet": dct, "x2ct": x2ct}
    out["time_ratio"] = ratio(dct.get("median_s"), x2ct.get("median_s"))
    out["cpu_time_ratio"] = ratio(dct.get("median_cpu_s"), x2ct.get("median_cpu_s"))
    rss_gb = dct.get("peak_rss_mb", 0) / 1024 if "peak_rss_mb" in dct else None
    out["dctnet_peak_rss_gb"] = round(rss_gb, 2) if rss_gb is not None else None
    out["meets_targets"] = bool(out["time_ratio"] is not None and out["time_ratio"] <= TARGETS[
        "generator_time_ratio_max"] and rss_gb is not None and rss_gb <= TARGETS["generator_peak_rss_gb_max"])
    # Always profiled (the wall ratio swings with the machine's load): which layers dominate, and one candidate.
    out["profile_dctnet"] = run.fresh("bench_generator:profile_forward", model="dctnet", size=size)
    out["profile_x2ct"] = run.fresh("bench_generator:profile_forward", model="x2ct", size=size)
    out["what_if_instance_norm_as_group_norm"] = run.fresh("bench_generator:instance_norm_what_if", size=size,
                                                           repeats=repeats)
    return out


def interactive(run: Runner) -> dict[str, Any]:
    return run("bench_interactive:end_to_end", size="tiny" if run.quick else "small", repeats=1 if run.quick else 3)


def drr(run: Runner) -> dict[str, Any]:
    if run.quick:
        return run("bench_drr:compare", size=32, spacing_mm=10.0, repeats=1)
    return run("bench_drr:compare", size=128, spacing_mm=2.5, repeats=5)


def prepare(run: Runner) -> dict[str, Any]:
    if run.quick:
        return run("bench_prepare:prepare_throughput", cases=1, workers=[1], quick=True, profile_rows=5)
    return run("bench_prepare:prepare_throughput", cases=4, workers=[1, 2], quick=False)


def training(run: Runner) -> dict[str, Any]:
    small, full, repeats = ("tiny", "tiny", 1) if run.quick else ("small", "full", 3)
    # The first shipped small recipe (v1) and the current one, one after the other in this run (target ≥ 5×).
    v1 = (skipped("the v1 recipe exists for the small preset only") if run.quick else
          run("bench_training:gan_steps", size=small, repeats=repeats, recipe="v1"))
    return {"gan_small_v1": v1,
            "gan_small": run("bench_training:gan_steps", size=small, repeats=repeats),
            "cdm_small": run("bench_training:cdm_steps", size=small, repeats=repeats),
            "gan_full_one_step": run.fresh("bench_training:gan_steps", size=full, repeats=1, warmup=1)}


def threads(run: Runner) -> dict[str, Any]:
    from bench_threads import CONFIGS

    if run.quick:  # the policy is read when torch loads: only the current process's configuration here
        return {"current_process": run("bench_threads:small_models", size="tiny", repeats=1, steps=2)}
    return {name: run_in_subprocess("bench_threads:small_models", {"size": "small"}, n, env=env)
            for name, (n, env) in CONFIGS.items()}


def cdm_steps(run: Runner) -> dict[str, Any]:
    """``benchmarks/cdm_steps.py`` (the diffusion engineer's SSIM-vs-steps curve), run as its own command."""
    script = HERE / "cdm_steps.py"
    if not script.is_file():
        return skipped(f"{script.name} is not present yet")
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "cdm_steps.json"
        cmd = [sys.executable, str(script), "--output", str(target)]
        if run.quick:
            cmd += ["--preset", "tiny", "--train-steps", "2", "--steps", "1,2", "--repeats", "1"]
        if run.threads:
            cmd += ["--threads", str(run.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO), timeout=3600)
        if proc.returncode != 0:
            return {"error": f"cdm_steps.py exited with {proc.returncode}: {proc.stderr.strip()[-600:]}"}
        return json.loads(target.read_text())


def cuda(run: Runner) -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return skipped("torch.cuda.is_available() is False on this machine")
    return run.fresh("bench_cuda:cuda_variants", size="tiny" if run.quick else "full",
                     train_size="tiny" if run.quick else "small", repeats=2 if run.quick else 5)


# ------------------------------------------------------------------------------------------------ summary
def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The headline figures (README table) pulled out of the sections."""
    s = report["sections"]

    def get(*keys: str) -> Any:
        value: Any = s
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value

    return {
        "generator_dctnet_s": get("generator", "dctnet", "median_s"),
        "generator_x2ct_s": get("generator", "x2ct", "median_s"),
        "generator_time_ratio": get("generator", "time_ratio"),
        "generator_cpu_time_ratio": get("generator", "cpu_time_ratio"),
        "generator_dctnet_peak_rss_gb": get("generator", "dctnet_peak_rss_gb"),
        "generator_x2ct_peak_rss_mb": get("generator", "x2ct", "peak_rss_mb"),
        "interactive_warm_s": get("interactive", "warm", "median_s"),
        "interactive_cold_s": get("interactive", "cold_s"),
        "interactive_random_weights": get("interactive", "random_weights"),
        "drr_ours_pairs_per_s": get("drr", "ours", "pairs_per_s"),
        "drr_diffdrr_pairs_per_s": get("drr", "diffdrr", "pairs_per_s"),
        "drr_throughput_ratio": get("drr", "throughput_ratio"),
        "drr_ncc_pa_lat": get("drr", "ncc_pa_lat"),
        "prepare_s_per_case_1_worker": get("prepare", "workers", "1", "s_per_case"),
        "prepare_cases_per_min": {k: v.get("cases_per_min") for k, v in (get("prepare", "workers") or {}).items()},
        "train_gan_small_steps_per_s": get("training", "gan_small", "steps_per_s"),
        "train_gan_small_v1_steps_per_s": get("training", "gan_small_v1", "steps_per_s"),
        "train_gan_small_speedup_vs_v1": ratio(get("training", "gan_small_v1", "median_s"),
                                               get("training", "gan_small", "median_s"), 2),
        "train_cdm_small_steps_per_s": get("training", "cdm_small", "steps_per_s"),
        "train_gan_full_step_s": get("training", "gan_full_one_step", "median_s"),
        "train_gan_full_peak_rss_mb": get("training", "gan_full_one_step", "peak_rss_mb"),
        "cuda": None if get("cuda") is None else ("skipped" if get("cuda", "skipped") else "measured"),
    }


def _write(report: dict[str, Any], path: Path) -> None:
    from DCTNetLib.io.atomic import atomic_write_text

    report["summary"] = summary(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=HERE / "results" / "report.json", help="JSON report path")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny models, one repeat, in-process")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run")
    args = parser.parse_args(argv)

    threads_used = set_threads(args.threads)
    run = Runner(args.quick, args.threads)
    report: dict[str, Any] = {"mode": "quick" if args.quick else "full", "machine": machine_info(),
                              "threads": threads_used, "targets": TARGETS, "sections": {}, "section_wall_s": {}}
    functions: dict[str, Callable[[Runner], dict[str, Any]]] = {
        "generator": generator, "interactive": interactive, "drr": drr, "prepare": prepare, "training": training,
        "threads": threads, "cdm_steps": cdm_steps, "cuda": cuda}
    for name in args.only:
        start = time.perf_counter()
        print(f"[run_all] {name} ...", file=sys.stderr, flush=True)
        try:
            report["sections"][name] = functions[name](run)
        except Exception as exc:  # keep the other sections' numbers
            report["sections"][name] = {"error": f"{type(exc).__name__}: {exc}"}
        report["section_wall_s"][name] = round(time.perf_counter() - start, 1)
        _write(report, args.output)  # after every section: a long run that is stopped keeps what it measured
    report["machine"]["load_average_at_end"] = machine_info()["load_average_1_5_15"]
    _write(report, args.output)
    print(json.dumps(report["summary"], indent=2))
    print(f"[run_all] report written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
