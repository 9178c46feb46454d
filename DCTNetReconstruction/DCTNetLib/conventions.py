"""Physical and array conventions shared by every module (see ``docs/conventions.md``).

Volumes
    numpy / torch arrays are ``(D, H, W)`` = (superior→inferior, anterior→posterior, patient right→left).
    In SimpleITK terms this is the image re-oriented with ``sitk.DICOMOrient(img, "LPI")``: index x grows
    towards the patient's Left, y towards Posterior, z towards Inferior; ``GetArrayFromImage`` returns (z, y, x).
    Batched volumes are ``(B, 1, D, H, W)``.

Radiographs
    ``(H, W)``, rows superior→inferior, values in [0, 1], bright = more attenuation (bone is white).
    PA view: beam posterior→anterior, projected along the A–P axis (axis 1); columns run patient right→left,
    i.e. the standard radiological display (patient's right on the viewer's left), no left–right flip.
    Lateral view (left lateral): beam right→left, projected along axis 2; columns run anterior→posterior
    (patient faces the viewer's left), the standard display of a lateral chest film.
    A pair is ``(B, 2, H, W)`` with channel 0 = PA, channel 1 = lateral.

Values
    Every function states its domain: HU, or "unit" = [0, 1] on the HU window below (:func:`hu_to_unit`,
    :func:`unit_to_hu`).

Seeds
    Per-case and per-sample random streams are seeded by :func:`derived_seed` from the run's seed and what they
    belong to, never by ``hash()`` or by the order in which a process meets them.
"""

from __future__ import annotations

import hashlib

# Axis indices of a (D, H, W) volume.
AXIS_SI = 0  # superior → inferior
AXIS_AP = 1  # anterior → posterior  (PA projection axis)
AXIS_RL = 2  # patient right → left   (lateral projection axis)

VIEW_PA = 0
VIEW_LAT = 1
VIEW_NAMES = ("PA", "LAT")

# HU window of X2CT-GAN / PerX2CT LIDC-IDRI preprocessing: clip to [-1024, 1476] (a 2500 HU span)
# and map linearly to [0, 1] (Ying et al. 2019, CVPR; code: kylekma/X2CT, data preprocessing notes).
HU_MIN = -1024.0
HU_MAX = 1476.0
HU_AIR = -1024.0
HU_PER_UNIT = HU_MAX - HU_MIN  # 2500 HU: a difference of unit values times this is a difference in HU

# X2CT-GAN data: 1 mm isotropic resample, 320³ crop/pad, resize to 128³ → 320 mm / 128 = 2.5 mm voxels.
RESAMPLE_SPACING_MM = 1.0
CROP_SIZE = 320
VOLUME_SIZE = 128
VOXEL_SPACING_MM = CROP_SIZE * RESAMPLE_SPACING_MM / VOLUME_SIZE  # 2.5 mm

# SimpleITK orientation code of the canonical (D, H, W) array order (x→L, y→P, z→I).
SITK_ORIENTATION = "LPI"

IMAGE_SIZE = 128  # radiographs are 128 × 128 (paper §3.1)
# The training detector: X2CT-GAN's Plastimatch DRRs fall on a 500 mm square (kylekma/X2CT CT2XRAY/xraypro.py,
# ``-z "500 500"``), which the model sees at IMAGE_SIZE² (3.9 mm a pixel). data.drr renders onto it and io.film maps
# real films onto it.
DETECTOR_MM = 500.0

# CT volume files, by ending (any case): what SimpleITK reads here (NIfTI, NRRD with attached or detached data,
# MetaImage with attached or detached data) and the single-file formats among them that are written (a detached
# header needs its data file beside it). ".nii.gz" comes before ".nii" so that a name's ending is found whole.
NIFTI_SUFFIXES = (".nii.gz", ".nii")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
HEADER_SUFFIXES = (*NRRD_SUFFIXES, ".mha", ".mhd")  # formats whose header may name a detached data file
VOLUME_READ_SUFFIXES = (*NIFTI_SUFFIXES, *HEADER_SUFFIXES)
VOLUME_WRITE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def strip_suffix(name: str, suffixes: tuple[str, ...]) -> str | None:
    """``name`` without the first of ``suffixes`` it ends with (any case: ``"CT.NII.GZ"`` → ``"CT"``), or None when
    it ends with none of them."""
    lowered = name.lower()
    return next((name[: -len(suffix)] for suffix in suffixes if lowered.endswith(suffix)), None)

# Datasets `dctnet prepare --dataset` reads: the two public ones of DCT-Net §3.1 (value → the name shown to a user,
# in the order the Slicer training module lists them) and "generic", any folder of CTs.
PAPER_DATASETS = {"lidc-idri": "LIDC-IDRI", "ctspine1k": "CTSpine1K"}
DATASETS = (*PAPER_DATASETS, "generic")


def hu_to_unit(hu, hu_min: float = HU_MIN, hu_max: float = HU_MAX):
    """Clip HU to ``[hu_min, hu_max]`` and map linearly to [0, 1]. Works on numpy arrays and torch tensors."""
    return ((hu - hu_min) / (hu_max - hu_min)).clip(0.0, 1.0)


def unit_to_hu(unit, hu_min: float = HU_MIN, hu_max: float = HU_MAX):
    """Inverse of :func:`hu_to_unit` on [0, 1] (values outside are clipped first). Numpy arrays and torch tensors."""
    return unit.clip(0.0, 1.0) * (hu_max - hu_min) + hu_min


def derived_seed(*parts: object) -> int:
    """A seed derived from ``parts`` (a run's seed with e.g. an epoch and a sample index, or a case id).

    The sha256 of the parts' ``str`` joined by ":", its first 8 bytes read little-endian and shifted right by 4:
    a 60-bit number, so it fits a signed 64-bit integer (``torch.Generator.manual_seed``, numpy). Unlike
    ``hash()`` it is the same in every process and on every machine, so a sample's noise does not depend on which
    rank or batch draws it. Changing this recipe changes every CDM sample and cached CDM output.
    """
    digest = hashlib.sha256(":".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 4
