"""Training of the dual-generator reconstruction GAN of DCT-Net (§2.2–2.3, §3.1) on prepared cases.

One step on a batch ``(Y, X, GT)`` — radiographs, bone-suppressed radiographs, CT — follows X2CT-GAN's order
(kylekma/X2CT ``3DGAN/lib/model/multiView_CTGAN.py`` ``optimize_parameters``: generator first with D frozen,
then D on the detached fake):

1. ``G(Y) = g_raw(Y)`` and ``G(X) = g_bs(X)``;
2. generator step on eq. 10b (:meth:`MultiPathLoss.generator_loss`): λ1 ℓ(G) + λ2 ℓ_contr(G(Y), G(X)) +
   λ3 ℓ_recon + λ4 ℓ_proj. D scores G(Y) through *detached copies of its parameters*
   (:func:`torch.func.functional_call`), so no gradient reaches D and the DDP-wrapped D is not involved;
3. discriminator step on eq. 10a (:meth:`MultiPathLoss.discriminator_loss`) with GT and the detached G(Y).

**G(X)'s supervision (our reading of eq. 10b).** Eq. 10b lists one recon/proj pair, written for G(Y); G(X)
appears only in ℓ_contr. Trained by ℓ_contr alone, G(X) would only learn to imitate G(Y) and the "contrast"
would carry no information from X. With ``gx_supervised`` (default) G(X) also gets λ3 MSE + λ4 projection L1
against GT — the same voxel-level terms, so both generators learn the CT and ℓ_contr compares two
reconstructions, one from bone-suppressed views. ``--set gx_supervised=false`` gives the literal reading.

The bone-suppressed inputs X are the prepared synthetic targets (``bs_source="target"``) or the trained CDM's
samples, cached once per case by the command (:mod:`.cache`); the cache key is stored in the checkpoint and a
resume with another CDM is refused. Validation (rank 0, eval mode): PSNR / tri-plane SSIM / MAE of G(Y) on the
validation split with :mod:`DCTNetLib.evaluation.metrics` (``best.pt`` keeps the best PSNR), and G(X)'s PSNR.

The GAN step draws no random numbers (the tiny and small presets have no dropout; the full preset's dropout
uses the global stream, saved per rank in every checkpoint), so resumption is bit-exact on CPU and ``w`` DDP
ranks with batch ``b`` take the same steps as one process with batch ``w·b`` (``test_training_gan.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..errors import InputError
from ..evaluation.metrics import bone_dice, mae, percentile_hu, psnr, ssim3plane
from ..models.losses import MultiPathLoss
from ..models.presets import GANPreset, build_discriminator, build_generator, compose_preset
from .config import GANTrainConfig
from .distributed import DistInfo, unwrap
from .loop import Trainer

__all__ = ["GANTrainer", "build_gan_preset", "generator_param_groups", "uses_bone_suppressed"]


def build_gan_preset(config: GANTrainConfig) -> GANPreset:
    """The :class:`~DCTNetLib.models.presets.GANPreset` of a training config.

    ``config.variant`` at ``config.size``; the ``model`` keys override generator or discriminator fields and
    ``config.loss`` overrides :class:`~DCTNetLib.models.presets.LossConfig` fields.

    Raises:
        InputError: unknown field (the message lists the valid ones) or an invalid value.
    """
    return compose_preset(config.variant, config.size, **config.model, loss=dict(config.loss))


def uses_bone_suppressed(config: GANTrainConfig, preset: Any) -> bool:
    """True when the run trains G(X), i.e. needs bone-suppressed inputs X (dual branch, and G(X) gets a loss)."""
    loss = preset.loss
    return bool(loss.dual_branch and (loss.contrastive or config.gx_supervised))


def generator_param_groups(generators: list[nn.Module], product_lr: float) -> list[dict[str, Any]]:
    """Adam parameter groups of the generators: everything at the config's lr, and the product paths (parameters
    under ``product.``, when the preset has them) in a second group at ``product_lr``. The second group is left
    out when there is no product path, so checkpoints of presets without one keep their single-group optimiser
    state.
    """
    rest, product = [], []
    for generator in generators:
        for name, parameter in generator.named_parameters():
            (product if name.startswith("product.") else rest).append(parameter)
    return [{"params": rest}, *([{"params": product, "lr": product_lr}] if product else [])]


class GANTrainer(Trainer):
    """Trains G(Y), G(X) and D of DCT-Net (see the module docstring).

    Args:
        config: training config (Adam 2e-4, β (0.5, 0.999), batch 1, 100 epochs: DCT-Net §3.1).
        run_dir: run folder.
        train_set: cases with ``ct (1, n, n, n)``, ``drr (2, n, n)`` and ``drr_bs (2, n, n)`` (the X used for
            G(X): prepared targets or :class:`~.cache.CachedBoneSuppressed` CDM outputs).
        val_set: validation cases, or None.
        preset: model preset (:func:`build_gan_preset`).
        perceptual: frozen feature network φ of ℓ_contr (:class:`~DCTNetLib.models.perceptual.VGG16Features`);
            required when the preset's loss uses it.
        cdm_info: ``{"path", "key"}`` of the CDM whose cached samples are X, or None (prepared targets).
        device: torch device (chosen from the config when None).
        dist_info: rank information (from the environment when None).
    """

    kind = "gan"

    def __init__(self, config: GANTrainConfig, run_dir: str | Path, *, train_set: Dataset, val_set: Dataset | None,
                 preset: Any, perceptual: nn.Module | None = None, cdm_info: dict[str, str] | None = None,
                 device: torch.device | None = None, dist_info: DistInfo | None = None) -> None:
        super().__init__(config, run_dir, train_set=train_set, val_set=val_set, device=device, dist_info=dist_info)
        self.best_key = config.best_on
        self.preset = preset
        self.cdm_info = dict(cdm_info) if cdm_info else None
        loss_cfg = preset.loss
        self.dual = uses_bone_suppressed(config, preset)
        self.g_raw = self.add_model("g_raw", build_generator(preset.generator))
        self.g_bs = None
        if self.dual:
            self.g_bs = self.add_model("g_bs", build_generator(preset.generator))
        if loss_cfg.lambda_bone_image:
            if getattr(unwrap(self.g_raw), "product", None) is None:
                raise InputError("loss.lambda_bone_image needs a generator with a product path "
                                 "(--set model.product_channels=8)")
            if self.g_raw is not unwrap(self.g_raw):  # the term calls the path outside DDP's forward
                raise InputError("loss.lambda_bone_image trains in a single process only (not under torchrun)")
        self.add_optimizer("generators", generator_param_groups(
            [unwrap(g) for g in (self.g_raw, self.g_bs) if g is not None], config.lr * config.product_lr_scale))
        self.discriminator = None
        if loss_cfg.adversarial:
            self.discriminator = self.add_model("discriminator", build_discriminator(preset.discriminator))
            self.add_optimizer("discriminator", unwrap(self.discriminator).parameters())
        try:
            self.criterion = MultiPathLoss(loss_cfg, perceptual).to(self.device)
        except ValueError as exc:
            raise InputError(f"GAN preset {preset.name}: {exc}") from exc

    # ------------------------------------------------------------------ hooks
    def model_config(self) -> dict[str, Any]:
        return self.preset.to_dict()

    def extra_state(self) -> dict[str, Any]:
        return {"cdm": dict(self.cdm_info) if self.cdm_info else None}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        saved = state.get("cdm")
        saved_key = saved.get("key") if saved else None
        current_key = self.cdm_info.get("key") if self.cdm_info else None
        if saved_key != current_key:
            raise InputError(
                f"cannot resume from {self.checkpoints.latest_path}: it was trained on bone-suppressed inputs "
                f"{_describe_cdm(saved)}, now {_describe_cdm(self.cdm_info)}; pass the original --cdm")

    # ------------------------------------------------------------------ step
    def _frozen_d(self, volume: torch.Tensor, radiographs: torch.Tensor) -> dict[str, torch.Tensor]:
        """D's scores of ``volume`` with gradients to the input only (D's weights enter detached)."""
        raw = unwrap(self.discriminator)
        weights = {name: p.detach() for name, p in raw.named_parameters()}
        return torch.func.functional_call(raw, weights, (volume, radiographs))

    def _voxel_supervision(self, volume: torch.Tensor, real: torch.Tensor, suffix: str
                           ) -> tuple[torch.Tensor, dict[str, float]]:
        """G(Y)'s switched-on voxel terms (λ3 ℓ_recon, λ4 ℓ_proj, λ_bone ℓ_bone, …) for another volume against GT:
        G(X) (``suffix="_x"``, see the module docstring) or the branch mean ½ (G(Y) + G(X)), the CT a
        reconstruction gives (``"_fused"``, ``LossConfig.lambda_fused``).

        Shapes: two ``(B, 1, D, H, W)`` → scalar."""
        parts = self.criterion.voxel_terms(volume, real, suffix=suffix)
        total = sum((weight * value for _, weight, value in parts), volume.new_zeros(()))
        return total, {name: float(value.detach()) for name, _, value in parts}

    def _bone_image_term(self, raw: torch.Tensor, bone_suppressed: torch.Tensor) -> torch.Tensor:
        """L1 between G(Y)'s product-path estimate of each view's bone image and the pair's own, ``raw −
        bone_suppressed`` (``LossConfig.lambda_bone_image``). Shapes: ``(B, 2, n, n)`` twice → scalar."""
        return (unwrap(self.g_raw).product.bone_images(raw) - (raw - bone_suppressed)).abs().mean()

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        y, real = batch["drr"], batch["ct"]
        with self.autocast():
            fake_y = self.g_raw(y)
            fake_x = self.g_bs(batch["drr_bs"]) if self.g_bs is not None else None
            d_fake = self._frozen_d(fake_y, y) if self.discriminator is not None else None
            g_loss, terms = self.criterion.generator_loss(fake_y, real, d_fake,
                                                          fake_x if self.preset.loss.contrastive else None)
            if fake_x is not None and self.config.gx_supervised:
                extra, extra_terms = self._voxel_supervision(fake_x, real, "_x")
                g_loss = g_loss + extra
                terms.update(extra_terms)
            if fake_x is not None and self.preset.loss.lambda_fused:
                fused, fused_terms = self._voxel_supervision((fake_y + fake_x) / 2, real, "_fused")
                g_loss = g_loss + self.preset.loss.lambda_fused * fused
                terms.update(fused_terms)
            if self.preset.loss.lambda_bone_image:
                bone_image = self._bone_image_term(y, batch["drr_bs"])
                g_loss = g_loss + self.preset.loss.lambda_bone_image * bone_image
                terms["bone_image"] = float(bone_image.detach())
            terms["total"] = float(g_loss.detach())
        self.optimise("generators", g_loss)
        if self.discriminator is not None:
            with self.autocast():
                d_real = self.discriminator(real, y)
                d_fake = self.discriminator(fake_y.detach(), y)
                d_loss, d_terms = self.criterion.discriminator_loss(d_real, d_fake)
            self.optimise("discriminator", d_loss)
            terms.update(d_terms)
        return terms

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict[str, float]:
        """PSNR / tri-plane SSIM / MAE / bone Dice / 99.9th percentile (HU) of G(Y) and PSNR of G(X) on the
        validation split (unit volumes); means over the cases."""
        g_raw, g_bs = unwrap(self.g_raw).eval(), (unwrap(self.g_bs).eval() if self.g_bs is not None else None)
        scores: dict[str, list[float]] = {"psnr": [], "ssim": [], "mae": [], "bone_dice": [], "p999_hu": [],
                                          "psnr_gx": []}
        for index in range(len(self.val_set)):
            item = self.val_set[index]
            y = item["drr"][None].to(self.device)
            gt = item["ct"][0].float().numpy()
            with self.autocast():
                pred = g_raw(y)[0, 0].float().cpu().numpy()
            scores["psnr"].append(psnr(pred, gt))
            scores["ssim"].append(ssim3plane(pred, gt)["mean"])
            scores["mae"].append(mae(pred, gt)["unit"])
            scores["bone_dice"].append(bone_dice(pred, gt))
            scores["p999_hu"].append(percentile_hu(pred))
            if g_bs is not None:
                with self.autocast():
                    pred_x = g_bs(item["drr_bs"][None].to(self.device))[0, 0].float().cpu().numpy()
                scores["psnr_gx"].append(psnr(pred_x, gt))
        return {key: float(np.mean(values)) for key, values in scores.items() if values}


def _describe_cdm(info: dict[str, str] | None) -> str:
    if not info:
        return "from the prepared targets (bs_source=target)"
    return f"from the CDM {info.get('path')} (cache key {info.get('key')})"
