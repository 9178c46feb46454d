"""Fixtures for the MRML tests on the ``slicer-core`` wheel (run them with ``Testing/SlicerCore/run.sh``).

The project is not installed in that venv (its dependencies include torch): ``DCTNetReconstruction/`` is put
on ``sys.path`` so ``DCTNetLib`` and ``DCTNetSlicerLib`` import from the checkout.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO_ROOT / "DCTNetReconstruction"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))


@pytest.fixture
def scene():
    """A fresh MRML scene, also set as ``slicer.mrmlScene`` (what ``slicer.util`` and the glue default to)."""
    slicer = pytest.importorskip("slicer")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("`slicer` here is not slicer-core's MRML build")
    scene = slicer.vtkMRMLScene()
    previous = getattr(slicer, "mrmlScene", None)
    slicer.mrmlScene = scene
    yield scene
    scene.Clear(1)
    slicer.mrmlScene = previous


class MRMLViews:
    """The views of ``DCTNetSlicerLib.layout`` on a plain MRML scene, as the Slicer application provides them.

    Slicer's layout manager registers the layout with the scene's layout node and, when the view arrangement
    changes, the layout logic creates the slice nodes the layout names; each slice widget then has a slice logic
    with its composite node. Here the same MRML classes do that without Qt: ``vtkMRMLLayoutLogic`` for the layout
    node and the views, one ``vtkMRMLSliceLogic`` per slice view.
    """

    def __init__(self, scene) -> None:
        import slicer

        self.scene = scene
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
        self.layout_logic = slicer.vtkMRMLLayoutLogic()
        self.layout_logic.SetMRMLScene(scene)
        self._slice_logics = {}
        self.resets = 0

    def layout_node(self):
        return self.layout_logic.GetLayoutNode()

    def set_layout(self, layout_id: int) -> None:
        self.layout_node().SetViewArrangement(layout_id)

    def slice_logic(self, tag: str):
        import slicer

        slice_node = self.scene.GetSingletonNode(tag, "vtkMRMLSliceNode")
        if slice_node is None:
            return None
        if tag not in self._slice_logics:
            logic = slicer.vtkMRMLSliceLogic()
            logic.SetMRMLScene(self.scene)
            logic.SetSliceNode(slice_node)
            self._slice_logics[tag] = logic
        return self._slice_logics[tag]

    def reset_3d(self) -> None:
        self.resets += 1

    def close(self) -> None:
        """Detach the logics from the scene (before it is cleared, as Slicer does when its views go)."""
        for logic in self._slice_logics.values():
            logic.SetMRMLScene(None)
        self._slice_logics.clear()
        self.layout_logic.SetMRMLScene(None)


@pytest.fixture
def views(scene):
    views = MRMLViews(scene)
    yield views
    views.close()


@pytest.fixture(scope="session")
def child_python() -> str:
    """An interpreter with torch and DCTNetLib for the ``dctnet`` child processes: ``$DCTNET_PYTHON``, else the
    project's ``.venv`` (this venv has no torch, like Slicer's build machines; Slicer itself uses PythonSlicer)."""
    import os
    import subprocess

    python = os.environ.get("DCTNET_PYTHON") or str(REPO_ROOT / ".venv" / "bin" / "python")
    try:
        probe = subprocess.run([python, "-c", "import torch, DCTNetLib"], capture_output=True, text=True, timeout=300)
    except OSError as exc:
        pytest.skip(f"no interpreter for the model's child process ({python}: {exc}); set DCTNET_PYTHON")
    if probe.returncode != 0:
        pytest.skip(f"{python} cannot import torch and DCTNetLib; set DCTNET_PYTHON to one that can")
    return python


@pytest.fixture(scope="session")
def tiny_bundle(child_python, tmp_path_factory):
    """A random tiny model bundle (32² radiographs → 32³ volumes over the usual 320 mm field), made by the child
    interpreter with the same helper as the main test suite."""
    import subprocess

    path = tmp_path_factory.mktemp("bundle") / "tiny.pt"
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from conftest import make_tiny_bundle; "
            "from DCTNetLib.checkpoints.bundle import save_model_bundle; save_model_bundle(make_tiny_bundle(), sys.argv[2])")
    out = subprocess.run([child_python, "-c", code, str(REPO_ROOT / "Testing" / "Python"), str(path)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return path
