"""How well the input gate separates chest radiographs from everything else, and what pair checks can see.

Runs :meth:`DCTNetLib.inference.Reconstructor.reconstruct` (input checks on, the product's path) on:

- **genuine inputs**: PA + lateral DRRs of prepared CTs (``--prepared DIR``: every case of its ``cases/``
  folder), the same DRRs in a random film-like appearance (:mod:`DCTNetLib.data.film_appearance`, two draws per
  case), and real films (``--films DIR``: ``pa_*``/``lat_*`` files; a PA without its lateral is paired with a
  genuine real lateral);
- **not chest radiographs**, each put in place of one view of a genuine pair: uniform and smoothed noise,
  scikit-image's sample photographs, axial CT slices (soft-tissue window), inverted PAs and inverted laterals;
- **inconsistent pairs**: the PA of one CT with the lateral of another, a real PA film with a real lateral of
  another patient, and a mirrored lateral — the re-projection correlations are reported so that a rule can be
  judged on them, ``lateral_flipped`` counts the laterals the checks turn round (for mirrored laterals: the
  detection rate; for genuine ones: false flips) and ``row_profile`` the score of a two-patient cue that was
  tried and not shipped (:func:`row_profile_agreement`; ``two_patient_cue`` in the report: README, "Two patients").

Prints one JSON document: per category the number of inputs, how many the gate refuses (``refused_before``: by the
image checks, before any reconstruction) and the re-projection correlations (min / median / max, refused inputs
included)::

    python benchmarks/film_gate.py --prepared WORK/prepared --films ../shared/data/radiographs --output gate.json

The re-projection scores are the gate's: their rank correlations are read where each film shows the patient
(shutters and markers left out, :func:`DCTNetLib.inference.film_reprojection`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit_report, machine_info, set_threads  # noqa: E402

from DCTNetLib.data.film_appearance import film_like  # noqa: E402
from DCTNetLib.inference import Reconstructor  # noqa: E402
from DCTNetLib.io.film import read_film  # noqa: E402
from DCTNetLib.io.film_gate import consistency_reason, facing_left, non_chest_reason  # noqa: E402
from DCTNetLib.io.radiograph import pad_to_square, resize_radiograph  # noqa: E402
from DCTNetLib.models.projection_refinement import RefinementConfig  # noqa: E402

__all__ = ["photographs", "run_case", "main"]

PHOTOS = ("camera", "astronaut", "coffee", "chelsea", "rocket", "coins", "clock", "horse", "moon", "page",
          "text", "grass", "gravel", "brick", "retina", "hubble_deep_field")
CT_WINDOW = (0.2, 0.5)  # unit values of the HU window: about −520 … +230 HU, lungs dark, soft tissue grey


def photographs() -> Iterator[tuple[str, np.ndarray]]:
    """scikit-image's bundled sample photographs as grey images in [0, 1]."""
    from skimage import color
    from skimage import data as samples

    for name in PHOTOS:
        image = getattr(samples, name)().astype(np.float32)
        if image.ndim == 3:
            image = color.rgb2gray(image[..., :3])
        image = (image - image.min()) / max(float(np.ptp(image)), 1e-6)
        yield name, resize_radiograph(image.astype(np.float32))


def run_case(model: Reconstructor, pa: np.ndarray, lat: np.ndarray) -> dict[str, Any]:
    """The gate's decision on one pair and the re-projection scores behind it: the pair is reconstructed with the
    checks off, then the same two checks :meth:`Reconstructor.reconstruct` makes are applied, so that the scores
    of refused inputs are seen too. ``{"refused": reason or None, "before": bool, "pa_rank", ...}``."""
    before = non_chest_reason(pa, "pa") or non_chest_reason(lat, "lat")
    lat, reason = model.orient_lateral(pa, lat)  # as the checks do: a lateral facing right is turned round
    flipped = reason is not None
    result = model.reconstruct(pa, lat, steps=1, check_inputs=False)
    scores = {key: result.reprojection.get(key) for key in ("pa_ncc", "lat_ncc", "pa_rank", "lat_rank")}
    return {"refused": before or consistency_reason(result.reprojection), "before": before is not None,
            "flipped": flipped, "row_profile": row_profile_agreement(pa, lat), **scores}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    refused = [r for r in rows if r["refused"]]
    out: dict[str, Any] = {"n": len(rows), "refused": len(refused), "refused_before": sum(r["before"] for r in rows),
                           "lateral_flipped": sum(r["flipped"] for r in rows)}
    for key in ("pa_ncc", "lat_ncc", "pa_rank", "lat_rank", "row_profile"):
        values = [r[key] for r in rows if r.get(key) is not None]
        if values:
            out[key] = {"min": float(np.min(values)), "median": float(np.median(values)), "max": float(np.max(values))}
    return out


