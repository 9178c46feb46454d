"""DCTNetSlicerLib.reconstruction — what the DCTNet Reconstruction Logic does — on real MRML (``slicer-core``).

This venv has no torch, like Slicer's build machines: everything Slicer's own process does runs here; the model
runs where it runs in Slicer, in the child process of ``dctnet reconstruct`` (an interpreter with torch, see the
``child_python`` fixture, and a random tiny model). Checked: radiograph files and RGB images become nodes,
the radiograph selectors accept RGB images, the reconstruction's volumes land on the reference grid or on the
radiographs' centre, the difference to the reference is added, and the layout shows the CT in linked views and
the radiographs in their own, unlinked view group.

Run with ``Testing/SlicerCore/run.sh``.
"""

from __future__ import annotations

import ast
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("`slicer` here is not slicer-core's MRML build", allow_module_level=True)
sitk = pytest.importorskip("SimpleITK")

from DCTNetLib.io.ct import CTVolume  # noqa: E402
from DCTNetLib.io.geometry import volume_centre_ras  # noqa: E402
from DCTNetLib.io.radiograph import read_radiograph  # noqa: E402
from DCTNetSlicerLib import layout, nodes, reconstruction  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "DCTNetReconstruction"
TINY_SIZE = 32  # the tiny model's radiograph side and volume size (10 mm voxels over 320 mm)


def _blob_image(size: int, centre: tuple[float, float], seed: int) -> np.ndarray:
    """A smooth radiograph-like image in [0, 1] (a bright ellipse plus noise), distinct per seed."""
    rows, cols = np.mgrid[0:size, 0:size] / (size - 1)
    blob = np.exp(-(((rows - centre[0]) / 0.3) ** 2 + ((cols - centre[1]) / 0.2) ** 2))
    noise = np.random.default_rng(seed).random((size, size)) * 0.1
    image = blob + noise
    return ((image - image.min()) / np.ptp(image)).astype(np.float32)


def _centre(node) -> np.ndarray:
    return volume_centre_ras(slicer.util.arrayFromVolume(node).shape[:3], nodes.node_ijk_to_ras(node))


def _ras_axes(node) -> np.ndarray:
    return nodes.node_ijk_to_ras(node)[:3, :3]


# ------------------------------------------------------------------------------------------------- inputs


def test_radiograph_files_become_nodes_and_go_back_to_files_unchanged(scene, tmp_path):
    grey = _blob_image(48, (0.4, 0.5), seed=1)
    sitk.WriteImage(sitk.GetImageFromArray(grey), str(tmp_path / "pa.tif"))
    grey8 = (np.random.default_rng(2).random((40, 36)) * 255).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(grey8), str(tmp_path / "lat.png"))

    pa = reconstruction.load_radiograph(tmp_path / "pa.tif", "PA", scene)
    lat = reconstruction.load_radiograph(tmp_path / "lat.png", "LAT", scene)
    np.testing.assert_allclose(slicer.util.arrayFromVolume(pa)[0], grey, atol=1e-6)
    np.testing.assert_allclose(slicer.util.arrayFromVolume(lat)[0], grey8 / 255.0, atol=1e-6)
    assert pa.GetName() == "pa PA" and lat.GetAttribute(nodes.ROLE_ATTRIBUTE) == "lat"
    np.testing.assert_allclose(_centre(pa), 0.0, atol=1e-9)
    # PA in a coronal plane (its voxels differ only in R-L and S-I), lateral in a sagittal one
    assert np.allclose(_ras_axes(pa)[1, :2], 0.0) and np.allclose(_ras_axes(lat)[0, :2], 0.0)

    # what the command will read is what the module sees: exactly for these two (float spanning [0, 1]: a TIFF;
    # values k/255 from an 8-bit file: a PNG) ...
    for node, name in ((pa, "pa"), (lat, "lat")):
        exported = reconstruction.export_radiograph(node, tmp_path / f"export_{name}")
        assert exported.suffix == {"pa": ".tif", "lat": ".png"}[name]
        np.testing.assert_allclose(read_radiograph(exported), nodes.node_to_radiograph(node), atol=1e-6)
    # ... and a DRR-like image (divided by its maximum, minimum well above 0) is not stretched, only rounded
    drr = 0.2 + 0.8 * _blob_image(32, (0.5, 0.5), seed=7)
    exported = reconstruction.export_radiograph(nodes.radiograph_to_node(drr, "PA", scene=scene), tmp_path / "drr")
    back = read_radiograph(exported)
    assert np.abs(back - drr).max() <= 0.5 / 255 + 1e-6 and back.min() == pytest.approx(0.2, abs=0.003)


