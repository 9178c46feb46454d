"""Reconstruction results → a file → MRML nodes, and the comparison with a reference CT (difference, PSNR, SSIM).

The background worker (:mod:`DCTNetSlicerLib.worker`) and the in-process console path both end in a
``DCTNetLib.inference.ReconstructionResult``; the worker saves it with :func:`save_result` (one ``.npz``, no
pickles) and the module reads it back with :func:`load_result`, so both paths make the same nodes through
:func:`result_to_nodes`. Importing this module imports no ``slicer``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from . import nodes

__all__ = [
    "RESULT_VOLUMES",
    "RESULT_IMAGES",
    "save_result",
    "load_result",
    "result_to_nodes",
    "compare_to_reference",
    "format_metrics",
]

# ReconstructionResult fields saved by save_result: CTVolumes in HU, then (H, W) images in [0, 1].
RESULT_VOLUMES = ("ct_hu", "soft_tissue_hu", "disagreement")
RESULT_IMAGES = ("pa_bs", "lat_bs")
# Difference to the reference CT shown on a symmetric ±500 HU window (soft tissue vs. air/bone errors).
DIFFERENCE_WINDOW_LEVEL = (1000.0, 0.0)


def save_result(result: Any, path: str | Path) -> Path:
    """Write the volumes and bone-suppressed images of a reconstruction result to one ``.npz`` (atomically).

    Args:
        result: ``ReconstructionResult`` (or any object with the fields of :data:`RESULT_VOLUMES` and
            :data:`RESULT_IMAGES`; ``None`` fields are left out).
        path: output file, normally ending in ``.npz``.
    """
    from DCTNetLib.io.atomic import atomic_path

    arrays: dict[str, np.ndarray] = {}
    for name in RESULT_VOLUMES:
        volume = getattr(result, name, None)
        if volume is None:
            continue
        arrays[f"{name}.hu"] = np.asarray(volume.hu, dtype=np.float32)
        arrays[f"{name}.geometry"] = np.array(json.dumps({
            "spacing": list(volume.spacing), "origin_lps": list(volume.origin_lps),
            "direction": list(volume.direction), "source": str(getattr(volume, "source", "")),
        }))
    for name in RESULT_IMAGES:
        image = getattr(result, name, None)
        if image is not None:
            arrays[name] = np.asarray(image, dtype=np.float32)
    if "ct_hu.hu" not in arrays:
        raise ValueError("result has no ct_hu volume to save")
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    return path


def load_result(path: str | Path) -> SimpleNamespace:
    """Read :func:`save_result` output into an object with the result's field names (missing ones ``None``).

    Raises:
        DCTNetLib.errors.OutputError: the file is missing or not a DCTNet result.
    """
    from DCTNetLib.errors import OutputError
    from DCTNetLib.io.ct import CTVolume

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise OutputError(f"cannot read the reconstruction result {path}: {exc}") from exc
    if "ct_hu.hu" not in stored:
        raise OutputError(f"{path} is not a DCTNet reconstruction result (no ct_hu volume)")
    fields: dict[str, Any] = {}
    for name in RESULT_VOLUMES:
        if f"{name}.hu" not in stored:
            fields[name] = None
            continue
        geometry = json.loads(str(stored[f"{name}.geometry"]))
        fields[name] = CTVolume(hu=stored[f"{name}.hu"], spacing=tuple(geometry["spacing"]),
                                origin_lps=tuple(geometry["origin_lps"]), direction=tuple(geometry["direction"]),
                                source=geometry.get("source", ""))
    for name in RESULT_IMAGES:
        fields[name] = stored.get(name)
    return SimpleNamespace(**fields)


def _place_like(node: Any, reference_node: Any) -> None:
    """Give ``node`` the geometry of ``reference_node`` (same grid: the reconstruction of its radiographs)."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    reference_node.GetIJKToRASMatrix(matrix)
    node.SetIJKToRASMatrix(matrix)


