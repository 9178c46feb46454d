"""The shipped model on real films: a PA + lateral pair in three planes, and whether the volume follows the patient.

``pair`` reconstructs one real PA + lateral pair the way ``dctnet reconstruct`` does (the film reader, the input
checks) and draws the inputs, the bone-suppressed previews and the CT in three planes (soft-tissue and bone
windows), with the bone (> 300 HU) measured: 99.9th percentile and the share of the spine's column that is bone.

``framing`` edits the films the way a user's framing differs and measures the body
(:mod:`DCTNetLib.evaluation.framing`): the PA narrowed to 70 % width (the body must be narrower, not split), both
padded to 70 % of their size in black (a smaller patient: a smaller body), and cropped to the middle 80 % (a
tighter field: a larger body).

    python scripts/real_film_figures.py pair --pa PA --lat LAT --output docs/figures/real_pair.png --json out.json
    python scripts/real_film_figures.py framing --pa PA --lat LAT --json framing.json
    python scripts/real_film_figures.py bone-suppression --pa PA --lat LAT --output docs/figures/bone_suppression.png
    python scripts/real_film_figures.py refinement --pa PA --lat LAT --output docs/figures/refinement.png

``bone-suppression`` draws the CDM's preview of both films (the bundle's sampler setting) and what it removed, with
the measures of :mod:`DCTNetLib.evaluation.bone_suppression`.

The films here are for development only (Radiopaedia, CC BY-NC-SA): they are never part of the shipped weights.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from DCTNetLib.conventions import AXIS_RL  # noqa: E402
from DCTNetLib.inference import Reconstructor  # noqa: E402
from DCTNetLib.models.atlas_prior import AtlasPriorConfig  # noqa: E402
from DCTNetLib.models.projection_refinement import RefinementConfig  # noqa: E402
from DCTNetLib.io.film import read_film  # noqa: E402
from DCTNetLib.evaluation.bone_suppression import suppression_measures  # noqa: E402
from DCTNetLib.evaluation.framing import body_extent, bone_stats, measure_framing  # noqa: E402
from DCTNetLib.io.radiograph import resize_radiograph  # noqa: E402


def load_pair(pa_path: Path, lat_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Both films as the command reads them (orientation, detector field), before resizing to 128²."""
    return read_film(pa_path, "pa")[0], read_film(lat_path, "lat")[0]


def save_figure(fig, title: str, output: Path, dpi: int) -> None:
    """Title, tight layout, write (creating the folder) and close."""
    fig.suptitle(title)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=dpi)
    plt.close(fig)


