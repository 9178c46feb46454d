"""numpy arrays and ``CTVolume`` ↔ MRML volume nodes, with the geometry of :mod:`DCTNetLib.io.geometry`.

Every function takes an optional ``scene`` (default ``slicer.mrmlScene``) and uses only MRML-core calls plus
``slicer.util.arrayFromVolume`` / ``updateVolumeFromArray``, so it also runs outside the Slicer application
with the ``slicer-core`` wheel (see ``Testing/SlicerCore/test_nodes_mrml.py``). ``slicer`` and ``vtk`` are
imported inside the functions, so importing this module (and testing its constants) needs neither.

Volumes: a canonical ``(D, H, W)`` array is Slicer's ``(K, J, I)`` array; ``IJKToRAS`` comes from the spacing,
LPS origin and direction cosines. The canonical axes (L, P, I) are left-handed, and Slicer's NRRD reader turns
a left-handed volume right-handed by reversing its slices, so a saved and re-opened scene would hold the
volume with K reversed. Volume nodes are therefore always stored right-handed (slices reversed, K running
superior, as Slicer stores CTs it loads itself): ``arrayFromVolume`` of a CT node is ``hu[::-1]`` of the
canonical array, before and after saving the scene; :func:`volume_node_to_canonical` undoes it. Radiographs
are single-slice ``(1, H, W)`` volumes lying in a coronal (PA) or sagittal (lateral) plane.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from DCTNetLib.conventions import VIEW_NAMES
from DCTNetLib.io.geometry import canonicalize, ijk_to_ras_matrix, radiograph_ijk_to_ras

__all__ = [
    "WINDOW_LEVEL_PRESETS",
    "REFERENCE_ROLE",
    "ROLE_ATTRIBUTE",
    "matrix_to_numpy",
    "numpy_to_vtk_matrix",
    "node_ijk_to_ras",
    "right_handed",
    "array_to_volume_node",
    "ct_volume_to_node",
    "volume_node_to_canonical",
    "volume_node_to_ct_volume",
    "radiograph_to_node",
    "node_to_radiograph",
    "set_window_level",
    "set_colormap",
]

logger = logging.getLogger(__name__)

# (window, level) in HU. Slicer's own CT presets in the Volumes module use the same numbers.
WINDOW_LEVEL_PRESETS: dict[str, tuple[float, float]] = {
    "CT_LUNG": (1400.0, -500.0),
    "CT_BONE": (1000.0, 400.0),
}
# Colour table of the maps (branch difference, uncertainty); "Inferno" ships with Slicer (Colors module), grey is the fallback.
MAP_COLOR_NODE_IDS = ("vtkMRMLColorTableNodeFileInferno.txt", "vtkMRMLColorTableNodeRainbow")
# Node-reference role linking radiographs made from a CT to that CT's prepared 128³ reference volume
# (a node reference, not an attribute holding an ID, so it survives saving and re-loading the scene).
REFERENCE_ROLE = "DCTNetReference"
# Node attribute naming what a node is ("pa", "lat", "ct", "uncertainty", ...).
ROLE_ATTRIBUTE = "DCTNet.Role"
# Node attribute marking a MONOCHROME1 film loaded by Slicer (stored values: high = dark); its grey is inverted.
MONOCHROME1_ATTRIBUTE = "DCTNet.Monochrome1"
# Radiograph values are [0, 1]; this window shows them fully.
RADIOGRAPH_WINDOW_LEVEL = (1.0, 0.5)
# Obliquity (degrees) above which a CT is reported as tilted when it is made into radiographs.
OBLIQUE_WARNING_DEG = 1.0


def _scene(scene: Any = None) -> Any:
    if scene is not None:
        return scene
    import slicer

    return slicer.mrmlScene


def matrix_to_numpy(matrix: Any) -> np.ndarray:
    """A ``vtkMatrix4x4`` as a float64 numpy 4×4."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def numpy_to_vtk_matrix(array: np.ndarray) -> Any:
    """A numpy 4×4 as a ``vtkMatrix4x4``."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def node_ijk_to_ras(node: Any, include_transforms: bool = True) -> np.ndarray:
    """The node's ``IJKToRAS`` as a numpy 4×4, with its linear parent transforms applied when asked."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ijk_to_ras = matrix_to_numpy(matrix)
    parent = node.GetParentTransformNode() if include_transforms else None
    if parent is not None:
        if not parent.IsTransformToWorldLinear():
            raise ValueError(f"volume '{node.GetName()}' is under a non-linear transform: harden it first")
        to_world = vtk.vtkMatrix4x4()
        parent.GetMatrixTransformToWorld(to_world)
        ijk_to_ras = matrix_to_numpy(to_world) @ ijk_to_ras
    return ijk_to_ras


