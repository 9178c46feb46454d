"""Multi-path loss of DCT-Net (§2.3, eqs. 8–10): contrastive, reconstruction, projection and adversarial terms.

Generator objective (eq. 10b)::

    L_G = λ1 · ℓ(G) + λ2 · ℓ_contr + λ3 · ℓ_recon + λ4 · ℓ_proj
    ℓ(G)    = ½ · mean_v mean((D_v(G(Y) | Y) − 1)²)                               (eq. 9b, LSGAN)
    ℓ_contr = mean over planes v of Σ_i 1/(C_i H_i W_i) ‖φ_i(P_v G(Y)) − φ_i(P_v G(X))‖²   (eq. 8)
    ℓ_recon = mean((G(Y) − GT)²)                                                  (MSE)
    ℓ_proj  = mean over planes v of mean |P_v G(Y) − P_v GT|                        (L1)

Optional bone terms (ours, off in the paper's presets; :class:`~DCTNetLib.models.presets.LossConfig`):
``bone_weight`` makes ℓ_recon ``mean(w · (G(Y) − GT)²)`` with ``w = 1 + bone_weight`` where GT is bone, and
``λ_bone · ℓ_bone`` adds ``mean_v mean |P_v B(G(Y)) − P_v B(GT)|`` for the bone component
``B(v) = softplus(β (v − t)) / β``. ``λ_dice · ℓ_dice`` adds a soft Dice loss on the bone masks
(:func:`soft_bone_dice_loss`). ``λ_ssim · ℓ_ssim`` adds ``1 − SSIM`` of the slices of the three planes, the SSIM
that ``dctnet evaluate`` reports (:func:`plane_ssim`).

Discriminator objective (eq. 10a): ``λ1 · ½ [mean_v mean((D_v(GT | Y) − 1)²) + mean_v mean(D_v(G(Y) | Y)²)]``.
``D_v`` are the entries of the discriminator's output dict (axial/coronal/sagittal slice patches for
:class:`~DCTNetLib.models.discriminator.TriPlaneDiscriminator`, one 3D patch map for X2CT-GAN's); each entry's
squared error is averaged over its patches, then the entries are averaged.

``P_v`` is the mean projection of the volume along the axis normal to plane ``v`` (X2CT-GAN's projection maps
are means along an axis: kylekma/X2CT ``output_map``). The grey projections enter φ (frozen ImageNet VGG16,
:class:`~DCTNetLib.models.perceptual.VGG16Features`) as 3 identical channels normalised with the ImageNet mean
and std torchvision's VGG16 was trained with; that conversion lives in ``VGG16Features.forward``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..conventions import AXIS_AP, AXIS_RL, AXIS_SI, hu_to_unit
from .presets import LossConfig

__all__ = ["PLANE_AXES", "BONE_RAMP_UNIT", "project_planes", "perceptual_loss", "plane_ssim", "lsgan_loss", "bone_component",
           "soft_bone_dice_loss", "MultiPathLoss"]

# Plane → volume axis (of (D, H, W)) averaged away: axial planes are normal to S–I, coronal to A–P, sagittal
# to R–L (same plane names as the discriminator's slices).
PLANE_AXES = {"axial": AXIS_SI, "coronal": AXIS_AP, "sagittal": AXIS_RL}
# Width of the bone component's soft ramp in unit values: 0.02 of the 2500 HU window = 50 HU.
BONE_RAMP_UNIT = 0.02


def project_planes(volume: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean projections of a volume onto the axial, coronal and sagittal planes.

    Args:
        volume: ``(B, 1, D, H, W)`` volume.

    Shapes:
        ``(B, 1, D, H, W)`` → ``{"axial": (B, 1, H, W), "coronal": (B, 1, D, W), "sagittal": (B, 1, D, H)}``.
    """
    if volume.ndim != 5:
        raise ValueError(f"volume must be (B, C, D, H, W), got shape {tuple(volume.shape)}")
    return {plane: volume.mean(dim=2 + axis) for plane, axis in PLANE_AXES.items()}


def bone_component(volume: torch.Tensor, threshold_unit: float) -> torch.Tensor:
    """The part of a unit volume above ``threshold_unit``, with a soft ramp (``softplus(β (v − t)) / β``,
    β = 1 / :data:`BONE_RAMP_UNIT`) so that voxels just below the threshold still get a gradient.

    Shapes:
        any → the same shape.
    """
    beta = 1.0 / BONE_RAMP_UNIT
    return F.softplus(volume - threshold_unit, beta=beta)