def test_an_rgb_png_as_slicer_loads_it_is_a_valid_radiograph(scene, tmp_path):
    """Add Data loads a colour PNG with ITK's PNG reader into a vector volume (slicer-core's ITK has no PNG reader,
    so the same ITK reader runs through SimpleITK here); its export is byte-for-byte the colour image, so
    ``dctnet reconstruct`` converts it to grey exactly as it converts the original file."""
    rgb = np.random.default_rng(3).integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    path = tmp_path / "colour.png"
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(path))
    loaded = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "colour")
    slicer.util.updateVolumeFromArray(node, loaded[np.newaxis])
    assert slicer.util.arrayFromVolume(node).shape == (1, 30, 40, 3)

    exported = reconstruction.export_radiograph(node, tmp_path / "exported")
    assert exported.suffix == ".png"
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(exported))).reshape(rgb.shape),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(path))).reshape(rgb.shape))
    np.testing.assert_allclose(read_radiograph(exported), read_radiograph(path), atol=1e-7)
    np.testing.assert_allclose(nodes.node_to_radiograph(node), read_radiograph(path), atol=1e-6)


def _selector(tag: str) -> dict[str, object]:
    root = ET.parse(MODULE / "Resources" / "UI" / "DCTNetReconstruction.ui").getroot()
    widget = next(w for w in root.iter("widget") if w.get("name") == tag)
    props = {}
    for prop in widget.findall("property"):
        value = prop.find("*")
        if value.tag == "stringlist":
            props[prop.get("name")] = [s.text for s in value.findall("string")]
        elif value.tag == "bool":
            props[prop.get("name")] = value.text == "true"
        else:
            props[prop.get("name")] = value.text
    return props


def _annotation_node_types(field: str) -> list[str]:
    """The nodeTypes parameterNodeWrapper gives a node selector bound to ``field``: the vtkMRML classes of the
    field's annotation (its ``Union`` members; Slicer's ``parameterNodeWrapper/util.py`` ``getNodeTypes``)."""
    tree = ast.parse((MODULE / "DCTNetReconstruction.py").read_text(encoding="utf-8"))
    aliases = {t.targets[0].id: t.value for t in tree.body if isinstance(t, ast.Assign) and len(t.targets) == 1
               and isinstance(t.targets[0], ast.Name)}
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "DCTNetReconstructionParameterNode")
    annotation = next(s.annotation for s in cls.body if isinstance(s, ast.AnnAssign) and s.target.id == field)
    if isinstance(annotation, ast.Name) and annotation.id in aliases:
        annotation = aliases[annotation.id]
    return [n.id for n in ast.walk(annotation) if isinstance(n, ast.Name) and n.id.startswith("vtkMRML")]


def selector_accepts(node, node_types, show_child_node_types=True, hide_child_node_types=()) -> bool:
    """qMRMLNodeComboBox's filter (qMRMLSortFilterProxyModel::filterAcceptsRow): the node is a kind of one of the
    node types and, unless child types are shown, exactly that class; shown child types can be hidden by class."""
    for node_type in node_types:
        if not node.IsA(node_type):
            continue
        if not show_child_node_types and node_type != node.GetClassName():
            continue
        if show_child_node_types and any(node.IsA(hidden) for hidden in hide_child_node_types):
            return False
        return True
    return False


@pytest.mark.parametrize("tag, field", [("paSelector", "paVolume"), ("latSelector", "latVolume")])
def test_radiograph_selectors_offer_grey_and_rgb_images_but_not_label_maps(scene, tag, field):
    props = _selector(tag)
    node_types = _annotation_node_types(field)  # what connectGui sets, replacing the .ui's nodeTypes
    assert "vtkMRMLVectorVolumeNode" in node_types
    show_children = props.get("showChildNodeTypes", True)
    hidden = props.get("hideChildNodeTypes", [])
    made = {cls: scene.AddNewNodeByClass(cls) for cls in ("vtkMRMLScalarVolumeNode", "vtkMRMLVectorVolumeNode",
                                                          "vtkMRMLLabelMapVolumeNode")}
    accepted = {cls for cls, node in made.items() if selector_accepts(node, node_types, show_children, hidden)}
    assert accepted == {"vtkMRMLScalarVolumeNode", "vtkMRMLVectorVolumeNode"}
    # the previous binding (a scalar volume only, child types hidden) hid the RGB image: the rule can fail
    assert not selector_accepts(made["vtkMRMLVectorVolumeNode"], ["vtkMRMLScalarVolumeNode"], False)


