"""How the reconstruction is displayed beyond the slice views: the uncertainty map's colour legend and the CT's
volume rendering in the 3D view.

Both use Slicer's own nodes, so they are saved with the scene and edited in Slicer's Colors and Volume Rendering
modules as usual:

- :func:`show_legend`: a ``vtkMRMLColorLegendDisplayNode`` made by ``vtkSlicerColorLogic::
  AddDefaultColorLegendDisplayNode(displayableNode)`` (Slicer/Slicer ``Modules/Loadable/Colors/Logic/
  vtkSlicerColorLogic.cxx``: static, returns the existing legend of the node's first display node, else adds one
  observing it; present since Slicer 5.0, so in 5.10, 5.12 and main). The legend shows the colour table over the
  window of that display node (0–500 HU for the uncertainty map), in the views that show the volume.
- :func:`show_volume_rendering`: ``vtkSlicerVolumeRenderingLogic::CreateDefaultVolumeRenderingNodes(volumeNode)``
  (display, volume property and ROI nodes, reused when they exist) and ``GetPresetByName`` from the presets Slicer
  ships (``Modules/Loadable/VolumeRendering/Resources/presets.xml``), copied into the display's volume property
  node (Slicer/Slicer ``Modules/Loadable/VolumeRendering/Logic/vtkSlicerVolumeRenderingLogic.h``).

The logics are those of the running Slicer by default (``slicer.modules.<module>.logic()``); tests on the Qt-free
``slicer-core`` MRML pass their own.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "UNCERTAINTY_LEGEND_TITLE",
    "UNCERTAINTY_LEGEND_LABEL_FORMAT",
    "VOLUME_RENDERING_PRESET",
    "show_legend",
    "show_volume_rendering",
]

# The uncertainty map's legend: what it is and its unit (docs/uncertainty.md); labels as whole HU.
UNCERTAINTY_LEGEND_TITLE = "Uncertainty (HU)"
UNCERTAINTY_LEGEND_LABEL_FORMAT = "%.0f"
# Volume-rendering preset of the reconstructed CT, one of Slicer's presets.xml names. It starts to show tissue
# at 67 HU (soft tissue denser than water, mediastinum, bone): on the shipped model's reconstructions that is
# the mediastinum, the chest wall and the spine; the model draws no ribs (README, "The shipped model").
VOLUME_RENDERING_PRESET = "CT-Chest-Contrast-Enhanced"


def _module_logic(module: str) -> Any:
    import slicer

    return getattr(slicer.modules, module).logic()


def show_legend(node: Any, visible: bool = True, title: str = UNCERTAINTY_LEGEND_TITLE,
                label_format: str = UNCERTAINTY_LEGEND_LABEL_FORMAT, color_logic: Any = None) -> Any:
    """Show (or hide) the colour legend of a volume node's colour map, with a title and a label format.

    Args:
        node: a volume node with a display node (e.g. the uncertainty map).
        visible: show it; False hides an existing legend (none is created).
        title: legend title, with the unit.
        label_format: printf format of the tick labels.
        color_logic: ``vtkSlicerColorLogic`` (or the class: the methods used are static). Defaults to Slicer's.

    Returns:
        The ``vtkMRMLColorLegendDisplayNode``, or None when there is none (hidden and never made, or no node).
    """
    if node is None or node.GetScene() is None or node.GetDisplayNode() is None:
        return None
    if color_logic is None:
        try:
            color_logic = _module_logic("colors")
        except AttributeError:  # MRML without the application (slicer-core): the same class, its static methods
            import slicer

            color_logic = slicer.vtkSlicerColorLogic
    legend = color_logic.GetColorLegendDisplayNode(node)
    if legend is None:
        if not visible:
            return None
        scene = node.GetScene()
        if not scene.IsNodeClassRegistered("vtkMRMLColorLegendDisplayNode"):
            import slicer  # what vtkSlicerColorLogic::RegisterNodes does in Slicer (a bare MRML scene lacks it)

            scene.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())
        legend = color_logic.AddDefaultColorLegendDisplayNode(node)
    legend.SetTitleText(title)
    legend.SetLabelFormat(label_format)
    legend.SetVisibility(bool(visible))
    return legend


def _volume_rendering_displays(node: Any) -> list[Any]:
    return [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())
            if node.GetNthDisplayNode(i) is not None and node.GetNthDisplayNode(i).IsA("vtkMRMLVolumeRenderingDisplayNode")]


def show_volume_rendering(node: Any, show: bool = True, preset: str = VOLUME_RENDERING_PRESET,
                          volume_rendering_logic: Any = None) -> Any:
    """Show a CT node in the 3D view with a volume-rendering preset, or hide its volume rendering.

    Args:
        node: the CT volume node.
        show: True shows it with ``preset``; False hides every volume rendering of the node (none is created).
        preset: name of one of Slicer's volume-rendering presets.
        volume_rendering_logic: ``vtkSlicerVolumeRenderingLogic``. Defaults to Slicer's.

    Returns:
        The volume-rendering display node, or None when hidden.

    Raises:
        ValueError: Slicer has no preset of that name.
    """
    if node is None or node.GetScene() is None:
        return None
    if not show:
        for display in _volume_rendering_displays(node):
            display.SetVisibility(False)
        return None
    logic = volume_rendering_logic if volume_rendering_logic is not None else _module_logic("volumerendering")
    properties = logic.GetPresetByName(preset)
    if properties is None:
        raise ValueError(f"Slicer has no volume-rendering preset named {preset!r}")
    display = logic.CreateDefaultVolumeRenderingNodes(node)  # reuses the node's existing ones
    display.GetVolumePropertyNode().Copy(properties)
    display.SetVisibility(True)
    return display
