"""Reconstruction metrics on CT volumes: PSNR, tri-plane SSIM, tri-plane LPIPS, MAE, and X2CT-GAN's PSNR.

Every function takes ``(D, H, W)`` volumes in **unit** values (HU window [-1024, 1476] mapped to [0, 1], see
:mod:`DCTNetLib.conventions`); ``pred`` is the reconstruction, ``gt`` the ground truth. The paper (§3.1) reports
PSNR, SSIM [35] and LPIPS [36] without further detail; the choices below follow X2CT-GAN's evaluation code
(Ying et al. 2019, kylekma/X2CT ``3DGAN/test.py`` and ``3DGAN/lib/utils/metrics_np.py``), the common protocol
of the methods compared in the paper's Table 1:

- **PSNR**: one 3D PSNR over all voxels, ``data_range = 1``, the formula of
  ``skimage.metrics.peak_signal_noise_ratio`` (:func:`psnr_from_mse`, which the CDM trainer and the demo's
  re-projection check use too). Identical volumes give ``inf``.
- **SSIM**: 2D SSIM per slice, averaged over the slices of each plane (axial = along D, coronal = along H,
  sagittal = along W), then over the three planes. ``skimage.metrics.structural_similarity`` with its defaults
  (7×7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance) and ``data_range = 1``: exactly what X2CT-GAN's
  ``Structural_Similarity`` computes with ``compare_ssim(..., multichannel=True)`` on slice stacks. We do not
  use the Gaussian-window variant (Wang et al. 2004, σ = 1.5), which gives different numbers.
- **LPIPS**: LPIPS-alex v0.1 per slice, in the same three planes, slices mapped to [-1, 1] and repeated to 3
  channels, averaged per plane then over planes. ``slice_stride`` subsamples slices for speed (default: all).
- **MAE**: mean absolute error in unit and in HU (× 2500 HU, the window width).
- **X2CT PSNR** (:func:`x2ct_psnr`): X2CT-GAN's ``psnr-3d`` — see its docstring.
- **Bone Dice** (:func:`bone_dice`, ours): Dice of the ``> 300 HU`` masks of ``pred`` and ``gt`` — whether the
  skeleton (spine, ribs, sternum, scapulae) is where the patient has it; a smooth template scores ≈ 0. With the
  **99.9th percentile** of ``pred`` in HU (``p999_hu``): whether bone values are reached at all.

``pred`` is clipped to [0, 1] before every metric, as X2CT-GAN's ``test.py`` does (``np.clip(generate_CT, 0, 1)``):
unit values outside the HU window are not representable in the output CT either.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from torch import nn

from ..conventions import AXIS_AP, AXIS_RL, AXIS_SI, CROP_SIZE, HU_PER_UNIT, hu_to_unit, unit_to_hu
from ..data.drr import make_drrs

__all__ = [
    "PLANES", "X2CT_CT_MAX", "X2CT_PIXEL_MAX", "X2CT_IDENTICAL_PSNR", "MSE_FLOOR",
    "BONE_HU", "psnr_from_mse", "psnr", "ssim3plane", "lpips3plane", "mae", "x2ct_psnr", "bone_dice",
    "spine_column", "regional_bone_dice",
    "percentile_hu", "evaluate_volume", "reprojection_check", "rank_correlation",
]

# Slices perpendicular to each array axis (docs/conventions.md: D = superior→inferior, H = anterior→posterior,
# W = right→left).
PLANES: dict[str, int] = {"axial": AXIS_SI, "coronal": AXIS_AP, "sagittal": AXIS_RL}

# X2CT-GAN's psnr-3d: unit volumes × CT_MIN_MAX = [0, 2500] (3DGAN/experiment/multiview2500/d2_multiview2500.yml),
# cast to int32, PIXEL_MAX = 4095 (3DGAN/test.py), and 100 dB when the volumes are identical (metrics_np.py).
X2CT_CT_MAX = 2500
X2CT_PIXEL_MAX = 4095.0
X2CT_IDENTICAL_PSNR = 100.0

# Bone for the Dice: above 300 HU. Cortical bone is far above it; at 2.5 mm voxels a rib's cortex averages down to
# about 300 HU (DCTNetLib.data.bone), while soft tissue and contrast-enhanced blood stay below ~250 HU.
BONE_HU = 300.0

# Smallest MSE that per-image PSNRs averaged over a batch use (120 dB at data range 1), so that one identical
# image does not turn the mean into inf; :func:`psnr` itself keeps inf for identical volumes.
MSE_FLOOR = 1e-12


def _check_pair(pred: np.ndarray, gt: np.ndarray, min_side: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Validate two ``(D, H, W)`` unit volumes; return float64 copies with ``pred`` clipped to [0, 1]."""
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.ndim != 3:
        raise ValueError(f"pred must be a (D, H, W) volume, got shape {pred.shape}")
    if gt.shape != pred.shape:
        raise ValueError(f"gt must have pred's shape {pred.shape}, got {gt.shape}")
    if min(pred.shape) < min_side:
        raise ValueError(f"pred and gt need at least {min_side} voxels per axis, got {pred.shape}")
    if not (np.isfinite(pred).all() and np.isfinite(gt).all()):
        raise ValueError("pred and gt must be finite (found NaN or inf)")
    return np.clip(pred.astype(np.float64), 0.0, 1.0), gt.astype(np.float64)


