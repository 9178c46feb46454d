"""``dctnet reconstruct`` — a PA and a lateral radiograph in, a 128³ CT (HU, 2.5 mm voxels) out.

Examples::

    dctnet reconstruct --pa pa.png --lat lat.png --output ct.nii.gz
    dctnet reconstruct --ct chest.nii.gz --output ct.nii.gz          # radiographs made from a CT (round trip)
    dctnet reconstruct --pa pa.dcm --lat lat.dcm --output ct.nrrd --weights my_model.pt --device cuda --steps 50

Besides the CT (G(Y)), ``--extras`` writes the uncertainty map (tissue-mixture spread of G(Y), HU),
the second branch's CT G(X) (reconstructed from the bone-suppressed radiographs), the branch difference
|G(Y) − G(X)|, the bone-suppressed radiographs and a PNG figure next to it. Nothing is overwritten without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import warnings
from pathlib import Path

from ..errors import InputError, OutputError

HELP = "reconstruct a CT from a PA and a lateral radiograph (or from DRRs of a CT with --ct)"
log = logging.getLogger("dctnet.reconstruct")

_VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")  # = io.ct.WRITABLE_SUFFIXES (not imported: fast --help)
PROGRESS_MODES = ("log", "json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("input (either --pa and --lat, or --ct)")
    source.add_argument("--pa", type=Path, help="posterior-anterior radiograph (PNG, JPEG, TIFF, DICOM CR/DX)")
    source.add_argument("--lat", type=Path, help="lateral radiograph (patient's left side towards the detector)")
    source.add_argument("--ct", type=Path, help="a CT (DICOM folder, NIfTI, NRRD, MHA): reconstruct from its DRRs "
                                                "and report PSNR/SSIM against it")
    parser.add_argument("--output", required=True, type=Path, help="output CT: .nii.gz, .nii, .nrrd or .mha (any "
                                                                   "case); never one of the inputs")
    parser.add_argument("--weights", type=Path, help="model bundle (default: the shipped small model)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: auto")
    parser.add_argument("--steps", type=int, help="DDIM steps of the bone suppression (default: the model's)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--extras", action="store_true",
                        help="also write the uncertainty map, G(X) (the CT from the bone-suppressed radiographs), "
                             "|G(Y) - G(X)|, the bone-suppressed PNGs, a figure and a report")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--progress", choices=PROGRESS_MODES, default="log",
                        help="how to report progress: 'log' (debug log lines, the default) or 'json': one line per "
                             "stage on stdout, {\"event\": \"progress\", \"fraction\": F, \"message\": M}; the last "
                             "(fraction 1) also lists the files written, {\"outputs\": {role: path}} (for programs, "
                             "e.g. the Slicer module)")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in _VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def output_paths(output: Path, extras: bool) -> dict[str, Path]:
    """Every file the command will write, named after ``output``."""
    if not output.name.lower().endswith(_VOLUME_SUFFIXES):
        raise InputError(f"--output {output}: use one of {', '.join(_VOLUME_SUFFIXES)} (any case)")
    suffix = output.name[len(_stem(output)):]
    paths = {"ct": output}
    if extras:
        stem, folder = _stem(output), output.parent
        paths.update(uncertainty=folder / f"{stem}_uncertainty{suffix}",
                     from_bone_suppressed=folder / f"{stem}_from_bone_suppressed{suffix}",
                     branch_difference=folder / f"{stem}_branch_difference{suffix}",
                     pa_bs=folder / f"{stem}_pa_bone_suppressed.png",
                     lat_bs=folder / f"{stem}_lat_bone_suppressed.png",
                     figure=folder / f"{stem}_figure.png",
                     report=folder / f"{stem}_report.json")
    return paths


def check_outputs(paths: dict[str, Path], overwrite: bool, inputs: tuple[Path | None, ...] = ()) -> None:
    """Fail before any computation if an output cannot be written as asked: it exists (without ``--overwrite``),
    it is one of the ``inputs``, its name is too long, or its folder is missing or not writable."""
    from ..io.atomic import check_name_length, check_writable_dir, display_path

    for path in paths.values():
        for source in filter(None, inputs):
            if _same_file(path, source):
                raise OutputError(f"--output {display_path(path)} is the input {display_path(source)}; writing it "
                                  "would destroy the input (even with --overwrite): choose another --output")
        check_name_length(path)
        check_writable_dir(path.parent if str(path.parent) else Path("."))
        if os.path.lexists(path) and not overwrite:
            raise OutputError(f"{display_path(path)} exists; pass --overwrite to replace it, or choose another "
                              "--output")


def _same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name one file (through links, ``..`` or another spelling of the path)."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def write_png(path: Path, image, overwrite: bool = True) -> Path:
    """An 8-bit greyscale PNG of a [0, 1] image, written atomically (``overwrite=False``: never replacing a file)."""
    import io

    import numpy as np
    from PIL import Image

    from ..io.atomic import atomic_write_bytes

    buffer = io.BytesIO()
    Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue(), overwrite)


def progress_reporter(mode: str):
    """``report(fraction, message, **extra)`` for ``--progress``: a debug log line, or one JSON event on stdout."""
    if mode == "json":
        def report(fraction: float, message: str, **extra) -> None:
            event = {"event": "progress", "fraction": round(float(fraction), 4), "message": message, **extra}
            print(json.dumps(event, default=str), flush=True)
    else:
        def report(fraction: float, message: str, **extra) -> None:
            log.debug("%3.0f%% %s", 100 * fraction, message)
    return report


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
    check_outputs(paths, args.overwrite, (args.pa, args.lat, args.ct, args.weights))

    progress = progress_reporter(getattr(args, "progress", "log"))
    progress(0.0, "reading the inputs")
    start = time.perf_counter()
    geometry = ground_truth = None
    if args.ct is not None:
        geometry, pa, lat = radiographs_from_ct(read_ct(args.ct))
        ground_truth = geometry.volume
    else:
        pa, lat = read_radiograph(args.pa), read_radiograph(args.lat)
    progress(0.05, "loading the model")
    model = Reconstructor.load(args.weights, args.device)
    timesteps = getattr(model.cdm, "num_timesteps", None)
    if args.steps is not None and timesteps is not None and args.steps > timesteps:
        raise InputError(f"--steps {args.steps} is more than the {timesteps} steps the model's diffusion was trained "
                         f"with (use 1 to {timesteps})")
    sources = f"radiographs made from {args.ct}" if args.ct is not None else f"--pa {args.pa} --lat {args.lat}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = model.reconstruct(pa, lat, steps=args.steps, seed=args.seed, geometry=geometry,
                                       progress=lambda f, m: progress(0.1 + 0.8 * f, m))
        except InputError as exc:  # the arrays' checks cannot know the files: name them
            raise InputError(f"{exc} ({sources})") from exc
    for warning in caught:
        log.warning("%s", warning.message)
    progress(0.9, "writing the outputs")
    write_ct(result.ct_hu, paths["ct"], overwrite=args.overwrite)
    report = {"output": str(paths["ct"]), "device": str(model.device), "timings_s": result.timings,
              "total_s": round(time.perf_counter() - start, 3)}
    if ground_truth is not None:
        ground_truth = on_model_grid(ground_truth, result.ct_unit.shape)
        report["metrics"] = evaluate_volume(result.ct_unit, ground_truth)
    if args.extras:
        from ..evaluation.figures import reconstruction_figure

        write_ct(result.uncertainty, paths["uncertainty"], overwrite=args.overwrite)
        if result.ct_from_bone_suppressed is not None:
            write_ct(result.ct_from_bone_suppressed, paths["from_bone_suppressed"], overwrite=args.overwrite)
            write_ct(result.branch_difference, paths["branch_difference"], overwrite=args.overwrite)
            write_png(paths["pa_bs"], result.pa_bs, overwrite=args.overwrite)
            write_png(paths["lat_bs"], result.lat_bs, overwrite=args.overwrite)
        reconstruction_figure(paths["figure"], result.pa, result.lat, result.ct_unit, result.pa_bs, result.lat_bs,
                              ground_truth, title=f"DCT-Net: {paths['ct'].name}")
        from ..io.atomic import atomic_write_text

        atomic_write_text(paths["report"], json.dumps(report, indent=2, default=float) + "\n",
                          overwrite=args.overwrite)
    written = {role: str(path) for role, path in paths.items() if path.exists()}
    progress(1.0, "done", outputs=written)
    print(json.dumps(report, default=float))
    return 0
