"""Reconstruction outputs → MRML nodes, and the comparison with a reference CT (difference, PSNR, SSIM).

``dctnet reconstruct --extras`` (run by :mod:`DCTNetSlicerLib.reconstruction`) writes its volumes and the
bone-suppressed radiographs to files and names them by *role* in its last progress event; :func:`read_outputs`
reads them back and :func:`volumes_to_nodes` makes the nodes, so the console and the GUI make the same nodes.
Importing this module imports no ``slicer``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from DCTNetLib.conventions import VOLUME_READ_SUFFIXES
from DCTNetLib.output_roles import BONE_SUPPRESSED, CT, MAP, OUTPUT_ROLES, ROLES, VOLUME_KINDS

from . import nodes

__all__ = [
    "VOLUME_ROLES",
    "IMAGE_ROLES",
    "OUTPUT_PARAMETERS",
    "read_outputs",
    "volumes_to_nodes",
    "place_at",
    "compare_to_reference",
    "format_metrics",
]

logger = logging.getLogger(__name__)

# The roles this module shows (DCTNetLib.output_roles: those with a SlicerNode), and how. A role the command
# adds later is still loaded, with an automatic window.
SHOWN_ROLES = tuple(role for role in OUTPUT_ROLES if role.slicer is not None)
# Window/level preset of the CTs; maps have their own window in the table.
CT_WINDOW_PRESET = "CT_LUNG"
# Volumes: role → (node-name suffix, window/level).
VOLUME_ROLES: dict[str, tuple[str, Any]] = {
    role.name: (role.slicer.label, role.slicer.window_level or CT_WINDOW_PRESET)
    for role in SHOWN_ROLES if role.kind in VOLUME_KINDS}
# CTs (the window preset of the module applies to them).
CT_ROLES = tuple(role.name for role in SHOWN_ROLES if role.kind == CT)
# Maps (not CTs) shown with a colour table.
COLOUR_MAP_ROLES = tuple(role.name for role in SHOWN_ROLES if role.kind == MAP)
# Bone-suppressed radiographs: role → view.
IMAGE_ROLES = {role.name: role.view for role in SHOWN_ROLES if role.kind == BONE_SUPPRESSED}
# Role → the field of the module's parameter node that keeps its node (DCTNetReconstructionParameterNode).
OUTPUT_PARAMETERS = {role.name: role.slicer.parameter for role in SHOWN_ROLES}
# The uncertainty map's window (0–500 HU; the display tests read it).
UNCERTAINTY_WINDOW_LEVEL = ROLES["uncertainty"].slicer.window_level
# Difference to the reference CT shown on a symmetric ±500 HU window (soft tissue vs. air/bone errors).
DIFFERENCE_WINDOW_LEVEL = (1000.0, 0.0)


def read_outputs(outputs: dict[str, str], images_only: bool = False) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The files of a ``dctnet reconstruct`` run by role: volumes as ``CTVolume`` (HU), images as ``(H, W)``.

    Args:
        outputs: role → path, as listed by the command's last progress event (``--progress json``).
        images_only: the run was ``--images-only`` (the preview): only the bone-suppressed radiographs.

    Returns:
        ``(volumes, images)``; files that are neither (figure, report) are left out.
    """
    from DCTNetLib.io.radiograph import read_radiograph

    volumes, images = {}, {}
    for role, path in outputs.items():
        name = Path(path).name.lower()
        if name.endswith(VOLUME_READ_SUFFIXES):
            volumes[role] = _read_volume(path)
        elif role in IMAGE_ROLES:
            images[role] = read_radiograph(path)
    if "ct" not in volumes and not (images_only and images):
        from DCTNetLib.errors import OutputError

        raise OutputError(f"the reconstruction wrote no CT volume (outputs: {sorted(outputs)})")
    return volumes, images