# The two-patient cue (tried, not shipped). Both views integrate the same axial slabs, so in parallel projection a
# PA row and the same lateral row sum the same attenuation (the zeroth Helgason–Ludwig consistency condition); films
# keep at most the shape of the rows' mean brightness, up to their framing: so the best correlation over a vertical
# scale (0.8–1.25) and shift (±16 % of the height), blank collimator rows left out.
PROFILE_SCALES, PROFILE_SHIFT, PROFILE_OVERLAP, BLANK_ROW_STD = (0.8, 1.25), 0.16, 0.6, 1e-3


def row_profile_agreement(pa: np.ndarray, lat: np.ndarray, steps: int = 19) -> float:
    """Best Pearson correlation of two ``(n, n)`` views' row-mean profiles over a scale and shift of the lateral's
    rows (the comment above): near 1 for DRRs of one CT, lower when shoulders, lungs and diaphragm do not line up."""
    a, b = (np.asarray(image, dtype=np.float64) for image in (pa, lat))
    shown_a, shown_b = a.std(axis=1) > BLANK_ROW_STD, b.std(axis=1) > BLANK_ROW_STD
    a, b = a.mean(axis=1), b.mean(axis=1)
    n = a.shape[0]
    rows = np.arange(n, dtype=np.float64)
    scale = np.exp(np.linspace(np.log(PROFILE_SCALES[0]), np.log(PROFILE_SCALES[1]), steps))[:, None, None]
    offsets = np.arange(-PROFILE_SHIFT, PROFILE_SHIFT + 1e-9, 1 / 64)[None, :, None] * n
    source = (rows[None, None, :] - n / 2) / scale + n / 2 + offsets  # the lateral's row seen at each PA row
    inside = (source >= 0) & (source <= n - 1) & shown_a & (np.interp(source, rows, shown_b.astype(float)) == 1)
    warped = np.interp(source, rows, b)
    weight = inside / np.maximum(inside.sum(axis=-1, keepdims=True), 1)
    da = (a - (weight * a).sum(-1, keepdims=True)) * inside
    db = (warped - (weight * warped).sum(-1, keepdims=True)) * inside
    denominator = np.sqrt((da * da).sum(-1) * (db * db).sum(-1))
    correlation = np.where(denominator > 0, (da * db).sum(-1) / np.maximum(denominator, 1e-300), 0.0)
    correlation[inside.sum(-1) < PROFILE_OVERLAP * min(shown_a.sum(), shown_b.sum())] = -1.0
    return float(correlation.max())


def _quantiles(values: list[float]) -> dict[str, float]:
    return {f"p{q}": round(float(np.percentile(values, q)), 3) for q in (0, 1, 5, 25, 50)}


