"""The files ``dctnet reconstruct`` and ``dctnet demo`` write, by *role*: the one table every list of outputs reads.

A role names one output: the key of ``commands.reconstruct.output_paths``, of the ``outputs`` of the command's
last progress event (``--progress json``) and of the Slicer module's output nodes. ``dctnet reconstruct`` names its
files after ``--output`` (:meth:`OutputRole.filename`), ``dctnet demo`` writes the same roles under fixed names
(:attr:`OutputRole.demo_filename`), and one writer (``commands.reconstruct.write_images``) writes the volumes and
radiographs of both. What derives from :data:`OUTPUT_ROLES`: ``reconstruct.output_paths``, the demo's files and
the list in its ``--help``, the writer, and the Slicer glue's role lists (``DCTNetSlicerLib.results``,
``DCTNetSlicerLib.layout``, the module's parameter-node fields). ``Testing/Python/test_output_roles.py`` fails
when a role or a file name is listed anywhere else.

Imports nothing but the standard library: Slicer's side reads it in a Python without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["OutputRole", "SlicerNode", "OUTPUT_ROLES", "ROLES", "CT", "MAP", "RADIOGRAPH", "BONE_SUPPRESSED",
           "FIGURE", "REPORT", "DICOM", "VOLUME_KINDS", "IMAGE_KINDS", "OUTPUT", "FROM_CT", "EXTRAS", "IMAGES_ONLY",
           "DICOM_FOLDER"]

# What a role's file holds (OutputRole.kind).
CT = "CT"  # a CT volume in HU
MAP = "map"  # a volume of spreads or differences in HU, shown with a colour table
RADIOGRAPH = "radiograph"  # a radiograph in [0, 1], PNG
BONE_SUPPRESSED = "bone-suppressed radiograph"  # the diffusion model's output for one radiograph, PNG
FIGURE = "figure"  # a PNG figure
REPORT = "report"  # JSON
DICOM = "DICOM series"  # a folder of DICOM files
VOLUME_KINDS = (CT, MAP)  # written with DCTNetLib.io.ct.write_ct
IMAGE_KINDS = (RADIOGRAPH, BONE_SUPPRESSED)  # written with DCTNetLib.io.radiograph.write_png

# When `dctnet reconstruct` writes a role (OutputRole.written_with).
OUTPUT = "--output"  # every single-case run but --images-only
FROM_CT = "--ct"
EXTRAS = "--extras"
IMAGES_ONLY = "--images-only"
DICOM_FOLDER = "--dicom"


@dataclass(frozen=True)
class SlicerNode:
    """How the Slicer module shows a role's output.

    Args:
        label: the node's name after the run's prefix ("DCTNet CT").
        parameter: the field of the module's parameter node that keeps the node (saved with scenes: never renamed).
        window_level: (window, level) in HU for a map; None: the CT window preset.
    """

    label: str
    parameter: str
    window_level: tuple[float, float] | None = None


@dataclass(frozen=True)
class OutputRole:
    """One output of a reconstruction.

    Args:
        name: the role.
        kind: what the file holds (:data:`CT`, :data:`MAP`, :data:`RADIOGRAPH`, …).
        description: what it is, for people (the demo's ``--help`` lists it).
        filename_pattern: ``dctnet reconstruct``'s file name, from ``{stem}`` and ``{suffix}`` of ``--output``
            (``ct.nii.gz``: ``ct`` and ``.nii.gz``); None: not named after ``--output``.
        demo_filename: ``dctnet demo``'s file name; None: the demo does not write it.
        written_with: the ``dctnet reconstruct`` options with which it is written (:data:`OUTPUT`: always).
        source: the attribute holding the image a writer writes: of the reconstruction result
            (``DCTNetLib.inference.ReconstructionResult``) or, for the roles written with :data:`FROM_CT`, of the
            round trip (``commands.reconstruct.RoundTrip``); None: figures, reports and series have their own writers.
        view: ``"PA"`` or ``"LAT"`` for a radiograph.
        slicer: how the Slicer module shows it; None: it does not.
    """

    name: str
    kind: str
    description: str
    filename_pattern: str | None = None
    demo_filename: str | None = None
    written_with: frozenset[str] = frozenset()
    source: str | None = None
    view: str | None = None
    slicer: SlicerNode | None = None

    def filename(self, stem: str, suffix: str) -> str:
        """``dctnet reconstruct``'s file name for an ``--output`` of this ``stem`` and volume ``suffix``."""
        if self.filename_pattern is None:
            raise ValueError(f"the output role {self.name!r} is not named after --output")
        return self.filename_pattern.format(stem=stem, suffix=suffix)


OUTPUT_ROLES: tuple[OutputRole, ...] = (
    OutputRole("ct", CT, "the reconstructed CT, the mean of G(Y) and G(X) (HU, 2.5 mm voxels; --fusion raw: G(Y))",
               "{stem}{suffix}", "ct_reconstructed.nii.gz", frozenset({OUTPUT}), "ct_hu",
               slicer=SlicerNode("CT", "ctVolume")),
    OutputRole("reference", CT, "the CT the radiographs were made from, on the reconstruction's 128³ grid (HU)",
               "{stem}_reference{suffix}", "ct_ground_truth.nii.gz", frozenset({FROM_CT}), "reference"),
    OutputRole("pa", RADIOGRAPH, "the PA DRR of the reference CT (the model's input)",
               "{stem}_pa.png", "pa.png", frozenset({FROM_CT}), "pa", view="PA"),
    OutputRole("lat", RADIOGRAPH, "the lateral DRR of the reference CT (the model's input)",
               "{stem}_lat.png", "lat.png", frozenset({FROM_CT}), "lat", view="LAT"),
    # The uncertainty peaks at 500 HU half-way between air and water or water and bone: shown on 0–500 HU.
    OutputRole("uncertainty", MAP, "the uncertainty map, the tissue-mixture spread of the CT (HU; docs/uncertainty.md)",
               "{stem}_uncertainty{suffix}", "ct_uncertainty.nii.gz", frozenset({EXTRAS}), "uncertainty",
               slicer=SlicerNode("uncertainty", "uncertaintyVolume", (500.0, 250.0))),
    OutputRole("from_bone_suppressed", CT, "G(X), the CT reconstructed from the bone-suppressed radiographs (HU)",
               "{stem}_from_bone_suppressed{suffix}", "ct_from_bone_suppressed.nii.gz", frozenset({EXTRAS}),
               "ct_from_bone_suppressed",
               slicer=SlicerNode("CT from bone-suppressed G(X)", "fromBoneSuppressedVolume")),
    # 0–400 HU spans soft tissue vs. bone differences (bone ≈ +400 HU and above).
    OutputRole("branch_difference", MAP, "|G(Y) − G(X)| (HU)",
               "{stem}_branch_difference{suffix}", "ct_branch_difference.nii.gz", frozenset({EXTRAS}),
               "branch_difference", slicer=SlicerNode("branch difference", "branchDifferenceVolume", (400.0, 200.0))),
    OutputRole("pa_bs", BONE_SUPPRESSED, "the PA radiograph with the bones suppressed by the diffusion model",
               "{stem}_pa_bone_suppressed.png", "pa_bone_suppressed.png", frozenset({EXTRAS, IMAGES_ONLY}), "pa_bs",
               view="PA", slicer=SlicerNode("PA bone-suppressed", "paBoneSuppressed")),
    OutputRole("lat_bs", BONE_SUPPRESSED, "the lateral radiograph with the bones suppressed by the diffusion model",
               "{stem}_lat_bone_suppressed.png", "lat_bone_suppressed.png", frozenset({EXTRAS, IMAGES_ONLY}),
               "lat_bs", view="LAT", slicer=SlicerNode("LAT bone-suppressed", "latBoneSuppressed")),
    OutputRole("figure", FIGURE, "the inputs, their bone-suppressed versions and the reconstruction in three planes "
               "(with a reference CT: it and the error as well)",
               "{stem}_figure.png", "figure.png", frozenset({EXTRAS})),
    OutputRole("data_figure", FIGURE, "the case as prepared for training: the CT in three planes, its DRRs and "
               "bone-removed DRRs", demo_filename="data_figure.png"),
    OutputRole("report", REPORT, "the JSON report: inputs, model provenance, timings, the re-projection check (DRRs "
               "of G(Y) against the inputs) and, against a reference CT, PSNR, SSIM (three planes) and MAE",
               "{stem}_report.json", "report.json", frozenset({EXTRAS})),
    OutputRole("dicom", DICOM, "the CT as a DICOM series, one file per axial slice (in the folder --dicom names)",
               written_with=frozenset({DICOM_FOLDER})),
)

ROLES: dict[str, OutputRole] = {role.name: role for role in OUTPUT_ROLES}
