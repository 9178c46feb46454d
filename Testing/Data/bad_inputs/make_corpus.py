"""Generate the bad-input corpus of issues 5 and 12 (each file a few KB) and describe what every case must produce.

Usage::

    python Testing/Data/bad_inputs/make_corpus.py OUT_DIR      # writes the files and OUT_DIR/manifest.json

The test ``Testing/Python/test_reliability_corpus.py`` imports this module, calls :func:`make_corpus` into a
temporary folder and feeds every case to the public entry points listed in :data:`MANIFEST`. Nothing binary is
committed: the files are generated from code with numpy, pydicom, Pillow and SimpleITK only (no DCTNetLib, so the
corpus does not depend on the code it tests).

``MANIFEST`` maps *case → entry point → (expected outcome, message fragment)*. Outcomes:

* ``"InputError"`` / ``"OutputError"`` / ``"WeightsError"``: that exception, its message containing the fragment
  (case-insensitive) and the case's file name;
* ``"ok"``: accepted (the test checks the decoded values);
* ``"warns"``: accepted with a warning or log line containing the fragment;
* ``"failed"``: ``dctnet prepare`` lists the case in ``failed.txt`` with the fragment and keeps going;
* ``"prepared"``: ``dctnet prepare`` exits 0 and prepares every case under a distinct id (the fragment is in its
  summary line).

Entry points: ``read_ct``, ``read_radiograph``, ``load_radiograph``, ``write_ct`` and ``write_text`` (output
cases; ``write_text`` is ``atomic_write_text``, used for every JSON/text file), ``prepare``
(``dctnet prepare`` through ``cli.main``), ``reconstruct`` (``dctnet reconstruct``, the case used as ``--pa`` or as
``--output``; ``out_is_input`` as both ``--ct`` and ``--output``), ``reconstruct_weights`` (the case as
``--weights``), ``check_pair`` (two views), ``load_checkpoint`` (training checkpoints), ``safe_load``
(``io.safe_load.load_torch_file`` with the corpus's sha256 manifest), ``numpy_pickle`` (the restricted
unpickler), ``bundle`` (``checkpoints.bundle.load_model_bundle``), ``write_ct_new`` (``write_ct(..., overwrite=False)``)
and ``evaluate`` (``dctnet evaluate --overwrite`` with the case as ``--checkpoint``, into a folder of earlier
results that must survive).
Cases whose condition cannot be built as a file (no read permission when running as root, a full disk, a
read-only folder, a file another run writes meanwhile) name a ``simulate`` recipe that the test applies with
``monkeypatch``. The memory bombs (``BOMBS``) are the only files over a few KB: a deflated DICOM has to be ~1/1000
of what it inflates to, so it is ~650 KB (it is generated, never committed).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import sys
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

# Geometry of the small synthetic CT: 8 axial 16×16 slices of 2 mm × 1.5 mm² voxels (≈ 1 KB a DICOM file).
SLICES, ROWS, COLS = 8, 16, 16
SLICE_MM, PIXEL_MM = 2.0, 1.5
RADIOGRAPH_SIDE = 48  # px; above the readers' 16 px minimum, small enough to stay a few KB
# DICOM stores CT as unsigned values with RescaleIntercept −1024 (the usual scanner convention).
RESCALE_INTERCEPT = -1024.0


@dataclass(frozen=True)
class Case:
    """One corpus entry.

    Args:
        path: file or folder relative to the corpus folder (it may deliberately not exist).
        expect: entry point → ``(outcome, message fragment)`` (see the module docstring).
        simulate: recipe the test applies (``no_read_permission``, ``not_writable``, ``disk_full_space``,
            ``disk_full_write``); empty for real files.
        issue_item: the line of issue 5 this case covers.
    """

    path: str
    expect: dict[str, tuple[str, str]]
    issue_item: str
    simulate: str = ""
    note: str = field(default="", compare=False)


def _ct(expect_read: tuple[str, str], prepare: bool = True) -> dict[str, tuple[str, str]]:
    """The usual CT expectations: ``read_ct`` raises, ``dctnet prepare`` lists the case as failed."""
    out = {"read_ct": expect_read}
    if prepare and expect_read[0] == "InputError":
        out["prepare"] = ("failed", expect_read[1])
    return out


def _rg(outcome: str, fragment: str, cli: bool = True) -> dict[str, tuple[str, str]]:
    """The usual radiograph expectations: the two readers, and ``dctnet reconstruct --pa`` for errors."""
    out = {"read_radiograph": (outcome, fragment), "load_radiograph": (outcome, fragment)}
    if cli and outcome.endswith("Error"):
        out["reconstruct"] = (outcome, fragment)
    return out


MANIFEST: dict[str, Case] = {
    # ------------------------------------------------------------------------------------------------ CT
    "ct_dicom_truncated": Case("ct_dicom_truncated", _ct(("InputError", "truncated")),
                               "truncated DICOM", note="slice 4 cut in the middle of its pixel data"),
    "ct_dicom_truncated_header": Case("ct_dicom_truncated_header", _ct(("InputError", "unreadable DICOM file")),
                                      "truncated DICOM", note="slice 4 cut inside its header"),
    "ct_dicom_no_pixels": Case("ct_dicom_no_pixels", _ct(("InputError", "no pixel data")),
                               "DICOM without pixel data"),
    "ct_dicom_missing_slice": Case("ct_dicom_missing_slice", _ct(("InputError", "missing slice")),
                                   "DICOM series with missing slices"),
    "ct_dicom_duplicated_slice": Case("ct_dicom_duplicated_slice", _ct(("InputError", "duplicated slice")),
                                      "DICOM series with duplicated slices"),
    "ct_dicom_uneven_spacing": Case("ct_dicom_uneven_spacing", _ct(("InputError", "inconsistent slice spacing")),
                                    "inconsistent slice spacing"),
    "ct_dicom_single_slice": Case("ct_dicom_single_slice", _ct(("InputError", "single slice")),
                                  "CT that is a 2D image"),
    "ct_2d.nii.gz": Case("ct_2d.nii.gz", _ct(("InputError", "3D volume")), "CT that is a 2D image"),
    "ct_2d.png": Case("ct_2d.png", _ct(("InputError", "3D volume"), prepare=False), "CT that is a 2D image"),
    "ct_dicom_mr": Case("ct_dicom_mr", _ct(("InputError", "is MR, not CT")), "MR volume passed as CT"),
    "ct_mr_values.nii.gz": Case("ct_mr_values.nii.gz", _ct(("InputError", "MR image")), "MR volume passed as CT",
                                note="modality unknown (NIfTI): caught by the HU range check"),
    "ct_nan.nii.gz": Case("ct_nan.nii.gz", _ct(("InputError", "NaN/inf")), "NaN/inf voxels"),
    "ct_inf.nii.gz": Case("ct_inf.nii.gz", _ct(("InputError", "NaN/inf")), "NaN/inf voxels"),
    "ct_rgb.nrrd": Case("ct_rgb.nrrd", _ct(("InputError", "one value per voxel"), prepare=False),
                        "CT that is a 2D image", note="a colour volume: not a CT either"),
    "ct_empty_folder": Case("ct_empty_folder", _ct(("InputError", "folder is empty")), "empty folder"),
    "ct_folder_without_dicom": Case("ct_folder_without_dicom", _ct(("InputError", "no readable DICOM series")),
                                    "non-image file with an image extension"),
    "ct_two_series": Case("ct_two_series", {"read_ct": ("warns", "using the largest")},
                          "folder with two series",
                          note="8- and 6-slice series in one folder: the 8-slice one is used, the choice is logged "
                               "at WARNING with both series' UIDs"),
    "ct_not_image.nii.gz": Case("ct_not_image.nii.gz", _ct(("InputError", "cannot read CT file")),
                                "non-image file with an image extension"),
    "ct_missing.nii.gz": Case("ct_missing.nii.gz", _ct(("InputError", "not found"), prepare=False),
                              "path that does not exist"),
    "ct_no_permission.nii.gz": Case("ct_no_permission.nii.gz", _ct(("InputError", "no permission to read"),
                                                                    prepare=False),
                                    "file without read permission", simulate="no_read_permission"),
    # ------------------------------------------------------------------------------------------ radiographs
    "rg_rgb.png": Case("rg_rgb.png", _rg("ok", "grey"), "RGB radiograph", note="accepted: BT.601 luma"),
    "rg_rgba.png": Case("rg_rgba.png", _rg("warns", "alpha channel"), "RGBA radiograph",
                        note="accepted: alpha ignored with a warning, colour → luma"),
    "rg_16bit.png": Case("rg_16bit.png", _rg("ok", "min-max"), "16-bit radiograph"),
    "rg_float.tif": Case("rg_float.tif", _rg("ok", "min-max"), "float radiograph"),
    "rg_monochrome1.dcm": Case("rg_monochrome1.dcm", _rg("ok", "inverted"), "MONOCHROME1 radiograph"),
    "rg_1x1.png": Case("rg_1x1.png", _rg("InputError", "too small"), "radiograph 1×1"),
    "rg_10000.png": Case("rg_10000.png", _rg("InputError", "too large"), "radiograph 10000×10000",
                         note="only a PNG header claiming 10000×10000: refused before decoding"),
    "rg_40000.png": Case("rg_40000.png", _rg("InputError", "too large"), "radiograph 10000×10000",
                         note="header beyond Pillow's decompression-bomb limit"),
    "rg_not_image.png": Case("rg_not_image.png", _rg("InputError", "not an image"),
                             "non-image file with an image extension"),
    "rg_not_image.dcm": Case("rg_not_image.dcm", _rg("InputError", "not a readable DICOM"),
                             "non-image file with an image extension"),
    "rg_truncated.png": Case("rg_truncated.png", _rg("InputError", "truncated"), "truncated DICOM",
                             note="the PNG counterpart of a truncated file"),
    "rg_dicom_truncated.dcm": Case("rg_dicom_truncated.dcm", _rg("InputError", "truncated"), "truncated DICOM"),
    "rg_dicom_no_pixels.dcm": Case("rg_dicom_no_pixels.dcm", _rg("InputError", "holds no image"),
                                   "DICOM without pixel data"),
    "rg_nan.tif": Case("rg_nan.tif", _rg("InputError", "NaN/inf"), "NaN/inf voxels"),
    "rg_blank.png": Case("rg_blank.png", _rg("InputError", "blank"), "non-image file with an image extension"),
    "rg_volume.nii.gz": Case("rg_volume.nii.gz", _rg("InputError", "2D image"),
                             "non-image file with an image extension", note="a CT volume given as a radiograph"),
    "rg_missing.png": Case("rg_missing.png", _rg("InputError", "not found"), "path that does not exist"),
    "rg_no_permission.png": Case("rg_no_permission.png", _rg("InputError", "no permission to read"),
                                 "file without read permission", simulate="no_read_permission"),
    # ------------------------------------------------------------------------------------------- view pairs
    "pair_identical": Case("pair_pa.png", {"check_pair": ("warns", "identical")}, "PA and lateral identical",
                           note="the PA file given as both views"),
    "pair_swapped": Case("pair_pa.png", {"check_pair": ("warns", "swapped")}, "PA and lateral swapped",
                         note="pair_lat.png given as PA and pair_pa.png as lateral"),
    # ---------------------------------------------------------------------------------------------- outputs
    "out_missing_folder": Case("no_such_folder/out.nii.gz",
                               {"write_ct": ("OutputError", "does not exist"),
                                "reconstruct": ("OutputError", "does not exist")},
                               "output folder that does not exist"),
    "out_not_writable": Case("read_only/out.nii.gz",
                             {"write_ct": ("OutputError", "not writable"),
                              "reconstruct": ("OutputError", "not writable")},
                             "output folder not writable", simulate="not_writable"),
    "out_disk_full_space": Case("full/out.nii.gz",
                                {"write_ct": ("OutputError", "not enough free disk space"),
                                 "prepare": ("OutputError", "not enough free disk space")},
                                "full disk", simulate="disk_full_space"),
    "out_disk_full_write": Case("full/out.nii.gz",
                                {"write_ct": ("OutputError", "cannot write CT"),
                                 "write_text": ("OutputError", "disk full while writing"),
                                 "prepare": ("OutputError", "disk full while writing")},
                                "full disk", simulate="disk_full_write",
                                note="write_ct: SimpleITK's writer fails; the others: os.write raises ENOSPC"),
    # ---------------------------------------------------------------------------------------------- weights
    "w_code.pt": Case("w_code.pt", {"load_checkpoint": ("WeightsError", "refusing"),
                                    "safe_load": ("WeightsError", "refusing")},
                      "weights carrying code", note="torch.save of an object whose __reduce__ creates a marker"),
    "w_code.pkl": Case("w_code.pkl", {"load_checkpoint": ("WeightsError", "refusing"),
                                      "safe_load": ("WeightsError", "refusing"),
                                      "numpy_pickle": ("WeightsError", "refusing")},
                       "weights carrying code", note="plain pickle, same payload"),
    "w_truncated.pt": Case("w_truncated.pt", {"load_checkpoint": ("WeightsError", "truncated"),
                                              "safe_load": ("WeightsError", "truncated")}, "truncated weights"),
    "w_tampered.pt": Case("w_tampered.pt", {"safe_load": ("WeightsError", "sha256 mismatch")}, "tampered weights",
                          note="one byte changed after the sha256 in manifest.json was taken"),
    "w_not_checkpoint.pt": Case("w_not_checkpoint.pt", {"load_checkpoint": ("WeightsError", "not a DCTNet")},
                                "weights of another architecture", note="a bare state dict"),
    "w_text.pt": Case("w_text.pt", {"load_checkpoint": ("WeightsError", "truncated or"),
                                    "safe_load": ("WeightsError", "truncated or corrupt")},
                      "non-image file with an image extension"),
    "w_missing.pt": Case("w_missing.pt", {"load_checkpoint": ("WeightsError", "not found"),
                                          "safe_load": ("WeightsError", "not found")}, "path that does not exist"),
}

# ------------------------------------------------------------------------------------------------ issue 12
LATIN1 = os.fsdecode(b"\xe9")  # one Latin-1 byte: a legal Linux file name that is not UTF-8
BOMBS = ("rg_deflate_bomb.dcm", "w_zip_bomb.pt")
# In the layout of the shipped bundle (written before variant and size were fields of the preset).
_BUNDLE_PRESET = {"name": "dctnet@full", "generator": {"image_size": 128}, "discriminator": {}, "loss": {}}


def _weights(message: str, cli: bool = True) -> dict[str, tuple[str, str]]:
    """A model-bundle case: ``load_model_bundle`` and ``dctnet reconstruct --weights`` refuse it."""
    out = {"bundle": ("WeightsError", message)}
    if cli:
        out["reconstruct_weights"] = ("WeightsError", message)
    return out


ISSUE12_MANIFEST: dict[str, Case] = {
    # crashes and hangs
    "ct_latin1_name": Case(f"ct_caf{LATIN1}.nii.gz", {"read_ct": ("ok", ""), "prepare": ("prepared", "1 done")},
                           "non-UTF-8 file name", note="read through a UTF-8 alias; prepare's case id reads it as Latin-1"),
    "rg_latin1_name": Case(f"rg_caf{LATIN1}.png", _rg("ok", ""), "non-UTF-8 file name"),
    "ct_dicom_latin1_name": Case("ct_dicom_latin1_name", _ct(("InputError", "not valid UTF-8")),
                                 "non-UTF-8 file name", note="one slice's name is not UTF-8: GDCM would abort"),
    "out_latin1_name": Case(f"latin1_{LATIN1}/out_{LATIN1}.nii.gz", {"write_ct": ("ok", ""), "reconstruct": ("ok", "")},
                            "non-UTF-8 file name", note="output folder and file name not UTF-8"),
    "rg_fifo": Case("rg_fifo.png", _rg("InputError", "FIFO"), "FIFO or other non-regular file"),
    "ct_fifo": Case("ct_fifo.nii.gz", _ct(("InputError", "FIFO"), prepare=False), "FIFO or other non-regular file"),
    "ct_dicom_fifo": Case("ct_dicom_fifo", _ct(("InputError", "not a regular file"), prepare=False),
                          "FIFO or other non-regular file", note="a FIFO among the slices: GDCM would block on it"),
    "w_fifo.pt": Case("w_fifo.pt", {"safe_load": ("WeightsError", "FIFO"), **_weights("FIFO")},
                      "FIFO or other non-regular file"),
    "rg_frames_text.dcm": Case("rg_frames_text.dcm", _rg("InputError", "NumberOfFrames is not a number"),
                               "traceback on a malformed header"),
    "ct_dicom_ipp_two": Case("ct_dicom_ipp_two", _ct(("InputError", "malformed ImagePositionPatient")),
                             "traceback on a malformed header", note="one slice's position has two values"),
    "ct_dicom_ipp_text": Case("ct_dicom_ipp_text", _ct(("InputError", "malformed ImagePositionPatient")),
                              "traceback on a malformed header", note="one slice's position is text"),
    "ct_dicom_iop_three": Case("ct_dicom_iop_three", _ct(("InputError", "malformed ImageOrientationPatient")),
                               "traceback on a malformed header", note="every slice's orientation has 3 values"),
    "b_version_text.pt": Case("b_version_text.pt", _weights("format_version"), "traceback on a malformed header"),
    "b_image_size_text.pt": Case("b_image_size_text.pt", _weights("image_size"), "traceback on a malformed header"),
    "b_image_size_mismatch.pt": Case("b_image_size_mismatch.pt", _weights("image size"),
                                     "traceback on a malformed header", note="bundle 64, networks 128"),
    "b_steps_zero.pt": Case("b_steps_zero.pt", _weights("sampling_steps 0"), "traceback on a malformed header"),
    "b_steps_over_t.pt": Case("b_steps_over_t.pt", _weights("sampling_steps 20"), "traceback on a malformed header",
                              note="20 DDIM steps of a 10-step diffusion"),
    "b_not_tensor.pt": Case("b_not_tensor.pt", _weights("not tensors"), "traceback on a malformed header"),
    # memory bombs: refused from headers and recorded configs, before allocating
    "rg_deflate_bomb.dcm": Case("rg_deflate_bomb.dcm", _rg("InputError", "decompression bomb"), "memory bomb",
                                note="330 KB deflated, 40 frames of 2048² × 16 bit = 320 MiB inflated"),
    "rg_nifti_20000.nii": Case("rg_nifti_20000.nii", _rg("InputError", "too large"), "memory bomb",
                               note="a NIfTI header claiming 20000² px, no data"),
    "ct_1200.nii": Case("ct_1200.nii", _ct(("InputError", "too large")), "memory bomb",
                        note="a NIfTI header claiming 1200³ voxels (3.2 GiB as int16), no data"),
    "b_huge_arch.pt": Case("b_huge_arch.pt", _weights("GiB of weights"), "memory bomb",
                           note="a recorded generator of 3.5 G parameters (14 GB) with no weights"),
    # data loss
    "out_is_input": Case("out_is_input.nii.gz", {"reconstruct": ("OutputError", "is the input")},
                         "output that is an input", note="--ct X --output X --overwrite; X must survive"),
    "out_appears": Case("appear/out.nii.gz", {"write_ct_new": ("OutputError", "appeared while"),
                                              "reconstruct": ("OutputError", "appeared while")},
                        "output that appears while computing", simulate="appears_meanwhile",
                        note="another run writes the file between the existence check and the rename"),
    "src_same_stem": Case("src_same_stem", {"prepare": ("prepared", "2 done")}, "duplicate case ids",
                          note="siteA/imgs/case001.nii.gz and siteB/imgs/case001.nii.gz"),
    "src_twin_nifti": Case("src_twin_nifti", {"prepare": ("prepared", "1 done, 0 skipped (already prepared), 1 failed")},
                           "duplicate case ids",
                           note="case002.nii beside case002.nii.gz: one is prepared, the other reported"),
    "w_truncated_eval": Case("w_truncated.pt", {"evaluate": ("WeightsError", "truncated")},
                             "evaluate --overwrite with a bad checkpoint"),
    "w_text_eval": Case("w_text.pt", {"evaluate": ("WeightsError", "truncated or")},
                        "evaluate --overwrite with a bad checkpoint"),
    # silent garbage
    "ct_pixdim_zero.nii": Case("ct_pixdim_zero.nii", _ct(("InputError", "invalid voxel size")), "garbage geometry"),
    "ct_pixdim_nan.nii": Case("ct_pixdim_nan.nii", _ct(("InputError", "invalid voxel size")), "garbage geometry"),
    "ct_pixdim_negative.nii": Case("ct_pixdim_negative.nii", _ct(("InputError", "invalid voxel size")),
                                   "garbage geometry"),
    "ct_sform_scale.nii": Case("ct_sform_scale.nii", {"read_ct": ("warns", "disagrees with itself on the voxel size")},
                               "library warnings in our words", note="sform says 2 mm, pixdim 1.5/2 mm"),
    "ct_dicom_two_slices": Case("ct_dicom_two_slices", _ct(("InputError", "too few slices")), "garbage geometry"),
    "rg_strip.png": Case("rg_strip.png", _rg("InputError", "aspect ratio"), "garbage geometry",
                         note="16 × 8192 px"),
    "rg_exif_rotated.jpg": Case("rg_exif_rotated.jpg", _rg("ok", ""), "image read the wrong way",
                                note="stored sideways with EXIF orientation 6: read upright"),
    "rg_palette.dcm": Case("rg_palette.dcm", _rg("ok", ""), "image read the wrong way",
                           note="PALETTE COLOR whose table reverses the grey scale: read through the table"),
    "rg_dicom_seg.dcm": Case("rg_dicom_seg.dcm", _rg("InputError", "SEG image, not a radiograph"),
                             "DICOM that is not a radiograph"),
    "rg_dicom_ct.dcm": Case("rg_dicom_ct.dcm", _rg("InputError", "CT image, not a radiograph"),
                            "DICOM that is not a radiograph"),
    "rg_dicom_mr.dcm": Case("rg_dicom_mr.dcm", _rg("InputError", "MR image, not a radiograph"),
                            "DICOM that is not a radiograph"),
    "ct_dicom_dangling_link": Case("ct_dicom_dangling_link", _ct(("InputError", "broken symbolic link")),
                                   "broken series", note="a link to a deleted slice"),
    "ct_dicom_self_link": Case("ct_dicom_self_link", _ct(("InputError", "points to itself")), "broken series"),
    "ct_dicom_enhanced": Case("ct_dicom_enhanced", _ct(("InputError", "Enhanced CT")), "broken series",
                              note="one Enhanced CT file of 8 frames"),
    # messages
    "out_upper_case": Case("OUT_UPPER.NII.GZ", {"write_ct": ("ok", ""), "reconstruct": ("ok", "")},
                           "output name the writer mishandled"),
    "out_mhd": Case("out.mhd", {"write_ct": ("OutputError", "unsupported CT output format"),
                                "reconstruct": ("InputError", "use one of")}, "output name the writer mishandled"),
    "out_long_name": Case("L" * 240 + ".nii.gz", {"write_ct": ("ok", "")}, "output name the writer mishandled",
                          note="247 characters: legal, its temporary file must be too"),
    "out_too_long_name": Case("L" * 253 + ".nii.gz", {"write_ct": ("OutputError", "too long"),
                                                     "reconstruct": ("OutputError", "too long")},
                              "output name the writer mishandled", note="260 bytes: over the 255-byte limit"),
    "w_zip.pt": Case("w_zip.pt", {"safe_load": ("WeightsError", "not a PyTorch weights file"),
                                  **_weights("not a PyTorch weights file")}, "library message leaking",
                     note="torch would say [enforce fail at inline_container.cc]"),
    "w_torchscript.pt": Case("w_torchscript.pt", {"safe_load": ("WeightsError", "TorchScript"),
                                                  **_weights("TorchScript")}, "library message leaking",
                             note="torch would warn and dispatch to torch.jit.load"),
    "rg_dicom_bad_is.dcm": Case("rg_dicom_bad_is.dcm", _rg("warns", "Invalid value for VR IS"),
                                "library warnings in our words",
                                note="InstanceNumber 'ab': pydicom's warning becomes one log line naming the file"),
}
MANIFEST.update(ISSUE12_MANIFEST)

# ------------------------------------------------------------------------------------------------ issue 21
# File-size limit (bytes, RLIMIT_FSIZE) of the simulated "file_size_limit" case: under the 8.5 KB the synthetic CT
# takes as an uncompressed NIfTI, so the write stops half-way, as on a full disk or a quota.
FSIZE_LIMIT = 4096
TILT_DEGREES = 20.0  # gantry tilt of ct_dicom_tilted (its slices drift 5 mm sideways over 14 mm)
ZIP_BOMB_MIB = 128  # what w_zip_bomb.pt unpacks to: deflate packs zeros ~1000:1, so the file stays under 1 MiB


def _dicom_out(message: str) -> dict[str, tuple[str, str]]:
    """A ``--dicom FOLDER --overwrite`` case: refused before anything is computed, the folder left as it was."""
    return {"reconstruct_dicom": ("OutputError", message)}


ISSUE21_MANIFEST: dict[str, Case] = {
    # data loss
    "out_dicom_holds_input": Case("dicom_holds_input", _dicom_out("holds"), "output folder holding an input",
                                  note="--dicom FOLDER --overwrite where FOLDER holds the --pa film"),
    "out_dicom_holds_output": Case("dicom_holds_output", _dicom_out("holds"), "output folder holding an input",
                                   note="--dicom FOLDER --overwrite where --output is FOLDER/ct.nii.gz"),
    "out_dicom_foreign": Case("dicom_foreign", _dicom_out("not a slice of a DCTNet DICOM series"),
                              "output folder holding an input",
                              note="--dicom FOLDER --overwrite where FOLDER holds someone's notes"),
    "batch_id_parent.csv": Case("batch_id_parent.csv", {"reconstruct_batch": ("InputError", "is a path")},
                                "batch id that is a path", note="id ../victim: would write beside --output"),
    "batch_id_absolute.csv": Case("batch_id_absolute.csv", {"reconstruct_batch": ("InputError", "is a path")},
                                  "batch id that is a path", note="id /tmp/victim"),
    "batch_id_dot.csv": Case("batch_id_dot.csv", {"reconstruct_batch": ("InputError", "starts with '.'")},
                             "batch id that is a path", note="id .. (the parent folder)"),
    "out_fsize_nifti": Case("fsize/out.nii", {"write_ct": ("OutputError", "truncated")},
                            "write that fails without an error", simulate="file_size_limit",
                            note="a file-size limit stops ITK's NIfTI writer half-way; it only prints NWAD"),
    # silently wrong data
    "ct_truncated.nii": Case("ct_truncated.nii", _ct(("InputError", "truncated")), "truncated NIfTI",
                             note="cut at half its voxels"),
    "ct_truncated.nii.gz": Case("ct_truncated.nii.gz", _ct(("InputError", "truncated")), "truncated NIfTI",
                                note="a big enough volume that its gzip stream, cut, still starts with the header"),
    "rg_truncated.nii": Case("rg_truncated.nii", _rg("InputError", "truncated"), "truncated NIfTI"),
    "ct_vox_offset_nan.nii": Case("ct_vox_offset_nan.nii", _ct(("InputError", "vox_offset")),
                                  "NIfTI header lying about its data"),
    "ct_qform_nan.nii": Case("ct_qform_nan.nii", _ct(("InputError", "qform")), "NIfTI header lying about its data",
                             note="qform_code 1 with a NaN quaternion: an oblique volume"),
    "ct_nrrd_fifo.nhdr": Case("ct_nrrd_fifo.nhdr", _ct(("InputError", "FIFO"), prepare=False),
                              "detached data file that is not a file beside its header"),
    "ct_nrrd_dev_zero.nhdr": Case("ct_nrrd_dev_zero.nhdr", _ct(("InputError", "outside the header's folder"),
                                                               prepare=False),
                                  "detached data file that is not a file beside its header",
                                  note="data file /dev/zero: endless zeros read as voxels (a memory bomb too)"),
    "ct_nrrd_parent.nhdr": Case("detached/ct_nrrd_parent.nhdr", _ct(("InputError", "outside the header's folder"),
                                                                      prepare=False),
                                "detached data file that is not a file beside its header",
                                note="data file ../ct_raw_outside.raw"),
    "ct_mhd_executable.mhd": Case("ct_mhd_executable.mhd", _ct(("InputError", "outside the header's folder"),
                                                               prepare=False),
                                  "detached data file that is not a file beside its header",
                                  note="ElementDataFile = /bin/sh"),
    "ct_nrrd_list.nhdr": Case("ct_nrrd_list.nhdr", _ct(("InputError", "several data files"), prepare=False),
                              "detached data file that is not a file beside its header"),
    "ct_dicom_two_patients": Case("ct_dicom_two_patients", _ct(("InputError", "mixes 2 patients")),
                                  "DICOM series that is not one upright scan"),
    "ct_dicom_tilted": Case("ct_dicom_tilted", _ct(("InputError", "gantry tilt")),
                            "DICOM series that is not one upright scan", note=f"{TILT_DEGREES:.0f}° gantry tilt"),
    "ct_dicom_spacing_zero": Case("ct_dicom_spacing_zero", _ct(("InputError", "invalid PixelSpacing")),
                                  "DICOM series that is not one upright scan"),
    "ct_dicom_slope_huge": Case("ct_dicom_slope_huge", _ct(("InputError", "rescale slope")),
                                "DICOM series that is not one upright scan", note="RescaleSlope 1e30"),
    # memory bombs: refused from headers and file sizes, before allocating
    "ct_nifti_short_bomb.nii": Case("ct_nifti_short_bomb.nii", _ct(("InputError", "truncated")), "memory bomb",
                                    note="a header of 512 × 512 × 1500 int16 (750 MiB) in 1.4 KB"),
    "ct_nifti_float64_bomb.nii": Case("ct_nifti_float64_bomb.nii", _ct(("InputError", "too large to read")),
                                      "memory bomb", note="4096² × 24 float64: within the voxel limit, 6.4 GB to read"),
    "ct_dicom_rows_bomb": Case("ct_dicom_rows_bomb", _ct(("InputError", "declares a 2048 × 2048 image")),
                               "memory bomb", note="Rows and Columns 2048 over 16² pixel data"),
    "b_module_bomb.pt": Case("b_module_bomb.pt", _weights("layers (modules)"), "memory bomb",
                             note="a few KB recording a CDM of 250,000 residual blocks"),
    "w_zip_bomb.pt": Case("w_zip_bomb.pt", {"safe_load": ("WeightsError", "unpack to"), **_weights("unpack to")},
                          "memory bomb", note=f"a torch.save archive re-zipped with deflate: {ZIP_BOMB_MIB} MiB of "
                                              "zeros in a few hundred KB"),
    # weights and manifests that are not what they say
    "b_manifest_lies": Case("b_manifest_lies/model.pt", _weights("sha256 mismatch"), "manifest that lies",
                            note="a manifest.json beside the bundle records another sha256"),
    "b_manifest_nested": Case("b_manifest_nested/model.pt", _weights("nested too deeply"), "manifest that lies",
                              note="manifest.json nested 100,000 levels deep"),
    "b_manifest_int_sha": Case("b_manifest_int_sha/model.pt", _weights("not a sha256"), "manifest that lies",
                               note="sha256 recorded as an integer"),
    # tracebacks and messages
    "rg_j2k_garbage.dcm": Case("rg_j2k_garbage.dcm", _rg("InputError", "cannot decode the JPEG 2000"),
                               "undecodable compressed image",
                               note="JPEG 2000 transfer syntax, a codestream header then garbage: pydicom logged a "
                                    "traceback and GDCM's codec 14 lines on descriptor 2"),
    "rg_j2k_garbage.j2k": Case("rg_j2k_garbage.j2k", _rg("InputError", "cannot decode image"),
                               "undecodable compressed image", note="the same codestream as a .j2k file"),
    "ct_dicom_j2k_garbage": Case("ct_dicom_j2k_garbage", _ct(("InputError", "compressed pixel data cannot be decoded")),
                                 "undecodable compressed image", note="one slice's JPEG 2000 data is garbage"),
    "rg_frames_negative.dcm": Case("rg_frames_negative.dcm",
                                   _rg("InputError", "NumberOfFrames -1 is not a positive frame count"),
                                   "self-contradicting message",
                                   note="was: 'would decode to 0 MiB (0 frame(s) …; at most 256 MiB), refused'"),
}
MANIFEST.update(ISSUE21_MANIFEST)
ISSUE21_ITEMS = (
    "output folder holding an input", "batch id that is a path", "write that fails without an error",
    "truncated NIfTI", "NIfTI header lying about its data", "detached data file that is not a file beside its header",
    "DICOM series that is not one upright scan", "memory bomb", "manifest that lies", "undecodable compressed image",
    "self-contradicting message",
)

# Every item of issue 5's "bad input" list; the test checks each is covered by at least one case.
ISSUE_ITEMS = (
    "truncated DICOM", "DICOM without pixel data", "DICOM series with missing slices",
    "DICOM series with duplicated slices", "inconsistent slice spacing", "CT that is a 2D image",
    "MR volume passed as CT", "NaN/inf voxels", "empty folder", "folder with two series", "RGB radiograph",
    "RGBA radiograph", "16-bit radiograph", "float radiograph", "MONOCHROME1 radiograph", "radiograph 1×1",
    "radiograph 10000×10000", "PA and lateral swapped", "PA and lateral identical",
    "non-image file with an image extension", "path that does not exist", "file without read permission",
    "output folder that does not exist", "output folder not writable", "full disk",
)

# The classes of issue 12; the test checks each is covered by at least one case.
ISSUE12_ITEMS = (
    "non-UTF-8 file name", "FIFO or other non-regular file", "traceback on a malformed header", "memory bomb",
    "output that is an input", "output that appears while computing", "duplicate case ids",
    "evaluate --overwrite with a bad checkpoint", "garbage geometry", "image read the wrong way",
    "DICOM that is not a radiograph", "broken series", "output name the writer mishandled",
    "library message leaking", "library warnings in our words",
)

# Reference files that are *valid*: the CLI tests use them as the other view / a good CT.
GOOD_FILES = ("good_pa.png", "good_lat.png", "good_ct.nii.gz", "pair_pa.png", "pair_lat.png")
MARKER_NAME = "CODE_WAS_EXECUTED"  # created only if a weights payload ran


# ------------------------------------------------------------------------------------------------ synthetic data


def synthetic_ct_hu(slices: int = SLICES) -> np.ndarray:
    """``(slices, ROWS, COLS)`` HU: air, an elliptic body (40 HU), two lungs (−800 HU) and a spine (700 HU)."""
    y, x = np.mgrid[0:ROWS, 0:COLS].astype(np.float64)
    cy, cx = (ROWS - 1) / 2, (COLS - 1) / 2
    body = ((y - cy) / 6.5) ** 2 + ((x - cx) / 7.5) ** 2 <= 1
    lungs = (((y - cy + 0.5) / 3.5) ** 2 + ((np.abs(x - cx) - 3.5) / 2.2) ** 2) <= 1
    spine = ((y - cy - 4.5) ** 2 + (x - cx) ** 2) <= 2.0
    plane = np.where(body, 40.0, -1000.0)
    plane[lungs & body] = -800.0
    plane[spine] = 700.0
    return np.repeat(plane[None], slices, axis=0) + np.arange(slices)[:, None, None]  # slices differ slightly


def synthetic_views(side: int = RADIOGRAPH_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """A left–right symmetric PA-like and an asymmetric lateral-like ``(side, side)`` image in [0, 1].

    PA: a bright trunk with two dark lungs and a central spine. Lateral: one dark lung field in front of a
    spine at the posterior (right-hand) side, as displayed in the project's convention.
    """
    y, x = (np.mgrid[0:side, 0:side] + 0.5) / side
    trunk = (((x - 0.5) / 0.42) ** 2 + ((y - 0.55) / 0.45) ** 2 <= 1).astype(np.float64)
    pa = 0.6 * trunk
    for cx in (0.3, 0.7):
        pa -= 0.35 * ((((x - cx) / 0.13) ** 2 + ((y - 0.45) / 0.25) ** 2) <= 1)
    pa += 0.35 * (np.abs(x - 0.5) < 0.04) * trunk
    lat = 0.6 * (((x - 0.5) / 0.35) ** 2 + ((y - 0.55) / 0.45) ** 2 <= 1)
    lat -= 0.3 * ((((x - 0.45) / 0.2) ** 2 + ((y - 0.45) / 0.25) ** 2) <= 1)
    lat += 0.35 * (np.abs(x - 0.78) < 0.05) * (np.abs(y - 0.55) < 0.4)
    return np.clip(pa + 0.05, 0, 1), np.clip(lat + 0.05, 0, 1)


# ----------------------------------------------------------------------------------------------------- DICOM


def _uid(*parts: object) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(prefix=None, entropy_srcs=[str(p) for p in parts])  # deterministic "2.25.…" UID


def _dicom(path: Path, pixels: np.ndarray | None, *, modality: str = "CT", sop_class: str | None = None,
           photometric: str = "MONOCHROME2", extra: dict | None = None, uid_seed: str = "") -> Path:
    """Write one uncompressed little-endian DICOM file (pixels uint16, or none for a header-only file)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

    sop_class = sop_class or {"CT": CTImageStorage, "MR": MRImageStorage}.get(modality, "1.2.840.10008.5.1.4.1.1.1")
    instance = _uid(uid_seed, path.name, "sop")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop_class, instance, modality
    ds.PatientName, ds.PatientID = "Corpus^Bad", "BAD-0001"
    ds.StudyInstanceUID = _uid(uid_seed, "study")
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    if pixels is not None:
        pixels = np.ascontiguousarray(pixels, dtype=np.uint16)
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_ct_series(folder: Path, hu: np.ndarray, *, positions_mm=None, modality: str = "CT",
                    with_pixels: bool = True, series: str = "A") -> list[Path]:
    """An axial series, one file per slice, stored as ``HU − RescaleIntercept`` (uint16)."""
    folder.mkdir(parents=True, exist_ok=True)
    positions = list(positions_mm) if positions_mm is not None else [k * SLICE_MM for k in range(hu.shape[0])]
    series_uid = _uid(folder.name, series, "series")
    paths = []
    for k, plane in enumerate(hu):
        stored = np.clip(np.round(plane - RESCALE_INTERCEPT), 0, 65535)
        extra = {
            "SeriesInstanceUID": series_uid, "FrameOfReferenceUID": _uid(folder.name, "frame"),
            "InstanceNumber": k + 1, "ImagePositionPatient": [0.0, 0.0, -float(positions[k])],
            "ImageOrientationPatient": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], "PixelSpacing": [PIXEL_MM, PIXEL_MM],
            "SliceThickness": SLICE_MM, "RescaleIntercept": RESCALE_INTERCEPT, "RescaleSlope": 1.0,
        }
        name = f"{series}{k + 1:03d}.dcm"
        paths.append(_dicom(folder / name, stored if with_pixels else None, modality=modality, extra=extra,
                            uid_seed=f"{folder.name}/{series}"))
    return paths


