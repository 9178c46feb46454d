"""IJK ↔ RAS geometry of DCTNet arrays, for the 3D Slicer glue (pure numpy, no ``slicer`` import).

Slicer stores a volume as an image indexed (I, J, K), I fastest, with a 4×4 ``IJKToRAS`` matrix, and
``slicer.util.arrayFromVolume`` returns the voxels as a numpy array of shape (K, J, I). DCTNet's canonical
volume array is ``(D, H, W)`` = (superior→inferior, anterior→posterior, patient right→left), see
:mod:`DCTNetLib.conventions`. So for a canonical array handed to Slicer:

    numpy axis 2 (W) = Slicer I  → patient Left       (LPS +x)
    numpy axis 1 (H) = Slicer J  → Posterior          (LPS +y)
    numpy axis 0 (D) = Slicer K  → Inferior           (LPS −z)

``CTVolume.origin_lps`` is the LPS position (mm) of voxel (0, 0, 0), as DICOM and ITK store it, and
``CTVolume.direction`` holds SimpleITK's direction cosines (row-major 3×3; column n = LPS direction of index
axis n, x = W, y = H, z = D), ``diag(1, 1, −1)`` for an axis-aligned canonical volume. Slicer works in RAS,
which is LPS with x and y negated.

Radiographs are shown as single-slice volumes of shape (1, H, W) whose rows run superior→inferior and whose
columns run patient right→left (PA) or anterior→posterior (lateral): the PA image lies in a coronal plane and
the lateral image in a sagittal plane, so Slicer's coronal and sagittal views display them the standard way
(patient's right on the viewer's left; patient facing the viewer's left).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..conventions import VIEW_LAT, VIEW_NAMES, VIEW_PA, VOXEL_SPACING_MM

__all__ = [
    "LPS_TO_RAS",
    "CANONICAL_IJK_DIRECTIONS_LPS",
    "CANONICAL_DIRECTION",
    "CanonicalGeometry",
    "lps_to_ras",
    "ras_to_lps",
    "ijk_to_lps_matrix",
    "ijk_to_ras_matrix",
    "ijk_to_ras_points",
    "centred_origin_lps",
    "grid_centre_lps",
    "volume_centre_ras",
    "canonicalize",
    "radiograph_ijk_to_ras",
]

# LPS → RAS (and back: the matrix is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

# Columns are the LPS unit directions of Slicer's I, J, K index axes for a canonical (D, H, W) array.
CANONICAL_IJK_DIRECTIONS_LPS = np.array(
    [
        [1.0, 0.0, 0.0],   # I (numpy axis 2, W): towards patient left    = LPS +x
        [0.0, 1.0, 0.0],   # J (numpy axis 1, H): towards posterior       = LPS +y
        [0.0, 0.0, -1.0],  # K (numpy axis 0, D): towards inferior        = LPS −z
    ]
).T

# The same as SimpleITK direction cosines, row-major (the default of ``CTVolume.direction``).
CANONICAL_DIRECTION: tuple[float, ...] = tuple(float(v) for v in CANONICAL_IJK_DIRECTIONS_LPS.reshape(-1))

# For each canonical numpy axis (D, H, W): the LPS axis it runs along and the sign of its direction.
_CANONICAL_LPS_AXIS = (2, 1, 0)
_CANONICAL_LPS_SIGN = (-1.0, 1.0, 1.0)


@dataclass(frozen=True)
class CanonicalGeometry:
    """A volume re-ordered into canonical ``(D, H, W)`` order by :func:`canonicalize`.

    Args:
        array: ``(D, H, W)`` voxels (a view of the input when possible, same dtype).
        spacing: ``(D, H, W)`` voxel size in mm.
        origin_lps: LPS position (x, y, z) in mm of voxel (0, 0, 0).
        direction: SimpleITK direction cosines (row-major 3×3) of the re-ordered index axes (x = W, y = H,
            z = D); :data:`CANONICAL_DIRECTION` for an axis-aligned volume.
        obliquity_deg: largest angle between an index axis and the anatomical axis it was mapped to
            (0 for axis-aligned volumes).
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin_lps: tuple[float, float, float]
    direction: tuple[float, ...]
    obliquity_deg: float


def _as_vector3(value: Sequence[float], name: str) -> np.ndarray:
    vector = np.asarray(value, dtype=np.float64).reshape(-1)
    if vector.shape != (3,) or not np.all(np.isfinite(vector)):
        raise ValueError(f"{name} must be 3 finite numbers, got {value!r}")
    return vector