def two_patient_cue(drrs: dict[str, np.ndarray], real_pairs: dict[str, tuple[np.ndarray, np.ndarray]],
                    other_pas: list[np.ndarray], draws: int = 10, crops: int = 100) -> dict[str, Any]:
    """The row-profile cue on genuine and two-patient pairs, without reconstructions: every ordered pair of two
    different cases' DRRs, plain and film-like; each case's own pair in ``draws`` film-like looks; and real films
    with each view cropped at random to 70–100 % of its height and width (a film's own framing), genuine pairs
    against a real PA with another patient's real lateral. The threshold that keeps 99 % of the genuine film-like
    DRR pairs is applied to all."""
    def looks(image: np.ndarray) -> np.ndarray:
        return film_like(torch.from_numpy(image[None]))[0].numpy()

    rng = np.random.default_rng(0)

    def framed(image: np.ndarray, lateral: bool = False) -> np.ndarray:
        rows, cols = image.shape
        height, width = (int(side * rng.uniform(0.7, 1.0)) for side in (rows, cols))
        top, left = rng.integers(0, rows - height + 1), rng.integers(0, cols - width + 1)
        out = resize_radiograph(pad_to_square(image[top:top + height, left:left + width]))
        return facing_left(out)[0] if lateral else out

    names = list(drrs)
    film = {name: [(looks(drr[0]), looks(drr[1])) for _ in range(draws)] for name, drr in drrs.items()}
    scores = {
        "genuine_drr": [row_profile_agreement(*drr) for drr in drrs.values()],
        "genuine_film_like": [row_profile_agreement(*pair) for pairs in film.values() for pair in pairs],
        "two_patients_drr": [row_profile_agreement(drrs[a][0], drrs[b][1]) for a in names for b in names if a != b],
        "two_patients_film_like": [row_profile_agreement(film[a][0][0], film[b][0][1]) for a in names for b in names
                                   if a != b],
        "genuine_real_reframed": [], "two_patients_real_reframed": [],
    }
    for _ in range(crops if real_pairs else 0):
        for name, (pa, lat) in real_pairs.items():
            scores["genuine_real_reframed"].append(row_profile_agreement(framed(pa), framed(lat, True)))
            for other, (_, other_lat) in real_pairs.items():
                if other != name:
                    scores["two_patients_real_reframed"].append(row_profile_agreement(framed(pa),
                                                                                      framed(other_lat, True)))
            for other_pa in other_pas:
                scores["two_patients_real_reframed"].append(row_profile_agreement(framed(other_pa),
                                                                                  framed(lat, True)))
    threshold = float(np.percentile(scores["genuine_film_like"], 1))
    return {"threshold_1pct_genuine_film_like": round(threshold, 3),
            **{group: {"n": len(values), "below_threshold": int(np.sum(np.array(values) < threshold)),
                       **(_quantiles(values) if values else {})} for group, values in scores.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepared", type=Path, required=True, help="prepared data folder (dctnet prepare)")
    parser.add_argument("--films", type=Path, help="folder of real films named pa_* / lat_* (a pair shares the rest)")
    parser.add_argument("--weights", type=Path, help="model bundle (default: the shipped one)")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-registration", action="store_true",
                        help="skip the registration and atlas prior that follow the gate: its decisions and scores "
                             "are the same (it reads G(Y)'s re-projection, before them), in a fifth of the time")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = Reconstructor.load(args.weights, device="cpu",
                               refinement=RefinementConfig.off() if args.no_registration else None)
    cases = sorted(p for p in (args.prepared / "cases").iterdir() if (p / "drr.npy").is_file())
    drrs = {p.name: np.load(p / "drr.npy").astype(np.float32) for p in cases}
    genuine: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {"drr": [], "film_like_drr": [], "real_film": []}
    for name, drr in drrs.items():
        genuine["drr"].append((name, drr[0], drr[1]))
        for draw in range(2):
            pa, lat = (film_like(torch.from_numpy(drr[v:v + 1]))[0].numpy() for v in (0, 1))
            genuine["film_like_drr"].append((f"{name}#{draw}", pa, lat))
    real_lats: list[np.ndarray] = []
    other_patient: list[tuple[str, np.ndarray, np.ndarray]] = []
    lone_pas: list[tuple[str, np.ndarray, np.ndarray]] = []
    if args.films is not None:
        files = sorted(p for p in args.films.iterdir() if p.name.startswith(("pa_", "lat_")))
        images = {p.name: resize_radiograph(read_film(p, p.name.split("_")[0])[0]) for p in files}
        real_lats = [img for name, img in images.items() if name.startswith("lat_")]
        for name, img in images.items():
            if not name.startswith("pa_"):
                continue
            laterals = [n for n in images if n.startswith("lat_")]
            if not any(n[4:].split(".")[0] == name[3:].split(".")[0] for n in laterals):
                lone_pas.append((name, img, real_lats[0]))  # a PA without its lateral, as one view of a pair
            for lat_name in laterals:
                if lat_name[4:].split(".")[0] == name[3:].split(".")[0]:
                    genuine["real_film"].append((name, img, images[lat_name]))
                else:  # every real PA with every real lateral of another patient
                    other_patient.append((f"{name}+{lat_name}", img, images[lat_name]))
    base = genuine["drr"]
    report: dict[str, Any] = {"machine": machine_info(), "weights": str(args.weights or "shipped"), "genuine": {},
                              "not_chest": {}, "inconsistent_pairs": {}}
    for group, items in genuine.items():
        report["genuine"][group] = _summary([run_case(model, pa, lat) for _, pa, lat in items])
    bad: dict[str, list[dict[str, Any]]] = {"noise_as_pa": [], "noise_as_lat": [], "photo_as_pa": [], "photo_as_lat": [],
                                            "ct_slice_as_pa": [], "inverted_pa": [], "inverted_lat": []}
    from scipy.ndimage import gaussian_filter

    for i in range(5):
        uniform = rng.random((128, 128)).astype(np.float32)
        smooth = gaussian_filter(rng.random((128, 128)), 2.0)
        smooth = ((smooth - smooth.min()) / np.ptp(smooth)).astype(np.float32)
        _, pa, lat = base[i % len(base)]
        for noise in (uniform, smooth):
            bad["noise_as_pa"].append(run_case(model, noise, lat))
            bad["noise_as_lat"].append(run_case(model, pa, noise))
    for i, (_, photo) in enumerate(photographs()):
        _, pa, lat = base[i % len(base)]
        bad["photo_as_pa"].append(run_case(model, photo, lat))
        bad["photo_as_lat"].append(run_case(model, pa, photo))
    for case in cases:
        ct = np.load(case / "ct_unit.npy")
        sliced = np.clip((ct[ct.shape[0] // 2] - CT_WINDOW[0]) / (CT_WINDOW[1] - CT_WINDOW[0]), 0, 1).astype(np.float32)
        drr = drrs[case.name]
        bad["ct_slice_as_pa"].append(run_case(model, resize_radiograph(sliced), drr[1]))
    for group in ("drr", "film_like_drr", "real_film"):
        for _, pa, lat in genuine[group] + (lone_pas if group == "real_film" else []):
            bad["inverted_pa"].append(run_case(model, 1.0 - pa, lat))
            bad["inverted_lat"].append(run_case(model, pa, 1.0 - lat))
    report["not_chest"] = {key: _summary(rows) for key, rows in bad.items()}
    names = [n for n, _, _ in base]
    mismatched = [run_case(model, base[i][1], base[(i + 1) % len(base)][2]) for i in range(len(base))]
    mirrored = [run_case(model, pa, np.ascontiguousarray(lat[:, ::-1])) for _, pa, lat in base]
    mirrored_film = [run_case(model, pa, np.ascontiguousarray(lat[:, ::-1])) for _, pa, lat in genuine["film_like_drr"]]
    real_mismatched = [run_case(model, pa, lat) for _, pa, lat in other_patient]
    report["inconsistent_pairs"] = {"pa_and_lat_of_two_patients": _summary(mismatched),
                                    "real_pa_with_another_patients_lateral": _summary(real_mismatched),
                                    "mirrored_lateral": _summary(mirrored),
                                    "mirrored_film_like_lateral": _summary(mirrored_film), "cases": names}
    real_pairs = {name: (pa, lat) for name, pa, lat in genuine["real_film"]}
    report["two_patient_cue"] = two_patient_cue(drrs, real_pairs, [pa for _, pa, _ in lone_pas])
    emit_report(report, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
