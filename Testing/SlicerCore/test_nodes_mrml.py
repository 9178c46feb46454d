"""DCTNetSlicerLib.nodes on real MRML: the ``slicer-core`` wheel (Qt-free MRML, its logic and ``slicer.util``).

What the Slicer Logic relies on, checked against independent references: SimpleITK's index → LPS mapping of
the same ``CTVolume`` (Slicer is RAS: x and y negated), Slicer's own NRRD reader loading a file written by
``DCTNetLib.io.ct.write_ct``, and a scene saved as a ``.mrb`` bundle (NRRD storage) and opened in a new scene.

Run with ``Testing/SlicerCore/run.sh`` (its own venv: slicer-core pins vtk and owns the ``slicer`` name). In any
other environment the whole module is skipped.
"""

from __future__ import annotations

import logging
import zipfile

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("`slicer` here is not slicer-core's MRML build", allow_module_level=True)
sitk = pytest.importorskip("SimpleITK")
import vtk  # noqa: E402  (slicer-core's pinned vtk)

from DCTNetLib.io.ct import CTVolume, read_ct, to_sitk, write_ct  # noqa: E402
from DCTNetSlicerLib import nodes  # noqa: E402

# Shape with three different sizes, so any swapped axis changes the shape; spacing and origin all distinct.
SHAPE_DHW = (9, 10, 11)
SPACING_DHW = (2.5, 1.25, 0.75)
ORIGIN_LPS = (-12.5, 30.0, 101.0)
# HU range of the X2CT-GAN window (DCTNetLib.conventions HU_MIN / HU_MAX); values are random so a flip shows.
HU_RANGE = (-1024.0, 1476.0)
LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])
# Rec. ITU-R BT.601 luma weights (R, G, B), the grey conversion read_radiograph uses for RGB images.
REC601 = np.array([0.299, 0.587, 0.114])


def _random_ct(direction=None, seed=0) -> CTVolume:
    hu = np.random.default_rng(seed).uniform(*HU_RANGE, size=SHAPE_DHW).astype(np.float32)
    kwargs = {} if direction is None else {"direction": direction}
    return CTVolume(hu=hu, spacing=SPACING_DHW, origin_lps=ORIGIN_LPS, **kwargs)


