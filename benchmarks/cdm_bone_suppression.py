"""Does the bone-suppression preview suppress bone? On DRRs against the bone-removed target, and on real films.

For a model bundle (its CDM, or a ``dctnet train-cdm`` checkpoint's online weights), at the given DDIM start
strength and step count, it measures:

- **DRRs** of prepared cases (``--prepared DIR --cases a,b``: ``drr.npy`` and ``drr_bone_suppressed.npy`` of
  ``dctnet prepare``): SSIM and PSNR (data range 1, mean of both views) of the preview against the bone-removed
  target, and of the unchanged input against the same target. The preview must beat the input. With
  ``--bone-gain G`` the raw DRRs are rendered again from the case's CT with bone's contrast scaled by G
  (:func:`DCTNetLib.data.bone.boost_bone`, how a film's softer spectrum shows bone); the target stays the CT's
  bone-removed DRR on the new image's scale.
- **Real films** (``--film FILE:VIEW``, read as ``dctnet reconstruct`` reads them): how much the preview
  changes (mean |input − preview| on [0, 1]), its correlation with the input, and *where* it changes
  (:mod:`DCTNetLib.evaluation.bone_suppression`: ``bone_change_ratio``, the change on the input's bright ridges
  over the change elsewhere, and ``ridge_contrast_removed``, the share of the ridges' contrast gone). The same
  numbers on the DRRs' *true* bone-removed targets calibrate them.

Prints one JSON document (``--output`` also writes it)::

    python benchmarks/cdm_bone_suppression.py --weights model.pt --prepared WORK/prepared \\
        --cases lidc_idri_0001 --film pa.png:pa --film lat.png:lat --strength 0.35 --steps 4 --samples 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit_report, machine_info, set_threads  # noqa: E402

from DCTNetLib.checkpoints.bundle import load_initial_cdm  # noqa: E402
from DCTNetLib.data.bone import drrs_with_bone_suppression  # noqa: E402
from DCTNetLib.evaluation.bone_suppression import suppression_measures  # noqa: E402
from DCTNetLib.io.film import read_film  # noqa: E402
from DCTNetLib.io.radiograph import resize_radiograph  # noqa: E402

__all__ = ["cdm_of", "preview", "case_drrs", "drr_scores", "film_scores", "main"]


def cdm_of(weights: Path | None) -> tuple[Any, Path]:
    """The CDM of a model bundle or a train-cdm checkpoint (the shipped bundle when None), in eval mode, and its
    path."""
    if weights is None:
        from DCTNetLib.checkpoints.bundle import default_weights_path

        weights = default_weights_path()
    return load_initial_cdm(weights).eval(), weights


def preview(cdm: Any, pa: np.ndarray, lat: np.ndarray, steps: int, strength: float, seed: int = 0,
            samples: int = 1) -> np.ndarray:
    """The CDM's bone-suppressed ``(2, n, n)`` pair for a ``(n, n)`` PA and lateral (mean of ``samples``)."""
    pair = torch.from_numpy(np.stack([pa, lat]).astype(np.float32))[None]
    with torch.inference_mode():
        return cdm.suppress_bones(pair, steps=steps, seed=seed, strength=strength,
                                  samples=samples).clamp(0.0, 1.0)[0].numpy()