def _unit(hu: float) -> float:
    """A HU threshold in the volumes' unit values."""
    return float(hu_to_unit(np.float64(hu)))


# Smoothing of the soft Dice's numerator and denominator (MONAI DiceLoss's smooth_nr = smooth_dr = 1e-5): a
# sample with no bone in either mask scores a loss near 0, not 0 / 0.
DICE_SMOOTH = 1e-5


def soft_bone_dice_loss(fake: torch.Tensor, real: torch.Tensor, threshold_unit: float) -> torch.Tensor:
    """1 − soft Dice between ``sigmoid((fake − t) / BONE_RAMP_UNIT)`` and the hard mask ``real > t``, per sample,
    averaged over the batch.

    Shapes:
        two ``(B, 1, D, H, W)`` volumes → scalar.
    """
    prob = torch.sigmoid((fake - threshold_unit) / BONE_RAMP_UNIT).flatten(1)
    mask = (real > threshold_unit).to(prob.dtype).flatten(1)
    overlap = (prob * mask).sum(dim=1)
    dice = (2.0 * overlap + DICE_SMOOTH) / (prob.sum(dim=1) + mask.sum(dim=1) + DICE_SMOOTH)
    return (1.0 - dice).mean()


# SSIM as scikit-image's structural_similarity computes it, which dctnet evaluate's SSIM calls: a uniform 7×7
# window, the sample covariance (N / (N − 1)), K1 = 0.01, K2 = 0.03 (Wang et al., IEEE TIP 2004) and data range 1,
# averaged over the window positions that fit inside the image (the borders are cropped).
SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03


def plane_ssim(fake: torch.Tensor, real: torch.Tensor, window: int = SSIM_WINDOW,
               slices: int | None = None) -> torch.Tensor:
    """Differentiable mean SSIM of the axial, coronal and sagittal slices of unit volumes, averaged over the three
    planes and the batch (:func:`DCTNetLib.evaluation.metrics.ssim3plane` on each sample, in torch).

    Args:
        fake, real: the volumes.
        window: side of the uniform window. Defaults to 7 (scikit-image's).
        slices: score this many random slices per plane (torch's global generator) instead of all of them: an
            unbiased estimate of the same mean at a fraction of the cost, as the small discriminator judges 8
            random slices per plane. None = all slices.

    Shapes:
        two ``(B, 1, D, H, W)`` volumes in [0, 1] → scalar.
    """
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    n = window * window
    covariance_norm = n / (n - 1)
    moments = torch.cat([fake, real, fake * fake, real * real, fake * real], dim=1)  # (B, 5, D, H, W)
    along = [(window, 1, 1), (1, window, 1), (1, 1, window)]  # a 1D box filter along D, H, W
    total = fake.new_zeros(())
    for normal, (first, second) in ((0, (1, 2)), (1, (0, 2)), (2, (0, 1))):  # axial, coronal, sagittal slices
        picked = moments
        if slices is not None and slices < moments.shape[2 + normal]:
            index = torch.randperm(moments.shape[2 + normal])[:slices].to(moments.device)
            picked = moments.index_select(2 + normal, index)
        local = F.avg_pool3d(F.avg_pool3d(picked, along[first], stride=1), along[second], stride=1)
        mean_f, mean_r, ff, rr, fr = local.unbind(dim=1)
        var_f = covariance_norm * (ff - mean_f * mean_f)
        var_r = covariance_norm * (rr - mean_r * mean_r)
        cov = covariance_norm * (fr - mean_f * mean_r)
        ssim = ((2 * mean_f * mean_r + c1) * (2 * cov + c2)) / ((mean_f ** 2 + mean_r ** 2 + c1) * (var_f + var_r + c2))
        total = total + ssim.mean()  # the window fits inside a slice only away from its borders: those are cropped
    return total / 3


def perceptual_loss(phi: nn.Module, a: torch.Tensor, b: torch.Tensor,
                    layers: Sequence[int] | None = None) -> torch.Tensor:
    """Perceptual loss of eq. 8: Σ_i 1/(C_i H_i W_i) ‖φ_i(a) − φ_i(b)‖², averaged over the batch.

    Args:
        phi: Feature network returning a sequence of feature maps (e.g. :class:`VGG16Features`).
        a: ``(N, 1, H, W)`` grey images.
        b: ``(N, 1, H, W)`` grey images.
        layers: Indices of ``phi``'s outputs to sum; ``None`` = all.

    Shapes:
        ``(N, 1, H, W)``, ``(N, 1, H, W)`` → scalar.
    """
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    features = phi(torch.cat([a, b], dim=0))  # one pass through φ for both images
    picked = features if layers is None else [features[i] for i in layers]
    n = a.shape[0]
    # mse_loss averages over N·C·H·W = the batch mean of 1/(C H W) ‖·‖².
    return sum(F.mse_loss(f[:n], f[n:]) for f in picked)