def _rotation_z(degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _oblique_direction(degrees: float) -> tuple[float, ...]:
    """Canonical direction cosines diag(1, 1, −1) tilted by ``degrees`` about the S–I axis."""
    return tuple((_rotation_z(degrees) @ np.diag([1.0, 1.0, -1.0])).reshape(-1))


def _ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _voxel_ras(node) -> np.ndarray:
    """RAS (mm) of every voxel of ``arrayFromVolume(node)``, shape (K, J, I, 3), from the node's own matrix."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in slicer.util.arrayFromVolume(node).shape[:3]), indexing="ij")
    ijk1 = np.stack([i, j, k, np.ones_like(i)], axis=-1).astype(np.float64)
    return (ijk1 @ _ijk_to_ras(node).T)[..., :3]


def _sample_ct_at_ras(ct: CTVolume, ras: np.ndarray) -> np.ndarray:
    """The CT's HU at RAS points lying on its voxel centres, located with SimpleITK's own index mapping."""
    image = to_sitk(ct)
    direction = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    index_xyz = (ras.reshape(-1, 3) * LPS_TO_RAS - np.asarray(image.GetOrigin())) @ np.linalg.inv(direction).T
    rounded = np.rint(index_xyz)
    np.testing.assert_allclose(index_xyz, rounded, atol=1e-6)  # every node voxel sits on a CT voxel centre
    x, y, z = rounded.astype(int).T
    return ct.hu[z, y, x].reshape(ras.shape[:-1])


def _assert_same_ct(actual: CTVolume, expected: CTVolume) -> None:
    assert actual.hu.dtype == np.float32
    np.testing.assert_array_equal(actual.hu, expected.hu)
    np.testing.assert_allclose(actual.spacing, expected.spacing, atol=1e-9)
    np.testing.assert_allclose(actual.origin_lps, expected.origin_lps, atol=1e-6)
    np.testing.assert_allclose(actual.direction, expected.direction, atol=1e-9)


# ------------------------------------------------------------------------------------------------ CT volumes


@pytest.mark.parametrize("tilt_deg", [0.0, 20.0])
def test_ct_node_puts_every_voxel_where_simpleitk_puts_it(scene, tilt_deg):
    ct = _random_ct(_oblique_direction(tilt_deg) if tilt_deg else None)
    node = nodes.ct_volume_to_node(ct, scene=scene)

    array = slicer.util.arrayFromVolume(node)
    assert array.dtype == np.float32 and array.shape == SHAPE_DHW  # (K, J, I) = (D, H, W) sizes
    np.testing.assert_allclose(node.GetSpacing(), SPACING_DHW[::-1])  # Slicer spacing is (I, J, K) = (W, H, D)
    assert np.linalg.det(_ijk_to_ras(node)[:3, :3]) > 0  # stored right-handed (survives a scene reload)
    # every voxel's value is the CT's value at that RAS point (SimpleITK index → LPS, then LPS → RAS)
    np.testing.assert_array_equal(array, _sample_ct_at_ras(ct, _voxel_ras(node)))
    # CT voxel (0, 0, 0) — right, anterior, superior corner — is at its LPS origin with x, y negated
    image = to_sitk(ct)
    corner_ras = np.asarray(image.TransformIndexToPhysicalPoint((0, 0, 0))) * LPS_TO_RAS
    np.testing.assert_allclose(corner_ras, np.asarray(ORIGIN_LPS) * LPS_TO_RAS)
    assert any(np.allclose(p, corner_ras) for p in _voxel_ras(node).reshape(-1, 3))
    if tilt_deg == 0.0:  # axis-aligned: Slicer origin = RAS of the most inferior slice's first voxel
        last_slice = image.TransformIndexToPhysicalPoint((0, 0, SHAPE_DHW[0] - 1))
        np.testing.assert_allclose(node.GetOrigin(), np.asarray(last_slice) * LPS_TO_RAS)


@pytest.mark.parametrize("tilt_deg", [0.0, 20.0])
def test_ct_node_back_to_ct_volume_is_lossless(scene, tilt_deg, caplog):
    ct = _random_ct(_oblique_direction(tilt_deg) if tilt_deg else None, seed=1)
    node = nodes.ct_volume_to_node(ct, scene=scene)
    with caplog.at_level(logging.WARNING, logger=nodes.__name__):
        back = nodes.volume_node_to_ct_volume(node)
    _assert_same_ct(back, ct)
    assert ("tilted by 20.0°" in caplog.text) == bool(tilt_deg)


def test_ct_node_matches_slicer_reading_the_written_file(scene, tmp_path):
    """The node made in memory equals the node Slicer's NRRD reader makes from ``write_ct`` of the same CT."""
    ct = _random_ct(seed=2)
    path = write_ct(ct, tmp_path / "ct.nrrd")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    loaded = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "loaded")
    assert storage.ReadData(loaded)
    made = nodes.ct_volume_to_node(ct, scene=scene)
    np.testing.assert_allclose(_ijk_to_ras(made), _ijk_to_ras(loaded), atol=1e-9)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(made), slicer.util.arrayFromVolume(loaded))


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "ASL", "PIR"])
def test_any_stored_orientation_canonicalizes_like_read_ct(scene, tmp_path, orientation):
    """A CT stored in any axis order, loaded by Slicer, gives the CTVolume ``read_ct`` gives for the file."""
    ct = _random_ct(seed=3)
    path = tmp_path / f"{orientation}.nrrd"
    sitk.WriteImage(sitk.DICOMOrient(to_sitk(ct), orientation), str(path))
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", orientation)
    assert storage.ReadData(node)
    assert not np.array_equal(slicer.util.arrayFromVolume(node), ct.hu)  # really stored another way
    back = nodes.volume_node_to_ct_volume(node)
    _assert_same_ct(back, read_ct(path))
    _assert_same_ct(back, ct)


