"""Training recipes: the optimiser and learning-rate schedule each row of DCT-Net Table 1 is trained with.

A GAN variant (:data:`DCTNetLib.models.presets.VARIANTS`) trains by default with its own recipe
(:func:`recipe_for`); the training config's ``recipe`` field names another, and
:func:`DCTNetLib.training.config.resolve_config` layers it under the user's own settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InputError

__all__ = ["TrainingRecipe", "RECIPES", "VARIANT_RECIPES", "recipe_for"]


@dataclass(frozen=True)
class TrainingRecipe:
    """Optimiser and schedule a Table 1 row is trained with (applied by ``dctnet train``; see
    :func:`DCTNetLib.training.config.resolve_config`). Every value can still be overridden by the user.

    Args:
        name: ``"dctnet"`` or ``"x2ct"``.
        lr: Adam learning rate.
        betas: Adam (β1, β2).
        batch_size: samples per optimiser step (global batch).
        epochs: total epochs.
        lr_schedule: ``"constant"`` or ``"x2ct"`` (constant for the first half, linear decay over the second).
        source: where the values come from.
    """

    name: str
    lr: float
    betas: tuple[float, float]
    batch_size: int
    epochs: int
    lr_schedule: str
    source: str

    def overrides(self) -> dict[str, Any]:
        """The training-config keys this recipe sets."""
        return {"lr": self.lr, "betas": list(self.betas), "batch_size": self.batch_size, "epochs": self.epochs,
                "lr_schedule": self.lr_schedule}


RECIPES = {
    "dctnet": TrainingRecipe("dctnet", 2e-4, (0.5, 0.999), 1, 100, "constant",
                             "DCT-Net §3.1: Adam, lr 0.0002, β1 0.5, β2 0.999, batch 1, 100 epochs (no decay stated)"),
    "x2ct": TrainingRecipe("x2ct", 2e-4, (0.5, 0.99), 4, 100, "x2ct",
                           "X2CT-GAN, kylekma/X2CT 3DGAN/experiment/multiview2500/d2_multiview2500.yml TRAIN: "
                           "lr 0.0002, beta1 0.5, beta2 0.99, batch_size 4, niter 50 + niter_decay 50 "
                           "(lr_policy 'lambda')"),
}
# The recipe each variant trains with by default: X2CT-GAN's row its own published one; DCT-Net and its three
# ablations DCT-Net's §3.1 settings (an ablation changes one component, not the optimiser).
VARIANT_RECIPES = {"dctnet": "dctnet", "ablation-no-dual-branch": "dctnet", "ablation-no-recon-gan": "dctnet",
                   "ablation-no-perceptual": "dctnet", "x2ct-baseline": "x2ct"}


def recipe_for(variant: str) -> TrainingRecipe:
    """The default :class:`TrainingRecipe` of ``variant`` (``dctnet`` or an entry of
    :data:`DCTNetLib.models.presets.ABLATIONS`).

    Raises:
        InputError: unknown variant.
    """
    if variant not in VARIANT_RECIPES:
        raise InputError(f"unknown GAN variant {variant!r}; valid: {', '.join(VARIANT_RECIPES)}")
    return RECIPES[VARIANT_RECIPES[variant]]