def _ssim_psnr(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    return (float(structural_similarity(a, b, data_range=1.0)),
            float(peak_signal_noise_ratio(b, a, data_range=1.0)))


def case_drrs(case_dir: Path, bone_gain: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A prepared case's ``(2, n, n)`` raw and bone-removed DRRs: as prepared, or rendered again from its CT with
    the bone contrast scaled by ``bone_gain``."""
    if bone_gain == 1.0:
        return (np.load(case_dir / "drr.npy").astype(np.float32),
                np.load(case_dir / "drr_bone_suppressed.npy").astype(np.float32))
    unit = torch.from_numpy(np.load(case_dir / "ct_unit.npy").astype(np.float32))[None, None]
    with torch.no_grad():
        raw, removed = drrs_with_bone_suppression(unit, bone_gain=bone_gain)
    return raw[0].numpy(), removed[0].numpy()


def drr_scores(cdm: Any, prepared: Path, cases: list[str], steps: int, strength: float,
               samples: int = 1, bone_gain: float = 1.0) -> dict[str, Any]:
    rows = {}
    for case in cases:
        drr, target = case_drrs(prepared / "cases" / case, bone_gain)
        out = preview(cdm, drr[0], drr[1], steps, strength, samples=samples)
        views = {}
        for v, name in enumerate(("pa", "lat")):
            ssim_p, psnr_p = _ssim_psnr(out[v], target[v])
            ssim_i, psnr_i = _ssim_psnr(drr[v], target[v])
            preview_measures = suppression_measures(drr[v], out[v])
            true_measures = suppression_measures(drr[v], target[v])
            views[name] = {"ssim_preview": ssim_p, "ssim_input": ssim_i, "psnr_preview": psnr_p, "psnr_input": psnr_i,
                           "bone_change_ratio_preview": preview_measures["bone_change_ratio"],
                           "bone_change_ratio_true": true_measures["bone_change_ratio"],
                           "ridge_contrast_removed_preview": preview_measures["ridge_contrast_removed"],
                           "ridge_contrast_removed_true": true_measures["ridge_contrast_removed"]}
        mean = {key: float(np.mean([views[v][key] for v in views])) for key in views["pa"]}
        rows[case] = {**views, "mean": mean}
    keys = next(iter(rows.values()))["mean"].keys()
    overall = {key: float(np.mean([r["mean"][key] for r in rows.values()])) for key in keys}
    overall["ssim_gain"] = overall["ssim_preview"] - overall["ssim_input"]
    overall["psnr_gain_db"] = overall["psnr_preview"] - overall["psnr_input"]
    return {"cases": rows, "mean": overall}


def film_scores(cdm: Any, films: list[tuple[Path, str]], steps: int, strength: float,
                samples: int = 1) -> dict[str, Any]:
    images = {path.name: (view, resize_radiograph(read_film(path, view)[0])) for path, view in films}
    out = {}
    for name, (view, image) in images.items():
        # the CDM takes a pair; a film without its partner view is paired with itself (each view is denoised
        # with its own view flag, so the partner does not change this view's preview)
        pa, lat = (image, image)
        result = preview(cdm, pa, lat, steps, strength, samples=samples)[0 if view == "pa" else 1]
        out[name] = {"view": view, **suppression_measures(image, result),
                     "correlation_with_input": float(np.corrcoef(image.ravel(), result.ravel())[0, 1])}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, help="model bundle or train-cdm checkpoint (default: shipped)")
    parser.add_argument("--prepared", type=Path, help="prepared data folder holding --cases")
    parser.add_argument("--cases", default="", help="comma-separated prepared case ids")
    parser.add_argument("--film", action="append", default=[], metavar="FILE:VIEW", help="a real film and its view")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--strength", type=float, default=0.35)
    parser.add_argument("--samples", type=int, default=1, help="samples averaged into the preview")
    parser.add_argument("--bone-gain", type=float, default=1.0,
                        help="render the cases' raw DRRs again with bone's contrast scaled by this "
                             "(default 1: as prepared)")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    cdm, args.weights = cdm_of(args.weights)
    report: dict[str, Any] = {"machine": machine_info(), "weights": str(args.weights), "steps": args.steps,
                              "strength": args.strength, "samples": args.samples, "bone_gain": args.bone_gain}
    cases = [c for c in args.cases.split(",") if c]
    if cases:
        report["drr"] = drr_scores(cdm, args.prepared, cases, args.steps, args.strength, args.samples,
                                   args.bone_gain)
    films = [(Path(f.rsplit(":", 1)[0]), f.rsplit(":", 1)[1]) for f in args.film]
    if films:
        report["films"] = film_scores(cdm, films, args.steps, args.strength, args.samples)
    emit_report(report, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