def right_handed(array: np.ndarray, ijk_to_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same voxels at the same RAS positions with a right-handed ``IJKToRAS`` (K reversed if needed).

    Args:
        array: voxels, numpy ``(K, J, I)``.
        ijk_to_ras: 4×4 ``IJKToRAS`` matrix.

    Returns:
        ``(array, ijk_to_ras)`` unchanged when the matrix is right-handed, else the array with its slices
        reversed (a view) and the matrix whose K column is negated and whose origin is the last slice.

    Shapes:
        ``(K, J, I)`` → ``(K, J, I)``.
    """
    matrix = np.array(ijk_to_ras, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise ValueError(f"ijk_to_ras must be 4×4, got shape {matrix.shape}")
    if np.linalg.det(matrix[:3, :3]) >= 0:
        return array, matrix
    matrix[:3, 3] += matrix[:3, 2] * (array.shape[0] - 1)
    matrix[:3, 2] *= -1.0
    return array[::-1], matrix


def array_to_volume_node(
    array: np.ndarray,
    ijk_to_ras: np.ndarray,
    name: str,
    scene: Any = None,
    node: Any = None,
    role: str | None = None,
) -> Any:
    """Put a ``(K, J, I)`` array into a scalar volume node (created if ``node`` is None).

    The node is stored right-handed (see :func:`right_handed`), so it survives saving and re-loading the
    scene unchanged; voxel positions in RAS are those given by ``array`` and ``ijk_to_ras``.

    Args:
        array: voxels, numpy ``(K, J, I)`` (= canonical ``(D, H, W)``).
        ijk_to_ras: 4×4 ``IJKToRAS`` matrix.
        name: node name (made unique when a new node is created).
        scene: MRML scene. Defaults to ``slicer.mrmlScene``.
        node: existing volume node to overwrite (keeps its display settings).
        role: value of the ``DCTNet.Role`` attribute.
    """
    import slicer

    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"array must be 3-D (K, J, I), got shape {array.shape}")
    array, matrix = right_handed(array, ijk_to_ras)  # a view: updateVolumeFromArray copies the voxels
    scene = _scene(scene)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(name))
    node.SetIJKToRASMatrix(numpy_to_vtk_matrix(matrix))
    slicer.util.updateVolumeFromArray(node, array)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    if role:
        node.SetAttribute(ROLE_ATTRIBUTE, role)
    return node


def set_window_level(node: Any, preset: str | tuple[float, float]) -> None:
    """Fixed window/level on a scalar volume's display node (``"CT_LUNG"``, ``"CT_BONE"`` or a pair)."""
    window, level = WINDOW_LEVEL_PRESETS[preset] if isinstance(preset, str) else preset
    display = node.GetDisplayNode()
    if display is None:
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
    display.SetAutoWindowLevel(False)
    display.SetWindowLevel(float(window), float(level))


def set_colormap(node: Any, color_node_ids: Sequence[str]) -> bool:
    """Use the first of ``color_node_ids`` present in the scene; False when none is (grey stays)."""
    display = node.GetDisplayNode()
    scene = node.GetScene()
    for color_id in color_node_ids:
        if scene is not None and scene.GetNodeByID(color_id) is not None:
            display.SetAndObserveColorNodeID(color_id)
            return True
    return False


def ct_volume_to_node(
    ct: Any,
    name: str = "DCTNet CT",
    scene: Any = None,
    node: Any = None,
    preset: str | tuple[float, float] | None = "CT_LUNG",
    role: str = "ct",
) -> Any:
    """A ``DCTNetLib.io.ct.CTVolume`` (HU, canonical ``(D, H, W)``) as a scalar volume node in HU.

    Args:
        ct: anything with ``hu`` ``(D, H, W)``, ``spacing`` ``(D, H, W)`` mm, ``origin_lps`` and optionally
            ``direction`` (SimpleITK row-major cosines).
        name: node name.
        scene: MRML scene. Defaults to ``slicer.mrmlScene``.
        node: existing node to overwrite.
        preset: window/level preset name or pair; None keeps the display's auto window/level.
        role: value of the ``DCTNet.Role`` attribute.
    """
    matrix = ijk_to_ras_matrix(ct.spacing, ct.origin_lps, getattr(ct, "direction", None))
    node = array_to_volume_node(np.asarray(ct.hu, dtype=np.float32), matrix, name, scene, node, role)
    if preset is not None:
        set_window_level(node, preset)
    return node


def volume_node_to_canonical(node: Any):
    """A volume node as a :class:`DCTNetLib.io.geometry.CanonicalGeometry` (float32 voxels).

    Linear parent transforms are applied to the geometry; a volume tilted by more than a degree keeps its
    direction cosines (nothing is resampled) and a warning is logged.
    """
    import slicer

    if node is None or node.GetImageData() is None:
        raise ValueError("volume node has no image data")
    array = slicer.util.arrayFromVolume(node)
    if array.ndim != 3:
        raise ValueError(f"volume '{node.GetName()}' is not a scalar volume (array shape {array.shape})")
    result = canonicalize(array.astype(np.float32), node_ijk_to_ras(node))
    if result.obliquity_deg > OBLIQUE_WARNING_DEG:
        logger.warning("volume '%s' is tilted by %.1f° against the patient axes", node.GetName(), result.obliquity_deg)
    return result


def volume_node_to_ct_volume(node: Any):
    """A CT volume node (HU) as a ``DCTNetLib.io.ct.CTVolume`` in the canonical orientation."""
    from DCTNetLib.io.ct import CTVolume  # needs SimpleITK: imported only when used

    canonical = volume_node_to_canonical(node)
    storage = node.GetStorageNode()
    source = storage.GetFileName() if storage is not None and storage.GetFileName() else node.GetName()
    return CTVolume(hu=canonical.array, spacing=canonical.spacing, origin_lps=canonical.origin_lps,
                    direction=canonical.direction, source=str(source))


def _view_index(view: int | str) -> int:
    return VIEW_NAMES.index(view.upper()) if isinstance(view, str) else int(view)


def radiograph_to_node(
    image: np.ndarray,
    view: int | str,
    name: str | None = None,
    scene: Any = None,
    node: Any = None,
    pixel_spacing_mm: float | None = None,
    centre_ras: Sequence[float] = (0.0, 0.0, 0.0),
    role: str | None = None,
) -> Any:
    """An ``(H, W)`` radiograph in [0, 1] as a single-slice ``(1, H, W)`` volume node.

    Args:
        image: ``(H, W)``, rows superior→inferior (DCTNet convention).
        view: ``"PA"`` / ``"LAT"`` (or 0 / 1): places the image in a coronal / sagittal plane.
        name: node name. Defaults to ``"DCTNet PA"`` / ``"DCTNet LAT"``.
        scene: MRML scene. Defaults to ``slicer.mrmlScene``.
        node: existing node to overwrite.
        pixel_spacing_mm: pixel size. Defaults to that of :func:`DCTNetLib.io.geometry.radiograph_ijk_to_ras`.
        centre_ras: RAS point of the image centre.
        role: ``DCTNet.Role`` attribute. Defaults to ``"pa"`` / ``"lat"``.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"image must be (H, W), got shape {image.shape}")
    index = _view_index(view)
    kwargs = {} if pixel_spacing_mm is None else {"pixel_spacing_mm": pixel_spacing_mm}
    matrix = radiograph_ijk_to_ras(index, image.shape, centre_ras=centre_ras, **kwargs)
    view_name = VIEW_NAMES[index]
    node = array_to_volume_node(image[np.newaxis], matrix, name or f"DCTNet {view_name}", scene, node,
                                role or view_name.lower())
    set_window_level(node, RADIOGRAPH_WINDOW_LEVEL)
    return node


def node_to_radiograph(node: Any) -> np.ndarray:
    """A radiograph volume node as ``(H, W)`` float32 in [0, 1], rows as stored (top row first).

    Accepts single-slice scalar volumes (our own radiograph nodes, PNG/JPEG/DICOM images loaded by Slicer)
    and RGB(A) vector volumes (converted to grey with Rec. 601 luma weights, as ``read_radiograph`` does).
    Values already in [0, 1] are kept; 8-bit images are divided by 255; anything else is min–max scaled.
    """
    import slicer

    if node is None or node.GetImageData() is None:
        raise ValueError("radiograph node has no image data")
    array = np.asarray(slicer.util.arrayFromVolume(node))
    is_8bit = array.dtype == np.uint8
    if array.ndim == 4:  # vector volume (K, J, I, C)
        if array.shape[-1] >= 3:
            from DCTNetLib.io.radiograph import LUMA_WEIGHTS

            array = array[..., :3].astype(np.float64) @ LUMA_WEIGHTS
        else:
            array = array[..., 0]
    single = [axis for axis, n in enumerate(array.shape) if n == 1]
    if array.ndim != 3 or not single:
        raise ValueError(f"'{node.GetName()}' is not a single 2-D image (array shape {array.shape})")
    grey = np.squeeze(array, axis=single[0]).astype(np.float32)
    if is_8bit:
        grey = grey / 255.0
    else:
        low, high = float(grey.min()), float(grey.max())
        if low < 0.0 or high > 1.0:
            if not high > low:
                raise ValueError(f"radiograph '{node.GetName()}' is blank (every pixel is {low:g})")
            grey = (grey - low) / (high - low)
    grey = np.clip(grey, 0.0, 1.0)
    if node.GetAttribute(MONOCHROME1_ATTRIBUTE):  # stored high = dark: bright must be attenuation
        grey = 1.0 - grey
    return grey.astype(np.float32)