def test_linear_parent_transform_moves_the_ct_and_nonlinear_is_refused(scene):
    ct = _random_ct(seed=4)
    node = nodes.ct_volume_to_node(ct, scene=scene)
    shift_ras = np.array([5.0, -3.0, 7.0])
    to_parent = vtk.vtkMatrix4x4()
    for axis in range(3):
        to_parent.SetElement(axis, 3, shift_ras[axis])
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    transform.SetMatrixTransformToParent(to_parent)
    node.SetAndObserveTransformNodeID(transform.GetID())
    np.testing.assert_allclose(nodes.node_ijk_to_ras(node)[:3, 3], _ijk_to_ras(node)[:3, 3] + shift_ras)
    moved = nodes.volume_node_to_ct_volume(node)
    np.testing.assert_array_equal(moved.hu, ct.hu)
    np.testing.assert_allclose(moved.origin_lps, np.asarray(ORIGIN_LPS) + shift_ras * LPS_TO_RAS)

    warp = vtk.vtkThinPlateSplineTransform()
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    for point in [(0, 0, 0), (10, 0, 0), (0, 10, 0), (0, 0, 10)]:
        source.InsertNextPoint(*point)
        target.InsertNextPoint(point[0], point[1], point[2] + (1.0 if point == (0, 0, 0) else 0.0))
    warp.SetSourceLandmarks(source)
    warp.SetTargetLandmarks(target)
    transform_nl = scene.AddNewNodeByClass("vtkMRMLTransformNode")
    transform_nl.SetAndObserveTransformToParent(warp)
    node.SetAndObserveTransformNodeID(transform_nl.GetID())
    with pytest.raises(ValueError, match="non-linear transform"):
        nodes.volume_node_to_ct_volume(node)


# ---------------------------------------------------------------------------------------------- window/level


@pytest.mark.parametrize("preset, expected", [("CT_LUNG", (1400.0, -500.0)), ("CT_BONE", (1000.0, 400.0))])
def test_window_level_presets(scene, preset, expected):
    node = nodes.ct_volume_to_node(_random_ct(), scene=scene, preset=preset)
    display = node.GetDisplayNode()
    assert (display.GetWindow(), display.GetLevel()) == expected
    assert not display.GetAutoWindowLevel()
    # overwriting the node with a new result keeps the node, its display and the preset, and shows the new HU
    other = _random_ct(seed=5)
    again = nodes.ct_volume_to_node(other, scene=scene, node=node, preset=None)
    assert again is node and node.GetDisplayNode() is display
    assert (display.GetWindow(), display.GetLevel()) == expected
    _assert_same_ct(nodes.volume_node_to_ct_volume(node), other)


def test_no_preset_leaves_auto_window_level(scene):
    node = nodes.ct_volume_to_node(_random_ct(), scene=scene, preset=None)
    display = node.GetDisplayNode()
    assert display.GetAutoWindowLevel()
    nodes.set_window_level(node, (400.0, 40.0))
    assert (display.GetWindow(), display.GetLevel(), display.GetAutoWindowLevel()) == (400.0, 40.0, 0)


# ------------------------------------------------------------------------------------------------ radiographs


def _radiograph(shape=(12, 10), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, size=shape).astype(np.float32)


@pytest.mark.parametrize("view", ["PA", "LAT"])
def test_radiograph_node_is_one_slice_in_its_anatomical_plane(scene, view):
    image = _radiograph()
    centre = (4.0, -6.0, 20.0)
    node = nodes.radiograph_to_node(image, view, scene=scene, centre_ras=centre)
    array = slicer.util.arrayFromVolume(node)
    assert array.shape == (1, 12, 10) and array.dtype == np.float32
    np.testing.assert_array_equal(array[0], image)
    np.testing.assert_array_equal(nodes.node_to_radiograph(node), image)
    assert node.GetAttribute(nodes.ROLE_ATTRIBUTE) == view.lower()
    assert node.GetName() == f"DCTNet {view}"
    display = node.GetDisplayNode()
    assert (display.GetWindow(), display.GetLevel()) == (1.0, 0.5)

    ras = _voxel_ras(node)[0]  # (H, W, 3)
    step_row, step_col = ras[1, 0] - ras[0, 0], ras[0, 1] - ras[0, 0]
    np.testing.assert_allclose(step_row, [0.0, 0.0, -2.5])  # rows run superior → inferior, 2.5 mm pixels
    # PA columns run patient right → left (RAS −x), lateral columns anterior → posterior (RAS −y)
    np.testing.assert_allclose(step_col, [-2.5, 0.0, 0.0] if view == "PA" else [0.0, -2.5, 0.0])
    plane_axis = 1 if view == "PA" else 0  # coronal plane: constant A–P; sagittal plane: constant R–L
    np.testing.assert_allclose(ras[..., plane_axis], centre[plane_axis])
    np.testing.assert_allclose(ras.reshape(-1, 3).mean(axis=0), centre)  # the image centre is at centre_ras
    assert np.linalg.det(_ijk_to_ras(node)[:3, :3]) > 0


