"""``dctnet drr`` — the PA and lateral radiographs of a CT, made the way the training radiographs were.

The CT is prepared as a training case (1 mm, 320³ crop around its centre, 128³ at 2.5 mm, HU window) and
projected with the X2CT-GAN cone-beam geometry (``DCTNetLib.inference.radiographs_from_ct``, what ``dctnet
reconstruct --ct`` and ``dctnet demo`` use). Writes into ``--output`` (a folder): ``pa.png`` and ``lat.png``
(8-bit, what ``dctnet reconstruct --pa/--lat`` reads) and ``reference.nrrd``, the CT on the model's grid in HU,
centred on the input CT, which a reconstruction of these radiographs lands on and can be compared with
(``dctnet reconstruct --reference``). Example::

    dctnet drr --ct chest.nii.gz --output drr/
    dctnet reconstruct --pa drr/pa.png --lat drr/lat.png --reference drr/reference.nrrd --output ct.nii.gz

With ``--progress json`` the last line is a progress event listing the files by role (``pa``, ``lat``,
``reference``), the model grid (``geometry``) and its centre (``centre_lps``, mm); "Make radiographs from CT" in the Slicer module runs this in
its worker process, so Slicer's own process never imports torch.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import InputError
from ..io.atomic import check_writable_dir
from .reconstruct import check_outputs, progress_reporter

HELP = "make the PA and lateral radiographs (DRRs) of a CT with the training geometry"
FILES = {"pa": "pa.png", "lat": "lat.png", "reference": "reference.nrrd"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ct", required=True, type=Path, help="a CT (DICOM folder, NIfTI, NRRD, MHA)")
    parser.add_argument("--output", required=True, type=Path,
                        help="folder for pa.png, lat.png and reference.nrrd (created)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.add_argument("--progress", choices=("log", "json"), default="log",
                        help="'json': one progress event per stage on stdout, the last listing the files "
                             "({\"outputs\": {role: path}}) and the model grid ({\"geometry\": ...})")


def run(args: argparse.Namespace) -> int:
    from ..data.preprocess import to_ct_volume
    from ..inference import radiographs_from_ct
    from ..io.ct import read_ct, write_ct
    from ..io.radiograph import write_png

    if args.output.exists() and not args.output.is_dir():
        raise InputError(f"--output {args.output} is a file; give a folder")
    args.output.mkdir(parents=True, exist_ok=True)
    check_writable_dir(args.output)
    paths = {role: args.output / name for role, name in FILES.items()}
    check_outputs(paths, args.overwrite, (args.ct,))
    progress = progress_reporter(args.progress)
    progress(0.0, "reading the CT")
    ct = read_ct(args.ct)
    progress(0.3, "projecting the radiographs")
    prepared, pa, lat = radiographs_from_ct(ct)
    write_png(paths["pa"], pa, overwrite=args.overwrite)
    write_png(paths["lat"], lat, overwrite=args.overwrite)
    write_ct(to_ct_volume(prepared.volume, prepared), paths["reference"], overwrite=args.overwrite)
    outputs = {role: str(path) for role, path in paths.items()}
    progress(1.0, "done", outputs=outputs, geometry=prepared.geometry(),
             centre_lps=[float(v) for v in prepared.centre_lps()])
    if args.progress != "json":
        print(json.dumps({"outputs": outputs}))
    return 0