# ------------------------------------------------------------------------------------------ reconstruction


def _radiograph_pair(scene, centre_ras=(0.0, 0.0, 0.0)):
    pa = nodes.radiograph_to_node(_blob_image(TINY_SIZE, (0.45, 0.5), 4), "PA", "case PA", scene, centre_ras=centre_ras)
    lat = nodes.radiograph_to_node(_blob_image(TINY_SIZE, (0.45, 0.6), 5), "LAT", "case LAT", scene,
                                   centre_ras=centre_ras)
    return pa, lat


def _reference(scene, centre_lps, tilt_deg=12.0):
    """A 32³ reference CT on 10 mm voxels (the tiny model's grid), tilted about S-I and centred at ``centre_lps``."""
    c, s = np.cos(np.radians(tilt_deg)), np.sin(np.radians(tilt_deg))
    direction = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.diag([1.0, 1.0, -1.0])
    spacing = 320.0 / TINY_SIZE
    half = (TINY_SIZE - 1) / 2.0 * spacing
    origin = np.asarray(centre_lps) - direction @ np.full(3, half)
    hu = np.random.default_rng(6).uniform(-1024, 1476, size=(TINY_SIZE,) * 3).astype(np.float32)
    ct = CTVolume(hu=hu, spacing=(spacing,) * 3, origin_lps=tuple(origin), direction=tuple(direction.reshape(-1)))
    return nodes.ct_volume_to_node(ct, "case reference", scene, role="reference")


def test_reconstruction_lands_on_the_reference_grid_and_shows_in_linked_views(scene, views, tiny_bundle, child_python):
    centre_lps = np.array([12.0, -30.0, 45.0])
    centre_ras = centre_lps * [-1, -1, 1]
    pa, lat = _radiograph_pair(scene, centre_ras)
    reference = _reference(scene, centre_lps)
    for node in (pa, lat):
        node.SetNodeReferenceID(nodes.REFERENCE_ROLE, reference.GetID())
    reported = []
    options = reconstruction.Options(weights=str(tiny_bundle), device="cpu", input_checks=False, steps=2, seed=3)
    volumes, metrics = reconstruction.reconstruct(pa, lat, options, scene, progress=lambda f, m: reported.append(f),
                                                  python=child_python, timeout_s=600)

    assert reported[0] == 0.0 and reported[-1] == 1.0 and reported == sorted(reported)
    assert {"ct", "from_bone_suppressed", "branch_difference", "uncertainty", "pa_bs", "lat_bs",
            "difference"} <= set(volumes)
    for role in ("ct", "from_bone_suppressed", "branch_difference", "uncertainty", "difference"):
        node = volumes[role]
        assert node.GetScene() is scene and slicer.util.arrayFromVolume(node).shape == (TINY_SIZE,) * 3
        np.testing.assert_allclose(nodes.node_ijk_to_ras(node), nodes.node_ijk_to_ras(reference), atol=1e-6)
    hu = slicer.util.arrayFromVolume(volumes["ct"])
    assert -1024.001 <= hu.min() < hu.max() <= 1476.001
    assert slicer.util.arrayFromVolume(volumes["branch_difference"]).min() >= 0.0
    assert slicer.util.arrayFromVolume(volumes["uncertainty"]).min() >= 0.0
    np.testing.assert_allclose(slicer.util.arrayFromVolume(volumes["difference"]),
                               hu - slicer.util.arrayFromVolume(reference), atol=1e-3)
    assert metrics["mae_hu"] == pytest.approx(np.abs(hu - slicer.util.arrayFromVolume(reference)).mean(), rel=1e-4)
    display = volumes["ct"].GetDisplayNode()
    assert (display.GetWindow(), display.GetLevel()) == nodes.WINDOW_LEVEL_PRESETS["CT_LUNG"]
    for role, view in (("pa_bs", "PA"), ("lat_bs", "LAT")):
        image = slicer.util.arrayFromVolume(volumes[role])
        assert image.shape == (1, TINY_SIZE, TINY_SIZE) and 0.0 <= image.min() <= image.max() <= 1.0
        np.testing.assert_allclose(_centre(volumes[role]), centre_ras, atol=1e-6)
        np.testing.assert_allclose(_ras_axes(volumes[role]), _ras_axes(pa if view == "PA" else lat), atol=1e-9)

    reconstruction.show_results(volumes, pa, lat, show_uncertainty=True, views=views)
    assert views.layout_node().GetViewArrangement() == layout.LAYOUT_ID
    assert views.layout_node().IsLayoutDescription(layout.LAYOUT_ID)
    for tag, (orientation, _, _) in layout.CT_VIEWS.items():
        logic = views.slice_logic(tag)
        composite = logic.GetSliceCompositeNode()
        assert composite.GetBackgroundVolumeID() == volumes["ct"].GetID()
        assert composite.GetForegroundVolumeID() == volumes["uncertainty"].GetID()
        assert composite.GetLinkedControl() and logic.GetSliceNode().GetViewGroup() == layout.CT_VIEW_GROUP
        assert logic.GetSliceNode().GetOrientation() == orientation
    shown = {"pa": pa, "lat": lat, "pa_bs": volumes["pa_bs"], "lat_bs": volumes["lat_bs"]}
    for role, tag in layout.RADIOGRAPH_ROLES.items():
        logic = views.slice_logic(tag)
        composite = logic.GetSliceCompositeNode()
        assert composite.GetBackgroundVolumeID() == shown[role].GetID()
        assert not composite.GetLinkedControl() and logic.GetSliceNode().GetViewGroup() == layout.RADIOGRAPH_VIEW_GROUP
        assert logic.GetSliceNode().GetOrientation() == layout.RADIOGRAPH_VIEWS[tag][0]
    assert views.resets == 1


