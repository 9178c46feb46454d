"""Radiographs in → volumes out: the one inference path used by ``dctnet reconstruct``, ``dctnet demo``, the
Slicer logic and the tests.

Console use (three lines)::

    from DCTNetLib.inference import Reconstructor
    model = Reconstructor.load()                       # shipped small weights, CUDA when available
    result = model.reconstruct(pa, lat)                # pa, lat: (H, W) arrays in [0, 1]
    result.ct_hu.hu                                    # (128, 128, 128) HU, 2.5 mm voxels

The pipeline (DCT-Net Fig. 2): Y = (PA, LAT) → CDM (DDIM) → X = bone-suppressed pair; G(Y) is the CT. The second
generator G(X) reconstructs the same CT from X (it is trained against the full CT, so it is *not* a soft-tissue
CT); |G(Y) − G(X)| is the difference of the two branches. The uncertainty map is the tissue-mixture spread of G(Y)
(:func:`mixture_spread`), the candidate that best ranks the real error on held-out CTs
(``benchmarks/uncertainty.py``, docs/uncertainty.md).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import __version__
from .checkpoints.bundle import ModelBundle, default_weights_path, load_model_bundle
from .conventions import HU_PER_UNIT, IMAGE_SIZE
from .data.drr import make_drrs
from .data.preprocess import PreparedVolume, preprocess_ct, to_ct_volume
from .devices import select_device
from .errors import InputError
from .evaluation.metrics import reprojection_check
from .io.ct import CTVolume
from .io.film_gate import consistency_reason, lateral_orientation, mirrored_explains_better, non_chest_reason
from .io.radiograph import resize_radiograph, view_pair_warnings
from .io.safe_load import sha256_file
from .models.projection_refinement import ProjectionRefinement, RefinementConfig
from .models.projection_registration import film_field_mask, warp_volume

__all__ = ["Reconstructor", "ReconstructionResult", "mixture_spread", "film_reprojection", "TISSUE_CLASSES_HU",
           "FUSIONS"]

# The three tissue classes of a chest CT on the model's window: air and lung (−1000 HU), water and soft tissue
# (0 HU), bone (+1000 HU) (the Hounsfield scale's anchors, rounded; docs/uncertainty.md).
TISSUE_CLASSES_HU = (-1000.0, 0.0, 1000.0)
# What the primary CT is: "mean" = the voxel-wise mean of the two generators' CTs, G(Y) and G(X) (the dual branch's
# "complementary information", paper §4.3; chosen on validation CTs under a rule written first: docs/architecture.md,
# "Branch fusion"), or "raw" = G(Y) alone. A model without G(X) always gives G(Y).
FUSIONS = ("mean", "raw")

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]


@dataclass
class ReconstructionResult:
    """Everything one reconstruction produces.

    Args:
        ct_hu: the CT in HU, 128³ at 2.5 mm, centred on ``geometry`` (the primary output): the mean of G(Y) and G(X)
            (:data:`FUSIONS`: the reconstructor's ``fusion``, "mean" by default) or G(Y) alone, after the projection
            refinement (:mod:`~DCTNetLib.models.projection_refinement`: a deformation fitted to the radiographs, then
            SIRT) when the reconstructor has one.
        ct_from_bone_suppressed: G(X) in HU: the CT reconstructed from the bone-suppressed radiographs by the
            second generator alone (refined against them like G(Y)), or ``None`` for single-branch models.
        branch_difference: ``|G(Y) − G(X)|`` in HU, or ``None``. Not an uncertainty: on held-out CTs it does
            not rank the error (docs/uncertainty.md).
        pa, lat: the ``(128, 128)`` model inputs in [0, 1].
        pa_bs, lat_bs: the CDM's bone-suppressed ``(128, 128)`` images in [0, 1], or ``None``.
        ct_unit: ``ct_hu`` as ``(D, H, W)`` unit values (HU window → [0, 1]), for metrics.
        reprojection: DRRs of G(Y) as the generator made it (not fused, not refined) against the inputs
            (``pa_psnr``, ``pa_ncc``, ``lat_psnr``, ``lat_ncc``, and ``pa_rank``, ``lat_rank`` read where the films
            show the patient: :func:`film_reprojection`), for real films as for DRRs; what the input gate reads.
        refined_reprojection: the same for the refined G(Y), or empty when the refinement is off.
        fusion: what ``ct_hu`` is: "mean" (of G(Y) and G(X)) or "raw" (G(Y) alone).
    """

    ct_hu: CTVolume
    ct_from_bone_suppressed: CTVolume | None
    branch_difference: CTVolume | None
    pa: np.ndarray
    lat: np.ndarray
    pa_bs: np.ndarray | None
    lat_bs: np.ndarray | None
    ct_unit: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    reprojection: dict[str, float] = field(default_factory=dict)
    refined_reprojection: dict[str, float] = field(default_factory=dict)
    fusion: str = "raw"

    @property
    def ct_label(self) -> str:
        """What ``ct_hu`` is, for figure titles."""
        return "reconstruction ½ (G(Y) + G(X))" if self.fusion == "mean" else "reconstruction G(Y)"

    @cached_property
    def uncertainty(self) -> CTVolume:
        """Tissue-mixture spread of ``ct_hu`` in HU (:func:`mixture_spread`), computed on first use; it ranks the real
        error (docs/uncertainty.md)."""
        return dataclasses.replace(self.ct_hu, hu=mixture_spread(self.ct_hu.hu))


def _as_model_image(image: np.ndarray | torch.Tensor, name: str, size: int) -> np.ndarray:
    """Check one radiograph and bring it to ``(size, size)`` in [0, 1] the way training DRRs were made."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image, dtype=np.float32)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise InputError(f"{name} radiograph must be a 2D (H, W) image, got shape {np.shape(image)}")
    if not np.isfinite(arr).all():
        raise InputError(f"{name} radiograph contains NaN or infinite pixels")
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        raise InputError(f"{name} radiograph is blank (all pixels equal {lo:g})")
    if lo < 0.0 or hi > 1.0:
        arr = (arr - lo) / (hi - lo)
    if arr.shape != (size, size):
        arr = resize_radiograph(arr, size)
    return arr


def mixture_spread(ct_hu: np.ndarray, classes: tuple[float, ...] = TISSUE_CLASSES_HU) -> np.ndarray:
    """Per-voxel uncertainty of a reconstruction: the spread of a two-tissue mixture with the predicted mean.

    A generator trained with a squared error predicts the conditional mean; where it cannot tell which of two
    neighbouring tissues ``a < b`` a voxel holds, it returns a value μ between them. A voxel that is ``a`` with
    probability p and ``b`` otherwise, with mean μ, has standard deviation ``√((μ − a)(b − μ))``: zero at a class
    value, largest half-way. Values outside ``[classes[0], classes[-1]]`` get 0.

    Args:
        ct_hu: the reconstruction in HU.
        classes: increasing tissue values in HU. Defaults to :data:`TISSUE_CLASSES_HU`.

    Shapes:
        ``(D, H, W)`` → ``(D, H, W)`` in HU, ≥ 0.
    """
    values = np.asarray(ct_hu, dtype=np.float32)
    spread = np.zeros_like(values)
    for low, high in zip(classes[:-1], classes[1:]):
        inside = (values >= low) & (values < high)
        spread[inside] = np.sqrt((values[inside] - low) * (high - values[inside]))
    return spread


def film_reprojection(volume: torch.Tensor, pa: np.ndarray, lat: np.ndarray) -> dict[str, float]:
    """:func:`~DCTNetLib.evaluation.metrics.reprojection_check` of a ``(1, 1, D, H, W)`` unit volume against the
    model-ready ``(H, W)`` radiographs, its rank correlations read where the films show the patient
    (:func:`~DCTNetLib.models.projection_registration.film_field_mask`: shutters and markers left out, as the
    registration leaves them out)."""
    field = film_field_mask(torch.from_numpy(np.stack([pa, lat]).astype(np.float32))[None])[0].numpy()
    return reprojection_check(volume[0, 0].cpu().numpy(), pa, lat, field)


def check_pair(pa: np.ndarray, lat: np.ndarray) -> None:
    """Warn when the two views look swapped or identical (both are legal arrays, but probably a mistake)."""
    for message in view_pair_warnings(pa, lat):
        warnings.warn(message, RuntimeWarning, stacklevel=3)


class Reconstructor:
    """A loaded DCT-Net model: the bone-suppression CDM and the dual generators on one device.

    Args:
        bundle: weights and configs from :func:`DCTNetLib.checkpoints.bundle.load_model_bundle`.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``. Defaults to ``"auto"``.
        refinement: settings of the projection-consistency step applied to both generators' volumes (a smooth
            deformation fitted on their mean, then optionally the atlas prior and SIRT on each;
            :class:`~DCTNetLib.models.projection_refinement.RefinementConfig`). None gives the default, the
            film-robust registration and atlas prior (``RefinementConfig.film_robust()``), which help on films and
            DRRs alike; ``RefinementConfig.registration_only()`` leaves the atlas prior out;
            ``RefinementConfig.off()`` gives the generators' volumes as they are; ``RefinementConfig()`` is
            ``--refine``, for DRRs of a CT only (on real films it fits the film's borders and display curve:
            docs/refinement.md). Defaults to None.
        fusion: the primary CT: "mean" of G(Y) and G(X), or "raw" = G(Y) alone (:data:`FUSIONS`). Defaults to
            "mean".
    """

    def __init__(self, bundle: ModelBundle, device: str | torch.device = "auto",
                 refinement: RefinementConfig | None = None, fusion: str = "mean") -> None:
        self.bundle = bundle
        self.use_fusion(fusion)
        self.use_refinement(refinement)
        self.device = select_device(device, missing_cuda="cpu")
        self.cdm = bundle.cdm.to(self.device).eval() if bundle.cdm is not None else None
        self.g_raw = bundle.g_raw.to(self.device).eval()
        self.g_bs = bundle.g_bs.to(self.device).eval() if bundle.g_bs is not None else None
        self.image_size = int(bundle.image_size)
        self.default_steps = int(bundle.sampling_steps)

    @classmethod
    def load(cls, weights: str | Path | None = None, device: str | torch.device = "auto",
             refinement: RefinementConfig | None = None, fusion: str = "mean") -> "Reconstructor":
        """Load a model bundle (``None`` = the shipped default weights), validated and without running code."""
        return cls(load_model_bundle(Path(weights) if weights is not None else None), device, refinement, fusion)

    def use_fusion(self, fusion: str) -> "Reconstructor":
        """Set what later reconstructions' primary CT is (:data:`FUSIONS`: "mean" of G(Y) and G(X), or "raw")."""
        if fusion not in FUSIONS:
            raise InputError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        self.fusion = fusion
        return self

    def use_refinement(self, refinement: RefinementConfig | None) -> "Reconstructor":
        """Set the projection refinement of later reconstructions (None: the default, the film-robust
        registration; ``RefinementConfig.off()``: none)."""
        self.refine = ProjectionRefinement(refinement if refinement is not None else RefinementConfig.film_robust())
        return self

    @property
    def refining(self) -> bool:
        """Whether reconstructions get the projection refinement (registration and/or SIRT): it is on and the
        model's radiographs are the 128² training detector's, which the projector renders."""
        return self.refine.applies_to(self.image_size)

    @property
    def refinement_iterations(self) -> int:
        """SIRT iterations of the projection refinement that reconstructions get (0: none, or not :attr:`refining`)."""
        return self.refine.config.iterations if self.refining else 0

    @property
    def refinement_steps(self) -> str:
        """What the refinement runs, e.g. "registration (80) + SIRT (10)", or "off"."""
        return self.refine.describe() if self.refining else "off"

    # -- steps -----------------------------------------------------------------------------------------------
    def _pair_tensor(self, pa: np.ndarray, lat: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.stack([pa, lat])[None]).to(self.device)  # (1, 2, n, n)

    @torch.inference_mode()
    def suppress_bones(self, pa, lat, steps: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Bone-suppressed PA and lateral images by the CDM (both views in one batch).

        Args:
            pa, lat: ``(H, W)`` radiographs in [0, 1] (any size; resized to the model's 128²).
            steps: DDIM steps. Defaults to the bundle's interactive default.
            seed: sampling seed; the same seed gives the same images.

        Returns:
            ``(pa_bs, lat_bs)``, each ``(128, 128)`` in [0, 1].
        """
        if self.cdm is None:
            raise InputError("this model has no bone-suppression CDM (single-branch weights)")
        pa = _as_model_image(pa, "PA", self.image_size)
        lat = _as_model_image(lat, "lateral", self.image_size)
        out = self._run_cdm(self._pair_tensor(pa, lat), steps, seed)
        return out[0, 0].cpu().numpy(), out[0, 1].cpu().numpy()

    def _run_cdm(self, pair: torch.Tensor, steps: int | None, seed: int) -> torch.Tensor:
        steps = int(steps) if steps is not None else self.default_steps
        if steps < 1:
            raise ValueError(f"steps must be ≥ 1, got {steps}")
        return self.cdm.suppress_bones(pair, steps=steps, seed=seed).clamp(0.0, 1.0)

    @torch.inference_mode()
    def orient_lateral(self, pa, lat) -> tuple[np.ndarray, str | None]:
        """The lateral in the model's orientation (patient facing left, spine on the right) and, when it was
        flipped, why (else ``None``); what :meth:`reconstruct` does with its input checks on.

        A lateral whose spine side is clear from the image is kept or flipped by it
        (:func:`~DCTNetLib.io.film_gate.lateral_orientation`); an unclear one is reconstructed both ways by G(Y) and
        kept in the orientation whose reconstruction re-projects closer to it
        (:func:`~DCTNetLib.io.film_gate.mirrored_explains_better`; 128² models, whose detector the projector
        renders; smaller models keep it as given).

        Args:
            pa, lat: ``(H, W)`` radiographs in [0, 1] (resized to the model's 128²).

        Returns:
            ``(lateral, reason)``: the ``(128, 128)`` lateral, and the reason it was flipped or ``None``.
        """
        pa = _as_model_image(pa, "PA", self.image_size)
        lat = _as_model_image(lat, "lateral", self.image_size)
        lat, note, _ = self._orient_lateral(pa, lat)
        return lat, note

    def _orient_lateral(self, pa: np.ndarray, lat: np.ndarray
                        ) -> tuple[np.ndarray, str | None, tuple[torch.Tensor, dict[str, float]] | None]:
        """:meth:`orient_lateral` on model-ready images, also returning G(Y) of the chosen pair and its
        re-projection check when they were computed (the unclear case), so that the reconstruction does not compute
        them again."""
        mirrored = np.ascontiguousarray(lat[:, ::-1])
        side = lateral_orientation(lat)
        if side == "right":
            return mirrored, ("the lateral shows the patient facing right (spine on the left); it was flipped to the "
                              "model's orientation (facing left)"), None
        if side == "left" or self.image_size != IMAGE_SIZE:
            return lat, None, None
        priors = [self.g_raw(self._pair_tensor(pa, view)).float() for view in (lat, mirrored)]
        checks = [film_reprojection(prior, pa, view) for prior, view in zip(priors, (lat, mirrored))]
        if mirrored_explains_better(*checks):
            return mirrored, (f"the lateral's orientation is not clear from the image; the model explains it better "
                              f"mirrored (re-projection correlation {checks[1]['lat_ncc']:.3f} against "
                              f"{checks[0]['lat_ncc']:.3f} as given), so it was flipped to face left"), (priors[1],
                                                                                                      checks[1])
        return lat, None, (priors[0], checks[0])

    def to(self, device: str | torch.device) -> "Reconstructor":
        """Move the models to ``device`` (e.g. back to the CPU after a GPU out-of-memory error)."""
        self.device = select_device(device, missing_cuda="cpu")
        for model in (self.cdm, self.g_raw, self.g_bs):
            if model is not None:
                model.to(self.device)
        return self

    def reconstruct(self, pa, lat, steps: int | None = None, seed: int = 0,
                    geometry: PreparedVolume | None = None, progress: ProgressCallback | None = None,
                    bone_suppressed: tuple[np.ndarray, np.ndarray] | None = None,
                    check_inputs: bool = True) -> ReconstructionResult:
        """Reconstruct the CT from a PA and a lateral radiograph.

        On CUDA, an out-of-memory error frees the cache, warns, moves the models to the CPU and runs again there
        instead of failing (a 128³ reconstruction needs about 1.5 GB; small GPUs shared with a viewer run out).

        Args:
            pa, lat: ``(H, W)`` radiographs in [0, 1] (bright = bone), any size (resized to 128²).
            steps: DDIM steps of the bone-suppression preview. Defaults to the bundle's default.
            seed: sampling seed.
            geometry: where to place the volume (e.g. the :class:`PreparedVolume` of the CT the radiographs were
                made from). Defaults to a 320 mm cube centred on the world origin.
            progress: ``callback(fraction, message)``.
            bone_suppressed: precomputed ``(pa_bs, lat_bs)`` to skip the CDM.
            check_inputs: refuse images that are not chest radiographs, before (noise, an inverted PA, a CT slice)
                and after the reconstruction (a view its DRR does not match), and flip a lateral that faces right
                (with a warning): :mod:`DCTNetLib.io.film_gate`. Defaults to True.

        Returns:
            :class:`ReconstructionResult` (volumes in HU, 2.5 mm voxels).

        Raises:
            InputError: an input is not a radiograph of the right size and range, or (``check_inputs``) not a chest
                radiograph.
        """
        arguments = (pa, lat, steps, seed, geometry, progress, bone_suppressed, check_inputs)
        try:
            return self._reconstruct(*arguments)
        except torch.cuda.OutOfMemoryError:
            if self.device.type != "cuda":
                raise
            torch.cuda.empty_cache()
            warnings.warn("the GPU ran out of memory; reconstructing on the CPU instead (slower)", RuntimeWarning,
                          stacklevel=2)
            log.warning("CUDA out of memory: falling back to the CPU")
            self.to("cpu")
            return self._reconstruct(*arguments)

    @torch.inference_mode()
    def _reconstruct(self, pa, lat, steps: int | None, seed: int, geometry: PreparedVolume | None,
                     progress: ProgressCallback | None,
                     bone_suppressed: tuple[np.ndarray, np.ndarray] | None,
                     check_inputs: bool) -> ReconstructionResult:
        """:meth:`reconstruct` on the current device (no fallback)."""
        report = progress or (lambda fraction, message: None)
        timings: dict[str, float] = {}
        computed = None  # G(Y) and its re-projection check, when the orientation check made them
        pa = _as_model_image(pa, "PA", self.image_size)
        lat = _as_model_image(lat, "lateral", self.image_size)
        if check_inputs:
            for image, view in ((pa, "pa"), (lat, "lat")):
                reason = non_chest_reason(image, view)
                if reason is not None:
                    raise InputError(reason)
            start = time.perf_counter()
            lat, note, computed = self._orient_lateral(pa, lat)
            timings["orientation_s"] = time.perf_counter() - start
            if note is not None:
                warnings.warn(note, RuntimeWarning, stacklevel=3)
        check_pair(pa, lat)
        y = self._pair_tensor(pa, lat)

        x = None
        if self.g_bs is not None:
            report(0.05, "bone suppression (diffusion)")
            start = time.perf_counter()
            x = self._bone_suppressed_pair(y, steps, seed, bone_suppressed)
            timings["bone_suppression_s"] = time.perf_counter() - start

        report(0.5, "reconstruction G(Y)")
        start = time.perf_counter()
        prior, reprojection = computed if computed is not None else (self.g_raw(y).float(), {})
        timings["g_raw_s"] = time.perf_counter() - start
        refined_reprojection = {}
        # the gate reads G(Y)'s own re-projection (its thresholds were measured on it); 128² detector only
        if not reprojection and self.image_size == IMAGE_SIZE:
            reprojection = film_reprojection(prior, pa, lat)
        reason = consistency_reason(reprojection) if check_inputs else None
        if reason is not None:
            raise InputError(reason)
        soft = None
        if x is not None:
            report(0.6, "reconstruction G(X)")
            start = time.perf_counter()
            soft = self.g_bs(x).float()
            timings["g_bs_s"] = time.perf_counter() - start
        fusion = "mean" if self.fusion == "mean" and soft is not None else "raw"
        if self.refining:
            report(0.7, "refinement to the radiographs")
            start = time.perf_counter()
            # one deformation, fitted on the CT the user gets, moves both branches (their difference stays aligned)
            fused = (prior + soft) / 2 if fusion == "mean" else prior
            displacement = self.refine.fit_field(fused, y)
            atlas_mean = moved = None
            if self.refine.config.atlas is not None:
                # real anatomy registered to the radiographs and aligned to the moved CT the user gets; the mix keeps
                # that CT's bone and compares the atlases with it, in both branches alike
                moved = warp_volume(fused, displacement) if displacement is not None else fused
                atlas_mean = self.refine.atlas_mean(moved, y)
            prior = self.refine(prior, y, displacement, atlas_mean, moved)
            soft = self.refine(soft, x, displacement, atlas_mean, moved) if soft is not None else None
            timings["refinement_s"] = time.perf_counter() - start
            refined_reprojection = film_reprojection(prior, pa, lat)
        ct_unit = prior[0, 0]
        soft_unit = soft[0, 0] if soft is not None else None
        report(0.95, "writing volumes")

        primary = (ct_unit + soft_unit) / 2 if fusion == "mean" else ct_unit
        ct_hu = to_ct_volume(primary, geometry)
        from_bs = to_ct_volume(soft_unit, geometry) if soft_unit is not None else None
        difference = None
        if soft_unit is not None:
            difference_hu = (ct_unit - soft_unit).abs().cpu().numpy() * HU_PER_UNIT
            difference = dataclasses.replace(ct_hu, hu=difference_hu)
        report(1.0, "done")
        return ReconstructionResult(
            ct_hu=ct_hu, ct_from_bone_suppressed=from_bs, branch_difference=difference, pa=pa, lat=lat,
            pa_bs=x[0, 0].cpu().numpy() if x is not None else None,
            lat_bs=x[0, 1].cpu().numpy() if x is not None else None,
            ct_unit=primary.cpu().numpy(), timings=timings, reprojection=reprojection,
            refined_reprojection=refined_reprojection, fusion=fusion,
        )

    def _bone_suppressed_pair(self, y: torch.Tensor, steps: int | None, seed: int,
                              given: tuple[np.ndarray, np.ndarray] | None) -> torch.Tensor:
        """X, the bone-suppressed pair: the images given by the caller, else the CDM's samples of ``y``."""
        if given is None:
            return self._run_cdm(y, steps, seed)
        return self._pair_tensor(_as_model_image(given[0], "bone-suppressed PA", self.image_size),
                                 _as_model_image(given[1], "bone-suppressed lateral", self.image_size))


def radiographs_from_ct(ct: CTVolume, prepared: PreparedVolume | None = None
                        ) -> tuple[PreparedVolume, np.ndarray, np.ndarray]:
    """PA and lateral DRRs of a CT with the training geometry (X2CT-GAN preprocessing, then the DRR projector).

    What "Make radiographs from CT" in Slicer and ``dctnet reconstruct --ct`` / ``dctnet demo`` use, so a user can
    round-trip a CT and compare the reconstruction with it.

    Args:
        ct: the CT in HU.
        prepared: ``preprocess_ct(ct)`` when the caller already has it (skips the resampling).

    Returns:
        ``(prepared, pa, lat)``: the 128³ model-grid volume (its geometry places the reconstruction on the CT) and
        the two ``(128, 128)`` radiographs in [0, 1].
    """
    prepared = prepared if prepared is not None else preprocess_ct(ct)
    volume = torch.from_numpy(np.ascontiguousarray(prepared.volume, dtype=np.float32))[None, None]
    with torch.inference_mode():
        drr = make_drrs(volume, prepared.spacing_mm)[0].numpy()
    return prepared, drr[0], drr[1]


def on_model_grid(volume: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``volume`` (unit values, ``(D, H, W)``) resized trilinearly to the model's output ``shape`` (identity when
    equal): metrics compare a reconstruction with its ground truth on the model's grid, whatever its size."""
    if tuple(volume.shape) == tuple(shape):
        return volume
    resized = torch.nn.functional.interpolate(torch.from_numpy(np.ascontiguousarray(volume, np.float32))[None, None],
                                              size=tuple(shape), mode="trilinear", align_corners=False)
    return resized[0, 0].numpy()


def model_record(weights: str | Path | None, model: Reconstructor) -> dict:
    """Which model ran, for reports: file, sha256, dctnet version, default DDIM steps, where the CDM's sampler
    starts and how many samples its preview averages, and the bundle's provenance (``weights`` None = the shipped
    bundle)."""
    path = Path(weights) if weights is not None else default_weights_path()
    sampler = ({"strength": model.cdm.config.sampling_strength, "samples": model.cdm.config.sampling_samples}
               if model.cdm is not None else None)
    return {"weights": str(path), "shipped": weights is None, "sha256": sha256_file(path),
            "dctnet_version": __version__, "default_steps": model.default_steps, "cdm_sampler": sampler,
            "fusion": model.fusion if model.g_bs is not None else "raw", "meta": model.bundle.meta}
