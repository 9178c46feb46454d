"""The shipped model on real films: a PA + lateral pair in three planes, and whether the volume follows the patient.

``pair`` reconstructs one real PA + lateral pair the way ``dctnet reconstruct`` does (the film reader, the input
checks) and draws the inputs, the bone-suppressed previews and the CT in three planes (soft-tissue and bone
windows), with the bone (> 300 HU) measured: 99.9th percentile and the share of the spine's column that is bone.

``framing`` edits the films the way a user's framing differs and measures the body: the PA narrowed to 70 %
width (both views' anatomy is narrower, so the body must be narrower, not split), padded to 70 % of its size
in black (a smaller patient: a smaller body), and cropped to the middle 80 % (a tighter field: a larger body).
Body width and height are measured on the reconstruction (tissue > −500 HU, the largest extent of the body in
the coronal plane through the centre).

    python scripts/real_film_figures.py pair --pa PA --lat LAT --output docs/figures/real_pair.png --json out.json
    python scripts/real_film_figures.py framing --pa PA --lat LAT --json framing.json

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
from DCTNetLib.io.film import read_film  # noqa: E402
from DCTNetLib.io.film_gate import facing_left  # noqa: E402
from DCTNetLib.io.radiograph import pad_to_square, resize_radiograph  # noqa: E402

BODY_HU = -500.0
BONE_HU = 300.0


def load_pair(pa_path: Path, lat_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Both films as the command reads them (orientation, detector field), before resizing to 128²."""
    return read_film(pa_path, "pa")[0], read_film(lat_path, "lat")[0]


def body_extent(hu: np.ndarray) -> dict[str, float]:
    """Width (R–L) and height (S–I) in voxels of the body in the coronal slab through the centre."""
    coronal = hu[:, hu.shape[1] // 2 - 8: hu.shape[1] // 2 + 8, :].max(axis=1) > BODY_HU  # (D, W)
    cols = np.flatnonzero(coronal.mean(axis=0) > 0.5)
    rows = np.flatnonzero(coronal.mean(axis=1) > 0.5)
    width = float(cols.max() - cols.min() + 1) if cols.size else 0.0
    height = float(rows.max() - rows.min() + 1) if rows.size else 0.0
    return {"width_voxels": width, "height_voxels": height, "body_fraction": float((hu > BODY_HU).mean())}


def bone_stats(hu: np.ndarray) -> dict[str, float]:
    """99.9th percentile, the bone share of the volume and of the spine's column (the middle eighth in R–L,
    the back half in A–P, where the vertebrae are)."""
    d, h, w = hu.shape
    column = hu[:, h // 2:, w // 2 - w // 16: w // 2 + w // 16]
    return {"p999_hu": float(np.percentile(hu, 99.9)), "bone_fraction": float((hu > BONE_HU).mean()),
            "spine_column_bone_fraction": float((column > BONE_HU).mean())}


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
    stats = {**bone_stats(hu), **body_extent(hu), "reprojection": result.reprojection}
    axes[0, 4].text(0, 0.5, "\n".join([f"99.9th pct {stats['p999_hu']:.0f} HU",
                                       f"> 300 HU: {stats['bone_fraction']:.2%} of the volume",
                                       f"spine column > 300 HU: {stats['spine_column_bone_fraction']:.1%}",
                                       f"re-projection ρ PA {result.reprojection.get('pa_rank', float('nan')):.2f}"
                                       f" / lat {result.reprojection.get('lat_rank', float('nan')):.2f}"]),
                    fontsize=11, va="center")
    slices = ((hu[d // 2], "axial"), (hu[:, h // 2 + h // 8], "coronal (posterior: spine)"),
              (hu[:, :, w // 2], "sagittal (midline)"))
    for ax, (image, name) in zip(axes[1, :3], slices):
        ax.imshow(image, cmap="gray", vmin=-1000, vmax=1000)
        ax.set_title(f"CT {name}, [-1000, 1000] HU")
    axes[1, 3].imshow(hu[:, :, w // 2], cmap="gray", vmin=-200, vmax=800)
    axes[1, 3].set_title("sagittal, bone window [-200, 800]")
    axes[1, 4].imshow(hu.max(axis=AXIS_RL), cmap="gray", vmin=-200, vmax=800)
    axes[1, 4].set_title("sagittal maximum intensity")
    fig.suptitle(title)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=70)
    plt.close(fig)
    return stats


def narrowed(image: np.ndarray, factor: float) -> np.ndarray:
    """The image squeezed horizontally to ``factor`` of its width, centred on its original canvas (black sides)."""
    from PIL import Image

    rows, cols = image.shape
    new_cols = max(1, int(round(cols * factor)))
    squeezed = np.asarray(Image.fromarray(image, mode="F").resize((new_cols, rows), Image.Resampling.BOX))
    out = np.zeros_like(image)
    start = (cols - new_cols) // 2
    out[:, start:start + new_cols] = squeezed
    return out


def padded(image: np.ndarray, factor: float) -> np.ndarray:
    """The image shrunk to ``factor`` of its size in the middle of a black canvas of the original size."""
    from PIL import Image

    rows, cols = image.shape
    small = np.asarray(Image.fromarray(image, mode="F").resize((int(cols * factor), int(rows * factor)),
                                                              Image.Resampling.BOX))
    out = np.zeros_like(image)
    top, left = (rows - small.shape[0]) // 2, (cols - small.shape[1]) // 2
    out[top:top + small.shape[0], left:left + small.shape[1]] = small
    return out


def cropped(image: np.ndarray, factor: float) -> np.ndarray:
    """The middle ``factor`` of the image (a tighter field of view)."""
    rows, cols = image.shape
    r0, c0 = int(rows * (1 - factor) / 2), int(cols * (1 - factor) / 2)
    return image[r0:rows - r0, c0:cols - c0]


def framing(model: Reconstructor, pa: np.ndarray, lat: np.ndarray) -> dict:
    """Body extent of the reconstruction for the original pair and for each edit of the framing."""
    square = lambda image: resize_radiograph(pad_to_square(image))  # noqa: E731 - what the reader does
    variants = {"original": (pa, lat), "pa_narrowed_70": (narrowed(pa, 0.7), lat),
                "both_padded_70": (padded(pa, 0.7), padded(lat, 0.7)),
                "both_cropped_80": (cropped(pa, 0.8), cropped(lat, 0.8))}
    out = {}
    for name, (p, q) in variants.items():
        q, _ = facing_left(square(q))  # what the input checks do; they are off here, as an edit may fail them
        result = model.reconstruct(square(p), q, check_inputs=False)
        out[name] = {**body_extent(result.ct_hu.hu), **bone_stats(result.ct_hu.hu),
                     "reprojection": result.reprojection}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("pair", "framing"))
    parser.add_argument("--pa", type=Path, required=True)
    parser.add_argument("--lat", type=Path, required=True)
    parser.add_argument("--weights", type=Path, help="model bundle (default: the shipped one)")
    parser.add_argument("--output", type=Path, help="pair: the figure (PNG)")
    parser.add_argument("--title", default="")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    args = parser.parse_args(argv)
    model = Reconstructor.load(args.weights, device="cpu")
    pa, lat = load_pair(args.pa, args.lat)
    if args.command == "pair":
        stats = pair_figure(model, pa, lat, args.output, args.title or f"{args.pa.name} + {args.lat.name}")
    else:
        stats = framing(model, pa, lat)
    text = json.dumps(stats, indent=1, default=float)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
