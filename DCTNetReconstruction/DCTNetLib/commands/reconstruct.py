"""``dctnet reconstruct`` — a PA and a lateral radiograph in, a 128³ CT (HU, 2.5 mm voxels) out.

Examples::

    dctnet reconstruct --pa pa.png --lat lat.png --output ct.nii.gz
    dctnet reconstruct --ct chest.nii.gz --output ct.nii.gz          # radiographs made from a CT (round trip)
    dctnet reconstruct --pa pa.dcm --lat lat.dcm --output ct.nrrd --weights my_model.pt --device cuda
    dctnet reconstruct --batch cases.csv --output volumes/       # many cases: CSV columns id,pa,lat, or a folder
    dctnet reconstruct --pa pa.dcm --lat lat.dcm --output ct.nii.gz --dicom ct_dicom/   # and a DICOM series

Real films: a DICOM radiograph with a plausible ImagerPixelSpacing / PixelSpacing is resampled onto the
training detector's 500 mm field (128² at 3.9 mm); its ViewPosition must match --pa / --lat, and a
PatientOrientation that is mirrored or upside down against the training display is flipped back. What cannot be
checked (PNG/JPEG, missing tags, an implausible spacing) is said in a warning, and with the shipped weights a
note says once that the model was trained on DRRs and is a demonstration model (DCTNetLib.io.film).

With ``--ct`` the reference CT (the input on the model's 128³ grid, HU) and its PA and lateral DRRs are written
beside the output, and the report adds PSNR/SSIM/MAE against the reference and the re-projection check (DRRs
of the reconstruction against the input DRRs), as ``dctnet demo`` does. On success one line says what was
written (and, with ``--ct``, how close it is); the JSON report — the inputs, the model file's sha256 and version,
the DDIM steps, the seed, every warning and the timings — is written with ``--extras`` and is the last line
printed with ``--progress json``.

Batch mode (``--batch``) loads the model once and reconstructs every case of a CSV file (columns ``pa``, ``lat``
and optionally ``id``; relative paths are relative to the CSV) or of a folder (one sub-folder per case holding
``pa.*`` and ``lat.*``, or files ``<id>_pa.*`` and ``<id>_lat.*``) into ``--output`` (a folder):
``<id>.nii.gz`` per case and ``batch_report.json``. A case that cannot be read is reported in one line and
skipped; the exit code is 1 when any case failed.

``--dicom FOLDER`` also writes the CT as a DICOM series (CT Image Storage, one file per axial slice, integer HU,
marked DERIVED and as research output); when the PA film is DICOM the series takes its patient and study tags,
so it files beside the films in a PACS or in Slicer's DICOM browser. With ``--batch``: ``FOLDER/<id>/``.

``--images-only`` runs the bone-suppression diffusion model alone and writes the two bone-suppressed radiographs
(the quick preview of the Slicer module); ``--no-figure`` leaves the figure out of ``--extras``.

Besides the CT (G(Y)), ``--extras`` writes the uncertainty map (tissue-mixture spread of G(Y), HU),
the second branch's CT G(X) (reconstructed from the bone-suppressed radiographs), the branch difference
|G(Y) − G(X)|, the bone-suppressed radiographs and a PNG figure next to it. Nothing is overwritten without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..conventions import DETECTOR_MM, VOLUME_WRITE_SUFFIXES, hu_to_unit, strip_suffix
from ..errors import InputError, OutputError
from ..io.atomic import NAME_MAX, atomic_write_text, check_name_length, check_writable_dir, display_path
from ..output_roles import EXTRAS, FIGURE, FROM_CT, IMAGES_ONLY, OUTPUT, OUTPUT_ROLES, ROLES, VOLUME_KINDS

HELP = "reconstruct a CT from a PA and a lateral radiograph (or from DRRs of a CT with --ct)"
log = logging.getLogger("dctnet.reconstruct")

_BATCH_SUFFIX = ".nii.gz"  # what --batch writes per case
PROGRESS_MODES = ("log", "json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("input (--pa and --lat, or --ct, or --batch)")
    source.add_argument("--pa", type=Path, help="posterior-anterior radiograph (PNG, JPEG, TIFF, DICOM CR/DX)")
    source.add_argument("--lat", type=Path, help="lateral radiograph (patient's left side towards the detector)")
    source.add_argument("--batch", type=Path, metavar="CSV_OR_DIR",
                        help="many cases: a CSV (pa, lat[, id] columns) or a folder of cases; --output is a folder")
    source.add_argument("--ct", type=Path, help="a CT (DICOM folder, NIfTI, NRRD, MHA): reconstruct from its DRRs "
                                                "and report PSNR/SSIM against it")
    parser.add_argument("--output", required=True, type=Path, help="output CT: .nii.gz, .nii, .nrrd or .mha (any "
                                                                   "case); never one of the inputs; with --batch "
                                                                   "a folder")
    parser.add_argument("--weights", type=Path, help="model bundle (default: the shipped small model)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: auto")
    parser.add_argument("--steps", type=int, help="DDIM steps of the bone suppression (default: the model's)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--no-registration", action="store_true",
                        help="skip the default registration (a smooth deformation of the CT fitted to both views, "
                             "robust to a film's display curve, shutters and markers, bone kept rigid; ~3 s on a "
                             "CPU) and the atlas prior that follows it, and write the generators' CT as it is "
                             "(docs/refinement.md)")
    parser.add_argument("--no-atlas", action="store_true",
                        help="skip the default atlas prior (seven real chest CTs registered to both views the same "
                             "robust way, the voxel-wise median of the best five mixed into the CT where they agree "
                             "with it; ~7 s on two CPU cores) and keep the registration alone")
    parser.add_argument("--refine", action="store_true",
                        help="for DRRs of a CT only: instead of the default registration and atlas prior, fit the "
                             "CT's DRRs to the radiographs' values exactly, then 10 SIRT iterations (the "
                             "generator's bone is kept; ~5 s on a CPU). Measured gains on DRRs of CTs; on real films "
                             "it also fits the film's borders and display curve (docs/refinement.md)")
    parser.add_argument("--atlas", action="store_true",
                        help="with --refine: also register the shipped bank of seven real chest CTs to the "
                             "radiographs by --refine's exact fit and mix the mean of the best five into the CT "
                             "before SIRT (~35 s more on a CPU; docs/refinement.md)")
    parser.add_argument("--atlas-bank", type=Path, metavar="NPZ",
                        help="an atlas bank of your own (scripts/make_atlas_bank.py) instead of the shipped one, for "
                             "the default atlas prior or --refine --atlas")
    parser.add_argument("--fusion", choices=("mean", "raw"), default="mean",
                        help="the output CT: the mean of the two generators' CTs, G(Y) from the radiographs and G(X) "
                             "from their bone-suppressed versions (default), or raw = G(Y) alone")
    parser.add_argument("--extras", action="store_true",
                        help="also write the uncertainty map, G(X) (the CT from the bone-suppressed radiographs), "
                             "|G(Y) - G(X)|, the bone-suppressed PNGs, a figure and a report")
    parser.add_argument("--images-only", action="store_true",
                        help=f"only the bone-suppressed radiographs ({_names_beside_output(IMAGES_ONLY)}), no CT: the "
                             "quick preview of the diffusion model")
    parser.add_argument("--no-figure", action="store_true",
                        help="with --extras, leave out the PNG figure (for programs that show the volumes "
                             "themselves)")
    parser.add_argument("--reference", type=Path, metavar="CT",
                        help="a CT to compare the reconstruction with (PSNR, SSIM, MAE in the report), on the grid a "
                             "reconstruction of these radiographs lands on: e.g. `dctnet drr`'s reference.nrrd")
    parser.add_argument("--dicom", type=Path, metavar="FOLDER",
                        help="also write the CT as a DICOM series (one CT file per axial slice) into FOLDER; with a "
                             "DICOM --pa film it takes that film's patient and study (refused when the lateral "
                             "names another patient); with --batch, FOLDER/<id>/")
    parser.add_argument("--no-input-checks", action="store_true",
                        help="reconstruct even what does not look like a chest radiograph (noise, an inverted PA, a "
                             "view the reconstruction cannot explain), which is refused by default")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--progress", choices=PROGRESS_MODES, default="log",
                        help="how to report progress: 'log' (debug log lines, the default) or 'json': one line per "
                             "stage on stdout, {\"event\": \"progress\", \"fraction\": F, \"message\": M}; the last "
                             "(fraction 1) also lists the files written, {\"outputs\": {role: path}}, and the notes and "
                             "warnings for the user, {\"notes\": [...], \"warnings\": [...]} (for programs, e.g. the "
                             "Slicer module)")


def _names_beside_output(option: str) -> str:
    """The names of the files ``option`` writes beside ``--output``, for the help (``<output stem>`` standing for
    the output's name without its suffix)."""
    return " and ".join(role.filename("<output stem>", "<suffix>") for role in OUTPUT_ROLES
                        if option in role.written_with)


def output_paths(output: Path, extras: bool, from_ct: bool = False, images_only: bool = False,
                 figure: bool = True) -> dict[str, Path]:
    """Every file the command will write, by role, named after ``output`` as the output-role table says
    (``from_ct``: the reference CT and its DRRs; ``images_only``: the bone-suppressed radiographs alone;
    ``figure=False``: no figure among the extras)."""
    stem = strip_suffix(output.name, VOLUME_WRITE_SUFFIXES)
    if stem is None:
        raise InputError(f"--output {output}: use one of {', '.join(VOLUME_WRITE_SUFFIXES)} (any case)")
    suffix = output.name[len(stem):]
    given = {FROM_CT: from_ct, EXTRAS: extras}
    options = {IMAGES_ONLY} if images_only else {OUTPUT, *(option for option, on in given.items() if on)}
    return {role.name: output.parent / role.filename(stem, suffix) for role in OUTPUT_ROLES
            if role.written_with & options and role.filename_pattern is not None and (figure or role.kind != FIGURE)}


def check_outputs(paths: dict[str, Path], overwrite: bool, inputs: tuple[Path | None, ...] = ()) -> None:
    """Fail before any computation if an output cannot be written as asked: it exists (without ``--overwrite``),
    it is one of the ``inputs``, its name is too long, or its folder is missing or not writable."""
    for path in paths.values():
        for source in filter(None, inputs):
            if _same_file(path, source):
                raise OutputError(f"--output {display_path(path)} is the input {display_path(source)}; writing it "
                                  "would destroy the input (even with --overwrite): choose another --output")
        check_name_length(path)
        if path.is_dir():
            raise OutputError(f"--output {display_path(path)} is a folder; name a file (.nii.gz, .nii, .nrrd or "
                              ".mha) to write the CT to")
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


# Models kept loaded between runs in one process, by (weights file, its size and mtime, device): set to a dict by
# `dctnet worker` (DCTNetLib.commands.worker), None (load every time) otherwise.
MODEL_CACHE: dict | None = None


def refinement_config(args: argparse.Namespace):
    """The refinement the flags ask for: None for the default (the film-robust registration and atlas prior; with
    ``--atlas-bank``, that bank's), ``RefinementConfig.registration_only()`` with ``--no-atlas``,
    ``RefinementConfig.off()`` with ``--no-registration``, ``RefinementConfig()`` with ``--refine`` (with its atlas
    prior when ``--atlas``).

    Raises:
        InputError: flags that contradict each other (named in the message).
    """
    from ..models.atlas_prior import AtlasPriorConfig
    from ..models.projection_refinement import RefinementConfig

    atlas, bank = getattr(args, "atlas", False), getattr(args, "atlas_bank", None)
    no_registration = getattr(args, "no_registration", False)
    no_atlas = getattr(args, "no_atlas", False)
    if bank is not None and (no_atlas or no_registration):
        raise InputError("--atlas-bank names the bank of the atlas prior, which --no-atlas and --no-registration "
                         "turn off: give one of them")
    if not getattr(args, "refine", False):
        if atlas:
            raise InputError("--atlas adds --refine's own atlas prior: add --refine (the default already mixes in "
                             "the film-robust atlas prior; --no-atlas turns it off)")
        if no_registration:
            return RefinementConfig.off()
        if no_atlas:
            return RefinementConfig.registration_only()
        return dataclasses.replace(RefinementConfig.film_robust(), atlas_bank=str(bank)) if bank is not None else None
    if no_registration:
        raise InputError("--refine replaces the default registration with its own; --no-registration turns the "
                         "default off: give one of them")
    if no_atlas and atlas:
        raise InputError("--atlas and --no-atlas contradict each other: give one of them")
    if bank is not None and not atlas:
        raise InputError("--atlas-bank with --refine names the bank of its atlas prior: add --atlas")
    return RefinementConfig(atlas=AtlasPriorConfig() if atlas else None,
                            atlas_bank=str(bank) if bank is not None else None)


def load_model(weights: Path | None, device: str, refinement=None, fusion: str = "mean"):
    """``Reconstructor.load(weights, device, refinement, fusion)``, or the model :data:`MODEL_CACHE` holds for the
    same unchanged file (its refinement set to ``refinement``: None = the default registration, and its fusion to
    ``fusion``)."""
    from ..inference import Reconstructor

    if MODEL_CACHE is None:
        return Reconstructor.load(weights, device, refinement, fusion)
    try:
        stat = os.stat(weights) if weights is not None else None
    except OSError:
        stat = None
    key = (str(Path(weights).resolve()) if weights is not None else None,
           (stat.st_size, stat.st_mtime_ns) if stat else None, device)
    if key not in MODEL_CACHE:
        MODEL_CACHE.clear()  # one model at a time: a worker must not pile models up in memory
        MODEL_CACHE[key] = Reconstructor.load(weights, device)
    return MODEL_CACHE[key].use_refinement(refinement).use_fusion(fusion)


REFINED_FILMS_NOTE = ("--refine: if these radiographs are real films and not DRRs of a CT, the refinement also fits "
                      "their borders and display curve, which shows as frames, lines, bright bands and bent edges in "
                      "the volume (docs/refinement.md)")

DEMONSTRATION_NOTE = ("the shipped model is a small demonstration model trained on DRRs (digitally reconstructed "
                      "radiographs) of ten real CTs and phantoms, not on real films: expect a coarse chest volume, not a "
                      "diagnostic CT (dctnet info shows its model card)")


def training_set_notes(volume) -> list[str]:
    """A note when the CT given with ``--ct`` is one the shipped model trained on (its figures then flatter the
    model): the manifest's ``training_fingerprints`` against the CT's (``data.preprocess.ct_fingerprint``)."""
    from ..checkpoints.bundle import default_manifest_path
    from ..data.preprocess import ct_fingerprint, same_ct

    path = default_manifest_path()
    recorded = json.loads(path.read_text(encoding="utf-8")).get("training_fingerprints", {}) if path.is_file() else {}
    mine = ct_fingerprint(volume)
    return [f"this CT is one the shipped model was trained on ({case}): its figures are training figures, not a "
            "test of the model" for case, value in recorded.items() if same_ct(mine, value)]


def batch_cases(source: Path) -> list[tuple[str, Path, Path]]:
    """``[(id, pa, lat)]`` of a batch: a CSV (``pa``, ``lat``, optional ``id``) or a folder (see the module help)."""
    import csv

    if source.is_file():
        try:
            rows = list(csv.DictReader(source.read_text(encoding="utf-8-sig").splitlines()))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise InputError(f"cannot read the batch list {source}: {exc}") from exc
        cases = []
        for number, row in enumerate(rows, start=1):
            pa, lat = (str(row.get(key) or "").strip() for key in ("pa", "lat"))
            if not pa or not lat:
                raise InputError(f"batch list {source}, row {number}: needs both a 'pa' and a 'lat' path")
            resolve = lambda text: Path(text) if Path(text).is_absolute() else source.parent / text  # noqa: E731
            case_id = str(row.get("id") or "").strip() or f"case{number:03d}"
            cases.append((check_case_id(case_id, f"batch list {display_path(source)}, row {number}"),
                          resolve(pa), resolve(lat)))
        return cases
    if not source.is_dir():
        raise InputError(f"--batch {source}: no such CSV file or folder")

    def view_file(folder: Path, view: str) -> Path | None:  # pa.png, PA.dcm, lat (a DICOM file without ending)
        found = [p for p in sorted(folder.iterdir()) if p.is_file() and p.name.lower().split(".", 1)[0] == view]
        return found[0] if found else None

    cases = []
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        pa, lat = view_file(folder, "pa"), view_file(folder, "lat")
        if pa and lat:
            cases.append((folder.name, pa, lat))
    for pa in sorted(source.glob("*_pa.*")) + sorted(source.glob("*_PA.*")):
        case_id = pa.name.rsplit("_", 1)[0]
        lats = sorted(source.glob(f"{case_id}_lat.*")) + sorted(source.glob(f"{case_id}_LAT.*"))
        if lats:
            cases.append((case_id, pa, lats[0]))
    if not cases:
        raise InputError(f"--batch {source}: no cases found (expected sub-folders holding pa.* and lat.*, or "
                         "files <id>_pa.* and <id>_lat.*)")
    return cases


def check_case_id(case_id: str, where: str) -> str:
    """``case_id`` when it can name a file: ``<id>.nii.gz`` in ``--output`` and ``--dicom FOLDER/<id>/``.

    A path (``../x``, ``/abs/path``, ``a/b``) would write outside ``--output`` and, with ``--dicom --overwrite``,
    replace an unrelated folder; a leading dot would hide the file (and ``.tmp-`` names are this tool's own
    temporary files).

    Raises:
        InputError: naming the id and ``where`` it came from.
    """
    reason = ("is empty" if not case_id else
              "is a path, not a file name (it holds / or \\)" if "/" in case_id or "\\" in case_id else
              "holds a NUL character" if "\0" in case_id else
              "starts with '.' (. and .. are folders, other such names hidden files)" if case_id.startswith(".") else
              f"is longer than {NAME_MAX - len(_BATCH_SUFFIX)} bytes" if
              len(os.fsencode(case_id)) > NAME_MAX - len(_BATCH_SUFFIX) else "")
    if reason:
        raise InputError(f"{where}: case id {case_id[:80]!r} {reason}; ids name the output files "
                         f"(<id>{_BATCH_SUFFIX}), so each must be a plain file name")
    return case_id


def check_folder_apart(folder: Path, others: tuple[Path | None, ...], option: str = "--dicom") -> None:
    """Refuse an output folder that would be replaced (``--overwrite``) while it is, holds or lies inside one of
    ``others`` (the run's inputs and its other outputs): replacing it would delete them.

    Raises:
        OutputError: naming the folder and the input or output it would take with it.
    """
    real = Path(os.path.realpath(folder))
    for other in filter(None, others):
        where = Path(os.path.realpath(other))
        relation = ("is" if where == real else "holds" if real in where.parents else
                    "lies inside" if where in real.parents and where.is_dir() else "")
        if relation:
            raise OutputError(f"{option} {display_path(folder)} {relation} {display_path(other)}, an input or "
                              f"output of this run; writing the series there could delete it (even with "
                              f"--overwrite): choose a folder of its own")


def read_films(pa_path: Path, lat_path: Path, dicom_output: bool = False) -> tuple[tuple, dict]:
    """Both radiographs through :func:`~DCTNetLib.io.film.read_film` (view checks, orientation, detector field)
    and :func:`~DCTNetLib.io.film.pair_identity` (one patient?); each warning is issued as a Python warning (the
    callers record and print them once). Returns ``((pa, lat), {view: header facts, "pair": identity facts})``.

    Raises:
        InputError: what ``read_film`` refuses; with ``dicom_output`` (``--dicom``), films naming two patients: the
            series would be filed under the PA's patient with another patient's lateral in it.
    """
    from ..io.film import pair_identity, read_film

    images, facts, infos = [], {}, []
    for view, path in (("pa", pa_path), ("lat", lat_path)):
        image, info = read_film(path, view)
        for message in info.warnings:
            warnings.warn(message, stacklevel=2)
        images.append(image)
        infos.append(info)
        facts[view] = {"view_position": info.view_position, "orientation": info.orientation,
                       "spacing_mm": info.spacing_mm, "spacing_source": info.spacing_source,
                       "field": f"mapped onto the {DETECTOR_MM:.0f} mm training detector" if info.spacing_mm else
                                f"whole image taken as the {DETECTOR_MM:.0f} mm training detector (spacing unknown)"}
    identity, messages = pair_identity(*infos)
    if dicom_output and identity.same_patient is False:
        raise InputError(f"{messages[0]}; --dicom would file the CT under the PA's patient, so it is not written "
                         "(leave out --dicom to reconstruct anyway)")
    for message in messages:
        warnings.warn(message, stacklevel=2)
    facts["pair"] = {"same_patient": identity.same_patient, "compared": list(identity.compared),
                     "differ": list(identity.differ), "days_apart": identity.days_apart}
    return tuple(images), facts


def _check_batch(args: argparse.Namespace) -> tuple[list[tuple[str, Path, Path]], dict[str, Path]]:
    """The batch's cases and their output files, once every argument and output has been checked."""
    if args.pa is not None or args.lat is not None or args.ct is not None:
        raise InputError("give --batch alone, or --pa/--lat, or --ct")
    if args.extras:
        raise InputError("--extras is for one case; in batch mode only the CTs and batch_report.json are written")
    if getattr(args, "reference", None) is not None:
        raise InputError("--reference is one CT for one case; give it with --pa/--lat, not with --batch")
    if args.output.name.lower().endswith(VOLUME_WRITE_SUFFIXES):
        raise InputError(f"with --batch, --output is a folder (got {args.output})")
    cases = batch_cases(args.batch)
    ids = [case_id for case_id, _, _ in cases]
    if len(set(ids)) != len(ids):
        raise InputError(f"--batch {args.batch}: case ids repeat ({', '.join(sorted({i for i in ids if ids.count(i) > 1}))})")
    inputs = (args.batch, args.weights, *(path for _, pa, lat in cases for path in (pa, lat)))
    args.output.mkdir(parents=True, exist_ok=True)
    check_writable_dir(args.output)
    targets = {case_id: args.output / f"{case_id}{_BATCH_SUFFIX}" for case_id in ids}
    outputs = {**targets, "report": args.output / "batch_report.json"}
    check_outputs(outputs, args.overwrite, inputs)
    if args.dicom is not None:
        from ..io.dicom_writer import check_dicom_output

        args.dicom.mkdir(parents=True, exist_ok=True)
        for case_id in ids:
            check_folder_apart(args.dicom / case_id, (*inputs, *outputs.values()))
            check_dicom_output(args.dicom / case_id, args.overwrite)
    return cases, targets


def run_batch(args: argparse.Namespace) -> int:
    """``--batch``: every case of a CSV or folder, one model load, ``<id>.nii.gz`` each and ``batch_report.json``."""
    from ..inference import model_record
    from ..io.ct import write_ct

    cases, targets = _check_batch(args)
    notes = [] if args.weights is not None else [DEMONSTRATION_NOTE]
    for line in notes:
        log.warning("note: %s", line)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model(args.weights, args.device, refinement_config(args), getattr(args, "fusion", "mean"))
    for line in dict.fromkeys(" ".join(str(w.message).split()) for w in caught):
        log.warning("%s", line)
    if getattr(args, "refine", False):
        notes.append(REFINED_FILMS_NOTE)
        log.warning("note: %s", REFINED_FILMS_NOTE)
    rows, failed = [], 0
    for number, (case_id, pa_path, lat_path) in enumerate(cases, start=1):
        row = {"id": case_id, "pa": str(pa_path), "lat": str(lat_path)}
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                (pa, lat), films = read_films(pa_path, lat_path, getattr(args, "dicom", None) is not None)
                result = model.reconstruct(pa, lat, steps=args.steps, seed=args.seed,
                                           check_inputs=not getattr(args, "no_input_checks", False))
            write_ct(result.ct_hu, targets[case_id], overwrite=args.overwrite)
            if args.dicom is not None:
                row["dicom"] = str(write_dicom(args, result, args.dicom / case_id, pa_path))
            row.update(status="done", output=str(targets[case_id]), films=films, seconds=round(time.perf_counter() - start, 3),
                       warnings=list(dict.fromkeys(" ".join(str(w.message).split()) for w in caught)))
            for line in row["warnings"]:
                log.warning("%s: %s", case_id, line)
            print(f"dctnet reconstruct: {number}/{len(cases)} {case_id} → {display_path(targets[case_id])}", flush=True)
        except InputError as exc:
            failed += 1
            row.update(status="failed", error=str(exc))
            log.warning("%s: skipped: %s", case_id, exc)
        rows.append(row)
    report = {"batch": str(args.batch), "model": model_record(args.weights, model),
              "steps": args.steps or model.default_steps, "seed": args.seed, "device": str(model.device),
              "refinement_iterations": model.refinement_iterations,
              "refinement": model.refinement_steps, "notes": notes, "cases": rows}
    atomic_write_text(args.output / "batch_report.json", json.dumps(report, indent=2, default=float) + "\n",
                      overwrite=args.overwrite)
    print(f"dctnet reconstruct: {len(cases) - failed} of {len(cases)} cases reconstructed into "
          f"{display_path(args.output)}" + (f"; {failed} failed (see batch_report.json)" if failed else ""))
    return 1 if failed else 0


def _check_single_case(args: argparse.Namespace) -> dict[str, Path]:
    """The single-case arguments make sense and every output can be written: the output paths, by role."""
    if args.ct is None and (args.pa is None or args.lat is None):
        raise InputError("give --pa and --lat (radiographs), or --ct (a CT to make them from)")
    if args.ct is not None and (args.pa is not None or args.lat is not None):
        raise InputError("give either --pa/--lat or --ct, not both")
    if args.steps is not None and args.steps < 1:
        raise InputError(f"--steps must be at least 1, got {args.steps}")
    if args.images_only and (args.ct is not None or args.dicom is not None or args.extras or
                             getattr(args, "reference", None) is not None):
        raise InputError("--images-only writes only the bone-suppressed radiographs of --pa/--lat: leave out --ct, "
                         "--extras, --reference and --dicom")
    if getattr(args, "reference", None) is not None and args.ct is not None:
        raise InputError("--ct already compares with its own CT: leave out --reference")
    paths = output_paths(args.output, args.extras, from_ct=args.ct is not None, images_only=args.images_only,
                         figure=not args.no_figure)
    inputs = (args.pa, args.lat, args.ct, args.weights, getattr(args, "reference", None))
    check_outputs(paths, args.overwrite, inputs)
    if args.dicom is not None:
        from ..io.dicom_writer import check_dicom_output

        check_folder_apart(args.dicom, (*inputs, *paths.values()))
        check_dicom_output(args.dicom, args.overwrite)
    return paths


def _reconstruct_case(args: argparse.Namespace, progress) -> tuple:
    """Read the inputs, load the model and reconstruct: ``(model, result, geometry, (pa, lat), films, warnings)``;
    every warning raised meanwhile is collected (once each) rather than printed."""
    from ..inference import radiographs_from_ct
    from ..io.ct import read_ct

    geometry, films = None, {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if args.ct is not None:
            geometry, pa, lat = radiographs_from_ct(read_ct(args.ct))
        else:
            (pa, lat), films = read_films(args.pa, args.lat, getattr(args, "dicom", None) is not None)
        progress(0.05, "loading the model")
        model = load_model(args.weights, args.device, refinement_config(args), getattr(args, "fusion", "mean"))
        timesteps = getattr(model.cdm, "num_timesteps", None)
        if args.steps is not None and timesteps is not None and args.steps > timesteps:
            raise InputError(f"--steps {args.steps} is more than the {timesteps} steps the model's diffusion was "
                             f"trained with (use 1 to {timesteps})")
        sources = f"radiographs made from {args.ct}" if args.ct is not None else f"--pa {args.pa} --lat {args.lat}"
        try:
            if getattr(args, "images_only", False):  # the preview: the CDM alone
                progress(0.1, "suppressing the bones")
                start = time.perf_counter()
                pa_bs, lat_bs = model.suppress_bones(pa, lat, steps=args.steps, seed=args.seed)
                result = SimpleNamespace(pa_bs=pa_bs, lat_bs=lat_bs,
                                         timings={"cdm": round(time.perf_counter() - start, 3)})
            else:
                result = model.reconstruct(pa, lat, steps=args.steps, seed=args.seed, geometry=geometry,
                                           progress=lambda f, m: progress(0.1 + 0.8 * f, m),
                                           check_inputs=not getattr(args, "no_input_checks", False))
        except InputError as exc:  # the arrays' checks cannot know the files: name them
            raise InputError(f"{exc} ({sources})") from exc
    warning_lines = list(dict.fromkeys(" ".join(str(w.message).split()) for w in caught))
    return model, result, geometry, (pa, lat), films, warning_lines


@dataclass(frozen=True)
class RoundTrip:
    """What a reconstruction of radiographs made from a CT (``--ct``, ``dctnet demo``) writes besides its own
    outputs: the reference CT on the model's grid (HU) and its two DRRs, the model's inputs (128², [0, 1]). The
    output-role table's roles written with ``--ct`` name these attributes as their ``source``."""

    reference: Any
    pa: Any
    lat: Any

    @classmethod
    def of(cls, geometry, pa, lat) -> RoundTrip:
        """From the prepared volume ``radiographs_from_ct`` returns and its two DRRs."""
        from ..data.preprocess import to_ct_volume

        return cls(to_ct_volume(geometry.volume, geometry), pa, lat)


def write_images(paths: dict[str, Path], result, overwrite: bool, round_trip: RoundTrip | None = None) -> None:
    """Write every volume and radiograph among ``paths`` (role → file), for ``dctnet reconstruct`` and ``dctnet
    demo`` alike: each is the attribute of ``result`` its role's ``source`` names, of ``round_trip`` for the roles
    of ``--ct`` (DCTNetLib.output_roles); what the model did not make (G(X) and the bone-suppressed radiographs
    of a single-branch model) is left out. Figures, reports and the DICOM series have writers of their own."""
    from ..io.ct import write_ct
    from ..io.radiograph import write_png

    for name, path in paths.items():
        role = ROLES[name]
        holder = round_trip if FROM_CT in role.written_with else result
        image = getattr(holder, role.source, None) if role.source is not None else None
        if image is None:
            continue
        if role.kind in VOLUME_KINDS:
            write_ct(image, path, overwrite=overwrite)
        else:
            write_png(path, image, overwrite=overwrite)


def _compare_with_round_trip(report: dict, result, geometry, pa, lat):
    """``--ct``: the metrics against the CT the radiographs were made from and the re-projection check, in
    ``report``; returns that CT on the model's grid (unit values)."""
    from ..evaluation.metrics import evaluate_volume, reprojection_check
    from ..inference import on_model_grid

    ground_truth = on_model_grid(geometry.volume, result.ct_unit.shape)
    report["metrics"] = evaluate_volume(result.ct_unit, ground_truth)
    report["metrics"]["reprojection"] = reprojection_check(result.ct_unit, pa, lat)  # the 128² DRRs made
    return ground_truth


def compare_with_reference(path: Path, result, report: dict):
    """``--reference``: PSNR / SSIM / MAE of the reconstruction against a CT on its grid (resized to the model's
    output when the sizes differ), in ``report["metrics"]``; returns the reference in unit values."""
    from ..evaluation.metrics import evaluate_volume
    from ..inference import on_model_grid
    from ..io.ct import read_ct

    reference = read_ct(path)
    ground_truth = on_model_grid(hu_to_unit(reference.hu).astype("float32"), result.ct_unit.shape)
    report["metrics"] = evaluate_volume(result.ct_unit, ground_truth)
    report["metrics"]["reference"] = str(path)
    return ground_truth


def _write_figure_and_report(args, paths, report, result, ground_truth) -> None:
    """``--extras``: the figure (unless ``--no-figure``) and the JSON report; :func:`write_images` wrote the rest."""
    from ..evaluation.figures import reconstruction_figure

    if "figure" in paths:
        reconstruction_figure(paths["figure"], result.pa, result.lat, result.ct_unit, result.pa_bs, result.lat_bs,
                              ground_truth, title=f"DCT-Net: {paths['ct'].name}", label=result.ct_label)
    atomic_write_text(paths["report"], json.dumps(report, indent=2, default=float) + "\n", overwrite=args.overwrite)


def _write_images_only(args, paths, result, progress, notes, warning_lines) -> int:
    """``--images-only``: the two bone-suppressed radiographs, then the last progress event listing them."""
    write_images(paths, result, args.overwrite)
    progress(1.0, "done", outputs={role: str(path) for role, path in paths.items()}, notes=notes,
             warnings=warning_lines)
    print(json.dumps({"outputs": {role: str(path) for role, path in paths.items()}, "timings_s": result.timings,
                      "warnings": warning_lines, "notes": notes}))
    return 0


def run(args: argparse.Namespace) -> int:
    refinement_config(args)  # refuse --atlas without --refine before anything is read
    if getattr(args, "batch", None) is not None:
        return run_batch(args)
    from ..inference import model_record

    paths = _check_single_case(args)
    progress = progress_reporter(getattr(args, "progress", "log"))
    progress(0.0, "reading the inputs")
    start = time.perf_counter()
    model, result, geometry, (pa, lat), films, warning_lines = _reconstruct_case(args, progress)
    notes = [DEMONSTRATION_NOTE] if args.ct is None and args.weights is None else []
    if args.ct is None and getattr(args, "refine", False):
        notes.append(REFINED_FILMS_NOTE)
    if geometry is not None and args.weights is None:
        notes += training_set_notes(geometry.volume)
    for line in warning_lines:
        log.warning("%s", line)
    for line in notes:
        log.warning("note: %s", line)
    progress(0.9, "writing the outputs")
    if args.images_only:
        return _write_images_only(args, paths, result, progress, notes, warning_lines)
    write_images(paths, result, args.overwrite, RoundTrip.of(geometry, pa, lat) if geometry is not None else None)
    if args.dicom is not None:
        paths["dicom"] = write_dicom(args, result)
    inputs = ({"ct": str(args.ct)} if args.ct is not None else {"pa": str(args.pa), "lat": str(args.lat),
                                                                "films": films})
    report = {"output": str(paths["ct"]), "inputs": inputs, "model": model_record(args.weights, model),
              "steps": args.steps or model.default_steps, "seed": args.seed, "device": str(model.device),
              "warnings": warning_lines, "notes": notes, "timings_s": result.timings,
              "refinement_iterations": model.refinement_iterations, "refinement": model.refinement_steps,
              "fusion": result.fusion,
              "reprojection": result.reprojection, "refined_reprojection": result.refined_reprojection,
              "total_s": round(time.perf_counter() - start, 3)}
    if args.dicom is not None:
        report["dicom"] = str(paths["dicom"])
    ground_truth = None
    if geometry is not None:
        ground_truth = _compare_with_round_trip(report, result, geometry, pa, lat)
    elif getattr(args, "reference", None) is not None:
        ground_truth = compare_with_reference(args.reference, result, report)
    if args.extras:
        _write_figure_and_report(args, paths, report, result, ground_truth)
    written = {role: str(path) for role, path in paths.items() if path.exists()}
    metrics = {key: report["metrics"][key] for key in ("psnr", "ssim", "mae_hu") if key in report.get("metrics", {})}
    progress(1.0, "done", outputs=written, notes=notes, warnings=warning_lines, **({"metrics": metrics} if metrics else {}))
    if getattr(args, "progress", "log") == "json":
        print(json.dumps(report, default=float))
    else:
        print(summary_line(report, paths, args), flush=True)
    return 0


def summary_line(report: dict, paths: dict[str, Path], args: argparse.Namespace) -> str:
    """The one line a person reads after a reconstruction: what was written where, and how close it is to a
    given CT (``--ct``); the full report is JSON in ``--extras``' report file and with ``--progress json``."""
    parts = [f"dctnet reconstruct: {display_path(paths['ct'])} written in {report['total_s']:.1f} s"]
    metrics = report.get("metrics")
    if metrics:
        against = args.ct if args.ct is not None else args.reference
        parts.append(f"against {display_path(against)}: PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f}")
    reprojection = report.get("reprojection") or {}
    refined = report.get("refined_reprojection") or {}
    if "pa_psnr" in refined:
        parts.append(f"its DRRs match the inputs to PSNR PA {refined['pa_psnr']:.1f} dB, lateral "
                     f"{refined['lat_psnr']:.1f} dB after the refinement ({reprojection['pa_psnr']:.1f} / "
                     f"{reprojection['lat_psnr']:.1f} dB before)")
    elif "pa_rank" in reprojection:
        parts.append(f"its DRRs match the inputs with rank correlation PA {reprojection['pa_rank']:.2f}, lateral "
                     f"{reprojection['lat_rank']:.2f}")
    if "dicom" in report:
        parts.append(f"DICOM series in {display_path(Path(report['dicom']))}")
    if args.extras:
        parts.append(f"extras and the JSON report {display_path(paths['report'])} beside it")
    if report["warnings"]:
        parts.append(f"{len(report['warnings'])} warning{'s' if len(report['warnings']) > 1 else ''} above")
    return "; ".join(parts)


def write_dicom(args: argparse.Namespace, result, folder: Path | None = None, pa_film: Path | None = None) -> Path:
    """``--dicom``: G(Y) as a DICOM CT series, under the patient and study of a DICOM PA film when there is one."""
    from ..io.dicom_writer import write_dicom_series

    description = "DCTNet CT from radiographs" + (f" ({args.weights.name})" if args.weights else "")
    return write_dicom_series(result.ct_hu, folder or args.dicom, description=description,
                              inherit_from=pa_film or args.pa, overwrite=args.overwrite)