def _read_volume(path: str | Path) -> Any:
    """A volume the command has just written, as a ``CTVolume``. Not ``read_ct``: that refuses values that do not
    look like a CT, and the branch-difference and uncertainty maps (≥ 0 HU) are not; these files are our own
    output."""
    import SimpleITK as sitk

    from DCTNetLib.io.ct import CTVolume

    image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    return CTVolume(hu=sitk.GetArrayFromImage(image), spacing=tuple(reversed(image.GetSpacing())),
                    origin_lps=image.GetOrigin(), direction=image.GetDirection(), source=str(path))


def _place_like(node: Any, reference_node: Any) -> None:
    """Give ``node`` the geometry of ``reference_node`` (same grid: the reconstruction of its radiographs)."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    reference_node.GetIJKToRASMatrix(matrix)
    node.SetIJKToRASMatrix(matrix)


def place_at(node: Any, reference_node: Any = None, centre_ras: Any = None) -> None:
    """Put a reconstructed volume where its radiographs came from.

    The command places its output on a grid centred on the world origin. With the prepared 128³ reference CT of
    the radiographs (same size), the node gets exactly that grid, so it overlays the source CT voxel by voxel;
    otherwise it is moved so that its centre is at ``centre_ras`` (the radiographs' centre).
    """
    if reference_node is not None and reference_node.GetImageData() is not None and \
            tuple(reference_node.GetImageData().GetDimensions()) == tuple(node.GetImageData().GetDimensions()):
        _place_like(node, reference_node)
        return
    if centre_ras is None:
        return
    from DCTNetLib.io.geometry import volume_centre_ras

    matrix = nodes.node_ijk_to_ras(node, include_transforms=False)
    shape = node.GetImageData().GetDimensions()[::-1]
    matrix[:3, 3] += np.asarray(centre_ras, dtype=np.float64) - volume_centre_ras(shape, matrix)
    node.SetIJKToRASMatrix(nodes.numpy_to_vtk_matrix(matrix))


def volumes_to_nodes(volumes: dict[str, Any], images: dict[str, np.ndarray], scene: Any = None,
                     existing: dict[str, Any] | None = None, name: str = "DCTNet",
                     centre_ras: Any = (0.0, 0.0, 0.0)) -> dict[str, Any]:
    """Volume nodes for the outputs of a reconstruction (see :func:`read_outputs`).

    Args:
        volumes: role → ``CTVolume`` in HU.
        images: role → ``(H, W)`` bone-suppressed radiograph in [0, 1] (roles of :data:`IMAGE_ROLES`).
        scene: MRML scene. Defaults to ``slicer.mrmlScene``.
        existing: nodes of a previous run by role, overwritten instead of adding new nodes.
        name: node name prefix.
        centre_ras: where the bone-suppressed radiographs are centred (that of their source radiographs).

    Returns:
        role → node.
    """
    existing = existing or {}
    out: dict[str, Any] = {}
    for role, volume in volumes.items():
        label, preset = VOLUME_ROLES.get(role, (role.replace("_", " "), None))
        out[role] = nodes.ct_volume_to_node(volume, f"{name} {label}", scene, existing.get(role), preset=preset,
                                            role=role)
    for role in COLOUR_MAP_ROLES:
        if role in out:
            nodes.set_colormap(out[role], nodes.MAP_COLOR_NODE_IDS)
    for role, image in images.items():
        label = ROLES[role].slicer.label
        out[role] = nodes.radiograph_to_node(np.asarray(image), IMAGE_ROLES[role], f"{name} {label}", scene,
                                             existing.get(role), centre_ras=centre_ras, role=role)
    return out


def compare_to_reference(ct_node: Any, reference_node: Any, scene: Any = None,
                         difference_node: Any = None) -> tuple[Any, dict[str, float]]:
    """Difference volume (reconstruction − reference, HU) and its mean absolute error (``mae_hu``).

    Both volumes must be on the same grid (the reference is the prepared 128³ volume the radiographs were
    made from). PSNR and SSIM are not computed here (they need torch and scikit-image): ``dctnet reconstruct
    --reference`` computes them in the worker (:class:`DCTNetSlicerLib.reconstruction.Run`).
    """
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
    return difference_node, {"mae_hu": float(np.mean(np.abs(difference)))}


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
