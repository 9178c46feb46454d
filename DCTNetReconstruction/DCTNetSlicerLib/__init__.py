"""DCTNetSlicerLib — the 3D Slicer side of DCTNet: MRML node glue, layouts, dependency install, task runner.

Unlike :mod:`DCTNetLib` (the pure-Python core), these modules import ``slicer``, ``vtk`` and ``qt``. They are
imported lazily by the DCTNetReconstruction and DCTNetTraining modules, so importing this package itself
imports nothing from Slicer.

- ``reconstruction``   what the Reconstruction module does with nodes: radiographs in, ``dctnet reconstruct`` in a
                       child process, volumes out where the radiographs came from, the results layout
- ``nodes``            numpy / CTVolume ↔ volume nodes with correct IJK→RAS, window/level presets
- ``layout``           the results layout (linked CT views, radiograph views in their own view group)
- ``radiographs``      CT node → PA and lateral DRR nodes with the training geometry
- ``results``          the files ``dctnet reconstruct`` wrote → nodes; comparison with a reference CT
- ``install``          first-use install of PyTorch (PyTorchUtils) and the core's other Python packages
                       (``slicer.packaging.pip_ensure`` on Slicer ≥ 5.12, ``pip_install`` before)
- ``tasks``            the one runner of background ``dctnet`` runs (progress, Stop, Cancel) and the worker process
                       that keeps the model loaded between reconstructions
- ``process``          the child process itself (no Qt): output read by a thread, JSON progress events, the whole
                       process tree killed on cancel
- ``training_runs``    argument lists of training / evaluation runs, loss-plot and table data, re-attaching to a
                       running training from its run folder
"""
