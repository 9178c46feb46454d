"""Training of the bone-suppression conditional diffusion model (DCT-Net §2.1) on prepared radiograph pairs.

Each prepared case gives two samples, its PA and its lateral radiograph, each with a view flag
(:class:`RadiographViews`): the condition ``y`` is the DRR, the target ``x0`` the synthetic bone-suppressed DRR.
One step draws a timestep and noise per sample and minimises the denoising MSE of
:class:`~DCTNetLib.models.diffusion.diffusion.ConditionalDiffusion` (against ε, v or x₀, as the config's
``objective`` says; the shipped small CDM predicts v); an EMA copy of the weights (its decay and
period from :class:`~DCTNetLib.models.diffusion.config.CDMConfig`) is what validation and sampling use.

The timestep and noise of a sample are drawn from a generator seeded by ``(seed, epoch, sample index)``, not from
the global RNG: they do not depend on which rank or batch the sample lands in, so one process with batch
``w·b`` takes the same steps as ``w`` DDP ranks with batch ``b`` (``Testing/Python/test_training_cdm.py``,
``test_a_samples_timestep_and_noise_do_not_depend_on_its_batch``), and resuming needs no more than the data
position (``test_resume_matches_an_uninterrupted_run``).

Validation (rank 0, EMA weights): the denoising MSE on the whole validation split with fixed noise (``loss``), and the
PSNR / SSIM of DDIM samples of the first ``val_samples`` validation radiographs against their targets (``psnr``,
``ssim``; ``best.pt`` keeps the best PSNR).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..conventions import derived_seed
from ..data.case_arrays import check_case_array
from ..data.prepared_cases import CASE_FILES, resample
from ..errors import InputError
from ..evaluation.metrics import MSE_FLOOR, psnr_from_mse
from ..models.diffusion.config import CDMConfig
from ..models.diffusion.diffusion import ConditionalDiffusion
from ..models.diffusion.ema import EMA
from .config import CDMTrainConfig
from .distributed import DistInfo, unwrap
from .loop import Trainer

__all__ = ["RadiographViews", "sample_seed", "image_psnr", "CDMTrainer", "build_cdm_model"]

NUM_VIEWS = 2  # PA = 0, lateral = 1 (DCTNetLib.conventions)
VALIDATION_EPOCH = -1  # the noise "epoch" of validation: the same noise at every validation


class RadiographViews(Dataset):
    """Split prepared cases into single radiographs: sample ``2i + v`` is view ``v`` of case ``i``.

    Args:
        cases: dataset of dicts with ``drr`` and ``drr_bs``, each ``(2, H, W)`` in [0, 1].

    Returns per sample: ``{"y": (1, H, W), "x0": (1, H, W), "view": int, "index": int, "case_id": str}``.
    """

    def __init__(self, cases: Dataset) -> None:
        self.cases = cases

    def __len__(self) -> int:
        return NUM_VIEWS * len(self.cases)

    def _radiographs(self, case_index: int, view: int) -> tuple[Any, Any, str]:
        """One view of the case's DRR and bone-suppressed DRR; reads only those files from prepared folders, and
        resamples them to the cases' ``image_size`` as the cases dataset itself would (``prepared_cases.resample``)."""
        if hasattr(self.cases, "case_dir") and hasattr(self.cases, "case_ids"):
            case_id = self.cases.case_ids[case_index]
            folder = self.cases.case_dir(case_id)
            for kind in ("drr", "drr_bs"):  # the header, before numpy maps what it claims
                check_case_array(folder / CASE_FILES[kind], kind)
            try:
                drr = np.load(folder / CASE_FILES["drr"], mmap_mode="r")[view:view + 1]
                drr_bs = np.load(folder / CASE_FILES["drr_bs"], mmap_mode="r")[view:view + 1]
            except (OSError, ValueError) as exc:
                raise InputError(f"damaged prepared case {case_id}: {folder} ({exc})") from exc
            drr, drr_bs = (torch.from_numpy(np.array(a, dtype=np.float32)) for a in (drr, drr_bs))
            size = getattr(self.cases, "image_size", None)
            if size and tuple(drr.shape[-2:]) != (size, size):  # e.g. the tiny preset's 32² from 128² cases
                drr, drr_bs = resample(drr, size), resample(drr_bs, size)
            return drr, drr_bs, case_id
        case = self.cases[case_index]
        return case["drr"][view:view + 1], case["drr_bs"][view:view + 1], str(case.get("case_id", case_index))

    def __getitem__(self, index: int) -> dict[str, Any]:
        view = index % NUM_VIEWS
        drr, drr_bs, case_id = self._radiographs(index // NUM_VIEWS, view)
        return {
            "y": torch.as_tensor(drr, dtype=torch.float32),
            "x0": torch.as_tensor(drr_bs, dtype=torch.float32),
            "view": view,
            "index": index,
            "case_id": case_id,
        }


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Seed of sample ``index`` in ``epoch`` of a run seeded ``seed`` (:func:`DCTNetLib.conventions.derived_seed`)."""
    return derived_seed(seed, epoch, index)


def draw_timesteps_and_noise(indices: torch.Tensor, shape: tuple[int, ...], timesteps: int, seed: int,
                             epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample timestep ``(B,)`` and noise ``(B, *shape)`` from :func:`sample_seed` generators (on CPU)."""
    t, noise = [], []
    for index in indices.tolist():
        gen = torch.Generator().manual_seed(sample_seed(seed, epoch, int(index)))
        t.append(torch.randint(0, timesteps, (1,), generator=gen))
        noise.append(torch.randn(shape, generator=gen))
    return torch.cat(t), torch.stack(noise)


def image_psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB per image of ``(B, …)`` batches on a ``data_range`` scale, capped at :data:`MSE_FLOOR`'s 120 dB
    (:func:`~DCTNetLib.evaluation.metrics.psnr_from_mse`). Shapes: ``(B, …)`` → ``(B,)``."""
    mse = (pred.float() - target.float()).flatten(1).pow(2).mean(dim=1)
    return psnr_from_mse(mse, data_range, mse_floor=MSE_FLOOR)


def _ssim_2d(pred: np.ndarray, target: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(pred, target, data_range=1.0))


def build_cdm_model(size: str, overrides: dict[str, Any]) -> Any:
    """A :class:`ConditionalDiffusion` from a :class:`CDMConfig` size preset (``full``/``small``/``tiny``) plus
    field overrides.

    Raises:
        InputError: an override names no CDMConfig field (the message lists the valid ones) or a bad value.
    """
    valid = sorted(f.name for f in dataclasses.fields(CDMConfig))
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise InputError(f"unknown model key(s) {unknown} for the CDM; valid keys: {', '.join(valid)}")
    try:
        config = getattr(CDMConfig, size)(**overrides)
    except (TypeError, ValueError) as exc:
        raise InputError(f"invalid CDM model config ({size} preset, overrides {overrides}): {exc}") from exc
    return ConditionalDiffusion(config)


class CDMTrainer(Trainer):
    """Trains a :class:`ConditionalDiffusion` with EMA (see the module docstring).

    Args:
        config: training config.
        run_dir: run folder.
        train_set: prepared training cases (dicts with ``drr`` and ``drr_bs``), split into views here.
        val_set: prepared validation cases, or None.
        diffusion: the model to train (built by :func:`build_cdm_model` in the CLI; any module with the same
            ``forward(x0, y, view, t=, noise=)``, ``sample_ddim`` and ``config`` works, e.g. in tests).
        device: torch device (chosen from the config when None).
        dist_info: rank information (from the environment when None).
    """

    kind = "cdm"
    best_key = "psnr"

    def __init__(self, config: CDMTrainConfig, run_dir: str | Path, *, train_set: Dataset,
                 val_set: Dataset | None, diffusion: torch.nn.Module, device: torch.device | None = None,
                 dist_info: DistInfo | None = None) -> None:
        super().__init__(config, run_dir, train_set=RadiographViews(train_set),
                         val_set=RadiographViews(val_set) if val_set is not None else None,
                         device=device, dist_info=dist_info)
        self.diffusion = self.add_model("diffusion", diffusion)
        raw = unwrap(self.diffusion)
        cfg = raw.config
        self.ema = EMA(raw, decay=cfg.ema_decay, update_every=cfg.ema_update_every,
                       warmup_steps=cfg.ema_warmup_steps)
        self.add_optimizer("diffusion", raw.parameters())

    # ------------------------------------------------------------------ hooks
    def model_config(self) -> dict[str, Any]:
        return unwrap(self.diffusion).config.to_dict()

    def extra_state(self) -> dict[str, Any]:
        return {"ema": {"diffusion": self.ema.state_dict()}}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.ema.load_state_dict(state["ema"]["diffusion"])

    def _loss(self, model: torch.nn.Module, batch: dict[str, Any], epoch: int) -> torch.Tensor:
        x0, y = batch["x0"], batch["y"]
        t, noise = draw_timesteps_and_noise(batch["index"].cpu(), tuple(x0.shape[1:]),
                                            unwrap(model).num_timesteps, self.config.seed, epoch)
        with self.autocast():
            return model(x0, y, batch["view"], t=t.to(self.device), noise=noise.to(self.device))

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        loss = self._loss(self.diffusion, batch, self.epoch)
        self.optimise("diffusion", loss)
        self.ema.update()
        return {"loss": float(loss.detach())}

    def validate(self) -> dict[str, float]:
        """Denoising MSE with fixed noise on the whole split, and PSNR/SSIM of DDIM samples of the first radiographs."""
        cfg: CDMTrainConfig = self.config  # type: ignore[assignment]
        model = self.ema.model
        loader = DataLoader(self.val_set, batch_size=cfg.batch_size, shuffle=False, num_workers=0)
        total, count = 0.0, 0
        psnrs: list[float] = []
        ssims: list[float] = []
        steps = cfg.val_sampling_steps or model.config.sampling_steps
        for batch in loader:
            batch = self.to_device(batch)
            n = batch["x0"].shape[0]
            total += float(self._loss(model, batch, VALIDATION_EPOCH)) * n
            count += n
            take = min(n, cfg.val_samples - len(psnrs))
            if take > 0:
                sample = model.sample_ddim(batch["y"][:take], batch["view"][:take], steps=steps, seed=cfg.seed)
                target = batch["x0"][:take]
                psnrs += image_psnr(sample, target).tolist()
                ssims += [_ssim_2d(s[0].cpu().numpy(), g[0].cpu().numpy()) for s, g in zip(sample, target)]
        metrics = {"loss": total / max(count, 1)}
        if psnrs:
            metrics.update(psnr=float(np.mean(psnrs)), ssim=float(np.mean(ssims)))
        return metrics