@pytest.mark.parametrize("view", ["PA", "LAT"])
def test_radiograph_pixels_lie_over_the_ct_voxels_they_project(scene, view):
    """A 2.5 mm CT centred on 0 and its radiograph: pixel (row, col) is over the CT's voxel column it sums.

    DCTNet convention: PA projects (D, H, W) along H, so pixel (r, c) ↔ voxels (r, :, c); lateral projects along
    W, so pixel (r, c) ↔ voxels (r, c, :). Their shared RAS coordinates (x, z for PA; y, z for lateral) agree.
    """
    size, spacing = 8, 2.5
    half = (size - 1) / 2.0 * spacing
    ct = CTVolume(hu=np.zeros((size,) * 3, np.float32), spacing=(spacing,) * 3, origin_lps=(-half, -half, half))
    ct_ras = _voxel_ras(nodes.ct_volume_to_node(ct, scene=scene))
    if ct_ras[0, 0, 0, 2] < ct_ras[-1, 0, 0, 2]:  # slices as the canonical D axis: superior → inferior
        ct_ras = ct_ras[::-1]
    pixel_ras = _voxel_ras(nodes.radiograph_to_node(_radiograph((size, size)), view, scene=scene))[0]
    if view == "PA":
        np.testing.assert_allclose(pixel_ras[..., [0, 2]], ct_ras[:, 0, :][..., [0, 2]], atol=1e-9)
    else:
        np.testing.assert_allclose(pixel_ras[..., [1, 2]], ct_ras[:, :, 0][..., [1, 2]], atol=1e-9)


def _image_node(scene, array: np.ndarray, vector: bool = False):
    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode" if vector else "vtkMRMLScalarVolumeNode", "image")
    slicer.util.updateVolumeFromArray(node, array)
    return node


def test_radiograph_from_loaded_images(scene):
    """Images as Slicer loads them: 8-bit grey, RGB vector volumes, 12-bit raw; blank and 3-D ones refused."""
    grey8 = np.random.default_rng(1).integers(0, 256, size=(1, 6, 5), dtype=np.uint8)
    np.testing.assert_allclose(nodes.node_to_radiograph(_image_node(scene, grey8)), grey8[0] / 255.0, atol=1e-7)

    rgb = np.random.default_rng(2).integers(0, 256, size=(1, 6, 5, 3), dtype=np.uint8)
    expected = rgb[0].astype(np.float64) @ REC601 / 255.0
    np.testing.assert_allclose(nodes.node_to_radiograph(_image_node(scene, rgb, vector=True)), expected, atol=1e-6)

    raw12 = np.random.default_rng(3).integers(0, 4096, size=(1, 6, 5)).astype(np.int16)
    grey = nodes.node_to_radiograph(_image_node(scene, raw12))
    low, high = raw12.min(), raw12.max()
    np.testing.assert_allclose(grey, (raw12[0] - low) / (high - low), atol=1e-6)
    assert grey.min() == 0.0 and grey.max() == 1.0

    with pytest.raises(ValueError, match="blank"):
        nodes.node_to_radiograph(_image_node(scene, np.full((1, 4, 4), 300, np.int16)))
    with pytest.raises(ValueError, match="not a single 2-D image"):
        nodes.node_to_radiograph(_image_node(scene, np.zeros((3, 4, 4), np.float32)))


# ---------------------------------------------------------------------------------- scene save and read back


