"""Write a reconstructed CT as a DICOM series (one CT Image Storage file per axial slice), for PACS and viewers.

The series is *derived* and labelled as research output: ImageType ``DERIVED\\SECONDARY\\AXIAL``, a
SeriesDescription and an ImageComments line that say what made it, Manufacturer "DCTNet". When the radiographs
were DICOM, the patient and study tags are copied from the PA film, so the CT files under the same patient and
study in a PACS or in Slicer's DICOM browser; otherwise the patient is "Anonymous" and a new study is made.

The voxels are rounded to integer HU, clipped to [-1024, 3071] (the range of a 12-bit CT scanner) and stored as
signed 16-bit integers with RescaleSlope 1 / RescaleIntercept 0, i.e. the stored value is the HU (PS3.3 C.8.2.1). SimpleITK (GDCM) writes the
files; positions and orientation come from the volume's geometry, so reading the folder back gives the same grid.

Every file is a complete CT Image IOD (PS3.3 A.3): the attributes it requires but a reconstruction has no value for
(KVP, AcquisitionNumber, PatientPosition, PositionReferenceIndicator) are present and empty, i.e. unknown.
``test_io_dicom_writer`` checks the required attributes with pydicom, and runs the independent validator
``dciodvfy`` (dicom3tools) on the output when it is installed: no error, no warning.

The folder is written atomically (:func:`~DCTNetLib.io.atomic.atomic_folder`): the slices go to a hidden
temporary folder beside it, which is renamed into place only when every slice is written.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.multival import MultiValue
from pydicom.uid import generate_uid

from .. import __version__
from ..errors import OutputError
from .atomic import atomic_folder, check_free_space, check_name_length, check_writable_dir, display_path, utf8_alias
from .ct import CTVolume, to_sitk
from .radiograph import dcmread_checked, has_dicom_prefix, itk_reason

__all__ = ["write_dicom_series", "patient_study_tags", "DICOM_HU_RANGE"]

log = logging.getLogger(__name__)

# The HU range of a 12-bit CT scanner with RescaleIntercept 0 (-1024 … 3071), kept when writing DICOM.
DICOM_HU_RANGE = (-1024, 3071)
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"  # SOP Class UID, DICOM PS3.4 Annex B.5
# Tags copied from the input film (keyword → SimpleITK "gggg|eeee" key): the patient and the study it belongs to.
_PATIENT_STUDY_TAGS = {
    "PatientName": "0010|0010", "PatientID": "0010|0020", "PatientBirthDate": "0010|0030",
    "PatientSex": "0010|0040", "StudyInstanceUID": "0020|000d", "StudyDate": "0008|0020",
    "StudyTime": "0008|0030", "StudyID": "0020|0010", "AccessionNumber": "0008|0050",
    "ReferringPhysicianName": "0008|0090", "StudyDescription": "0008|1030",
}
# Attributes the CT Image IOD requires to be present (Type 2, or Type 2C with its condition met) that a reconstruction
# from two radiographs has no value for, so they are written empty, which means "unknown" (DICOM PS3.5 §7.4.3):
# PositionReferenceIndicator (Frame of Reference module, PS3.3 C.7.4.1: no anatomical reference point), KVP and
# AcquisitionNumber (CT Image module, C.8.2.1: no tube fired and no acquisition made for this series) and
# PatientPosition (General Series, C.7.3.1: required for CT Image Storage; there was no CT table to lie on).
_EMPTY_TYPE2 = {"0020|1040": "", "0018|0060": "", "0020|0012": "", "0018|5100": ""}
# BodyPartExamined (Type 3, defined term from PS3.16 Annex L): the model reconstructs chests. Saying so also settles
# Laterality, which General Series requires only for a paired body part.
BODY_PART = "CHEST"
# The slice files write_dicom_series makes (IM00001.dcm …): --overwrite replaces only a folder holding nothing else.
_SLICE_NAME = re.compile(r"IM\d{5}\.dcm")
RESEARCH_NOTE = "DCTNet reconstruction from two radiographs; research software, not for clinical use"


def patient_study_tags(radiograph: str | os.PathLike | None) -> dict[str, str]:
    """Patient and study tags of a DICOM radiograph as SimpleITK ``"gggg|eeee"`` keys; ``{}`` for other files."""
    if radiograph is None:
        return {}
    if not has_dicom_prefix(radiograph):
        return {}
    ds = dcmread_checked(radiograph, stop_before_pixels=True)
    tags = {}
    for keyword, key in _PATIENT_STUDY_TAGS.items():
        value = ds.get(keyword)
        if value not in (None, ""):
            tags[key] = _single_value(keyword, value, radiograph)
    return tags


def _single_value(keyword: str, value: object, source: str | os.PathLike) -> str:
    """``value`` as the one value every copied attribute holds (value multiplicity 1).

    A backslash is DICOM's value separator: pydicom reads a PatientID ``x\\y`` as two values ``['x', 'y']``, and
    written back it would be two values again. Such a value is joined with ``_`` instead, with a warning.
    """
    if not isinstance(value, (MultiValue, list, tuple)):  # a str, a PersonName (iterable, one value), a number
        return str(value)
    parts = [str(part) for part in value]
    joined = "_".join(parts)
    log.warning("%s: %s %r holds a backslash, DICOM's value separator; written as the one value %r",
                display_path(source), keyword, "\\".join(parts), joined)
    return joined


def _series_tags(ct: CTVolume, description: str, inherited: dict[str, str]) -> dict[str, str]:
    """The tags every slice shares: patient/study (inherited or new), series, frame of reference, geometry."""
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    # "Anonymous^": a family name and an empty given name, the PN form validators expect (PS3.5 §6.2.1.1).
    # A new study gets a StudyID (Type 2, but a DICOMDIR needs a value): its date and time, 12 of SH's 16 characters.
    tags = {"0010|0010": "Anonymous^", "0010|0020": "DCTNet", "0020|000d": generate_uid(),
            "0008|0020": date, "0008|0030": time, "0020|0010": now.strftime("%y%m%d%H%M%S")}
    if "0020|000d" in inherited:  # the film's study: never invent an ID for it, keep the film's (or none)
        tags["0020|0010"] = ""
    tags.update(inherited)
    rows = np.asarray(ct.direction).reshape(3, 3)
    orientation = list(rows[:, 0]) + list(rows[:, 1])  # direction cosines of the x (column) and y (row) axes
    tags.update({
        "0008|0016": CT_IMAGE_STORAGE, "0008|0060": "CT", "0008|0008": "DERIVED\\SECONDARY\\AXIAL",
        "0008|0070": "DCTNet", "0008|1090": "DCT-Net", "0018|1020": f"dctnet {__version__}",
        "0008|103e": description[:64], "0020|4000": RESEARCH_NOTE, "0028|0301": "NO",
        "0020|000e": generate_uid(), "0020|0052": generate_uid(), "0020|0011": "1001",
        "0008|0021": date, "0008|0031": time, "0008|0012": date, "0008|0013": time,
        "0020|0037": "\\".join(f"{v:.6f}" for v in orientation),
        "0018|0050": f"{ct.spacing[0]:.4f}", "0018|0088": f"{ct.spacing[0]:.4f}",
        "0028|1050": "40", "0028|1051": "400",  # a soft-tissue window (centre 40, width 400 HU) to open with
        "0028|1052": "0", "0028|1053": "1", "0028|1054": "HU",
        "0018|0015": BODY_PART, **_EMPTY_TYPE2,
    })
    return tags


def check_dicom_output(folder: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check before any work that a DICOM series can be written into ``folder`` (a new folder, or ``overwrite``)."""
    folder = Path(folder)
    check_name_length(folder)
    check_writable_dir(folder.parent if str(folder.parent) else Path("."))
    if os.path.lexists(folder):
        if not folder.is_dir():
            raise OutputError(f"--dicom {display_path(folder)} is a file; a DICOM series is written into a folder")
        entries = sorted(entry.name for entry in folder.iterdir())
        if entries and not overwrite:
            raise OutputError(f"{display_path(folder)} exists and is not empty; pass --overwrite to replace it, "
                              "or choose another folder")
        foreign = [name for name in entries if not _SLICE_NAME.fullmatch(name) or not (folder / name).is_file()]
        if foreign:
            raise OutputError(f"{display_path(folder)} holds {display_path(foreign[0])}, which is not a slice of a "
                              "DCTNet DICOM series; only such a folder is replaced (even with --overwrite): choose "
                              "another folder")
    return folder