def psnr_from_mse(mse, data_range: float = 1.0, *, mse_floor: float = 0.0):
    """PSNR in dB of a mean squared error on a ``data_range`` scale: ``10·log10(data_range² / max(mse, mse_floor))``.

    The one PSNR formula of the package (as ``skimage.metrics.peak_signal_noise_ratio`` computes it). ``mse`` may
    be a float, a numpy array or a torch tensor (then the result is a tensor, computed in torch); an MSE of 0
    gives ``inf``.

    Args:
        mse: mean squared error(s).
        data_range: the peak value (1 for unit volumes and radiographs). Defaults to 1.
        mse_floor: clamp ``mse`` to at least this (:data:`MSE_FLOOR` caps the PSNR at 120 dB). Defaults to 0.
    """
    if isinstance(mse, torch.Tensor):
        return 10.0 * torch.log10(data_range ** 2 / mse.clamp_min(mse_floor))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range ** 2 / np.maximum(np.asarray(mse, dtype=np.float64), mse_floor))


def psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    """3D PSNR in dB with data range 1 (unit volumes); ``inf`` for identical volumes.

    Args:
        pred: reconstruction, unit values ``(D, H, W)``.
        gt: ground truth, unit values ``(D, H, W)``.
    """
    pred, gt = _check_pair(pred, gt)
    return float(psnr_from_mse(np.mean((gt - pred) ** 2, dtype=np.float64)))