def _pool_to(image: torch.Tensor, size: int) -> torch.Tensor:
    """Average-pool ``(N, C, H, W)`` to ``(N, C, size, size)`` (unchanged when it is not larger)."""
    return F.adaptive_avg_pool2d(image, size) if max(image.shape[-2:]) > size else image


def lsgan_loss(scores: dict[str, torch.Tensor], target: float) -> torch.Tensor:
    """Mean over the output dict's entries of the mean squared distance of the patch scores to ``target``."""
    if not scores:
        raise ValueError("scores must be a non-empty dict of discriminator outputs")
    return sum(F.mse_loss(s, torch.full_like(s, target)) for s in scores.values()) / len(scores)


class MultiPathLoss(nn.Module):
    """The multi-path loss module of DCT-Net (Fig. 2c): generator and discriminator objectives of eq. 10.

    Args:
        config: Weights and switches (:class:`~DCTNetLib.models.presets.LossConfig`).
        perceptual: Frozen feature network φ for the contrastive term; required when ``config.contrastive`` and
            ``config.contrastive_metric == "perceptual"``, else ignored.

    Example::

        loss = MultiPathLoss(gan_preset("small").loss, VGG16Features())
        total, terms = loss.generator_loss(g_y, ct, d(g_y, y), fake_x=g_x)
    """

    def __init__(self, config: LossConfig, perceptual: nn.Module | None = None) -> None:
        super().__init__()
        if config.uses_perceptual and perceptual is None:
            raise ValueError("perceptual: a feature network φ is required by the perceptual contrastive term "
                             "(or set contrastive_metric='l1' / contrastive=False)")
        self.config = config
        self.perceptual = perceptual if config.uses_perceptual else None

    def contrastive(self, fake_y: torch.Tensor, fake_x: torch.Tensor) -> torch.Tensor:
        """ℓ_contr: mean over the three planes of eq. 8 (or of an L1) between projections of G(Y) and G(X).

        Shapes:
            ``(B, 1, D, H, W)``, ``(B, 1, D, H, W)`` → scalar.
        """
        raw, aug = project_planes(fake_y), project_planes(fake_x)
        size = self.config.perceptual_size
        if size and self.config.contrastive_metric == "perceptual":
            raw = {v: _pool_to(p, size) for v, p in raw.items()}
            aug = {v: _pool_to(p, size) for v, p in aug.items()}
        if self.config.contrastive_metric == "l1":
            return sum(F.l1_loss(raw[v], aug[v]) for v in raw) / len(raw)
        return sum(perceptual_loss(self.perceptual, raw[v], aug[v], self.config.perceptual_layers)
                   for v in raw) / len(raw)

    def reconstruction(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """ℓ_recon: the voxel MSE, with bone voxels of ``real`` weighted ``1 + bone_weight``. Shapes: two volumes
        → scalar."""
        if not self.config.bone_weight:
            return F.mse_loss(fake, real)
        weight = 1.0 + self.config.bone_weight * (real >= self._bone_threshold).to(real.dtype)
        return (weight * (fake - real) ** 2).mean()

    @property
    def _bone_threshold(self) -> float:
        return _unit(self.config.bone_threshold_hu)

    def bone_projection(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """ℓ_bone: the projection L1 of the bone components (:func:`bone_component`). Shapes: two volumes →
        scalar."""
        t = self._bone_threshold
        return self.projection(bone_component(fake, t), bone_component(real, t))

    def voxel_terms(self, fake: torch.Tensor, real: torch.Tensor, suffix: str = ""
                    ) -> list[tuple[str, float, torch.Tensor]]:
        """The switched-on voxel-level terms of one generator's output as ``(name, weight, value)``:
        ℓ_recon, ℓ_proj, ℓ_bone and ℓ_dice (names get ``suffix``, e.g. ``"_x"`` for G(X))."""
        cfg = self.config
        parts: list[tuple[str, float, torch.Tensor]] = []
        if cfg.reconstruction:
            parts.append(("recon" + suffix, cfg.lambda_recon, self.reconstruction(fake, real)))
        if cfg.projection:
            parts.append(("proj" + suffix, cfg.lambda_proj, self.projection(fake, real)))
        if cfg.lambda_bone_proj:
            parts.append(("bone" + suffix, cfg.lambda_bone_proj, self.bone_projection(fake, real)))
        if cfg.lambda_bone_dice:
            parts.append(("dice" + suffix, cfg.lambda_bone_dice,
                          soft_bone_dice_loss(fake, real, _unit(cfg.bone_dice_threshold_hu))))
        if cfg.lambda_ssim:
            parts.append(("ssim" + suffix, cfg.lambda_ssim,
                          1.0 - plane_ssim(fake, real, slices=cfg.ssim_slices or None)))
        return parts

    @staticmethod
    def projection(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """ℓ_proj: mean over the three planes of the L1 between projections. Shapes: two volumes → scalar."""
        p_fake, p_real = project_planes(fake), project_planes(real)
        return sum(F.l1_loss(p_fake[v], p_real[v]) for v in p_fake) / len(p_fake)

    def generator_loss(self, fake_y: torch.Tensor, real: torch.Tensor, d_fake_y: dict[str, torch.Tensor] | None,
                       fake_x: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Eq. 10b for G(Y) (and, through ℓ_contr, G(X)).

        Args:
            fake_y: ``(B, 1, D, H, W)`` G(Y).
            real: ``(B, 1, D, H, W)`` ground truth.
            d_fake_y: Discriminator outputs for G(Y) (not detached); unused (may be ``None``) when
                ``config.adversarial`` is off.
            fake_x: ``(B, 1, D, H, W)`` G(X); required when ``config.contrastive`` is on.

        Returns:
            ``(total, terms)``: the weighted sum, and the unweighted terms ``adv``, ``contrastive``, ``recon``,
            ``proj``, ``bone`` that are switched on, plus ``total``, as floats (for logging).

        Shapes:
            volumes ``(B, 1, D, H, W)`` → scalar.
        """
        if fake_y.shape != real.shape:
            raise ValueError(f"fake_y {tuple(fake_y.shape)} and real {tuple(real.shape)} must have the same shape")
        cfg = self.config
        parts: list[tuple[str, float, torch.Tensor]] = []
        if cfg.adversarial:
            if d_fake_y is None:
                raise ValueError("d_fake_y: discriminator outputs for G(Y) are required when adversarial=True")
            parts.append(("adv", cfg.lambda_adv, 0.5 * lsgan_loss(d_fake_y, 1.0)))
        if cfg.contrastive:
            if fake_x is None:
                raise ValueError("fake_x: G(X) is required when the contrastive term is on (contrastive=True)")
            if fake_x.shape != fake_y.shape:
                raise ValueError(f"fake_x {tuple(fake_x.shape)} must have fake_y's shape {tuple(fake_y.shape)}")
            parts.append(("contrastive", cfg.lambda_contrastive, self.contrastive(fake_y, fake_x)))
        parts += self.voxel_terms(fake_y, real)
        if not parts:
            raise ValueError("config: every generator loss term is switched off")
        total = sum(weight * value for _, weight, value in parts)
        terms = {name: float(value.detach()) for name, _, value in parts}
        terms["total"] = float(total.detach())
        return total, terms

    def discriminator_loss(self, d_real: dict[str, torch.Tensor], d_fake: dict[str, torch.Tensor]
                           ) -> tuple[torch.Tensor, dict[str, float]]:
        """Eq. 9a weighted by λ1 (eq. 10a): ``λ1 · ½ [LS(D(GT|Y), 1) + LS(D(G(Y)|Y), 0)]``.

        Args:
            d_real: Discriminator outputs for the ground truth.
            d_fake: Discriminator outputs for G(Y) (computed on a detached G(Y)).

        Returns:
            ``(loss, terms)`` with unweighted ``d_real``, ``d_fake`` (each ½·LS) and the weighted ``d_total``.

        Shapes:
            dicts of ``(N, 1, ...)`` patch maps → scalar.
        """
        real_term = 0.5 * lsgan_loss(d_real, 1.0)
        fake_term = 0.5 * lsgan_loss(d_fake, 0.0)
        total = self.config.lambda_adv * (real_term + fake_term)
        return total, {"d_real": float(real_term.detach()), "d_fake": float(fake_term.detach()),
                       "d_total": float(total.detach())}
