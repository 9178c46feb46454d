#!/usr/bin/env bash
# Slicer-side MRML tests on the Qt-free `slicer-core` wheel (KitwareMedical/SlicerCore), in their own venv.
#
# slicer-core pins its own vtk and owns the `slicer` import name, so it cannot share the project's .venv.
# What runs in Slicer's own process (DCTNetSlicerLib, DCTNetLib.io) needs only numpy, SimpleITK and Pillow besides
# MRML: no torch, like Slicer's build machines, and the project itself is not installed (conftest.py puts
# DCTNetReconstruction/ on sys.path). The model runs where it runs in Slicer, in a `dctnet reconstruct` child
# process: its interpreter is $DCTNET_PYTHON, default the project's .venv (those tests skip without one).
# Usage, from anywhere:  Testing/SlicerCore/run.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=.venv-slicer
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q "slicer-core==5.13.31053.0" "numpy>=1.24" "SimpleITK>=2.3" "Pillow>=10" "pydicom>=2.4" "psutil>=5.9" "pytest>=7.4"
exec "$VENV/bin/python" -m pytest Testing/SlicerCore -q -p no:cacheprovider "$@"