def result_to_nodes(result: Any, scene: Any = None, reference_node: Any = None,
                    existing: dict[str, Any] | None = None, name: str = "DCTNet") -> dict[str, Any]:
    """Volume nodes for a reconstruction result.

    Args:
        result: ``ReconstructionResult`` or :func:`load_result` output (``ct_hu``, ``soft_tissue_hu``,
            ``disagreement`` as CTVolumes; ``pa_bs``, ``lat_bs`` as ``(H, W)`` arrays, may be None).
        scene: MRML scene. Defaults to ``slicer.mrmlScene``.
        reference_node: prepared 128³ reference CT the radiographs were made from; when its grid matches,
            the results are placed exactly on it (so they overlay the source CT).
        existing: nodes of a previous run by key, overwritten instead of adding new nodes.
        name: node name prefix.

    Returns:
        ``{"ct", "soft_tissue", "disagreement", "pa_bs", "lat_bs"}`` → node (missing outputs left out).
    """
    existing = existing or {}
    out: dict[str, Any] = {}
    specs = [("ct", "ct_hu", f"{name} CT", "CT_LUNG"),
             ("soft_tissue", "soft_tissue_hu", f"{name} soft tissue G(X)", "CT_LUNG"),
             ("disagreement", "disagreement", f"{name} branch disagreement", nodes.DISAGREEMENT_WINDOW_LEVEL)]
    for key, field, node_name, preset in specs:
        volume = getattr(result, field, None)
        if volume is None:
            continue
        node = nodes.ct_volume_to_node(volume, node_name, scene, existing.get(key), preset=preset, role=key)
        if reference_node is not None and tuple(reference_node.GetImageData().GetDimensions()) == \
                tuple(node.GetImageData().GetDimensions()):
            _place_like(node, reference_node)
        out[key] = node
    if "disagreement" in out:
        nodes.set_colormap(out["disagreement"], nodes.DISAGREEMENT_COLOR_NODE_IDS)
    for key, view in (("pa_bs", "PA"), ("lat_bs", "LAT")):
        image = getattr(result, key, None)
        if image is not None:
            out[key] = nodes.radiograph_to_node(np.asarray(image), view, f"{name} {view} bone-suppressed", scene,
                                                existing.get(key), role=key)
    return out


def compare_to_reference(ct_node: Any, reference_node: Any, scene: Any = None,
                         difference_node: Any = None) -> tuple[Any, dict[str, float]]:
    """Difference volume (reconstruction − reference, HU) and PSNR / SSIM on the model's unit scale.

    Both volumes must be on the same grid (the reference is the prepared 128³ volume the radiographs were
    made from). Metrics follow :mod:`DCTNetLib.evaluation.metrics` (PSNR over all voxels, tri-plane SSIM).
    """
    from DCTNetLib.data.preprocess import hu_to_unit
    from DCTNetLib.evaluation.metrics import psnr, ssim3plane
    from DCTNetLib.io.geometry import ijk_to_ras_matrix

    pred = nodes.volume_node_to_canonical(ct_node)
    ref = nodes.volume_node_to_canonical(reference_node)
    if pred.array.shape != ref.array.shape:
        raise ValueError(f"reconstruction {pred.array.shape} and reference {ref.array.shape} differ in size")
    difference = pred.array - ref.array
    difference_node = nodes.array_to_volume_node(
        difference, ijk_to_ras_matrix(ref.spacing, ref.origin_lps, ref.direction),
        f"{ct_node.GetName()} − reference", scene, difference_node, role="difference")
    nodes.set_window_level(difference_node, DIFFERENCE_WINDOW_LEVEL)
    nodes.set_colormap(difference_node, ("vtkMRMLColorTableNodeFileDivergingBlueRed.txt",))
    pred_unit = np.asarray(hu_to_unit(pred.array), dtype=np.float32)
    ref_unit = np.asarray(hu_to_unit(ref.array), dtype=np.float32)
    metrics = {
        "psnr": float(psnr(pred_unit, ref_unit)),
        "ssim": float(ssim3plane(pred_unit, ref_unit)["mean"]),
        "mae_hu": float(np.mean(np.abs(difference))),
    }
    return difference_node, metrics


def format_metrics(metrics: dict[str, float]) -> str:
    """``"PSNR 26.91 dB · SSIM 0.612 · MAE 84 HU"`` (missing values left out)."""
    parts = []
    if math.isfinite(metrics.get("psnr", math.nan)):
        parts.append(f"PSNR {metrics['psnr']:.2f} dB")
    if math.isfinite(metrics.get("ssim", math.nan)):
        parts.append(f"SSIM {metrics['ssim']:.3f}")
    if math.isfinite(metrics.get("mae_hu", math.nan)):
        parts.append(f"MAE {metrics['mae_hu']:.0f} HU")
    return " · ".join(parts)
