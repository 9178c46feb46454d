"""Figures of the shipped model's documentation: validation curves of a run and a before/after comparison.

    python scripts/default_model_figures.py curves --gan WORK/runs/gan --output docs/figures/validation_curve.png
    python scripts/default_model_figures.py baseline --work WORK
    python scripts/default_model_figures.py compare --before OLD.pt --after NEW.pt \
        --output docs/figures/before_after_lidc0001.png
    python scripts/default_model_figures.py bone-gain --film PA_FILM --output docs/figures/bone_gain_lidc0001.png
    python scripts/default_model_figures.py refinement --output docs/figures/refinement_lidc0001.png

``baseline`` scores the voxel-wise mean of the prepared training chest CTs against the validation case: the
"no model" row of the README's table (a reconstruction must beat the average chest to show it read the radiographs).
``curves`` plots the validation PSNR and SSIM of G(Y) (and G(X)'s PSNR), and its bone Dice when the run logged
it, on the validation case against the step, from the run's ``metrics.jsonl``. ``compare`` reconstructs LIDC-IDRI-0001 (never trained on) with two bundles and
shows the same axial, coronal and sagittal slices of each beside the ground truth. ``bone-gain`` draws the PA DRR of
LIDC-IDRI-0001 as the CT's HU give it and with film-strength bone (``boost_bone``, gains 1.5 and 2), each with its
bone component (raw − bone-removed), beside a real PA film: what ``augment_bone_gain`` trains the CDM on.
``refinement`` reconstructs LIDC-IDRI-0001 from its DRRs with the shipped model as it is, with ``--refine`` and with
``--refine --atlas``, in three planes and the bone window beside the ground truth (docs/refinement.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path



def _val_records(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("event") == "val"]


def curves(gan: Path, output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    val = _val_records(gan)
    steps = [r["step"] for r in val]
    with_bone = all("bone_dice" in r for r in val)  # runs from before validation logged bone have no third panel
    fig, axes = plt.subplots(1, 3 if with_bone else 2, figsize=(15 if with_bone else 10, 3.6), dpi=120)
    left, right = axes[0], axes[1]
    left.plot(steps, [r["psnr"] for r in val], "o-", ms=3, label="G(Y)")
    if all("psnr_gx" in r for r in val):
        left.plot(steps, [r["psnr_gx"] for r in val], "s--", ms=3, label="G(X)")
    left.set_xlabel("training step")
    left.set_ylabel("PSNR (dB, data range 1)")
    left.legend(fontsize=8)
    right.plot(steps, [r["ssim"] for r in val], "o-", ms=3, color="tab:green", label="G(Y)")
    right.set_xlabel("training step")
    right.set_ylabel("SSIM (mean of three planes)")
    right.legend(fontsize=8)
    if with_bone:
        bone = axes[2]
        bone.plot(steps, [r["bone_dice"] for r in val], "o-", ms=3, color="tab:red", label="G(Y)")
        bone.set_xlabel("training step")
        bone.set_ylabel("bone Dice (> 300 HU masks)")
        bone.legend(fontsize=8)
    fig.suptitle("Validation on LIDC-IDRI-0001 (never trained on) during training of the shipped GAN", fontsize=9)
    fig.tight_layout()
    fig.savefig(output)
    plt.close(fig)


def compare(before: Path, after: Path, output: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from DCTNetLib.data.phantom import load_lidc_demo_ct
    from DCTNetLib.evaluation.metrics import psnr, ssim3plane
    from DCTNetLib.inference import Reconstructor, radiographs_from_ct

    prepared, pa, lat = radiographs_from_ct(load_lidc_demo_ct())
    truth = prepared.volume
    rows, scores = [], {}
    for name, path in (("before (v1)", before), ("after", after)):
        pred = Reconstructor.load(path, "cpu").reconstruct(pa, lat).ct_unit
        scores[name] = {"psnr": round(psnr(pred, truth), 2), "ssim": round(ssim3plane(pred, truth)["mean"], 3)}
        rows.append((f"{name}: PSNR {scores[name]['psnr']} dB, SSIM {scores[name]['ssim']}", pred))
    rows.append(("ground truth", truth))
    n = truth.shape[0] // 2
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), dpi=100)
    for r, (title, volume) in enumerate(rows):
        for c, (plane, image) in enumerate((("axial", volume[n]), ("coronal", volume[:, n]),
                                            ("sagittal", volume[:, :, n]))):
            axes[r, c].imshow(image, cmap="gray", vmin=0.0, vmax=0.8)
            axes[r, c].set_title(f"{title} — {plane}" if c == 0 else plane, fontsize=8)
            axes[r, c].axis("off")
    fig.suptitle("LIDC-IDRI-0001 (never trained on), window [-1024, 976] HU", fontsize=9)
    fig.tight_layout()
    fig.savefig(output)
    plt.close(fig)
    return scores


def refinement(output: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from DCTNetLib.conventions import HU_MIN, HU_PER_UNIT
    from DCTNetLib.data.phantom import load_lidc_demo_ct
    from DCTNetLib.evaluation.metrics import psnr, ssim3plane
    from DCTNetLib.inference import Reconstructor, radiographs_from_ct
    from DCTNetLib.models.atlas_prior import AtlasPriorConfig
    from DCTNetLib.models.projection_refinement import RefinementConfig

    prepared, pa, lat = radiographs_from_ct(load_lidc_demo_ct())
    truth = prepared.volume
    rows, scores = [("ground truth", truth)], {}
    for name, config in (("--no-registration", RefinementConfig.off()),
                         ("--no-atlas", RefinementConfig.registration_only()), ("output", None),
                         ("--refine", RefinementConfig()),
                         ("--refine --atlas", RefinementConfig(atlas=AtlasPriorConfig()))):
        pred = Reconstructor.load(device="cpu", refinement=config).reconstruct(pa, lat, geometry=prepared).ct_unit
        scores[name] = {"psnr": round(psnr(pred, truth), 2), "ssim": round(ssim3plane(pred, truth)["mean"], 3)}
        rows.append((f"{name}: PSNR {scores[name]['psnr']} dB, SSIM {scores[name]['ssim']}", pred))
    fig, axes = plt.subplots(len(rows), 4, figsize=(12, 3 * len(rows)), dpi=70)
    for ax_row, (title, volume) in zip(axes, rows):
        hu = volume * HU_PER_UNIT + HU_MIN
        d, h, w = hu.shape
        for ax, (plane, image, window) in zip(ax_row, (("axial", hu[d // 2], (-1000, 1000)),
                                                       ("coronal", hu[:, h // 2], (-1000, 1000)),
                                                       ("sagittal", hu[:, :, w // 2], (-1000, 1000)),
                                                       ("sagittal, bone window", hu[:, :, w // 2], (-200, 800)))):
            ax.imshow(image, cmap="gray", vmin=window[0], vmax=window[1])
            ax.set_title(f"{title} — {plane}" if plane == "axial" else plane, fontsize=8, loc="left")
            ax.axis("off")
    fig.suptitle("LIDC-IDRI-0001 (validation: never trained on), from its two DRRs", fontsize=9)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output)
    plt.close(fig)
    return scores


def baseline(work: Path) -> dict:
    """PSNR (both conventions) and SSIM of the mean of the training chest CTs against the validation case."""
    import numpy as np

    from DCTNetLib.evaluation.metrics import psnr, ssim3plane, x2ct_psnr

    roles = {e["file"].split(".")[0]: e["role"] for e in json.loads((work / "source" / "sources.json").read_text())}
    cases = work / "prepared" / "cases"
    chests = [np.load(cases / stem / "ct_unit.npy").astype(np.float32) for stem, role in roles.items()
              if role == "chest" and (cases / stem).is_dir()]
    truth = next(np.load(cases / stem / "ct_unit.npy").astype(np.float32) for stem, role in roles.items()
                 if role == "validation")
    mean = np.mean(chests, axis=0)
    return {"chest_cts": len(chests), "psnr": round(psnr(mean, truth), 2), "psnr_x2ct": round(x2ct_psnr(mean, truth), 2),
            "ssim": round(ssim3plane(mean, truth)["mean"], 3)}


def bone_gain(film: Path | None, output: Path, gains: tuple[float, ...] = (1.0, 1.5, 2.0)) -> dict:
    """The PA DRR of LIDC-IDRI-0001 at each bone gain and its bone component, beside a real PA film (optional)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from DCTNetLib.data.bone import drrs_with_bone_suppression
    from DCTNetLib.data.phantom import lidc_demo_ct_path
    from DCTNetLib.data.preprocess import preprocess_ct
    from DCTNetLib.io.ct import read_ct
    from DCTNetLib.io.film import read_film
    from DCTNetLib.io.radiograph import resize_radiograph

    demo = lidc_demo_ct_path()
    if demo is None:
        raise SystemExit("LIDC-IDRI-0001 not found: run `dctnet weights fetch` first")
    prepared = preprocess_ct(read_ct(demo))
    volume = torch.from_numpy(prepared.volume)[None, None]
    columns = len(gains) + (film is not None)
    fig, axes = plt.subplots(2, columns, figsize=(3.3 * columns, 6.8))
    out = {}
    for column, gain in enumerate(gains):
        with torch.inference_mode():
            raw, removed = (x[0, 0].numpy() for x in drrs_with_bone_suppression(volume, prepared.spacing_mm,
                                                                                 bone_gain=gain))
        component = raw - removed
        out[str(gain)] = {"bone_component_mean": float(component.mean()), "bone_component_max": float(component.max())}
        axes[0, column].imshow(raw, cmap="gray", vmin=0, vmax=1)
        axes[0, column].set_title(f"PA DRR, bone gain {gain:g}")
        axes[1, column].imshow(component, cmap="magma", vmin=0, vmax=0.25)
        axes[1, column].set_title(f"bone component, mean {component.mean():.3f}")
    if film is not None:
        image = resize_radiograph(read_film(film, "pa")[0])
        axes[0, -1].imshow(image, cmap="gray", vmin=0, vmax=1)
        axes[0, -1].set_title(f"real PA film ({film.name})", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("LIDC-IDRI-0001: the CT's bone contrast (gain 1) and film-strength bone (augment_bone_gain)")
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=70)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("curves")
    c.add_argument("--gan", required=True, type=Path, help="GAN run folder (metrics.jsonl)")
    c.add_argument("--output", required=True, type=Path)
    m = sub.add_parser("compare")
    m.add_argument("--before", required=True, type=Path)
    m.add_argument("--after", required=True, type=Path)
    m.add_argument("--output", required=True, type=Path)
    b = sub.add_parser("baseline")
    b.add_argument("--work", required=True, type=Path, help="work folder of scripts/build_default_model.sh")
    g = sub.add_parser("bone-gain")
    g.add_argument("--film", type=Path, help="a real PA film to show beside the DRRs")
    g.add_argument("--output", required=True, type=Path)
    r = sub.add_parser("refinement")
    r.add_argument("--output", required=True, type=Path)
    args = parser.parse_args(argv)
    if args.command == "curves":
        curves(args.gan, args.output)
    elif args.command == "baseline":
        print(json.dumps(baseline(args.work)))
    elif args.command == "bone-gain":
        print(json.dumps(bone_gain(args.film, args.output)))
    elif args.command == "refinement":
        print(json.dumps(refinement(args.output)))
    else:
        print(json.dumps(compare(args.before, args.after, args.output)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