def _check_spacing(spacing: Sequence[float]) -> np.ndarray:
    spacing_vec = _as_vector3(spacing, "spacing")
    if np.any(spacing_vec <= 0):
        raise ValueError(f"spacing must be positive (mm), got {tuple(spacing)}")
    return spacing_vec


def lps_to_ras(points: np.ndarray | Sequence[float]) -> np.ndarray:
    """Convert LPS coordinates to RAS (negate x and y).

    Shapes:
        ``(..., 3)`` → ``(..., 3)``.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.shape[-1] != 3:
        raise ValueError(f"points must have a last axis of length 3, got shape {points.shape}")
    return points * np.array([-1.0, -1.0, 1.0])


ras_to_lps = lps_to_ras  # the same sign flip both ways


def _direction_matrix(direction: Sequence[float] | None, orthonormal: bool = True) -> np.ndarray:
    """The 3×3 direction cosines (canonical when None); ``orthonormal`` also checks that they are a rotation."""
    if direction is None:
        return CANONICAL_IJK_DIRECTIONS_LPS.copy()
    matrix = np.asarray(direction, dtype=np.float64).reshape(-1)
    if matrix.shape != (9,) or not np.all(np.isfinite(matrix)):
        raise ValueError(f"direction must be 9 finite numbers (row-major 3×3), got {direction!r}")
    matrix = matrix.reshape(3, 3)
    if orthonormal and not np.allclose(matrix.T @ matrix, np.eye(3), atol=1e-4):
        raise ValueError(f"direction must be orthonormal direction cosines, got {tuple(matrix.reshape(-1))}")
    return matrix


def ijk_to_lps_matrix(
    spacing: Sequence[float], origin_lps: Sequence[float], direction: Sequence[float] | None = None
) -> np.ndarray:
    """4×4 matrix taking Slicer (I, J, K, 1) of a ``(D, H, W)`` array to LPS millimetres.

    Args:
        spacing: ``(D, H, W)`` voxel size in mm (the order of ``CTVolume.spacing``).
        origin_lps: LPS position (x, y, z) of voxel (0, 0, 0) in mm.
        direction: SimpleITK direction cosines, row-major 3×3 (``CTVolume.direction``). Defaults to the
            axis-aligned canonical :data:`CANONICAL_DIRECTION`.
    """
    spacing_dhw = _check_spacing(spacing)
    origin = _as_vector3(origin_lps, "origin_lps")
    spacing_ijk = spacing_dhw[::-1]  # I ↔ W, J ↔ H, K ↔ D
    matrix = np.eye(4)
    matrix[:3, :3] = _direction_matrix(direction) * spacing_ijk[np.newaxis, :]
    matrix[:3, 3] = origin
    return matrix


def ijk_to_ras_matrix(
    spacing: Sequence[float], origin_lps: Sequence[float], direction: Sequence[float] | None = None
) -> np.ndarray:
    """4×4 ``IJKToRAS`` matrix of a ``(D, H, W)`` array, ready for ``vtkMRMLVolumeNode.SetIJKToRASMatrix``.

    Args:
        spacing: ``(D, H, W)`` voxel size in mm.
        origin_lps: LPS position (x, y, z) of voxel (0, 0, 0) in mm; converted to RAS here.
        direction: SimpleITK direction cosines (row-major 3×3) in LPS. Defaults to the canonical axes.
    """
    matrix = ijk_to_lps_matrix(spacing, origin_lps, direction)
    matrix[:3, :] = LPS_TO_RAS @ matrix[:3, :]
    return matrix


def ijk_to_ras_points(ijk_to_ras: np.ndarray, kji_indices: np.ndarray) -> np.ndarray:
    """RAS positions (mm) of voxels given as numpy ``(k, j, i)`` indices (the order of ``arrayFromVolume``).

    Shapes:
        ``kji_indices`` ``(N, 3)`` → ``(N, 3)``.
    """
    kji = np.asarray(kji_indices, dtype=np.float64).reshape(-1, 3)
    ijk1 = np.concatenate([kji[:, ::-1], np.ones((kji.shape[0], 1))], axis=1)
    return (np.asarray(ijk_to_ras, dtype=np.float64) @ ijk1.T).T[:, :3]


def _half_diagonal_lps(shape: Sequence[int], spacing: Sequence[float],
                       direction: Sequence[float] | None) -> np.ndarray:
    """LPS vector (mm) from the centre of voxel 0 to the centre of a ``(D, H, W)`` grid (half-way between the end
    voxel centres). The direction is not required to be orthonormal (SimpleITK does not require it either)."""
    if len(shape) != 3 or any(int(n) < 1 for n in shape):
        raise ValueError(f"shape must be 3 positive sizes (D, H, W), got {tuple(shape)}")
    half_xyz = (np.asarray(shape[::-1], dtype=np.float64) - 1.0) / 2.0 * _check_spacing(spacing)[::-1]
    return _direction_matrix(direction, orthonormal=False) @ half_xyz


def centred_origin_lps(
    shape: Sequence[int], spacing: Sequence[float], centre_lps: Sequence[float] = (0.0, 0.0, 0.0),
    direction: Sequence[float] | None = None,
) -> tuple[float, float, float]:
    """Origin (LPS of voxel 0) that puts the centre of a ``(D, H, W)`` grid at ``centre_lps``.

    Args:
        shape: ``(D, H, W)`` voxel counts.
        spacing: ``(D, H, W)`` voxel size in mm.
        centre_lps: LPS point (mm) the grid centre should land on. Defaults to the origin.
        direction: SimpleITK direction cosines (row-major 3×3) of the grid. Defaults to the canonical axes.
    """
    origin = _as_vector3(centre_lps, "centre_lps") - _half_diagonal_lps(shape, spacing, direction)
    return (float(origin[0]), float(origin[1]), float(origin[2]))


def grid_centre_lps(
    shape: Sequence[int], spacing: Sequence[float], origin_lps: Sequence[float],
    direction: Sequence[float] | None = None,
) -> np.ndarray:
    """LPS position (mm) of the centre of a ``(D, H, W)`` grid whose voxel 0 is at ``origin_lps``; the inverse of
    :func:`centred_origin_lps`. Arguments as there."""
    return _as_vector3(origin_lps, "origin_lps") + _half_diagonal_lps(shape, spacing, direction)


def volume_centre_ras(shape_kji: Sequence[int], ijk_to_ras: np.ndarray) -> np.ndarray:
    """RAS position (mm) of the centre of a grid of numpy shape ``(K, J, I)`` under ``ijk_to_ras``."""
    centre_kji = (np.asarray(shape_kji, dtype=np.float64) - 1.0) / 2.0
    return ijk_to_ras_points(ijk_to_ras, centre_kji[np.newaxis, :])[0]


def _ijk_axes_in_lps(ijk_to_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each IJK axis of a 4×4 ``IJKToRAS`` matrix in LPS: its unit direction (column ``a`` of a 3×3), its voxel
    size in mm, and the anatomical axis (0, 1, 2 = L, P, S) it is closest to.

    Raises:
        ValueError: not 4×4, a degenerate direction matrix, or two IJK axes closest to one anatomical axis.
    """
    if ijk_to_ras.shape != (4, 4):
        raise ValueError(f"ijk_to_ras must be 4×4, got shape {ijk_to_ras.shape}")
    columns_lps = LPS_TO_RAS @ ijk_to_ras[:3, :3]  # column a = LPS step of one voxel along IJK axis a
    spacing_ijk = np.linalg.norm(columns_lps, axis=0)
    if np.any(spacing_ijk <= 0) or abs(np.linalg.det(columns_lps)) < 1e-12:
        raise ValueError(f"ijk_to_ras has a degenerate direction matrix:\n{ijk_to_ras}")
    directions = columns_lps / spacing_ijk[np.newaxis, :]
    dominant = np.argmax(np.abs(directions), axis=0)  # LPS axis of each IJK axis
    if sorted(dominant.tolist()) != [0, 1, 2]:
        raise ValueError(f"ijk_to_ras axes do not map onto three distinct anatomical axes:\n{ijk_to_ras}")
    return directions, spacing_ijk, dominant