def write_dicom_series(ct: CTVolume, folder: str | os.PathLike, *, description: str = "DCTNet reconstructed CT",
                       inherit_from: str | os.PathLike | None = None, overwrite: bool = False) -> Path:
    """Write ``ct`` as a DICOM CT series into ``folder`` (created; one file per axial slice, ``IM00001.dcm`` …).

    Args:
        ct: the volume in HU (finite); rounded to integer HU and clipped to :data:`DICOM_HU_RANGE`.
        folder: the series folder; must not exist (or be empty) unless ``overwrite``.
        description: SeriesDescription (at most 64 characters are kept, the DICOM LO limit).
        inherit_from: a DICOM radiograph whose patient and study tags the series takes (ignored if not DICOM).
        overwrite: replace an existing folder, only once the new series is complete.

    Returns:
        ``folder``.

    Raises:
        OutputError: the folder exists (without ``overwrite``), is a file, its parent is missing or not writable,
            the disk is full, or the volume holds NaN/inf.
    """
    folder = check_dicom_output(folder, overwrite)
    if not np.isfinite(ct.hu).all():
        raise OutputError(f"refusing to write a CT with NaN/inf voxels as DICOM: {display_path(folder)}")
    check_free_space(folder.parent if str(folder.parent) else Path("."), ct.hu.size * 2 + 4096 * ct.shape[0])
    rounded = dataclasses.replace(ct, hu=np.clip(np.rint(ct.hu), *DICOM_HU_RANGE))
    image = sitk.Cast(to_sitk(rounded), sitk.sitkInt16)  # exact: the values are integers in the int16 range
    shared = _series_tags(ct, description, patient_study_tags(inherit_from))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()  # write our SOP/Series UIDs, not GDCM's own
    with atomic_folder(folder, overwrite) as tmp, utf8_alias(tmp) as tmp_name:
        for index in range(image.GetDepth()):
            piece = image[:, :, index]
            for key, value in shared.items():
                piece.SetMetaData(key, value)
            position = image.TransformIndexToPhysicalPoint((0, 0, index))
            piece.SetMetaData("0020|0032", "\\".join(f"{p:.4f}" for p in position))
            piece.SetMetaData("0020|1041", f"{position[2]:.4f}")
            piece.SetMetaData("0020|0013", str(index + 1))
            piece.SetMetaData("0008|0018", generate_uid())
            writer.SetFileName(os.path.join(tmp_name, f"IM{index + 1:05d}.dcm"))
            try:
                writer.Execute(piece)
            except RuntimeError as exc:
                raise OutputError(f"cannot write DICOM slice {index + 1} into {display_path(folder)}: "
                                  f"{itk_reason(exc)}") from exc
    return folder
