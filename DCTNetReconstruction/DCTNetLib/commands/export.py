"""``dctnet export`` — turn training checkpoints into a model bundle that ``dctnet reconstruct``, ``dctnet demo``
and the Slicer module load.

A bundle holds the CDM's EMA weights and both generators with the configs that rebuild them (no optimiser
state), read back with ``weights_only=True``. Example::

    dctnet export --cdm runs/cdm/best.pt --gan runs/gan/best.pt --output my_model.pt
    dctnet reconstruct --weights my_model.pt --pa pa.png --lat lat.png --output ct.nii.gz
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..errors import OutputError
from ..io.atomic import check_name_length, check_writable_dir

# torch, numpy and the modules that import them are imported inside the functions: `dctnet --help` imports
# every command module (DCTNetLib.cli) and stays fast.

HELP = "make a model bundle (for reconstruct/demo/Slicer) from CDM and GAN training checkpoints"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gan", required=True, type=Path, help="GAN checkpoint (`dctnet train`), e.g. runs/gan/best.pt, or the run folder")
    parser.add_argument("--cdm", type=Path, help="CDM checkpoint (`dctnet train-cdm`) or its run folder; required for G(X)")
    parser.add_argument("--output", required=True, type=Path, help="bundle file to write (.pt)")
    parser.add_argument("--steps", type=int, help="default DDIM steps stored in the bundle (default: the CDM's)")
    parser.add_argument("--strength", type=float,
                        help="where the CDM's DDIM starts, as a fraction of T (default: the CDM's; < 1 starts from "
                             "the noised input, docs/cdm.md)")
    parser.add_argument("--samples", type=int,
                        help="how many CDM samples the bone-suppression preview averages (default: the CDM's; "
                             "docs/cdm.md)")
    parser.add_argument("--cdm-weights", choices=("ema", "online"), default="ema",
                        help="the CDM's EMA weights (default) or its online weights (better early in a run)")
    parser.add_argument("--half", action="store_true", help="store float16 weights (half the size)")
    parser.add_argument("--smooth-output", action="store_true",
                        help="switch on the generators' fixed [1, 2, 1]/4 output filter (no weights; it removes the "
                             "dot pattern of the small preset's 2×2×2 head from models trained without it)")
    parser.add_argument("--manifest", action="store_true", help="also write manifest.json (sha256, size) beside it")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle")


def run(args: argparse.Namespace) -> int:
    from ..checkpoints.bundle import (bundle_from_checkpoints, load_model_bundle, save_model_bundle,
                                      with_output_smoothing, write_manifest)
    from ..checkpoints.checkpoint import resolve_checkpoint

    args.gan = resolve_checkpoint(args.gan)
    args.cdm = resolve_checkpoint(args.cdm) if args.cdm is not None else None
    for source in filter(None, (args.gan, args.cdm)):
        if args.output.resolve() == Path(source).resolve():
            raise OutputError(f"--output {args.output} is the input {source}; writing it would destroy the input "
                              "(even with --overwrite): choose another --output")
    check_name_length(args.output)
    if os.path.lexists(args.output) and not args.overwrite:
        raise OutputError(f"{args.output} exists; pass --overwrite to replace it")
    check_writable_dir(args.output.parent if str(args.output.parent) else Path("."))
    bundle = bundle_from_checkpoints(args.gan, args.cdm, sampling_steps=args.steps, cdm_weights=args.cdm_weights,
                                     sampling_strength=args.strength, sampling_samples=args.samples)
    if args.smooth_output:
        bundle = with_output_smoothing(bundle)
    save_model_bundle(bundle, args.output, half=args.half, overwrite=args.overwrite)
    load_model_bundle(args.output)  # read it back: a bundle that does not load is never left as the result
    if args.manifest:
        write_manifest(args.output, {"gan_checkpoint": str(args.gan), "cdm_checkpoint": str(args.cdm)})
    print(json.dumps({"output": str(args.output), "bytes": args.output.stat().st_size,
                      "parameters": bundle.parameter_counts()}))
    return 0