def canonicalize(array_kji: np.ndarray, ijk_to_ras: np.ndarray) -> CanonicalGeometry:
    """Re-order a Slicer volume array into canonical ``(D, H, W)`` order by axis permutation and flips.

    Each Slicer index axis is matched to the anatomical axis its direction is closest to (what
    ``sitk.DICOMOrient(img, "LPI")`` does); nothing is resampled, so every voxel keeps its value and
    its position in space, and an oblique volume keeps its exact direction cosines.

    Args:
        array_kji: voxels as returned by ``slicer.util.arrayFromVolume``, shape ``(K, J, I)``.
        ijk_to_ras: the node's 4×4 ``IJKToRAS`` matrix (without parent transforms).

    Returns:
        :class:`CanonicalGeometry` with the re-ordered array, ``(D, H, W)`` spacing and the LPS origin.

    Shapes:
        ``(K, J, I)`` → ``(D, H, W)``.
    """
    array_kji = np.asarray(array_kji)
    if array_kji.ndim != 3:
        raise ValueError(f"array_kji must be 3-D (K, J, I), got shape {array_kji.shape}")
    matrix = np.asarray(ijk_to_ras, dtype=np.float64)
    directions, spacing_ijk, dominant = _ijk_axes_in_lps(matrix)

    order, flips, spacing, start_ijk, columns = [], [], [], np.zeros(3), []
    worst_cos = 1.0
    for lps_axis, wanted_sign in zip(_CANONICAL_LPS_AXIS, _CANONICAL_LPS_SIGN):
        ijk_axis = int(np.flatnonzero(dominant == lps_axis)[0])
        component = directions[lps_axis, ijk_axis]
        worst_cos = min(worst_cos, abs(component))
        flip = np.sign(component) != wanted_sign
        order.append(2 - ijk_axis)  # numpy axis of IJK axis a is 2 − a
        flips.append(flip)
        spacing.append(float(spacing_ijk[ijk_axis]))
        columns.append(-directions[:, ijk_axis] if flip else directions[:, ijk_axis])
        if flip:
            start_ijk[ijk_axis] = array_kji.shape[2 - ijk_axis] - 1

    canonical = np.transpose(array_kji, order)
    flip_axes = tuple(axis for axis, flip in enumerate(flips) if flip)
    if flip_axes:
        canonical = np.flip(canonical, axis=flip_axes)
    origin = LPS_TO_RAS @ (matrix[:3, :3] @ start_ijk + matrix[:3, 3])
    obliquity = float(np.degrees(np.arccos(np.clip(worst_cos, -1.0, 1.0))))
    # columns were collected in (D, H, W) order; SimpleITK's index axes are (x, y, z) = (W, H, D)
    direction_lps = np.stack(columns[::-1], axis=1)
    return CanonicalGeometry(
        array=canonical,
        spacing=(spacing[0], spacing[1], spacing[2]),
        origin_lps=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=tuple(float(v) for v in direction_lps.reshape(-1)),
        obliquity_deg=obliquity,
    )


