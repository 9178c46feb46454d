"""Synthetic DICOM radiographs for tests: uncompressed 16-bit films with whatever header a test needs.

Plain pydicom, numpy and Pillow, importable with or without the suite's conftest (``test_io_radiograph_pydicom``
also runs in a pydicom 2.4 venv with ``--noconftest``), and written the way the installed pydicom (2.4 or 3.x)
wants.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation (PS3.4 Annex B.5)
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"    # Computed Radiography Image Storage


def write_dx(path: Path, stored: np.ndarray, photometric: str = "MONOCHROME2", slope: float = 1.0,
             intercept: float = 0.0, modality: str = "DX", **tags) -> Path:
    """An uncompressed 16-bit (12 bits stored) radiograph of ``stored`` pixels; ``tags`` are extra header keywords
    (e.g. ``ViewPosition="PA"``, ``PixelSpacing=[0.4, 0.4]``, ``PatientName="Doe^Jane"``)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_STORAGE if modality == "DX" else CR_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = slope, intercept, "US"
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:  # pydicom 2.x: the encoding is set on the dataset
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)
    return path


def chest_like_film(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """12-bit stored values with no symmetry (a left-right or up-down flip changes them): a bright band that
    narrows downwards, brighter to the right, plus noise. Not anatomy; enough to see flips and resampling."""
    r = np.linspace(0.0, 1.0, rows)[:, None]
    c = np.linspace(0.0, 1.0, cols)[None, :]
    band = np.exp(-((c - 0.5) / (0.25 - 0.15 * r)) ** 2)
    values = 0.5 * band + 0.3 * c + 0.1 * r + 0.05 * np.random.default_rng(seed).random((rows, cols))
    return np.round(values / values.max() * 4095).astype(np.uint16)
