"""``dctnet reconstruct`` — a PA and a lateral radiograph in, a 128³ CT (HU, 2.5 mm voxels) out.

Examples::

    dctnet reconstruct --pa pa.png --lat lat.png --output ct.nii.gz
    dctnet reconstruct --ct chest.nii.gz --output ct.nii.gz          # radiographs made from a CT (round trip)
    dctnet reconstruct --pa pa.dcm --lat lat.dcm --output ct.nrrd --weights my_model.pt --device cuda --steps 50

Besides the CT (G(Y)), ``--extras`` writes the soft-tissue CT G(X), the branch-disagreement map |G(Y) − G(X)|,
the bone-suppressed radiographs and a PNG figure next to it. Nothing is overwritten without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path

from ..errors import InputError, OutputError

HELP = "reconstruct a CT from a PA and a lateral radiograph (or from DRRs of a CT with --ct)"
log = logging.getLogger("dctnet.reconstruct")

_VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    source = parser.add_argument_group("input (either --pa and --lat, or --ct)")
    source.add_argument("--pa", type=Path, help="posterior-anterior radiograph (PNG, JPEG, TIFF, DICOM CR/DX)")
    source.add_argument("--lat", type=Path, help="lateral radiograph (patient's left side towards the detector)")
    source.add_argument("--ct", type=Path, help="a CT (DICOM folder, NIfTI, NRRD, MHA): reconstruct from its DRRs "
                                                "and report PSNR/SSIM against it")
    parser.add_argument("--output", required=True, type=Path, help="output CT: .nii.gz, .nii, .nrrd, .mha")
    parser.add_argument("--weights", type=Path, help="model bundle (default: the shipped small model)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: auto")
    parser.add_argument("--steps", type=int, help="DDIM steps of the bone suppression (default: the model's)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--extras", action="store_true",
                        help="also write soft-tissue CT, disagreement map, bone-suppressed PNGs and a figure")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in _VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def output_paths(output: Path, extras: bool) -> dict[str, Path]:
    """Every file the command will write, named after ``output``."""
    if not output.name.lower().endswith(_VOLUME_SUFFIXES):
        raise InputError(f"--output {output}: use one of {', '.join(_VOLUME_SUFFIXES)}")
    suffix = output.name[len(_stem(output)):]
    paths = {"ct": output}
    if extras:
        stem, folder = _stem(output), output.parent
        paths.update(soft_tissue=folder / f"{stem}_soft_tissue{suffix}",
                     disagreement=folder / f"{stem}_disagreement{suffix}",
                     pa_bs=folder / f"{stem}_pa_bone_suppressed.png",
                     lat_bs=folder / f"{stem}_lat_bone_suppressed.png",
                     figure=folder / f"{stem}_figure.png",
                     report=folder / f"{stem}_report.json")
    return paths


def check_outputs(paths: dict[str, Path], overwrite: bool) -> None:
    """Fail before any computation if an output exists (without ``--overwrite``) or its folder is not writable."""
    from ..io.atomic import check_writable_dir

    for path in paths.values():
        check_writable_dir(path.parent)
        if path.exists() and not overwrite:
            raise OutputError(f"{path} exists; pass --overwrite to replace it, or choose another --output")


def write_png(path: Path, image) -> Path:
    """An 8-bit greyscale PNG of a [0, 1] image, written atomically."""
    import io

    import numpy as np
    from PIL import Image

    from ..io.atomic import atomic_write_bytes

    buffer = io.BytesIO()
    Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def run(args: argparse.Namespace) -> int:
    from ..evaluation.metrics import evaluate_volume
    from ..inference import Reconstructor, on_model_grid, radiographs_from_ct
    from ..io.ct import read_ct, write_ct
    from ..io.radiograph import read_radiograph

    if args.ct is None and (args.pa is None or args.lat is None):
        raise InputError("give --pa and --lat (radiographs), or --ct (a CT to make them from)")
    if args.ct is not None and (args.pa is not None or args.lat is not None):
        raise InputError("give either --pa/--lat or --ct, not both")
    if args.steps is not None and args.steps < 1:
        raise InputError(f"--steps must be at least 1, got {args.steps}")
    paths = output_paths(args.output, args.extras)
    check_outputs(paths, args.overwrite)

    start = time.perf_counter()
    geometry = ground_truth = None
    if args.ct is not None:
        geometry, pa, lat = radiographs_from_ct(read_ct(args.ct))
        ground_truth = geometry.volume
    else:
        pa, lat = read_radiograph(args.pa), read_radiograph(args.lat)
    model = Reconstructor.load(args.weights, args.device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = model.reconstruct(pa, lat, steps=args.steps, seed=args.seed, geometry=geometry,
                                   progress=lambda f, m: log.debug("%3.0f%% %s", 100 * f, m))
    for warning in caught:
        log.warning("%s", warning.message)
    write_ct(result.ct_hu, paths["ct"])
    report = {"output": str(paths["ct"]), "device": str(model.device), "timings_s": result.timings,
              "total_s": round(time.perf_counter() - start, 3)}
    if ground_truth is not None:
        ground_truth = on_model_grid(ground_truth, result.ct_unit.shape)
        report["metrics"] = evaluate_volume(result.ct_unit, ground_truth)
    if args.extras:
        from ..evaluation.figures import reconstruction_figure

        if result.soft_tissue_hu is not None:
            write_ct(result.soft_tissue_hu, paths["soft_tissue"])
            write_ct(result.disagreement, paths["disagreement"])
            write_png(paths["pa_bs"], result.pa_bs)
            write_png(paths["lat_bs"], result.lat_bs)
        reconstruction_figure(paths["figure"], result.pa, result.lat, result.ct_unit, result.pa_bs, result.lat_bs,
                              ground_truth, title=f"DCT-Net: {paths['ct'].name}")
        from ..io.atomic import atomic_write_text

        atomic_write_text(paths["report"], json.dumps(report, indent=2, default=float) + "\n")
    print(json.dumps(report, default=float))
    return 0