def ssim3plane(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Mean 2D SSIM over the slices of each plane, and their average.

    Args:
        pred: reconstruction, unit values ``(D, H, W)``, each side ≥ 7 (the SSIM window).
        gt: ground truth, unit values ``(D, H, W)``.

    Returns:
        ``{"axial", "coronal", "sagittal", "mean"}``.
    """
    pred, gt = _check_pair(pred, gt, min_side=7)
    scores = {}
    for plane, axis in PLANES.items():
        # channel_axis=axis: skimage computes one 2D SSIM per slice along `axis` and returns their mean.
        scores[plane] = float(structural_similarity(gt, pred, data_range=1.0, channel_axis=axis))
    scores["mean"] = float(np.mean([scores[plane] for plane in PLANES]))
    return scores


def _slices(volume: np.ndarray, axis: int, stride: int) -> torch.Tensor:
    """Slices along ``axis`` (every ``stride``-th), as LPIPS inputs: ``(N, 3, h, w)`` in [-1, 1]."""
    stack = np.moveaxis(volume, axis, 0)[::stride]
    tensor = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32)).unsqueeze(1)
    return (tensor * 2.0 - 1.0).expand(-1, 3, -1, -1)


def lpips3plane(pred: np.ndarray, gt: np.ndarray, model: nn.Module, *, slice_stride: int = 1,
                batch_size: int = 32) -> dict[str, float]:
    """Mean LPIPS over the slices of each plane, and their average.

    Args:
        pred: reconstruction, unit values ``(D, H, W)``, each side ≥ 31 (AlexNet's smallest input).
        gt: ground truth, unit values ``(D, H, W)``.
        model: LPIPS module from :func:`DCTNetLib.evaluation.lpips_metric.build_lpips`.
        slice_stride: use every ``slice_stride``-th slice (1 = all, the reported protocol). Defaults to 1.
        batch_size: slices per forward pass. Defaults to 32.

    Returns:
        ``{"axial", "coronal", "sagittal", "mean"}``.
    """
    from .lpips_metric import LPIPS_MIN_SIZE, lpips_distance

    if slice_stride < 1:
        raise ValueError(f"slice_stride must be ≥ 1, got {slice_stride}")
    pred, gt = _check_pair(pred, gt, min_side=LPIPS_MIN_SIZE)
    scores = {}
    for plane, axis in PLANES.items():
        distances = lpips_distance(model, _slices(pred, axis, slice_stride), _slices(gt, axis, slice_stride),
                                   batch_size=batch_size)
        scores[plane] = float(distances.mean())
    scores["mean"] = float(np.mean([scores[plane] for plane in PLANES]))
    return scores


def mae(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Mean absolute error.

    Args:
        pred: reconstruction, unit values ``(D, H, W)``.
        gt: ground truth, unit values ``(D, H, W)``.

    Returns:
        ``{"unit": MAE in [0, 1] units, "hu": the same in HU (× 2500)}``.
    """
    pred, gt = _check_pair(pred, gt)
    value = float(np.mean(np.abs(pred - gt)))
    return {"unit": value, "hu": value * HU_PER_UNIT}


def x2ct_psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    """X2CT-GAN's ``psnr-3d``, for comparison with numbers reported by X2CT-GAN and papers reusing its code.

    Both volumes are scaled from unit to the integer range [0, 2500] (``x * 2500`` then truncated to int32,
    ``tensor_back_to_unMinMax(...).astype(np.int32)`` in kylekma/X2CT ``3DGAN/test.py``), then
    ``PSNR = 20·log10(4095 / sqrt(MSE))`` (``Peak_Signal_to_Noise_Rate_3D(..., PIXEL_MAX=4095)``,
    ``3DGAN/lib/utils/metrics_np.py``), with 100 dB for identical volumes. The peak 4095 exceeds the data's
    2500 range, so this is ≈ 4.28 dB above :func:`psnr` (20·log10(4095/2500)) up to the rounding.

    Args:
        pred: reconstruction, unit values ``(D, H, W)``.
        gt: ground truth, unit values ``(D, H, W)``.
    """
    pred, gt = _check_pair(pred, gt)
    pred_int = (pred * X2CT_CT_MAX).astype(np.int32).astype(np.float64)
    gt_int = (gt * X2CT_CT_MAX).astype(np.int32).astype(np.float64)
    mse = float(np.mean((gt_int - pred_int) ** 2))
    if mse == 0.0:
        return X2CT_IDENTICAL_PSNR
    return float(20.0 * np.log10(X2CT_PIXEL_MAX / np.sqrt(mse)))


def bone_dice(pred: np.ndarray, gt: np.ndarray, threshold_hu: float = BONE_HU) -> float:
    """Dice of the ``> threshold_hu`` masks of two unit volumes ``(D, H, W)``; 1.0 when both masks are empty."""
    pred, gt = _check_pair(pred, gt)
    t = float(hu_to_unit(np.float64(threshold_hu)))
    return _dice(pred > t, gt > t)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


def spine_column(shape: tuple[int, int, int]) -> tuple[slice, slice, slice]:
    """Index of the spine's column in a canonical ``(D, H, W)`` volume on the model grid: every slice, the back
    half from front to back, the middle eighth from right to left (40 mm of the 320 mm field: a thoracic
    vertebral body is about 30–45 mm wide)."""
    d, h, w = shape
    return slice(0, d), slice(h // 2, h), slice(w // 2 - w // 16, w // 2 + w // 16)


def regional_bone_dice(pred: np.ndarray, gt: np.ndarray, threshold_hu: float = BONE_HU) -> dict[str, float]:
    """:func:`bone_dice` inside the spine's column (:func:`spine_column`) and outside it (ribs, sternum, clavicles,
    scapulae): ``{"spine": ..., "outside_spine": ...}`` for two unit volumes ``(D, H, W)``."""
    pred, gt = _check_pair(pred, gt)
    column = np.zeros(pred.shape, dtype=bool)
    column[spine_column(pred.shape)] = True
    t = float(hu_to_unit(np.float64(threshold_hu)))
    a, b = pred > t, gt > t
    return {"spine": _dice(a & column, b & column), "outside_spine": _dice(a & ~column, b & ~column)}


def percentile_hu(volume: np.ndarray, q: float = 99.9) -> float:
    """The ``q``-th percentile of a unit volume, in HU."""
    return float(unit_to_hu(np.float64(np.percentile(np.clip(volume, 0.0, 1.0), q))))


def evaluate_volume(pred: np.ndarray, gt: np.ndarray, lpips_model: nn.Module | None = None, *,
                    lpips_slice_stride: int = 1) -> dict[str, float]:
    """All metrics of one case.

    Args:
        pred: reconstruction, unit values ``(D, H, W)``.
        gt: ground truth, unit values ``(D, H, W)``.
        lpips_model: from :func:`~DCTNetLib.evaluation.lpips_metric.build_lpips`; without it the LPIPS keys are
            left out. Defaults to None.
        lpips_slice_stride: see :func:`lpips3plane`. Defaults to 1 (all slices).

    Returns:
        ``psnr``, ``ssim`` (tri-plane mean) with ``ssim_axial/coronal/sagittal``, ``lpips`` with
        ``lpips_axial/coronal/sagittal`` (only with a model), ``mae_unit``, ``mae_hu``, ``psnr_x2ct``,
        ``bone_dice`` with ``bone_dice_spine`` and ``bone_dice_outside_spine`` (:func:`regional_bone_dice`: the
        spine, and the ribs, sternum, clavicles and scapulae), ``p999_hu`` (of ``pred``) and ``p999_hu_gt``.
    """
    pred, gt = _check_pair(pred, gt)
    result = {"psnr": psnr(pred, gt)}
    ssim_scores = ssim3plane(pred, gt)
    result["ssim"] = ssim_scores["mean"]
    result.update({f"ssim_{plane}": ssim_scores[plane] for plane in PLANES})
    if lpips_model is not None:
        lpips_scores = lpips3plane(pred, gt, lpips_model, slice_stride=lpips_slice_stride)
        result["lpips"] = lpips_scores["mean"]
        result.update({f"lpips_{plane}": lpips_scores[plane] for plane in PLANES})
    errors = mae(pred, gt)
    result["mae_unit"], result["mae_hu"] = errors["unit"], errors["hu"]
    result["psnr_x2ct"] = x2ct_psnr(pred, gt)
    result["bone_dice"] = bone_dice(pred, gt)
    regions = regional_bone_dice(pred, gt)
    result["bone_dice_spine"], result["bone_dice_outside_spine"] = regions["spine"], regions["outside_spine"]
    result["p999_hu"], result["p999_hu_gt"] = percentile_hu(pred), percentile_hu(gt)
    return result


def reprojection_check(ct_unit: np.ndarray, pa: np.ndarray, lat: np.ndarray,
                       field: np.ndarray | None = None) -> dict[str, float]:
    """DRRs of a ``(D, H, W)`` unit reconstruction on the model grid against the ``(H, W)`` input radiographs:
    PSNR (data range 1) and correlation per view (``pa_psnr``, ``pa_ncc``, ``lat_psnr``, ``lat_ncc``), and the
    display-invariant rank correlation (``pa_rank``, ``lat_rank``: Spearman's ρ of 32² area-averaged images, which
    a film's display curve, noise and edge enhancement barely change; what the input gate reads).

    Args:
        field: ``(2, H, W)`` masks of where each radiograph shows the patient (1) and where a collimator shutter or a
            burnt-in marker hides it (0; :func:`~DCTNetLib.models.projection_registration.film_field_mask`): the
            rank correlations then read only the inside (:func:`rank_correlation`). None: the whole images."""
    with torch.inference_mode():
        volume = torch.from_numpy(np.ascontiguousarray(ct_unit))[None, None].float()
        spacing = CROP_SIZE / ct_unit.shape[0]  # the model grid always spans the 320 mm X2CT-GAN field
        drr = make_drrs(volume, spacing)[0].numpy()
    out = {}
    for index, (name, image, ref) in enumerate((("pa", drr[0], pa), ("lat", drr[1], lat))):
        mse = float(np.mean((image - ref) ** 2))
        out[f"{name}_psnr"] = float(psnr_from_mse(mse, mse_floor=MSE_FLOOR))
        out[f"{name}_ncc"] = float(np.corrcoef(image.ravel(), ref.ravel())[0, 1])
        out[f"{name}_rank"] = rank_correlation(image, ref, field=None if field is None else field[index])
    return out


RANK_THUMBNAIL = 32  # side of the area-averaged images rank_correlation compares (16 mm pixels of the detector)
# A field mask is used when at least this share of the thumbnail's cells (52 of 32²) lies wholly inside it; below,
# too few cells remain for a rank correlation and the whole images are compared. The gate's change was chosen with
# "more than 50 cells" (docs/reliability.md, "The input gate reads the film's field").
MIN_FIELD_SHARE = 0.05


def rank_correlation(a: np.ndarray, b: np.ndarray, side: int = RANK_THUMBNAIL,
                     field: np.ndarray | None = None) -> float:
    """Spearman's ρ between two ``(n, n)`` images after area-averaging each to ``side``² (n divisible by side).

    With ``field``, an ``(n, n)`` mask of where the images show the patient, only the thumbnail cells wholly inside
    it are compared: a collimator's blank band or a burnt-in marker is no anatomy the reconstruction could explain
    (without it, a strong film-like appearance refused 10 of 42 genuine pairs; docs/reliability.md). When fewer
    than :data:`MIN_FIELD_SHARE` of the cells are inside, the whole images are compared."""
    def thumb(image: np.ndarray) -> np.ndarray:
        n = image.shape[0]
        k = max(1, n // side)
        return np.asarray(image, np.float64)[:k * (n // k), :k * (n // k)].reshape(n // k, k, n // k, k).mean((1, 3))

    x, y = thumb(a).ravel(), thumb(b).ravel()
    if field is not None:
        inside = thumb(field).ravel() >= 1.0 - 1e-6
        if inside.mean() >= MIN_FIELD_SHARE:
            x, y = x[inside], y[inside]
    return float(spearmanr(x, y).statistic)
