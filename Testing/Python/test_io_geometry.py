"""IJK ↔ RAS helpers of the Slicer glue (DCTNetLib.io.geometry): canonical arrays, re-ordering, radiographs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from DCTNetLib.conventions import VIEW_LAT, VIEW_PA
from DCTNetLib.io.geometry import (
    CANONICAL_DIRECTION,
    LPS_TO_RAS,
    canonicalize,
    centred_origin_lps,
    grid_centre_lps,
    ijk_to_lps_matrix,
    ijk_to_ras_matrix,
    ijk_to_ras_points,
    lps_to_ras,
    radiograph_ijk_to_ras,
    volume_centre_ras,
)


def test_canonical_axes_point_to_left_posterior_inferior_in_ras():
    spacing = (3.0, 2.0, 1.5)  # (D, H, W)
    origin_lps = (-100.0, 50.0, 20.0)
    matrix = ijk_to_ras_matrix(spacing, origin_lps)
    # voxel (0,0,0) sits at the origin, converted to RAS
    np.testing.assert_allclose(matrix[:3, 3], [100.0, -50.0, 20.0])
    # one step along numpy axis 2 (W, Slicer I) moves 1.5 mm towards the patient's left = RAS −x
    np.testing.assert_allclose(matrix[:3, 0], [-1.5, 0.0, 0.0])
    # numpy axis 1 (H, Slicer J): 2 mm towards posterior = RAS −y
    np.testing.assert_allclose(matrix[:3, 1], [0.0, -2.0, 0.0])
    # numpy axis 0 (D, Slicer K): 3 mm towards inferior = RAS −z
    np.testing.assert_allclose(matrix[:3, 2], [0.0, 0.0, -3.0])
    np.testing.assert_allclose(matrix[3], [0, 0, 0, 1])


def test_ijk_to_ras_points_take_numpy_kji_order():
    matrix = ijk_to_ras_matrix((2.5, 2.5, 2.5), (0.0, 0.0, 0.0))
    # numpy index (k=4, j=0, i=0): four slices down = 10 mm inferior
    np.testing.assert_allclose(ijk_to_ras_points(matrix, [[4, 0, 0]]), [[0.0, 0.0, -10.0]])
    # numpy index (k=0, j=0, i=2): two columns = 5 mm to the left = RAS x −5
    np.testing.assert_allclose(ijk_to_ras_points(matrix, [[0, 0, 2]]), [[-5.0, 0.0, 0.0]])
    lps = (ijk_to_lps_matrix((2.5, 2.5, 2.5), (0, 0, 0)) @ [2, 0, 0, 1])[:3]
    np.testing.assert_allclose(lps_to_ras(lps), [-5.0, 0.0, 0.0])


def test_centred_origin_puts_the_grid_centre_on_the_point():
    shape, spacing = (128, 128, 128), (2.5, 2.5, 2.5)
    origin = centred_origin_lps(shape, spacing, centre_lps=(10.0, -20.0, 30.0))
    centre_ras = volume_centre_ras(shape, ijk_to_ras_matrix(spacing, origin))
    np.testing.assert_allclose(centre_ras, [-10.0, 20.0, 30.0], atol=1e-9)
    # a 128³ grid of 2.5 mm spans 317.5 mm between first and last voxel centres: 158.75 mm each side
    np.testing.assert_allclose(origin, [10.0 - 158.75, -20.0 - 158.75, 30.0 + 158.75])


def test_grid_centring_of_an_oblique_anisotropic_grid_agrees_with_every_user():
    """One centring for io.geometry, CTVolume and the preprocessing: each agrees with the voxel-to-LPS matrix."""
    from DCTNetLib.data.preprocess import PreparedVolume
    from DCTNetLib.io.ct import CTVolume

    angle = np.radians(25.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    direction = tuple((rotation @ np.diag([1.0, 1.0, -1.0])).reshape(-1))
    shape, spacing, centre = (5, 8, 11), (3.0, 0.8, 1.2), (12.0, -7.0, 40.0)
    origin = centred_origin_lps(shape, spacing, centre, direction)
    centre_index_xyz1 = [*((np.asarray(shape[::-1]) - 1) / 2.0), 1.0]
    np.testing.assert_allclose((ijk_to_lps_matrix(spacing, origin, direction) @ centre_index_xyz1)[:3], centre,
                               atol=1e-9)
    np.testing.assert_allclose(grid_centre_lps(shape, spacing, origin, direction), centre, atol=1e-9)
    np.testing.assert_allclose(CTVolume(np.zeros(shape), spacing, origin, direction).centre_lps(), centre, atol=1e-9)
    cube = centred_origin_lps((6, 6, 6), (2.0,) * 3, centre, direction)
    prepared = PreparedVolume(np.zeros((6, 6, 6), np.float32), 2.0, cube, direction)
    np.testing.assert_allclose(prepared.centre_lps(), centre, atol=1e-9)


def _random_geometry(rng, permutation, signs, spacing_ijk):
    directions_ras = np.zeros((3, 3))
    for ijk_axis, (ras_axis, sign) in enumerate(zip(permutation, signs)):
        directions_ras[ras_axis, ijk_axis] = sign
    matrix = np.eye(4)
    matrix[:3, :3] = directions_ras * np.asarray(spacing_ijk)[np.newaxis, :]
    matrix[:3, 3] = rng.uniform(-200, 200, 3)
    return matrix


@pytest.mark.parametrize("permutation", list(itertools.permutations(range(3))))
def test_canonicalize_keeps_every_voxel_at_its_position(permutation):
    rng = np.random.default_rng(sum(permutation))
    shape_kji = (5, 6, 7)
    array = rng.normal(size=shape_kji).astype(np.float32)
    for signs in [(1, 1, 1), (-1, 1, -1), (-1, -1, -1)]:
        spacing_ijk = (0.7, 0.9, 2.5)
        matrix = _random_geometry(rng, permutation, signs, spacing_ijk)
        result = canonicalize(array, matrix)
        assert result.obliquity_deg == pytest.approx(0.0, abs=1e-6)
        assert sorted(result.array.shape) == sorted(shape_kji)
        assert result.array.dtype == array.dtype
        np.testing.assert_allclose(result.direction, CANONICAL_DIRECTION, atol=1e-12)
        canonical_matrix = ijk_to_ras_matrix(result.spacing, result.origin_lps, result.direction)
        # every canonical voxel maps to a RAS point at which the source node has the same value
        all_kji = np.argwhere(np.ones(result.array.shape, dtype=bool))
        ras = ijk_to_ras_points(canonical_matrix, all_kji)
        ras_to_ijk = np.linalg.inv(matrix)
        src_ijk = (ras_to_ijk @ np.c_[ras, np.ones(len(ras))].T).T[:, :3]
        src_kji = np.rint(src_ijk[:, ::-1]).astype(int)
        np.testing.assert_allclose(src_ijk[:, ::-1], src_kji, atol=1e-6)
        np.testing.assert_array_equal(result.array[tuple(all_kji.T)], array[tuple(src_kji.T)])
        # and the canonical directions are (inferior, posterior, left) in RAS
        assert canonical_matrix[2, 2] < 0 and canonical_matrix[1, 1] < 0 and canonical_matrix[0, 0] < 0


@pytest.mark.parametrize("permutation", list(itertools.permutations(range(3))))
@pytest.mark.parametrize("signs", list(itertools.product((1.0, -1.0), repeat=3)))
def test_canonicalize_agrees_with_read_ct_on_every_axis_order_and_flip(permutation, signs):
    """The two ways a CT reaches canonical order agree: ``io.ct.from_sitk`` (what ``read_ct`` calls) reorients
    with SimpleITK's ``DICOMOrient``, the Slicer glue with :func:`canonicalize`. For all 48 axis permutations and
    flips, on a small non-symmetric volume with anisotropic voxels and a direction 6° off the axes, both give
    the same voxels, spacing, origin and direction."""
    import SimpleITK as sitk

    from DCTNetLib.io.ct import from_sitk

    rng = np.random.default_rng(7)
    array_kji = rng.uniform(-1000.0, 1500.0, size=(8, 9, 11)).astype(np.float32)  # (K, J, I) = sitk (z, y, x)
    spacing_ijk = (0.7, 0.9, 2.5)
    origin_lps = (12.0, -30.0, 45.0)
    signed_permutation = np.zeros((3, 3))
    for ijk_axis, (lps_axis, sign) in enumerate(zip(permutation, signs)):
        signed_permutation[lps_axis, ijk_axis] = sign
    angle = np.radians(6.0)
    tilt = np.array([[np.cos(angle), 0.0, np.sin(angle)], [0.0, 1.0, 0.0], [-np.sin(angle), 0.0, np.cos(angle)]])
    direction_lps = tilt @ signed_permutation  # columns: LPS directions of the index axes x, y, z

    image = sitk.GetImageFromArray(array_kji)
    image.SetSpacing(spacing_ijk)
    image.SetOrigin(origin_lps)
    image.SetDirection(tuple(direction_lps.reshape(-1)))
    by_sitk = from_sitk(image)

    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = LPS_TO_RAS @ direction_lps * np.asarray(spacing_ijk)[np.newaxis, :]
    ijk_to_ras[:3, 3] = lps_to_ras(np.asarray(origin_lps))
    by_hand = canonicalize(array_kji, ijk_to_ras)

    np.testing.assert_array_equal(by_hand.array, by_sitk.hu)
    np.testing.assert_allclose(by_hand.spacing, by_sitk.spacing, atol=1e-9)
    np.testing.assert_allclose(by_hand.origin_lps, by_sitk.origin_lps, atol=1e-6)
    np.testing.assert_allclose(by_hand.direction, by_sitk.direction, atol=1e-9)
    assert by_hand.obliquity_deg == pytest.approx(6.0, abs=1e-6)  # really oblique: not a signed permutation


def test_canonicalize_of_canonical_geometry_is_identity():
    array = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    spacing, origin = (2.0, 1.0, 0.5), (1.0, 2.0, 3.0)
    result = canonicalize(array, ijk_to_ras_matrix(spacing, origin))
    np.testing.assert_array_equal(result.array, array)
    np.testing.assert_allclose(result.spacing, spacing)
    np.testing.assert_allclose(result.origin_lps, origin)


def test_canonicalize_of_a_typical_ras_ordered_nifti():
    # NIfTI-style RAS+ grid (I → right... no: I → R+, J → A+, K → S+): everything must flip
    array = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # (K, J, I)
    matrix = np.diag([2.0, 3.0, 4.0, 1.0])
    result = canonicalize(array, matrix)
    np.testing.assert_array_equal(result.array, array[::-1, ::-1, ::-1])
    assert result.spacing == (4.0, 3.0, 2.0)
    # canonical voxel 0 is the most superior, anterior, right voxel: RAS (6, 6, 4) → LPS (−6, −6, 4)
    np.testing.assert_allclose(result.origin_lps, (-6.0, -6.0, 4.0))


def test_canonicalize_keeps_an_oblique_volume_exactly_in_place():
    angle = np.radians(10.0)
    matrix = np.eye(4)
    matrix[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    matrix[:3, :3] *= [0.8, 0.9, 3.0]
    matrix[:3, 3] = [5.0, -7.0, 11.0]
    array = np.random.default_rng(1).normal(size=(4, 5, 6))
    result = canonicalize(array, matrix)
    assert result.obliquity_deg == pytest.approx(10.0, abs=1e-6)
    canonical_matrix = ijk_to_ras_matrix(result.spacing, result.origin_lps, result.direction)
    kji = np.argwhere(np.ones(result.array.shape, dtype=bool))
    ras = ijk_to_ras_points(canonical_matrix, kji)
    src = (np.linalg.inv(matrix) @ np.c_[ras, np.ones(len(ras))].T).T[:, :3][:, ::-1]
    np.testing.assert_allclose(src, np.rint(src), atol=1e-9)
    np.testing.assert_array_equal(result.array[tuple(kji.T)], array[tuple(np.rint(src).astype(int).T)])


def test_matrices_agree_with_ctvolume_index_to_lps():
    from DCTNetLib.io.ct import CTVolume

    angle = np.radians(20.0)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    direction = tuple((rotation @ np.diag([1.0, 1.0, -1.0])).reshape(-1))
    ct = CTVolume(hu=np.zeros((3, 4, 5)), spacing=(2.0, 0.5, 0.7), origin_lps=(1.0, 2.0, 3.0), direction=direction)
    dhw = np.array([[2, 3, 4], [1, 0, 2], [0, 0, 0]], dtype=np.float64)
    lps = (ijk_to_lps_matrix(ct.spacing, ct.origin_lps, ct.direction) @ np.c_[dhw[:, ::-1], np.ones(3)].T).T
    np.testing.assert_allclose(lps[:, :3], ct.index_to_lps(dhw), atol=1e-9)
    ras = ijk_to_ras_points(ijk_to_ras_matrix(ct.spacing, ct.origin_lps, ct.direction), dhw)
    np.testing.assert_allclose(lps_to_ras(ras), ct.index_to_lps(dhw), atol=1e-9)


def test_canonicalize_rejects_degenerate_matrices():
    singular = np.eye(4)
    singular[:3, 1] = singular[:3, 0]
    with pytest.raises(ValueError, match="ijk_to_ras"):
        canonicalize(np.zeros((2, 2, 2)), singular)
    with pytest.raises(ValueError, match="array_kji"):
        canonicalize(np.zeros((2, 2)), np.eye(4))


def test_radiograph_volumes_lie_in_coronal_and_sagittal_planes():
    shape = (128, 128)
    pa = radiograph_ijk_to_ras(VIEW_PA, shape)
    lat = radiograph_ijk_to_ras("LAT", shape)
    # PA: columns towards the patient's left (RAS −x), rows towards inferior (RAS −z), normal along A–P
    np.testing.assert_allclose(pa[:3, 0], [-2.5, 0, 0])
    np.testing.assert_allclose(pa[:3, 1], [0, 0, -2.5])
    assert abs(pa[1, 2]) == pytest.approx(2.5)
    # lateral: columns towards posterior (RAS −y), rows towards inferior, normal along R–L
    np.testing.assert_allclose(lat[:3, 0], [0, -2.5, 0])
    np.testing.assert_allclose(lat[:3, 1], [0, 0, -2.5])
    assert abs(lat[0, 2]) == pytest.approx(2.5)
    for matrix in (pa, lat):
        assert np.linalg.det(matrix[:3, :3]) > 0  # right-handed
        # the single-slice (1, H, W) volume is centred on the origin
        np.testing.assert_allclose(volume_centre_ras((1, *shape), matrix), [0, 0, 0], atol=1e-9)
    # top-left pixel of a PA film is the patient's superior right
    top_left = ijk_to_ras_points(pa, [[0, 0, 0]])[0]
    assert top_left[0] > 0 and top_left[2] > 0
    # top-left pixel of a lateral film is superior anterior
    top_left = ijk_to_ras_points(lat, [[0, 0, 0]])[0]
    assert top_left[1] > 0 and top_left[2] > 0


def test_radiograph_geometry_validates_its_arguments():
    with pytest.raises(ValueError, match="view"):
        radiograph_ijk_to_ras(2, (4, 4))
    with pytest.raises(ValueError, match="shape_hw"):
        radiograph_ijk_to_ras(VIEW_LAT, (4,))
    with pytest.raises(ValueError, match="pixel_spacing_mm"):
        radiograph_ijk_to_ras(VIEW_PA, (4, 4), pixel_spacing_mm=0)
    with pytest.raises(ValueError, match="spacing"):
        ijk_to_ras_matrix((1.0, -1.0, 1.0), (0, 0, 0))
    with pytest.raises(ValueError, match="direction"):
        ijk_to_ras_matrix((1.0, 1.0, 1.0), (0, 0, 0), direction=(2.0,) * 9)
