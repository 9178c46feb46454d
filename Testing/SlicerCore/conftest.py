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
