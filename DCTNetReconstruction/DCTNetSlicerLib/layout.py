"""The DCTNet results layout: linked axial / sagittal / coronal + 3D views of the CT, and the radiographs.

Top row: the reconstructed CT in Slicer's Red (axial), Yellow (sagittal) and Green (coronal) slice views,
view group 0, slice composite nodes with *linked control* so scrolling, zoom and layers stay in step, plus the
3D view. Bottom row: PA, bone-suppressed PA, lateral and bone-suppressed lateral radiographs in their own
slice views, view group 1 and not linked, so they never move with the CT. The PA views are coronal and the
lateral views sagittal, matching :func:`DCTNetLib.io.geometry.radiograph_ijk_to_ras`.

:func:`layout_xml` is pure; the rest works on any views behind the :class:`AppViews` interface (the Slicer
application by default; MRML slice logics in ``Testing/SlicerCore``).
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape

from DCTNetLib.output_roles import BONE_SUPPRESSED, IMAGE_KINDS, OUTPUT_ROLES, OutputRole

__all__ = [
    "LAYOUT_ID",
    "CT_VIEWS",
    "RADIOGRAPH_VIEWS",
    "layout_xml",
    "AppViews",
    "ensure_layout",
    "show_results",
    "show_radiographs",
    "lies_in",
]

# Custom layout ids live above Slicer's built-in ones (< 500 at the time of Slicer 5.10); this one is ours.
LAYOUT_ID = 2601
CT_VIEW_GROUP = 0
RADIOGRAPH_VIEW_GROUP = 1

# singleton tag → (orientation, label, colour)
CT_VIEWS: dict[str, tuple[str, str, str]] = {
    "Red": ("Axial", "R", "#F34A33"),
    "Yellow": ("Sagittal", "Y", "#EDD54C"),
    "Green": ("Coronal", "G", "#6EB04B"),
}
RADIOGRAPH_VIEWS: dict[str, tuple[str, str, str]] = {
    "DCTNetPA": ("Coronal", "PA", "#8C8C8C"),
    "DCTNetPABoneSuppressed": ("Coronal", "PA-BS", "#B07CC6"),
    "DCTNetLAT": ("Sagittal", "LAT", "#8C8C8C"),
    "DCTNetLATBoneSuppressed": ("Sagittal", "LAT-BS", "#B07CC6"),
}


def _view_tag(role: OutputRole) -> str:
    """The tag of the view a radiograph role is shown in: ``DCTNet<view>``, ``BoneSuppressed`` appended."""
    return f"DCTNet{role.view}" + ("BoneSuppressed" if role.kind == BONE_SUPPRESSED else "")


# Which radiograph goes to which view: the radiograph roles of DCTNetLib.output_roles (the inputs and the
# bone-suppressed radiographs), role → tag of RADIOGRAPH_VIEWS.
RADIOGRAPH_ROLES = {role.name: _view_tag(role) for role in OUTPUT_ROLES if role.kind in IMAGE_KINDS}


def _slice_view_xml(tag: str, orientation: str, label: str, colour: str, group: int) -> str:
    props = {"orientation": orientation, "viewlabel": label, "viewcolor": colour, "viewgroup": str(group)}
    body = "".join(f'<property name="{name}" action="default">{escape(value)}</property>'
                   for name, value in props.items())
    return f'<item><view class="vtkMRMLSliceNode" singletontag="{escape(tag)}">{body}</view></item>'


def layout_xml() -> str:
    """Slicer layout description of the results layout (top: CT views + 3D; bottom: radiographs)."""
    ct_items = "".join(_slice_view_xml(tag, *spec, CT_VIEW_GROUP) for tag, spec in CT_VIEWS.items())
    ct_items += ('<item><view class="vtkMRMLViewNode" singletontag="1">'
                 '<property name="viewlabel" action="default">1</property>'
                 f'<property name="viewgroup" action="default">{CT_VIEW_GROUP}</property></view></item>')
    xray_items = "".join(_slice_view_xml(tag, *spec, RADIOGRAPH_VIEW_GROUP) for tag, spec in RADIOGRAPH_VIEWS.items())
    return ('<layout type="vertical" split="true">'
            f'<item splitSize="650"><layout type="horizontal">{ct_items}</layout></item>'
            f'<item splitSize="350"><layout type="horizontal">{xray_items}</layout></item>'
            '</layout>')


class AppViews:
    """The views of the running Slicer application (its layout manager and slice widgets).

    The functions below talk to views only through this interface (``layout_node``, ``set_layout``,
    ``slice_logic``, ``reset_3d``), so the same code runs on any set of MRML views: the Slicer-core tests drive it
    with slice logics of their own on a plain scene.
    """

    def _manager(self) -> Any:
        import slicer

        return slicer.app.layoutManager()

    def layout_node(self) -> Any:
        return self._manager().layoutLogic().GetLayoutNode()

    def set_layout(self, layout_id: int) -> None:
        self._manager().setLayout(layout_id)

    def slice_logic(self, tag: str) -> Any:
        widget = self._manager().sliceWidget(tag)
        return None if widget is None else widget.sliceLogic()

    def reset_3d(self) -> None:
        three_d = self._manager().threeDWidget(0)
        if three_d is not None:
            three_d.threeDView().resetFocalPoint()


def ensure_layout(views: Any = None) -> None:
    """Register the layout (once) and switch the view arrangement to it."""
    views = views or AppViews()
    layout_node = views.layout_node()
    if not layout_node.IsLayoutDescription(LAYOUT_ID):
        layout_node.AddLayoutDescription(LAYOUT_ID, layout_xml())
    views.set_layout(LAYOUT_ID)


# RAS normal of the coronal and sagittal slice planes.
_PLANE_NORMALS = {"Coronal": (0.0, 1.0, 0.0), "Sagittal": (1.0, 0.0, 0.0)}


def lies_in(node: Any, orientation: str) -> bool:
    """True when a single-slice volume node lies in the ``"Coronal"`` / ``"Sagittal"`` plane (its one-voxel axis
    along that plane's normal, within 1°), as the module's own radiographs do."""
    import numpy as np
    import vtk

    image = node.GetImageData()
    if image is None:
        return True
    thin = [axis for axis, n in enumerate(image.GetDimensions()) if n == 1]
    if not thin:
        return True
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    axis = np.array([matrix.GetElement(row, thin[0]) for row in range(3)])
    return abs(float(np.dot(axis / np.linalg.norm(axis), _PLANE_NORMALS[orientation]))) > np.cos(np.radians(1.0))


def show_radiographs(nodes_by_role: dict[str, Any], views: Any = None) -> None:
    """Put radiograph nodes (those of the roles of :data:`RADIOGRAPH_ROLES`; other roles are left out) in their
    views and fit them."""
    views = views or AppViews()
    for role, tag in RADIOGRAPH_ROLES.items():
        logic = views.slice_logic(tag)
        node = nodes_by_role.get(role)
        if logic is None:
            continue
        composite = logic.GetSliceCompositeNode()
        composite.SetLinkedControl(False)
        composite.SetBackgroundVolumeID(node.GetID() if node is not None else None)
        composite.SetForegroundVolumeID(None)
        slice_node = logic.GetSliceNode()
        slice_node.SetViewGroup(RADIOGRAPH_VIEW_GROUP)
        orientation = RADIOGRAPH_VIEWS[tag][0]
        if node is not None and not lies_in(node, orientation):
            # an image loaded with Add Data or the DICOM browser is one *axial* slice: a coronal / sagittal view
            # would cut it edge-on. vtkMRMLSliceNode::RotateToVolumePlane(volumeNode, forceSlicePlaneToSingleSlice
            # = true) aligns the view with a single-slice volume's plane (Libs/MRML/Core/vtkMRMLSliceNode.h,
            # Slicer/Slicer 357ff30; also in slicer-core's MRML, where the test runs it).
            slice_node.RotateToVolumePlane(node)
        else:
            slice_node.SetOrientation(orientation)
        logic.FitSliceToAll()


def show_results(ct_node: Any, overlay_node: Any = None, overlay_opacity: float = 0.5,
                 radiographs: dict[str, Any] | None = None, views: Any = None) -> None:
    """Switch to the results layout and show ``ct_node`` (with an optional overlay) in linked CT views.

    Args:
        ct_node: background volume of the CT views.
        overlay_node: foreground volume (e.g. the uncertainty map or the difference to a reference CT).
        overlay_opacity: foreground opacity in [0, 1].
        radiographs: nodes by role for :func:`show_radiographs`.
        views: where to show them. Defaults to the Slicer application's views (:class:`AppViews`).
    """
    views = views or AppViews()
    ensure_layout(views)
    for tag in CT_VIEWS:
        logic = views.slice_logic(tag)
        if logic is None:
            continue
        composite = logic.GetSliceCompositeNode()
        composite.SetBackgroundVolumeID(ct_node.GetID() if ct_node is not None else None)
        composite.SetForegroundVolumeID(overlay_node.GetID() if overlay_node is not None else None)
        composite.SetForegroundOpacity(overlay_opacity if overlay_node is not None else 0.0)
        composite.SetLinkedControl(True)
        slice_node = logic.GetSliceNode()
        slice_node.SetViewGroup(CT_VIEW_GROUP)
        slice_node.SetSliceVisible(True)  # show the three planes in the 3D view
        logic.FitSliceToAll()
    if radiographs:
        show_radiographs(radiographs, views)
    views.reset_3d()
