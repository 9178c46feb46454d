"""The uncertainty map's colour legend and the CT's volume rendering (``DCTNetSlicerLib.display``) on real MRML.

slicer-core has Slicer's Colors and Volume Rendering logics (``vtkSlicerColorLogic``,
``vtkSlicerVolumeRenderingLogic``) but not the application's share folder, so Slicer's ``presets.xml`` is not
loaded here: the test adds a preset of the same name to the logic's presets scene, as ``presets.xml`` does.
"""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("`slicer` here is not slicer-core's MRML build", allow_module_level=True)

from DCTNetLib.io.ct import CTVolume  # noqa: E402
from DCTNetSlicerLib import display, reconstruction, results  # noqa: E402

SIZE = 16


def _volumes(scene) -> dict:
    rng = np.random.default_rng(0)
    ct = CTVolume(hu=rng.uniform(-1000, 400, (SIZE,) * 3).astype(np.float32), spacing=(2.5,) * 3)
    uncertainty = CTVolume(hu=rng.uniform(0, 500, (SIZE,) * 3).astype(np.float32), spacing=(2.5,) * 3)
    pa, lat = (rng.random((SIZE, SIZE)).astype(np.float32) for _ in range(2))
    made = results.volumes_to_nodes({"ct": ct, "uncertainty": uncertainty}, {"pa_bs": pa, "lat_bs": lat}, scene)
    made["pa"], made["lat"] = made["pa_bs"], made["lat_bs"]
    return made


def _legends(scene) -> list:
    return [scene.GetNthNodeByClass(i, "vtkMRMLColorLegendDisplayNode")
            for i in range(scene.GetNumberOfNodesByClass("vtkMRMLColorLegendDisplayNode"))]


def test_uncertainty_overlay_has_a_legend_with_title_and_unit_and_one_legend_only(scene, views):
    volumes = _volumes(scene)
    reconstruction.show_results(volumes, volumes["pa"], volumes["lat"], show_uncertainty=False, views=views)
    assert _legends(scene) == []  # no overlay: no legend is made

    reconstruction.show_results(volumes, volumes["pa"], volumes["lat"], show_uncertainty=True, views=views)
    (legend,) = _legends(scene)
    uncertainty = volumes["uncertainty"]
    assert legend.GetTitleText() == "Uncertainty (HU)" and legend.GetLabelFormat() == "%.0f"
    assert legend.GetVisibility()
    # it describes the colour map and window of the uncertainty's own display node (0–500 HU)
    assert legend.GetPrimaryDisplayNode() is uncertainty.GetDisplayNode()
    assert (uncertainty.GetDisplayNode().GetWindow(), uncertainty.GetDisplayNode().GetLevel()) == \
        results.UNCERTAINTY_WINDOW_LEVEL

    reconstruction.show_results(volumes, volumes["pa"], volumes["lat"], show_uncertainty=False, views=views)
    assert _legends(scene) == [legend] and not legend.GetVisibility()
    reconstruction.show_results(volumes, volumes["pa"], volumes["lat"], show_uncertainty=True, views=views)
    assert _legends(scene) == [legend] and legend.GetVisibility()


@pytest.fixture
def volume_rendering_logic(scene):
    logic = slicer.vtkSlicerVolumeRenderingLogic()
    logic.SetMRMLScene(scene)
    preset = slicer.vtkMRMLVolumePropertyNode()
    preset.SetName(display.VOLUME_RENDERING_PRESET)
    opacity = preset.GetVolumeProperty().GetScalarOpacity()
    opacity.RemoveAllPoints()
    for hu, alpha in ((-1024.0, 0.0), (67.0, 0.0), (251.0, 0.45), (1476.0, 0.6)):
        opacity.AddPoint(hu, alpha)
    logic.AddPreset(preset)
    yield logic
    logic.SetMRMLScene(None)


def test_volume_rendering_shows_the_ct_with_the_preset_and_hides_it_again(scene, views, volume_rendering_logic):
    volumes = _volumes(scene)
    ct = volumes["ct"]
    reconstruction.show_results(volumes, volumes["pa"], volumes["lat"], views=views)
    assert display._volume_rendering_displays(ct) == []  # not asked for: nothing made

    reconstruction.show_results(volumes, volumes["pa"], volumes["lat"], views=views, volume_rendering=True,
                                volume_rendering_logic=volume_rendering_logic)
    (shown,) = display._volume_rendering_displays(ct)
    assert shown.GetVisibility()
    opacity = shown.GetVolumePropertyNode().GetVolumeProperty().GetScalarOpacity()
    points = [opacity.GetValue(hu) for hu in (0.0, 251.0, 1476.0)]
    np.testing.assert_allclose(points, [0.0, 0.45, 0.6], atol=1e-6)  # the preset's transfer function

    reconstruction.show_results(volumes, volumes["pa"], volumes["lat"], views=views)  # box unticked
    assert display._volume_rendering_displays(ct) == [shown] and not shown.GetVisibility()
    again = display.show_volume_rendering(ct, True, volume_rendering_logic=volume_rendering_logic)
    assert again is shown and shown.GetVisibility()  # the same nodes, shown again
    assert scene.GetNumberOfNodesByClass("vtkMRMLVolumeRenderingDisplayNode") == 1


def test_an_unknown_preset_is_refused_by_name(scene, volume_rendering_logic):
    ct = _volumes(scene)["ct"]
    with pytest.raises(ValueError, match="CT-Nonexistent"):
        display.show_volume_rendering(ct, True, "CT-Nonexistent", volume_rendering_logic=volume_rendering_logic)
    assert display._volume_rendering_displays(ct) == []