def _truncate(path: Path, keep_bytes: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep_bytes])


def _pixel_data_offset(path: Path) -> int:
    """Byte offset of the first pixel of ``path`` (end of the PixelData element header)."""
    data = path.read_bytes()
    tag = struct.pack("<HH", 0x7FE0, 0x0010)
    return data.rindex(tag) + 12  # tag (4) + VR "OW" (2) + reserved (2) + length (4)


# ------------------------------------------------------------------------------------------------------ images


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose IHDR claims ``width × height`` 8-bit grey but holds one tiny IDAT: a few dozen bytes."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def _write_images(out: Path) -> None:
    from PIL import Image

    pa, lat = synthetic_views()
    grey8 = (pa * 255).round().astype(np.uint8)
    Image.fromarray(grey8).save(out / "good_pa.png")
    Image.fromarray((lat * 255).round().astype(np.uint8)).save(out / "good_lat.png")
    Image.fromarray(grey8).save(out / "pair_pa.png")
    Image.fromarray(grey8).save(out / "rg_no_permission.png")  # valid: only the (simulated) permission is wrong
    Image.fromarray((lat * 255).round().astype(np.uint8)).save(out / "pair_lat.png")
    # colour: a tinted copy of the PA (red channel brighter) — luma must come out, not one channel
    rgb = np.stack([np.clip(grey8 * 1.2, 0, 255), grey8, grey8 * 0.5], axis=-1).astype(np.uint8)
    Image.fromarray(rgb, "RGB").save(out / "rg_rgb.png")
    rgba = np.concatenate([rgb, np.full(grey8.shape + (1,), 128, np.uint8)], axis=-1)
    Image.fromarray(rgba, "RGBA").save(out / "rg_rgba.png")
    Image.fromarray((pa * 40000 + 1000).astype(np.uint16)).save(out / "rg_16bit.png")  # mode I;16
    Image.fromarray((pa * 3.5 - 1.25).astype(np.float32), "F").save(out / "rg_float.tif")
    nan = (pa * 1.0).astype(np.float32)
    nan[5, 7] = np.nan
    Image.fromarray(nan, "F").save(out / "rg_nan.tif")
    Image.fromarray(np.full((1, 1), 200, np.uint8)).save(out / "rg_1x1.png")
    Image.fromarray(np.full(grey8.shape, 77, np.uint8)).save(out / "rg_blank.png")
    _png_header_only(out / "rg_10000.png", 10000, 10000)
    _png_header_only(out / "rg_40000.png", 40000, 40000)
    (out / "rg_not_image.png").write_text("This is a radiology report, not an image.\n" * 20)
    (out / "rg_not_image.dcm").write_text("Not DICOM either.\n" * 20)
    Image.fromarray(grey8).save(out / "rg_truncated.png")
    _truncate(out / "rg_truncated.png", (out / "rg_truncated.png").stat().st_size // 2)

    # DICOM radiographs: MONOCHROME1 stores attenuation as *low* values → the reader must invert
    stored = np.round((1.0 - pa) * 4000).astype(np.uint16)
    dx = {"RescaleIntercept": 0.0, "RescaleSlope": 1.0}
    _dicom(out / "rg_monochrome1.dcm", stored, modality="DX", photometric="MONOCHROME1", extra=dx)
    _dicom(out / "rg_dicom_truncated.dcm", np.round(pa * 4000).astype(np.uint16), modality="DX", extra=dx)
    path = out / "rg_dicom_truncated.dcm"
    _truncate(path, _pixel_data_offset(path) + grey8.size)  # half the 16-bit pixels
    _dicom(out / "rg_dicom_no_pixels.dcm", None, modality="SR", sop_class="1.2.840.10008.5.1.4.1.1.88.11")


def _write_cts(out: Path) -> None:
    import SimpleITK as sitk

    hu = synthetic_ct_hu()

    def nifti(name: str, array: np.ndarray) -> None:
        image = sitk.GetImageFromArray(array.astype(np.float32))
        image.SetSpacing((PIXEL_MM, PIXEL_MM, SLICE_MM)[: image.GetDimension()])
        sitk.WriteImage(image, str(out / name), useCompression=True)

    nifti("good_ct.nii.gz", hu)
    nifti("ct_no_permission.nii.gz", hu)  # valid: only the (simulated) permission is wrong
    nan, inf = hu.copy(), hu.copy()
    nan[3, 8, 8] = np.nan
    inf[2, 4, 4] = np.inf
    nifti("ct_nan.nii.gz", nan)
    nifti("ct_inf.nii.gz", inf)
    nifti("ct_mr_values.nii.gz", (hu + 1000.0) * 0.8)  # MR-like: 0 … 1360, no air at −1000
    nifti("ct_2d.nii.gz", hu[0])
    sitk.WriteImage(sitk.Cast(sitk.GetImageFromArray(np.clip(hu[0] + 1024, 0, 255).astype(np.uint8)),
                              sitk.sitkUInt8), str(out / "ct_2d.png"))
    rgb = sitk.GetImageFromArray(np.stack([hu, hu, hu], axis=-1).astype(np.float32), isVector=True)
    sitk.WriteImage(rgb, str(out / "ct_rgb.nrrd"), useCompression=True)
    (out / "ct_not_image.nii.gz").write_text("not a NIfTI file\n" * 30)
    rg_volume = sitk.GetImageFromArray(np.stack([synthetic_views()[0]] * 4).astype(np.float32))
    sitk.WriteImage(rg_volume, str(out / "rg_volume.nii.gz"), useCompression=True)

    files = write_ct_series(out / "ct_dicom_truncated", hu)
    _truncate(files[3], _pixel_data_offset(files[3]) + ROWS * COLS)  # half of the slice's pixels
    files = write_ct_series(out / "ct_dicom_truncated_header", hu)
    _truncate(files[3], 200)  # preamble + file meta only
    write_ct_series(out / "ct_dicom_no_pixels", hu, with_pixels=False)
    files = write_ct_series(out / "ct_dicom_missing_slice", hu)
    files[4].unlink()
    files = write_ct_series(out / "ct_dicom_duplicated_slice", hu)
    duplicate = write_ct_series(out / "ct_dicom_duplicated_slice", hu[2:3], positions_mm=[2 * SLICE_MM],
                                series="A_dup")  # same series, same position, another file
    _same_series(duplicate[0], files[0])
    uneven = [0.0, 2.0, 4.0, 6.0, 8.6, 10.6, 12.6, 14.6]  # one 2.6 mm gap among 2 mm gaps: 30 % off, < 1.5×
    write_ct_series(out / "ct_dicom_uneven_spacing", hu, positions_mm=uneven)
    write_ct_series(out / "ct_dicom_single_slice", hu[:1])
    write_ct_series(out / "ct_dicom_mr", (hu + 1000.0) * 0.8 - 1024.0, modality="MR")
    (out / "ct_empty_folder").mkdir()
    other = out / "ct_folder_without_dicom"
    other.mkdir()
    (other / "notes.txt").write_text("scan notes\n")
    (other / "image.dcm").write_text("not DICOM\n" * 10)
    write_ct_series(out / "ct_two_series", hu, series="A")
    write_ct_series(out / "ct_two_series", hu[:6] + 5.0, series="B")


def _same_series(path: Path, reference: Path) -> None:
    """Give ``path`` the series UID of ``reference`` (so the duplicate slice belongs to the same series)."""
    import pydicom

    ds = pydicom.dcmread(path)
    ds.SeriesInstanceUID = pydicom.dcmread(reference, stop_before_pixels=True).SeriesInstanceUID
    ds.save_as(path, enforce_file_format=True)


# ---------------------------------------------------------------------------------------------------- weights


class CreatesMarkerWhenUnpickled:
    """A hostile payload: unpickling it calls ``open(marker, "w")``, creating the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _write_weights(out: Path) -> dict[str, str]:
    """The weights cases; returns ``{file name: sha256}`` of the untampered files (the corpus's weights manifest)."""
    import hashlib

    import torch

    marker = str((out / MARKER_NAME).resolve())
    payload = {"format": "dctnet-training-checkpoint", "models": {"x": CreatesMarkerWhenUnpickled(marker)}}
    torch.save(payload, out / "w_code.pt")
    (out / "w_code.pkl").write_bytes(pickle.dumps({"weights": CreatesMarkerWhenUnpickled(marker)}, protocol=4))
    state = {"conv.weight": torch.arange(48, dtype=torch.float32).reshape(4, 3, 2, 2), "conv.bias": torch.zeros(4)}
    checkpoint = {"format": "dctnet-training-checkpoint", "format_version": 1, "kind": "gan",
                  "config": {"model": {"channels": 16}}, "models": {"g": state}}
    torch.save(checkpoint, out / "w_truncated.pt")
    _truncate(out / "w_truncated.pt", (out / "w_truncated.pt").stat().st_size // 2)
    torch.save(checkpoint, out / "w_tampered.pt")
    digest = hashlib.sha256((out / "w_tampered.pt").read_bytes()).hexdigest()
    data = bytearray((out / "w_tampered.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / "w_tampered.pt").write_bytes(bytes(data))
    torch.save(state, out / "w_not_checkpoint.pt")
    (out / "w_text.pt").write_text("these are not weights\n" * 10)
    return {"w_tampered.pt": digest}


# ------------------------------------------------------------------------------------------------- issue 12


def _write_issue12(out: Path) -> None:
    """The files of issue 12's classes (see ``ISSUE12_MANIFEST``)."""
    from PIL import Image

    hu = synthetic_ct_hu()
    pa, _ = synthetic_views()
    grey8 = (pa * 255).round().astype(np.uint8)
    # non-UTF-8 names: valid files whose only defect is the name
    shutil.copy(out / "good_ct.nii.gz", out / f"ct_caf{LATIN1}.nii.gz")
    shutil.copy(out / "good_pa.png", out / f"rg_caf{LATIN1}.png")
    files = write_ct_series(out / "ct_dicom_latin1_name", hu)
    files[2].rename(files[2].with_name(f"A003{LATIN1}.dcm"))
    (out / f"latin1_{LATIN1}").mkdir()
    # FIFOs (reading one blocks forever)
    for name in ("rg_fifo.png", "ct_fifo.nii.gz", "w_fifo.pt"):
        os.mkfifo(out / name)
    write_ct_series(out / "ct_dicom_fifo", hu)
    os.mkfifo(out / "ct_dicom_fifo" / "A009.dcm")
    # malformed headers
    _dicom(out / "rg_frames_text.dcm", np.round(pa * 4000), modality="DX", extra={"NumberOfFrames": 1})
    _patch_value(out / "rg_frames_text.dcm", (0x0028, 0x0008), b"ab")  # IS "1 " → "ab"
    files = write_ct_series(out / "ct_dicom_ipp_two", hu)
    _edit_dicom(files[3], ImagePositionPatient=[0.0, 0.0])
    files = write_ct_series(out / "ct_dicom_ipp_text", hu)
    _patch_value(files[3], (0x0020, 0x0032), None)  # DS "0.0\\0.0\\-6.0" → letters of the same length
    for path in write_ct_series(out / "ct_dicom_iop_three", hu):
        _edit_dicom(path, ImageOrientationPatient=[1.0, 0.0, 0.0])
    _write_bundles(out)
    # memory bombs: headers that promise gigabytes
    _deflated_bomb(out / "rg_deflate_bomb.dcm", frames=40, side=2048)
    _nifti_header_only(out / "rg_nifti_20000.nii", (20000, 20000), datatype=2, bitpix=8)
    _nifti_header_only(out / "ct_1200.nii", (1200, 1200, 1200), datatype=4, bitpix=16)
    # data loss
    shutil.copy(out / "good_ct.nii.gz", out / "out_is_input.nii.gz")
    (out / "appear").mkdir()
    for site in ("siteA", "siteB"):
        (out / "src_same_stem" / site / "imgs").mkdir(parents=True)
        shutil.copy(out / "good_ct.nii.gz", out / "src_same_stem" / site / "imgs" / "case001.nii.gz")
    (out / "src_twin_nifti").mkdir()
    shutil.copy(out / "good_ct.nii.gz", out / "src_twin_nifti" / "case002.nii.gz")
    _nifti(out / "src_twin_nifti" / "case002.nii", hu, compress=False)
    # silent garbage
    for name, value in (("zero", 0.0), ("nan", float("nan")), ("negative", -PIXEL_MM)):
        _nifti(out / f"ct_pixdim_{name}.nii", hu, compress=False)
        _patch_nifti_f4(out / f"ct_pixdim_{name}.nii", 80, value)  # pixdim[1]: the x voxel size
    _nifti(out / "ct_sform_scale.nii", hu, compress=False)
    _patch_nifti_f4(out / "ct_sform_scale.nii", 280, 2.0 * PIXEL_MM)  # srow_x[0]: 3 mm where pixdim says 1.5
    write_ct_series(out / "ct_dicom_two_slices", hu[:2])
    Image.fromarray(np.tile(grey8[:16, :], (1, 171))[:, :8192]).save(out / "rg_strip.png")  # 16 × 8192
    upright = np.vstack([grey8, grey8[:12]])  # 60 × 48: its orientation shows in its shape too
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(out / "rg_exif_rotated.jpg", quality=95,
                                                                        exif=exif)
    np.save(out / "rg_exif_upright.npy", upright)  # what the reader must return (×255)
    _palette_dicom(out / "rg_palette.dcm", grey8)
    _dicom(out / "rg_dicom_seg.dcm", np.round(pa * 4000), modality="SEG", sop_class="1.2.840.10008.5.1.4.1.1.66.4")
    _dicom(out / "rg_dicom_ct.dcm", np.round(pa * 4000), modality="CT")
    _dicom(out / "rg_dicom_mr.dcm", np.round(pa * 4000), modality="MR")
    files = write_ct_series(out / "ct_dicom_dangling_link", hu)
    os.symlink("A004_deleted.dcm", out / "ct_dicom_dangling_link" / "A004b.dcm")
    files = write_ct_series(out / "ct_dicom_self_link", hu)
    os.symlink("A009.dcm", out / "ct_dicom_self_link" / "A009.dcm")
    _enhanced_ct(out / "ct_dicom_enhanced" / "enhanced.dcm", hu)
    # messages
    _dicom(out / "rg_dicom_bad_is.dcm", np.round(pa * 4000), modality="DX", extra={"InstanceNumber": 1})
    _patch_value(out / "rg_dicom_bad_is.dcm", (0x0020, 0x0013), b"ab")  # IS "1 " → "ab": pydicom warns
    with zipfile.ZipFile(out / "w_zip.pt", "w") as archive:
        archive.writestr("notes.txt", "a zip archive, not a checkpoint\n")
    import warnings

    import torch

    with warnings.catch_warnings():  # torch ≥ 2.9 calls TorchScript deprecated; it still writes such archives
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(out / "w_torchscript.pt"))


def _write_issue21(out: Path) -> None:
    """The files of issue 21's classes (see ``ISSUE21_MANIFEST``)."""
    hu = synthetic_ct_hu()
    # data loss: --dicom folders that hold what the run reads or writes, or that DCTNet did not write
    (out / "dicom_holds_input").mkdir()
    shutil.copy(out / "good_pa.png", out / "dicom_holds_input" / "pa.png")
    (out / "dicom_holds_output").mkdir()
    shutil.copy(out / "good_ct.nii.gz", out / "dicom_holds_output" / "ct.nii.gz")  # an earlier result
    (out / "dicom_foreign").mkdir()
    (out / "dicom_foreign" / "notes.txt").write_text("someone's notes, not a DICOM series\n")
    for name, case_id in (("parent", "../victim"), ("absolute", "/tmp/victim"), ("dot", "..")):
        (out / f"batch_id_{name}.csv").write_text(f"id,pa,lat\n{case_id},good_pa.png,good_lat.png\n")
    (out / "fsize").mkdir()
    _nifti(out / "fsize" / "out.nii", hu, compress=False)  # the earlier result the failed write must keep
    # truncated NIfTI: the header promises more voxels than the file holds
    _nifti(out / "ct_truncated.nii", hu, compress=False)
    _truncate(out / "ct_truncated.nii", 352 + hu.size * 4 // 2)
    noise = np.random.default_rng(21).normal(0.0, 300.0, (SLICES, 24, 24)).astype(np.float32)  # compresses badly
    noise[0] = -1000.0
    _nifti(out / "ct_truncated.nii.gz", noise)
    _truncate(out / "ct_truncated.nii.gz", (out / "ct_truncated.nii.gz").stat().st_size // 2)
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(synthetic_views()[0].astype(np.float32)), str(out / "rg_truncated.nii"))
    _truncate(out / "rg_truncated.nii", 352 + RADIOGRAPH_SIDE ** 2 * 4 // 2)
    _nifti(out / "ct_vox_offset_nan.nii", hu, compress=False)
    _patch_nifti_f4(out / "ct_vox_offset_nan.nii", 108, float("nan"))
    _nifti(out / "ct_qform_nan.nii", hu, compress=False)
    data = bytearray((out / "ct_qform_nan.nii").read_bytes())
    data[252:254] = struct.pack("<h", 1)  # qform_code 1: the quaternion is to be used …
    data[256:260] = struct.pack("<f", float("nan"))  # … and quatern_b is NaN
    (out / "ct_qform_nan.nii").write_bytes(bytes(data))
    # NRRD / MetaImage headers whose data file is not a file beside them
    raw = np.round(hu).astype("<i2")
    raw.tofile(out / "ct_raw_outside.raw")
    (out / "detached").mkdir()
    os.mkfifo(out / "ct_nrrd_fifo.raw")
    for name, data_file in (("ct_nrrd_fifo.nhdr", "ct_nrrd_fifo.raw"), ("ct_nrrd_dev_zero.nhdr", "/dev/zero"),
                            ("detached/ct_nrrd_parent.nhdr", "../ct_raw_outside.raw"), ("ct_nrrd_list.nhdr", "LIST")):
        _nrrd_header(out / name, raw.shape, data_file)
    (out / "ct_mhd_executable.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = {} {} {}\nElementSpacing = 1 1 1\nElementType = MET_SHORT\n"
        "ElementDataFile = /bin/sh\n".format(*raw.shape[::-1]))
    # DICOM series that are not one upright scan of one patient
    files = write_ct_series(out / "ct_dicom_two_patients", hu)
    for path in files[SLICES // 2:]:
        _edit_dicom(path, PatientID="ANOTHER-PATIENT")
    drift = np.tan(np.radians(TILT_DEGREES)) * SLICE_MM
    for k, path in enumerate(write_ct_series(out / "ct_dicom_tilted", hu)):
        _edit_dicom(path, ImagePositionPatient=[0.0, k * drift, -k * SLICE_MM])
    for path in write_ct_series(out / "ct_dicom_spacing_zero", hu):
        _edit_dicom(path, PixelSpacing=[0.0, 0.0])
    for path in write_ct_series(out / "ct_dicom_slope_huge", hu):
        _edit_dicom(path, RescaleSlope=1e30)
    # memory bombs
    _nifti_header_only(out / "ct_nifti_short_bomb.nii", (512, 512, 1500), datatype=4, bitpix=16)
    with open(out / "ct_nifti_short_bomb.nii", "ab") as handle:
        handle.write(bytes(1024))  # 1.4 KB in all, as in the report
    _nifti_header_only(out / "ct_nifti_float64_bomb.nii", (4096, 4096, 24), datatype=64, bitpix=64)
    for path in write_ct_series(out / "ct_dicom_rows_bomb", hu):
        _edit_dicom(path, Rows=2048, Columns=2048)
    _write_issue21_weights(out)
    _write_issue21_messages(out, hu)


def _write_issue21_messages(out: Path, hu: np.ndarray) -> None:
    """Files whose refusal came with a traceback, codec chatter or a message contradicting itself."""
    pa, _ = synthetic_views()
    (out / "rg_j2k_garbage.j2k").write_bytes(j2k_garbage(RADIOGRAPH_SIDE))
    _dicom(out / "rg_j2k_garbage.dcm", np.round(pa * 4000), modality="DX")
    _j2k_pixel_data(out / "rg_j2k_garbage.dcm", j2k_garbage(RADIOGRAPH_SIDE))
    files = write_ct_series(out / "ct_dicom_j2k_garbage", hu)
    _j2k_pixel_data(files[3], j2k_garbage(COLS))
    _dicom(out / "rg_frames_negative.dcm", np.round(pa * 4000), modality="DX", extra={"NumberOfFrames": 1})
    _patch_value(out / "rg_frames_negative.dcm", (0x0028, 0x0008), b"-1")  # IS "1 " → "-1"


def j2k_garbage(side: int, seed: int = 21) -> bytes:
    """A JPEG 2000 codestream: its start (SOC) and size (SIZ: ``side``² px, one 8-bit component), then garbage."""
    siz = struct.pack(">HHIIIIIIIIHBBB", 41, 0, side, side, 0, 0, side, side, 0, 0, 1, 7, 1, 1)
    return b"\xff\x4f\xff\x51" + siz + np.random.default_rng(seed).integers(0, 256, 600, dtype=np.uint8).tobytes()


def _j2k_pixel_data(path: Path, codestream: bytes) -> None:
    """Give a written DICOM file the JPEG 2000 (lossless) transfer syntax and ``codestream`` as its one frame."""
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([codestream])
    ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    ds.save_as(path, enforce_file_format=True)


def _write_issue21_weights(out: Path) -> None:
    """Bundles asking for too much, and manifests that do not hold what they say."""
    import torch

    write_module_bomb(out / "b_module_bomb.pt")
    stored = out / "w_zip_bomb_stored.pt"
    torch.save({"weights": torch.zeros(ZIP_BOMB_MIB << 18)}, stored)  # float32: 2**18 values a MiB
    with zipfile.ZipFile(stored) as source, zipfile.ZipFile(out / "w_zip_bomb.pt", "w") as target:
        for info in source.infolist():
            packed = zipfile.ZipInfo(info.filename)
            packed.compress_type = zipfile.ZIP_DEFLATED
            with source.open(info) as reader, target.open(packed, "w") as writer:
                shutil.copyfileobj(reader, writer, 1 << 20)
    stored.unlink()
    manifests = {"b_manifest_lies": {"file": "model.pt", "sha256": "0" * 64},
                 "b_manifest_nested": None, "b_manifest_int_sha": {"file": "model.pt", "sha256": 12345}}
    for folder, manifest in manifests.items():
        (out / folder).mkdir()
        shutil.copy(out / "b_not_tensor.pt", out / folder / "model.pt")
        text = json.dumps(manifest) if manifest is not None else "[" * 100_000 + "]" * 100_000
        (out / folder / "manifest.json").write_text(text)


def write_module_bomb(path: Path) -> None:
    """A bundle of a few KB recording a CDM of 250,000 residual blocks (no weights)."""
    import torch

    bundle = {"format": "dctnet-model-bundle", "format_version": 1, "image_size": 128, "sampling_steps": 4,
              "generator": {"preset": _BUNDLE_PRESET, "g_raw": {}, "g_bs": None}, "meta": {},
              "cdm": {"config": {"image_size": 128, "timesteps": 10, "sampling_steps": 4, "channels": [8, 8],
                                 "norm_groups": 4, "num_res_blocks": 250_000}, "state_dict": {}}}
    torch.save(bundle, path)


def _nrrd_header(path: Path, shape: tuple[int, ...], data_file: str) -> None:
    """A detached NRRD header of an int16 volume of ``shape`` (numpy order) whose voxels are in ``data_file``."""
    sizes = " ".join(str(n) for n in shape[::-1])
    path.write_text(f"NRRD0004\ntype: short\ndimension: 3\nsizes: {sizes}\nspacings: 1.5 1.5 2\nencoding: raw\n"
                    f"endian: little\ndata file: {data_file}\n\n")


def _nifti(path: Path, hu: np.ndarray, compress: bool = True) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(hu.astype(np.float32))
    image.SetSpacing((PIXEL_MM, PIXEL_MM, SLICE_MM))
    sitk.WriteImage(image, str(path), useCompression=compress)


def _patch_nifti_f4(path: Path, offset: int, value: float) -> None:
    """Overwrite one little-endian float32 of an uncompressed NIfTI-1 header."""
    data = bytearray(path.read_bytes())
    data[offset:offset + 4] = struct.pack("<f", value)
    path.write_bytes(bytes(data))


def _nifti_header_only(path: Path, size: tuple[int, ...], datatype: int, bitpix: int) -> None:
    """A 352-byte NIfTI-1 file whose header claims ``size`` voxels and that holds none of them."""
    dims = [len(size), *size] + [1] * (7 - len(size))
    header = bytearray(352)
    header[0:4] = struct.pack("<i", 348)
    header[40:56] = struct.pack("<8h", *dims)
    header[70:74] = struct.pack("<hh", datatype, bitpix)
    header[76:108] = struct.pack("<8f", 1.0, *([1.0] * 7))
    header[108:112] = struct.pack("<f", 352.0)
    header[252:256] = struct.pack("<hh", 1, 0)  # qform_code 1 (scanner), sform_code 0
    header[344:348] = b"n+1\0"
    path.write_bytes(bytes(header))


def _patch_value(path: Path, tag: tuple[int, int], value: bytes | None) -> None:
    """Overwrite the value bytes of one explicit-VR element in place (same length; ``None``: letters), as a
    broken writer would store them: pydicom itself refuses to write such values."""
    data = bytearray(path.read_bytes())
    start = data.index(struct.pack("<HH", *tag)) + 8  # tag (4) + VR (2) + length (2)
    length = struct.unpack("<H", data[start - 2:start])[0]
    value = value if value is not None else b"x" * length
    data[start:start + length] = value.ljust(length)[:length]
    path.write_bytes(bytes(data))


def _edit_dicom(path: Path, **values) -> None:
    """Set attributes of a written file as a broken scanner would (pydicom's value checks switched off)."""
    import pydicom
    from pydicom import config

    ds = pydicom.dcmread(path)
    with config.disable_value_validation():
        for key, value in values.items():
            setattr(ds, key, value)
        ds.save_as(path, enforce_file_format=True)


def _palette_dicom(path: Path, grey8: np.ndarray) -> None:
    """PALETTE COLOR: stored index i shows as grey level 255 − i, so the indices run opposite to the picture."""
    from pydicom.uid import ExplicitVRLittleEndian

    _dicom(path, None, modality="DX")
    import pydicom

    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns = grey8.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "PALETTE COLOR"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    table = (np.arange(255, -1, -1, dtype=np.uint16) * 257).astype("<u2").tobytes()  # 16-bit entries, reversed
    for offset in range(3):  # Red, Green, Blue: descriptor (0028,110x) US, data (0028,120x) OW
        ds.add_new((0x0028, 0x1101 + offset), "US", [256, 0, 16])
        ds.add_new((0x0028, 0x1201 + offset), "OW", table)
    ds.add_new((0x7FE0, 0x0010), "OB", (255 - grey8).astype(np.uint8).tobytes())
    ds.save_as(path, enforce_file_format=True)


def _enhanced_ct(path: Path, hu: np.ndarray) -> None:
    """One Enhanced CT Image Storage file holding all slices as frames (geometry in functional groups)."""
    path.parent.mkdir(parents=True)
    stored = np.clip(np.round(hu - RESCALE_INTERCEPT), 0, 65535).astype(np.uint16)
    _dicom(path, stored[0], modality="CT", sop_class="1.2.840.10008.5.1.4.1.1.2.1",
           extra={"SeriesInstanceUID": _uid("enhanced", "series")})
    import pydicom

    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = stored.shape[0]
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)


def _deflated_bomb(path: Path, frames: int, side: int) -> None:
    """A Deflated Explicit VR Little Endian DX file of ``frames`` zero frames of ``side``² × 16 bit.

    Written by streaming zeros through zlib (constant memory): about 1/1000 of the inflated size on disk.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    sop_class, instance = "1.2.840.10008.5.1.4.1.1.1.1", _uid(path.name, "sop")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, instance
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop_class, instance, "DX"
    ds.Rows = ds.Columns = side
    ds.NumberOfFrames, ds.SamplesPerPixel, ds.PhotometricInterpretation = frames, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    nbytes = frames * side * side * 2
    pixel_header = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, nbytes)
    head = DicomBytesIO()
    head.is_little_endian, head.is_implicit_VR = True, False
    write_file_meta_info(head, meta, enforce_standard=True)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    # after a full flush the compressor starts afresh, so one compressed MiB of zeros serves for every MiB
    mib_of_zeros = deflate.compress(bytes(1 << 20)) + deflate.flush(zlib.Z_FULL_FLUSH)
    with open(path, "wb") as handle:
        handle.write(b"\0" * 128 + b"DICM" + head.getvalue())
        start = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        handle.write(start.compress(body.getvalue() + pixel_header) + start.flush(zlib.Z_FULL_FLUSH))
        for _ in range(nbytes >> 20):
            handle.write(mib_of_zeros)
        handle.write(start.flush())


def _write_bundles(out: Path) -> None:
    """Model bundles whose recorded fields are broken (built without DCTNetLib: configs as plain dicts)."""
    import torch

    def bundle(**changes) -> dict:
        base = {"format": "dctnet-model-bundle", "format_version": 1, "cdm": None,
                "generator": {"preset": _BUNDLE_PRESET, "g_raw": {}, "g_bs": None},
                "image_size": 128, "sampling_steps": 4, "meta": {}}
        return {**base, **changes}

    cdm = {"config": {"image_size": 128, "timesteps": 10}, "state_dict": {}}
    torch.save(bundle(format_version="one"), out / "b_version_text.pt")
    torch.save(bundle(image_size="big"), out / "b_image_size_text.pt")
    torch.save(bundle(image_size=64), out / "b_image_size_mismatch.pt")
    torch.save(bundle(cdm=cdm, sampling_steps=0), out / "b_steps_zero.pt")
    torch.save(bundle(cdm=cdm, sampling_steps=20), out / "b_steps_over_t.pt")
    torch.save(bundle(generator={"preset": _BUNDLE_PRESET, "g_raw": {"conv.weight": [1.0, 2.0]}, "g_bs": None}),
               out / "b_not_tensor.pt")
    huge = {**_BUNDLE_PRESET, "generator": {"image_size": 128, "stem_channels": 1024, "growth_rate": 512}}
    torch.save(bundle(generator={"preset": huge, "g_raw": {}, "g_bs": None}), out / "b_huge_arch.pt")


# ------------------------------------------------------------------------------------------------------- main


def make_corpus(folder: str | os.PathLike) -> dict[str, Path]:
    """Write every corpus file into ``folder`` (created if missing) plus ``manifest.json``.

    Returns:
        case name → absolute path (for cases whose file deliberately does not exist, the path it would have).
    """
    out = Path(folder).resolve()
    out.mkdir(parents=True, exist_ok=True)
    _write_images(out)
    _write_cts(out)
    for name in ("read_only", "full"):  # output folders of the simulated cases; "full" holds an earlier result
        (out / name).mkdir(exist_ok=True)
    (out / "full" / "out.nii.gz").write_bytes((out / "good_ct.nii.gz").read_bytes())
    sha256 = _write_weights(out)
    _write_issue12(out)
    _write_issue21(out)
    manifest = {name: {**asdict(case), "expect": {k: list(v) for k, v in case.expect.items()}}
                for name, case in MANIFEST.items()}
    (out / "manifest.json").write_text(json.dumps({"cases": manifest, "sha256": sha256}, indent=1) + "\n")
    return {name: out / case.path for name, case in MANIFEST.items()}


def weights_sha256(folder: str | os.PathLike) -> dict[str, str]:
    """The sha256 manifest written by :func:`make_corpus` (file name → digest before tampering)."""
    return json.loads((Path(folder) / "manifest.json").read_text())["sha256"]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_corpus.py OUT_DIR")
    paths = make_corpus(sys.argv[1])
    total = sum(p.stat().st_size for p in Path(sys.argv[1]).rglob("*") if p.is_file() and not p.is_symlink())
    print(f"{len(paths)} cases, {total / 1024:.0f} KiB in {sys.argv[1]}")
