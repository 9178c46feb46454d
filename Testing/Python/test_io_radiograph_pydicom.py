"""DICOM radiographs read the same with pydicom 2.4 (what Slicer 5.10 ships) and pydicom 3.x.

The checks in this file need only numpy, Pillow, SimpleITK and pydicom (no torch), so the same file also runs in a
throw-away venv that has pydicom 2.4.4: :func:`test_the_same_checks_pass_with_pydicom_2_4` runs it there when that
venv exists (``DCTNET_PYDICOM24_PYTHON``, default ``/tmp/venv-pyd24/bin/python``) and skips otherwise, saying how
to make one. Nothing here changes the project's own environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dicom_films import write_dx

REPO = Path(__file__).resolve().parents[2]

pydicom = pytest.importorskip("pydicom")

PYDICOM24_PYTHON = Path(os.environ.get("DCTNET_PYDICOM24_PYTHON", "/tmp/venv-pyd24/bin/python"))
PYDICOM24_RECIPE = ("python3 -m venv /tmp/venv-pyd24 && /tmp/venv-pyd24/bin/pip install 'pydicom==2.4.4' numpy pillow "
                    "SimpleITK pytest")
PYDICOM_MAJOR = int(pydicom.__version__.split(".")[0])


def _stored(seed: int = 0, shape=(40, 32)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4096, size=shape).astype(np.uint16)


def _unit(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    return (values - values.min()) / (values.max() - values.min())


def test_modality_lut_comes_from_the_module_this_pydicom_has():
    from DCTNetLib.io.radiograph import _modality_lut

    expected = "pydicom.pixels" if PYDICOM_MAJOR >= 3 else "pydicom.pixel_data_handlers.util"
    assert _modality_lut().__module__.startswith(expected.split(".util")[0])
    if PYDICOM_MAJOR < 3:
        with pytest.raises(ImportError):
            import pydicom.pixels  # noqa: F401  (what the reader imported before: absent in 2.4)


def test_monochrome2_with_a_negative_rescale_slope_is_inverted_by_the_modality_lut(tmp_path):
    """A positive slope cannot be seen after min/max scaling; a negative one flips the image, so the test fails
    if the modality LUT is not applied."""
    from DCTNetLib.io.radiograph import read_radiograph

    stored = _stored(1)
    plain = read_radiograph(write_dx(tmp_path / "plain.dcm", stored))
    np.testing.assert_allclose(plain, _unit(stored), atol=1e-6)
    flipped = read_radiograph(write_dx(tmp_path / "flipped.dcm", stored, slope=-2.0, intercept=100.0))
    np.testing.assert_allclose(flipped, _unit(-2.0 * stored.astype(np.float64) + 100.0), atol=1e-6)
    np.testing.assert_allclose(flipped, 1.0 - plain, atol=1e-6)
    assert flipped.dtype == np.float32 and flipped.shape == stored.shape


def test_monochrome1_is_inverted_so_bone_stays_bright(tmp_path):
    from DCTNetLib.io.radiograph import read_radiograph

    stored = _stored(2)
    mono1 = read_radiograph(write_dx(tmp_path / "mono1.dcm", stored, photometric="MONOCHROME1"))
    np.testing.assert_allclose(mono1, 1.0 - _unit(stored), atol=1e-6)


def test_the_reader_works_when_pydicom_pixels_is_missing(tmp_path, monkeypatch):
    """pydicom 2.4's layout simulated in this interpreter: ``pydicom.pixels`` cannot be imported."""
    if PYDICOM_MAJOR < 3:
        pytest.skip("this pydicom is 2.x already: the real thing is tested above")
    try:
        import pydicom.pixel_data_handlers.util  # noqa: F401  (deprecated in 3.x, removed in 4)
    except ImportError:
        pytest.skip("this pydicom no longer has pixel_data_handlers, so 2.4's layout cannot be simulated")
    from DCTNetLib.io.radiograph import read_radiograph

    monkeypatch.setitem(sys.modules, "pydicom.pixels", None)
    stored = _stored(3)
    image = read_radiograph(write_dx(tmp_path / "x.dcm", stored, slope=-1.0, intercept=4095.0))
    np.testing.assert_allclose(image, 1.0 - _unit(stored), atol=1e-6)


@pytest.mark.skipif(os.environ.get("DCTNET_INSIDE_PYDICOM24") == "1", reason="already running inside that venv")
def test_the_same_checks_pass_with_pydicom_2_4():
    if not PYDICOM24_PYTHON.is_file():
        pytest.skip(f"no pydicom 2.4 interpreter at {PYDICOM24_PYTHON}; make one with: {PYDICOM24_RECIPE} "
                    "(or point DCTNET_PYDICOM24_PYTHON at one)")
    env = dict(os.environ, DCTNET_INSIDE_PYDICOM24="1", PYTHONPATH=str(REPO / "DCTNetReconstruction"))
    version = subprocess.run([str(PYDICOM24_PYTHON), "-c", "import pydicom; print(pydicom.__version__)"],
                             capture_output=True, text=True, env=env, timeout=120)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip().startswith("2.4"), f"{PYDICOM24_PYTHON} has pydicom {version.stdout.strip()}"
    out = subprocess.run([str(PYDICOM24_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--noconftest",
                          str(Path(__file__))], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "3 passed" in out.stdout and "failed" not in out.stdout, out.stdout[-1000:]
