"""DiffDRR 0.6.1 reference for the DRR benchmark, with the geometry matched to ``DCTNetLib.data.drr``.

The geometry match (RAS world, poses, detector orientation) and the CT loader are the ones proved by
``Testing/Python/test_data_drr.py`` (``diffdrr_pair``, ``load_cxr_ct``, ``ncc``); they are imported from that
file rather than copied, so the benchmark always renders exactly what the agreement test checks. DiffDRR's
renderer is installed by hand (``pip install diffdrr==0.6.1``: its dependency tree is ~1 GB, so neither the
package nor its test extra pulls it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from _common import REPO

__all__ = ["drr_test_helpers", "diffdrr_available"]

_TEST_FILE = REPO / "Testing" / "Python" / "test_data_drr.py"


def diffdrr_available() -> bool:
    """True when DiffDRR's renderer can be imported (a data-only ``--no-deps`` install cannot render)."""
    return importlib.util.find_spec("diffdrr") is not None and drr_test_helpers().diffdrr_renderer_missing() is None


def drr_test_helpers() -> ModuleType:
    """The DRR test module (``diffdrr_pair(mu, spacing, geometry)``, ``load_cxr_ct(size, spacing)``, ``ncc``)."""
    if not _TEST_FILE.is_file():
        raise FileNotFoundError(f"DiffDRR geometry helpers not found: {_TEST_FILE}")
    spec = importlib.util.spec_from_file_location("dctnet_test_data_drr", Path(_TEST_FILE))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module
