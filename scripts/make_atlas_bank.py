"""Write the chest atlas bank of the atlas prior (``DCTNetLib/io/atlas_bank.py``) from prepared training cases.

Only training cases go in (never a validation or test case: the prior is scored on those), and only CTs whose
licence allows redistribution with attribution. The shipped bank holds the seven CC BY training chests of the
shipped model; the two PyRadiomics chests stay out (their images' licence is not stated).

    python scripts/make_atlas_bank.py --prepared PREPARED --output DCTNetReconstruction/DCTNetLib/resources/atlases/chest_atlases.npz
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np

from DCTNetLib.data.case_arrays import load_case_array
from DCTNetLib.io.atlas_bank import ATLAS_SCALE, load_atlas_bank
from DCTNetLib.io.atomic import atomic_path
from DCTNetLib.io.safe_load import sha256_file

# case id → (collection, licence, attribution); the cases are the shipped model's training chests.
ATLASES = {
    "lidc_idri_0002": ("TCIA LIDC-IDRI, LIDC-IDRI-0002", "CC BY 3.0", "doi:10.7937/K9/TCIA.2015.LO9QL9SX"),
    "lidc_idri_0003": ("TCIA LIDC-IDRI, LIDC-IDRI-0003", "CC BY 3.0", "doi:10.7937/K9/TCIA.2015.LO9QL9SX"),
    "lidc_idri_0293": ("TCIA LIDC-IDRI, LIDC-IDRI-0293", "CC BY 3.0", "doi:10.7937/K9/TCIA.2015.LO9QL9SX"),
    "lidc_idri_0295": ("TCIA LIDC-IDRI, LIDC-IDRI-0295", "CC BY 3.0", "doi:10.7937/K9/TCIA.2015.LO9QL9SX"),
    "lidc_idri_0306": ("TCIA LIDC-IDRI, LIDC-IDRI-0306", "CC BY 3.0", "doi:10.7937/K9/TCIA.2015.LO9QL9SX"),
    "lung_dx_a0002": ("TCIA Lung-PET-CT-Dx, Lung_Dx-A0002", "CC BY 4.0", "doi:10.7937/TCIA.2020.NNC20461"),
    "tcga_thca_tcga_de_a4ma": ("TCIA TCGA-THCA, TCGA-DE-A4MA", "CC BY 3.0", "The Cancer Imaging Archive, collection TCGA-THCA"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepared", type=Path, required=True, help="`dctnet prepare` output with splits/")
    parser.add_argument("--output", type=Path, required=True, help="the bank's .npz (its .json is written beside)")
    args = parser.parse_args(argv)
    held_out = set()
    for split in ("val", "test"):
        listing = args.prepared / "splits" / f"{split}.txt"
        if listing.is_file():
            held_out |= set(listing.read_text().split())
    leaked = sorted(held_out & set(ATLASES))
    if leaked:
        raise SystemExit(f"not training cases in {args.prepared}: {', '.join(leaked)}")
    names = sorted(ATLASES)
    volumes = np.stack([np.round(np.clip(load_case_array(args.prepared / "cases" / name / "ct_unit.npy", "ct"), 0, 1)
                                 * ATLAS_SCALE).astype(np.uint8) for name in names])
    buffer = io.BytesIO()
    np.savez_compressed(buffer, volumes=volumes, names=np.array(names))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.output) as tmp:
        tmp.write_bytes(buffer.getvalue())
    description = {"sha256": sha256_file(args.output), "shape": list(volumes.shape), "scale": ATLAS_SCALE,
                   "atlases": [{"name": n, "collection": ATLASES[n][0], "licence": ATLASES[n][1],
                                "citation": ATLASES[n][2]} for n in names]}
    with atomic_path(args.output.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(description, indent=1) + "\n")
    bank = load_atlas_bank(args.output)
    print(f"{args.output}: {len(bank.names)} atlases, {args.output.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