def _read_mrb(path):
    """A new scene read from an ``.mrb`` (needs a data IO manager with a cache folder, as Slicer sets up)."""
    cache = slicer.vtkCacheManager()
    cache.SetRemoteCacheDirectory(str(path.parent / "cache"))
    io_manager = slicer.vtkDataIOManager()
    io_manager.SetCacheManager(cache)
    scene = slicer.vtkMRMLScene()
    scene.SetCacheManager(cache)
    scene.SetDataIOManager(io_manager)
    assert scene.ReadFromMRB(str(path))
    return scene


def test_scene_saved_as_mrb_reads_back_identical(scene, tmp_path):
    ct = _random_ct(seed=6)
    reference = nodes.ct_volume_to_node(ct, "reference 128³", scene=scene, preset="CT_BONE", role="reference")
    pa = nodes.radiograph_to_node(_radiograph(seed=7), "PA", scene=scene, centre_ras=(1.0, 2.0, 3.0))
    lat = nodes.radiograph_to_node(_radiograph(seed=8), "LAT", scene=scene)
    for node in (pa, lat):
        node.SetNodeReferenceID(nodes.REFERENCE_ROLE, reference.GetID())
    saved = {n.GetName(): (slicer.util.arrayFromVolume(n).copy(), _ijk_to_ras(n)) for n in (reference, pa, lat)}

    mrb = tmp_path / "scene.mrb"
    assert scene.WriteToMRB(str(mrb))
    with zipfile.ZipFile(mrb) as bundle:
        nrrd_names = [name for name in bundle.namelist() if name.endswith(".nrrd")]
        assert len(nrrd_names) == 3
        headers = [bundle.read(name)[:400] for name in nrrd_names]
        bundle.extract(next(n for n in nrrd_names if "reference" in n), tmp_path / "unzipped")
    assert all(b"space: left-posterior-superior" in header for header in headers)
    # the CT file Slicer wrote is read by the project's own reader as the original CTVolume (LPS on disk)
    _assert_same_ct(read_ct(next((tmp_path / "unzipped").rglob("*.nrrd"))), ct)

    loaded = _read_mrb(mrb)
    volumes = {n.GetName(): n for n in loaded.GetNodesByClass("vtkMRMLScalarVolumeNode")}
    assert set(volumes) == set(saved)
    for name, (array, ijk_to_ras) in saved.items():
        node = volumes[name]
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), array)
        np.testing.assert_allclose(_ijk_to_ras(node), ijk_to_ras, atol=1e-9)
    ct_back = volumes["reference 128³"]
    _assert_same_ct(nodes.volume_node_to_ct_volume(ct_back), ct)
    display = ct_back.GetDisplayNode()
    assert (display.GetWindow(), display.GetLevel(), display.GetAutoWindowLevel()) == (1000.0, 400.0, 0)
    assert ct_back.GetAttribute(nodes.ROLE_ATTRIBUTE) == "reference"
    for name, role in (("DCTNet PA", "pa"), ("DCTNet LAT", "lat")):
        assert volumes[name].GetAttribute(nodes.ROLE_ATTRIBUTE) == role
        assert volumes[name].GetNodeReference(nodes.REFERENCE_ROLE) is ct_back
    np.testing.assert_array_equal(nodes.node_to_radiograph(volumes["DCTNet PA"]), _radiograph(seed=7))


def test_right_handed_keeps_voxel_positions():
    """The slice reversal that makes nodes survive a reload moves no voxel (pure numpy, runs without MRML too)."""
    array = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    left = np.array([[-1.5, 0, 0, 4.0], [0, -2.0, 0, 5.0], [0, 0, -2.5, 6.0], [0, 0, 0, 1.0]])
    flipped, right = nodes.right_handed(array, left)
    assert np.linalg.det(right[:3, :3]) > 0
    for k, j, i in np.ndindex(array.shape):
        kf = array.shape[0] - 1 - k
        assert flipped[kf, j, i] == array[k, j, i]
        np.testing.assert_allclose(right @ [i, j, kf, 1.0], left @ [i, j, k, 1.0])
    same, matrix = nodes.right_handed(array, right)
    assert same is array and np.array_equal(matrix, right)
