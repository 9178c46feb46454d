"""DCTNetSlicerLib — the 3D Slicer side of DCTNet: MRML node glue, layouts, dependency install, task runner.

Unlike :mod:`DCTNetLib` (the pure-Python core), these modules import ``slicer``, ``vtk`` and ``qt``. They are
imported lazily by the DCTNetReconstruction and DCTNetTraining modules, so importing this package itself
imports nothing from Slicer (:mod:`DCTNetSlicerLib.bone_preview` runs as a plain ``PythonSlicer -m``
child process).

- ``nodes``         numpy / CTVolume ↔ volume nodes with correct IJK→RAS, window/level presets
- ``layout``        the results layout (linked CT views, radiograph views in their own view group)
- ``install``       first-use install of PyTorch (PyTorchUtils) and the core's other Python packages
- ``tasks``         a ``DCTNetLib.process.BackgroundProcess`` polled by a ``qt.QTimer``
- ``bone_preview``  child-process entry point for the bone-suppression preview
"""
