"""Can the model tell, from pixels alone, that a PA and a lateral show two patients? A relative re-projection cue.

For a genuine pair, G(Y) should explain the PA better with its own lateral than with another patient's, and the
lateral better with its own PA. The cue of a pair is the smaller of two margins:

- the PA's re-projection rank correlation (:func:`DCTNetLib.inference.film_reprojection`, read inside the film's
  field, as the input gate reads it) with the given lateral, minus its median over the atlas bank's laterals;
- the same for the lateral, with the bank's PAs.

The bank's DRRs are rendered from its volumes and histogram-matched to the view they replace, so that a film's
display curve is not what the comparison sees. A pair scoring below a threshold would be "two patients?".

Pairs: each prepared CT's PA with its own lateral (genuine) and with ``--two-per-case`` laterals of other CTs, drawn
at random, all in a film-like appearance (:func:`DCTNetLib.data.film_appearance.film_like`) and framed view by view
(zoom 0.9–1.1, shift ±4 % of the image: real films are framed one at a time); and the real films of ``--films``
(``pa_*``/``lat_*``: same stem suffix = one patient), every PA with every lateral. Bank atlases are never compared
with their own CT. Prints one JSON document (per pair the cue and its two margins; per threshold the genuine pairs
warned and the two-patient pairs caught)::

    python benchmarks/two_patient_cue.py --prepared WORK/prepared --films ../shared/data/radiographs \\
        --cases lidc_idri_0001,totalsegmentator_aorta_ct,... --seed 1 --output cue.json

Not shipped (README, "Two patients"): real genuine pairs score as low as two-patient ones.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit_report, machine_info, set_threads  # noqa: E402

from DCTNetLib.conventions import CROP_SIZE  # noqa: E402
from DCTNetLib.data.drr import make_drrs  # noqa: E402
from DCTNetLib.data.film_appearance import film_like  # noqa: E402
from DCTNetLib.inference import Reconstructor, film_reprojection  # noqa: E402
from DCTNetLib.io.atlas_bank import load_atlas_bank  # noqa: E402
from DCTNetLib.io.film import read_film  # noqa: E402
from DCTNetLib.io.radiograph import resize_radiograph  # noqa: E402
from DCTNetLib.models.projection_registration import rank_matched  # noqa: E402

__all__ = ["pair_cue", "reframe", "main"]

THRESHOLDS = (-0.05, -0.03, -0.02, -0.01, 0.0)
ZOOM = (0.9, 1.1)  # per-view framing of the constructed pairs
SHIFT = 0.04  # of the image side


def reframe(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``image`` zoomed by a factor drawn from :data:`ZOOM` and shifted by up to :data:`SHIFT` of its side along each
    axis (edges extended). Shapes: ``(n, n)`` → ``(n, n)``."""
    zoom = rng.uniform(*ZOOM)
    dx, dy = rng.uniform(-SHIFT, SHIFT, 2) * 2  # affine_grid's coordinates span 2 per side
    theta = torch.tensor([[[1 / zoom, 0.0, dx], [0.0, 1 / zoom, dy]]], dtype=torch.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    grid = F.affine_grid(theta, tuple(tensor.shape), align_corners=False)
    return F.grid_sample(tensor, grid, padding_mode="border", align_corners=False)[0, 0].numpy()


def _matched(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``image`` with ``reference``'s values in its own rank order (the registration's histogram matching)."""
    as_batch = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]  # noqa: E731
    return rank_matched(as_batch(image), as_batch(reference))[0, 0].numpy()


def _ranks(model: Reconstructor, pa: np.ndarray, lat: np.ndarray) -> tuple[float, float]:
    with torch.inference_mode():
        pair = torch.from_numpy(np.stack([pa, lat]).astype(np.float32))[None]  # (1, 2, n, n)
        volume = model.g_raw(pair.to(model.device)).float()
    check = film_reprojection(volume, pa, lat)
    return check["pa_rank"], check["lat_rank"]


def pair_cue(model: Reconstructor, pa: np.ndarray, lat: np.ndarray, bank: dict[str, np.ndarray],
             leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """The cue of one model-ready pair against the bank's ``(2, n, n)`` DRRs (those named in ``leave_out`` not
    used): ``{"pa_margin", "lat_margin", "cue", "pa_rank", "lat_rank"}``."""
    pa_rank, lat_rank = _ranks(model, pa, lat)
    others = [drr for name, drr in bank.items() if name not in leave_out]
    pa_ref = [_ranks(model, pa, _matched(drr[1], lat))[0] for drr in others]
    lat_ref = [_ranks(model, _matched(drr[0], pa), lat)[1] for drr in others]
    pa_margin, lat_margin = pa_rank - float(np.median(pa_ref)), lat_rank - float(np.median(lat_ref))
    return {"pa_rank": pa_rank, "lat_rank": lat_rank, "pa_margin": pa_margin, "lat_margin": lat_margin,
            "cue": min(pa_margin, lat_margin)}


def _film(path: Path, view: str) -> np.ndarray:
    return resize_radiograph(read_film(path, view)[0])


def _summary(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    genuine = [p["cue"] for p in pairs if p["genuine"]]
    two = [p["cue"] for p in pairs if not p["genuine"]]
    return {"genuine": len(genuine), "two_patients": len(two),
            "by_threshold": {f"{t:+.2f}": {"genuine_warned": sum(c < t for c in genuine),
                                            "two_patients_caught": sum(c < t for c in two)} for t in THRESHOLDS}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prepared", type=Path, required=True, help="a prepared folder (its cases/)")
    parser.add_argument("--cases", required=True, help="comma-separated case ids (chest CTs; no test CT)")
    parser.add_argument("--films", type=Path, help="real films: pa_*.{png,jpg,dcm} and lat_* of the same suffix")
    parser.add_argument("--two-per-case", type=int, default=3, help="two-patient pairs per PA (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    model = Reconstructor.load(device="cpu")
    atlases = load_atlas_bank(None)
    with torch.inference_mode():
        drrs = make_drrs(torch.from_numpy(atlases.volumes[:, None]).float(), CROP_SIZE / atlases.volumes.shape[-1])
    bank = {name: drrs[index].numpy() for index, name in enumerate(atlases.names)}

    cases = [c for c in args.cases.split(",") if c]
    views = {c: np.load(args.prepared / "cases" / c / "drr.npy") for c in cases}
    constructed, draw = [], 0
    for pa_case in cases:
        partners = [c for c in cases if c != pa_case]
        for lat_case in [pa_case, *rng.choice(partners, args.two_per_case, replace=False)]:
            images = []
            for view, case in ((0, pa_case), (1, lat_case)):
                torch.manual_seed(args.seed * 100_000 + draw)
                draw += 1
                looked = film_like(torch.from_numpy(views[case][view:view + 1].copy()))[0].numpy()
                images.append(reframe(looked, rng))
            cue = pair_cue(model, *images, bank, leave_out=(pa_case, lat_case))
            constructed.append({"pa": pa_case, "lat": str(lat_case), "genuine": pa_case == lat_case, **cue})
            print(constructed[-1], file=sys.stderr, flush=True)

    real = []
    if args.films is not None:
        pas = {p.stem.split("_", 1)[1]: p for p in sorted(args.films.glob("pa_*"))}
        lats = {p.stem.split("_", 1)[1]: p for p in sorted(args.films.glob("lat_*"))}
        for pa_name, pa_path in pas.items():
            for lat_name, lat_path in lats.items():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pa, lat = _film(pa_path, "pa"), _film(lat_path, "lat")
                    lat, _ = model.orient_lateral(pa, lat)
                cue = pair_cue(model, pa, lat, bank)
                real.append({"pa": pa_name, "lat": lat_name, "genuine": pa_name == lat_name, **cue})
                print(real[-1], file=sys.stderr, flush=True)

    report = {"benchmark": "two_patient_cue", "machine": machine_info(), "seed": args.seed,
              "bank": list(atlases.names), "constructed": _summary(constructed), "real": _summary(real),
              "pairs": {"constructed": constructed, "real": real}}
    emit_report(report, args.output)
    return report


if __name__ == "__main__":
    main()