def radiograph_ijk_to_ras(
    view: int | str,
    shape_hw: Sequence[int],
    pixel_spacing_mm: float = VOXEL_SPACING_MM,
    centre_ras: Sequence[float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """``IJKToRAS`` of a radiograph stored as a single-slice ``(1, H, W)`` volume.

    Rows (Slicer J) run towards inferior. PA columns (Slicer I) run towards patient left, so the image lies
    in a coronal plane; lateral columns run towards posterior, a sagittal plane. K is the projection axis,
    chosen so that the matrix is right-handed.

    Args:
        view: ``VIEW_PA`` / ``VIEW_LAT`` or their names ``"PA"`` / ``"LAT"``.
        shape_hw: ``(H, W)`` of the image.
        pixel_spacing_mm: pixel size in mm. Defaults to the 2.5 mm of the reconstructed voxels, so a 128-px
            radiograph spans the same 320 mm field as the CT it belongs to (X2CT-GAN geometry).
        centre_ras: RAS point (mm) of the image centre. Defaults to the origin.
    """
    view_index = VIEW_NAMES.index(view.upper()) if isinstance(view, str) else int(view)
    if view_index == VIEW_PA:
        columns_ras = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, -1.0, 0.0]]).T  # I→L, J→I, K→P
    elif view_index == VIEW_LAT:
        columns_ras = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]).T  # I→P, J→I, K→R
    else:
        raise ValueError(f"view must be PA or LAT (0 or 1), got {view!r}")
    if len(shape_hw) != 2 or any(int(n) < 1 for n in shape_hw):
        raise ValueError(f"shape_hw must be 2 positive sizes (H, W), got {tuple(shape_hw)}")
    if not pixel_spacing_mm > 0:
        raise ValueError(f"pixel_spacing_mm must be positive, got {pixel_spacing_mm}")
    matrix = np.eye(4)
    matrix[:3, :3] = columns_ras * float(pixel_spacing_mm)
    half_extent_ijk = np.array([(shape_hw[1] - 1) / 2.0, (shape_hw[0] - 1) / 2.0, 0.0])
    matrix[:3, 3] = _as_vector3(centre_ras, "centre_ras") - matrix[:3, :3] @ half_extent_ijk
    return matrix