def test_without_a_reference_the_volume_is_centred_on_the_radiographs_and_reruns_reuse_nodes(scene, tiny_bundle,
                                                                                           child_python):
    centre_ras = np.array([-15.0, 22.0, -8.0])
    pa, lat = _radiograph_pair(scene, centre_ras)
    options = reconstruction.Options(weights=str(tiny_bundle), device="cpu", input_checks=False, steps=2)
    volumes, metrics = reconstruction.reconstruct(pa, lat, options, scene, python=child_python, timeout_s=600)
    assert metrics == {} and "difference" not in volumes
    np.testing.assert_allclose(_centre(volumes["ct"]), centre_ras, atol=1e-6)
    np.testing.assert_allclose(np.abs(np.diag(_ras_axes(volumes["ct"]))), 320.0 / TINY_SIZE, atol=1e-9)
    count = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    again, _ = reconstruction.reconstruct(pa, lat, reconstruction.Options(weights=str(tiny_bundle), device="cpu", input_checks=False,
                                                                          steps=2, seed=1),
                                          scene, existing=volumes, python=child_python, timeout_s=600)
    assert {role: node.GetID() for role, node in again.items()} == {role: node.GetID() for role, node in volumes.items()}
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == count


def test_preview_keeps_only_the_bone_suppressed_radiographs(scene, tiny_bundle, child_python):
    pa, lat = _radiograph_pair(scene)
    before = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    made, metrics = reconstruction.reconstruct(pa, lat, reconstruction.Options(weights=str(tiny_bundle), device="cpu", input_checks=False),
                                               scene, python=child_python, images_only=True, timeout_s=600)
    assert set(made) == {"pa_bs", "lat_bs"} and metrics == {}
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == before + 2


def test_a_failing_command_reports_its_error_line_and_leaves_no_folder(scene, child_python, tmp_path, monkeypatch):
    pa, lat = _radiograph_pair(scene)
    folders = []
    real_init = reconstruction.Run.__init__

    def recording_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        folders.append(self.folder)

    monkeypatch.setattr(reconstruction.Run, "__init__", recording_init)
    with pytest.raises(RuntimeError, match=r"error:.*missing\.pt"):
        reconstruction.reconstruct(pa, lat, reconstruction.Options(weights=str(tmp_path / "missing.pt")), scene,
                                   python=child_python, timeout_s=600)
    assert folders and not folders[0].exists()