def pair_figure(model: Reconstructor, pa: np.ndarray, lat: np.ndarray, output: Path, title: str) -> dict:
    result = model.reconstruct(pa, lat)
    hu = result.ct_hu.hu
    d, h, w = hu.shape
    fig, axes = plt.subplots(2, 5, figsize=(17, 7))
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, name in zip(axes[0], (result.pa, result.lat, result.pa_bs, result.lat_bs),
                               ("PA film", "lateral film", "PA, bone suppressed", "lateral, bone suppressed")):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ax.set_title(name)
    stats = {**bone_stats(hu), **body_extent(hu), "reprojection": result.reprojection,
             "refined_reprojection": result.refined_reprojection}
    final = result.refined_reprojection or result.reprojection
    axes[0, 4].text(0, 0.5, "\n".join([f"99.9th pct {stats['p999_hu']:.0f} HU",
                                       f"> 300 HU: {stats['bone_fraction']:.2%} of the volume",
                                       f"spine column > 300 HU: {stats['spine_column_bone_fraction']:.1%}",
                                       f"re-projection ρ PA {final.get('pa_rank', float('nan')):.2f}"
                                       f" / lat {final.get('lat_rank', float('nan')):.2f}",
                                       f"re-projection PSNR PA {final.get('pa_psnr', float('nan')):.1f}"
                                       f" / lat {final.get('lat_psnr', float('nan')):.1f} dB"
                                       + (" (refined)" if result.refined_reprojection else "")]),
                    fontsize=11, va="center")
    slices = ((hu[d // 2], "axial"), (hu[:, h // 2 + h // 8], "coronal (posterior: spine)"),
              (hu[:, :, w // 2], "sagittal (midline)"))
    for ax, (image, name) in zip(axes[1, :3], slices):
        ax.imshow(image, cmap="gray", vmin=-1000, vmax=1000)
        ax.set_title(f"CT {name},\n[-1000, 1000] HU")
    axes[1, 3].imshow(hu[:, :, w // 2], cmap="gray", vmin=-200, vmax=800)
    axes[1, 3].set_title("sagittal,\nbone window [-200, 800]")
    axes[1, 4].imshow(hu.max(axis=AXIS_RL), cmap="gray", vmin=-200, vmax=800)
    axes[1, 4].set_title("sagittal maximum intensity")
    save_figure(fig, title, output, dpi=70)
    return stats


def bone_suppression_figure(model: Reconstructor, pa: np.ndarray, lat: np.ndarray, output: Path | None,
                            title: str) -> dict:
    """The CDM's preview of both films as the bundle sets it: input, preview and what it removed, with
    :mod:`DCTNetLib.evaluation.bone_suppression`'s numbers per view."""
    inputs = (resize_radiograph(pa), resize_radiograph(lat))
    previews = model.suppress_bones(*inputs)
    stats = {view: suppression_measures(image, result) for view, image, result in zip(("pa", "lat"), inputs, previews)}
    stats["sampler"] = {"steps": model.default_steps, "strength": model.cdm.config.sampling_strength,
                        "samples": model.cdm.config.sampling_samples}
    if output is None:
        return stats
    removed = [np.clip(image - result, 0, None) for image, result in zip(inputs, previews)]
    top = max(float(np.percentile(r, 99.5)) for r in removed) or 1.0
    fig, axes = plt.subplots(2, 3, figsize=(11.5, 7.4))
    for row, view, image, result, change in zip(axes, ("PA", "lateral"), inputs, previews, removed):
        for ax in row:
            ax.axis("off")
        s = stats["pa" if view == "PA" else "lat"]
        row[0].imshow(image, cmap="gray", vmin=0, vmax=1)
        row[0].set_title(f"{view} film")
        row[1].imshow(result, cmap="gray", vmin=0, vmax=1)
        row[1].set_title(f"suppressed: {100 * s['ridge_contrast_removed']:.0f} % ridge contrast gone")
        row[2].imshow(change, cmap="magma", vmin=0, vmax=top)
        row[2].set_title(f"removed (0–{top:.3f}), mean {s['mean_change']:.4f},\n"
                         f"×{s['bone_change_ratio']:.1f} on ridges")
    sampler = stats["sampler"]
    save_figure(fig, f"{title}  —  CDM preview: {sampler['steps']} DDIM steps from {sampler['strength']}·T, "
                     f"mean of {sampler['samples']} sample(s)", output, dpi=70)
    return stats


def framing_figure(model: Reconstructor, pa: np.ndarray, lat: np.ndarray, output: Path | None, title: str) -> dict:
    """Measure each framing edit; with ``output``, draw one row per edit: the two inputs, a coronal slab through
    the middle and an axial slice at mid-height of the reconstruction, with the body's size."""
    rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
    stats = measure_framing(lambda p, q: model.reconstruct(p, q, check_inputs=False), pa, lat,
                            on_result=lambda name, p, q, result: rows.append((name, p, q, result.ct_hu.hu)))
    if output is None:
        return stats
    fig, axes = plt.subplots(len(rows), 4, figsize=(12, 3 * len(rows)))
    for row, (name, p, q, hu) in zip(axes, rows):
        for ax in row:
            ax.axis("off")
        d, h, w = hu.shape
        for ax, image, window in ((row[0], p, (0, 1)), (row[1], q, (0, 1)),
                                  (row[2], hu[:, h // 2 - h // 16: h // 2 + h // 16, :].mean(axis=1), (-1000, 600)),
                                  (row[3], hu[d // 2], (-1000, 600))):
            ax.imshow(image, cmap="gray", vmin=window[0], vmax=window[1])
        s = stats[name]
        row[0].set_title(name, loc="left")
        row[2].set_title(f"coronal: body {s['width_voxels']:.0f} wide, {s['height_voxels']:.0f} tall")
        row[3].set_title(f"axial; spine column bone {100 * s['spine_column_bone_fraction']:.1f} %")
    save_figure(fig, title, output, dpi=60)
    return stats


def refinement_figure(model: Reconstructor, pa: np.ndarray, lat: np.ndarray, output: Path, title: str) -> dict:
    """The generators' CT (``--no-registration``), the default registration alone (``--no-atlas``), the output (the
    registration and the atlas prior) and ``--refine``
    (docs/refinement.md): axial, coronal through the spine, midline sagittal and sagittal maximum intensity, one row
    each, with the re-projection rank correlations."""
    rows, stats = [], {}
    for name, refinement in (("--no-registration", RefinementConfig.off()),
                             ("--no-atlas", RefinementConfig.registration_only()), ("output", None),
                             ("--refine", RefinementConfig())):
        result = model.use_refinement(refinement).reconstruct(pa, lat)
        final = result.refined_reprojection or result.reprojection
        rows.append((name, result.ct_hu.hu, final))
        stats[name] = {**bone_stats(result.ct_hu.hu), **body_extent(result.ct_hu.hu), "reprojection": final}
    fig, axes = plt.subplots(len(rows), 4, figsize=(12, 3.2 * len(rows)))
    for row, (name, hu, final) in zip(axes, rows):
        d, h, w = hu.shape
        for ax, image, window in ((row[0], hu[d // 2], (-1000, 1000)), (row[1], hu[:, h // 2 + h // 8], (-1000, 1000)),
                                  (row[2], hu[:, :, w // 2], (-1000, 1000)), (row[3], hu.max(axis=AXIS_RL), (-200, 800))):
            ax.imshow(image, cmap="gray", vmin=window[0], vmax=window[1])
            ax.axis("off")
        row[0].set_title(f"{name}: axial", loc="left")
        row[1].set_title(f"coronal; DRR ρ PA {final['pa_rank']:.2f}")
        row[2].set_title(f"sagittal; DRR ρ lat {final['lat_rank']:.2f}")
        row[3].set_title("sagittal maximum intensity")
    save_figure(fig, title, output, dpi=60)
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("pair", "framing", "bone-suppression", "refinement"))
    parser.add_argument("--pa", type=Path, required=True)
    parser.add_argument("--lat", type=Path, required=True)
    parser.add_argument("--weights", type=Path, help="model bundle (default: the shipped one)")
    parser.add_argument("--output", type=Path, help="the figure (PNG); framing: optional")
    parser.add_argument("--title", default="")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    parser.add_argument("--refine", action="store_true", help="pair, framing: with the projection refinement")
    parser.add_argument("--atlas", action="store_true", help="with --refine: with the atlas prior")
    args = parser.parse_args(argv)
    refinement = RefinementConfig(atlas=AtlasPriorConfig() if args.atlas else None) if args.refine else None
    model = Reconstructor.load(args.weights, device="cpu", refinement=refinement)
    pa, lat = load_pair(args.pa, args.lat)
    if args.command == "pair":
        stats = pair_figure(model, pa, lat, args.output, args.title or f"{args.pa.name} + {args.lat.name}")
    elif args.command == "refinement":
        stats = refinement_figure(model, pa, lat, args.output, args.title or f"{args.pa.name} + {args.lat.name}")
    elif args.command == "bone-suppression":
        stats = bone_suppression_figure(model, pa, lat, args.output, args.title or f"{args.pa.name} + {args.lat.name}")
    else:
        stats = framing_figure(model, pa, lat, args.output, args.title)
    text = json.dumps(stats, indent=1, default=float)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