def test_background_run_loads_the_same_nodes_through_the_task_runner(scene, tiny_bundle, child_python, monkeypatch):
    """The widget's path: ``reconstruct_in_background`` → ``SlicerTask`` on the worker → progress events → the nodes,
    handed to the finished callback. Only ``qt.QTimer`` is stood in for (its single shots and interval timers are
    fired by this test's loop, as Qt's event loop would)."""
    import time

    class Timer:
        pending: list = []
        instances: list = []

        def __init__(self):
            self.callback = None
            Timer.instances.append(self)

        def setInterval(self, ms):  # noqa: N802 (Qt API)
            pass

        def connect(self, signal, callback):
            self.callback = callback

        def start(self):
            pass

        def stop(self):
            self.callback = None

        @staticmethod
        def singleShot(ms, callback):  # noqa: N802 (Qt API)
            Timer.pending.append(callback)

    def pump():
        shots, Timer.pending[:] = list(Timer.pending), []
        for callback in shots + [timer.callback for timer in Timer.instances if timer.callback]:
            callback()

    monkeypatch.setitem(sys.modules, "qt", types.SimpleNamespace(QTimer=Timer))
    monkeypatch.setenv("DCTNET_PYTHON", child_python)
    pa, lat = _radiograph_pair(scene)
    progress, finished, notes = [], [], []
    task = reconstruction.reconstruct_in_background(
        pa, lat, reconstruction.Options(weights=str(tiny_bundle), device="cpu", input_checks=False, steps=2), scene,
        on_progress=lambda f, m: progress.append(f), on_finished=lambda *a: finished.append(a),
        on_notes=lambda said, warned: notes.append(said))
    deadline = time.monotonic() + 600
    while not finished and time.monotonic() < deadline:
        pump()
        time.sleep(0.05)
    (success, message, made, metrics), = finished
    assert success, message
    assert task.worker is reconstruction.worker(child_python) and task._timer is not None  # the GUI timer drove it
    assert {"ct", "from_bone_suppressed", "branch_difference", "uncertainty", "pa_bs", "lat_bs"} <= set(made)
    assert metrics == {}
    assert notes == [[]]  # own weights: no demonstration-model note (the shipped model's is tested in Testing/Python)
    assert progress[-1] == 1.0 and progress == sorted(progress)
    assert slicer.util.arrayFromVolume(made["ct"]).shape == (TINY_SIZE,) * 3


def test_radiographs_from_a_ct_and_their_metrics_come_from_the_worker_not_from_torch_here(scene, tiny_bundle,
                                                                                          child_python):
    """"Make radiographs from CT" runs ``dctnet drr`` on the worker and the comparison with that CT runs in
    ``dctnet reconstruct --reference``: this process has no torch (as Slicer's without the PyTorch extension, and
    it must not need it), yet gets the DRRs, the reference on the CT's centre, and PSNR / SSIM / MAE."""
    import importlib.util

    from DCTNetLib.conventions import VOXEL_SPACING_MM
    from DCTNetLib.data.phantom import phantom_ct

    assert importlib.util.find_spec("torch") is None
    ct = phantom_ct(size=48)
    ct = CTVolume(hu=ct.hu, spacing=ct.spacing, origin_lps=tuple(np.add(ct.origin_lps, (20.0, -10.0, 35.0))))
    ct_node = nodes.ct_volume_to_node(ct, "chest", scene)
    lines = []
    pa, lat = reconstruction.radiographs_from_ct(ct_node, scene, python=child_python, timeout_s=600,
                                                 on_log=lines.append)
    assert any(line.startswith("$ ") and " drr " in line for line in lines)
    for node, view in ((pa, "PA"), (lat, "LAT")):
        image = slicer.util.arrayFromVolume(node)
        assert node.GetName() == f"chest {view}" and image.shape == (1, 128, 128)
        assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.05  # a projection, not a blank
    reference = pa.GetNodeReference(nodes.REFERENCE_ROLE)
    assert reference is lat.GetNodeReference(nodes.REFERENCE_ROLE) and reference.GetName() == "chest reference 128³"
    assert slicer.util.arrayFromVolume(reference).shape == (128, 128, 128)
    np.testing.assert_allclose(np.abs(np.diag(_ras_axes(reference))), VOXEL_SPACING_MM, atol=1e-9)
    np.testing.assert_allclose(_centre(reference), _centre(ct_node), atol=VOXEL_SPACING_MM)
    np.testing.assert_allclose(_centre(pa), _centre(reference), atol=1e-6)
    assert "torch" not in sys.modules

    options = reconstruction.Options(weights=str(tiny_bundle), device="cpu", input_checks=False, steps=2)
    lines.clear()
    volumes, metrics = reconstruction.reconstruct(pa, lat, options, scene, python=child_python, timeout_s=600,
                                                  on_log=lines.append)
    assert "--reference" in next(line for line in lines if line.startswith("$ "))
    assert set(metrics) == {"psnr", "ssim", "mae_hu"} and np.isfinite(metrics["psnr"]) and 0 < metrics["ssim"] < 1
    # the tiny model's 32³ grid is not the reference's 128³: no voxel difference, the command's metrics only
    assert "difference" not in volumes and "torch" not in sys.modules
