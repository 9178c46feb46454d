"""Model presets of the reconstruction GAN: generator, discriminator and multi-path loss configs in one place.

A preset is named ``VARIANT`` or ``VARIANT@SIZE``:

- variants: ``dctnet`` (the paper's model; the bare size names ``full``/``small``/``tiny`` are shorthands for
  ``dctnet@full`` …) and the rows of DCT-Net Table 1 listed in :data:`ABLATIONS`;
- sizes: ``full`` (the paper / X2CT-GAN widths, a GPU), ``small`` (trains on a 2-core CPU, a few M parameters)
  and ``tiny`` (unit tests: 32² radiographs → 32³ volumes). An ablation without ``@SIZE`` is ``full``.

Each variant only switches architecture or loss terms on top of the size's widths, so an ablation at ``small``
trains on the same CPU budget as ``small``. A :class:`GANPreset` records both as typed fields (``variant``,
``size``); the name ``VARIANT@SIZE`` is only how a user spells them. ``docs/architecture.md`` tabulates every
preset with its parameter count (``dctnet info``).

Example::

    preset = gan_preset("ablation-no-perceptual@small", loss={"lambda_recon": 5.0})
    g_raw, d = build_generator(preset.generator), build_discriminator(preset.discriminator)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from ..config_base import ConfigBase
from ..conventions import IMAGE_SIZE
from ..errors import InputError
from .discriminator import TriPlaneDiscriminator
from .generator import DCTNetGenerator
from .weight_init import INIT_SCHEMES, X2CT_INIT_GAIN, init_weights
from .x2ct import X2CTDiscriminator, X2CTGenerator

__all__ = [
    "GeneratorConfig",
    "DiscriminatorConfig",
    "LossConfig",
    "GANPreset",
    "SIZES",
    "VARIANTS",
    "ABLATIONS",
    "PRESET_NAMES",
    "gan_preset",
    "build_generator",
    "build_discriminator",
]

SIZES = ("full", "small", "tiny")
GENERATOR_ARCHS = ("dctnet", "x2ct")
DISCRIMINATOR_ARCHS = ("triplane", "x2ct3d")
CONTRASTIVE_METRICS = ("perceptual", "l1")


def _check_init(scheme: str, gain: float, what: str) -> None:
    if scheme not in INIT_SCHEMES:
        raise InputError(f"{what}: init must be one of {INIT_SCHEMES}, got {scheme!r}")
    if not gain > 0:
        raise InputError(f"{what}: init_gain must be > 0, got {gain!r}")


@dataclass(frozen=True, kw_only=True)
class GeneratorConfig(ConfigBase):
    """Architecture of one generator (G(Y) and G(X) share it).

    Args:
        arch: ``"dctnet"`` (:class:`~DCTNetLib.models.generator.DCTNetGenerator`, shared encoder, eqs. 5–6) or
            ``"x2ct"`` (:class:`~DCTNetLib.models.x2ct.X2CTGenerator`, the "w/o Recon-GAN" row). Defaults to
            "dctnet".
        image_size: Radiograph side = output volume side. Defaults to 128 (DCT-Net §3.1).
        stem_channels: Encoder stem width. Defaults to 64 (X2CT-GAN ``ngf: 64``).
        encoder_blocks: Dense layers per encoder level. Defaults to (6, 12, 24, 16, 6) (X2CT-GAN).
        growth_rate: Dense growth rate. Defaults to 32 (X2CT-GAN).
        decoder_channels: Seed width then one width per decoder level, coarsest first.
            Defaults to (256, 128, 64, 32, 16, 16) (X2CT-GAN).
        decoder_convs: ``dctnet`` only: 3×3×3 conv units per decoder level, coarsest first.
            Defaults to (1, 1, 1, 1, 0) (ours: X2CT-GAN has none at 128³ either).
        attention_levels: ``dctnet`` only: per decoder level, whether it has self-attention; ``None`` = every
            level (eq. 6). Defaults to None.
        attention: ``dctnet`` only: keyword arguments of
            :class:`~DCTNetLib.models.attention.SelfAttention3d`. Defaults to {} (its defaults).
        fusion_rank: ``dctnet`` only: rank of the factorised fusion FC γ; ``None`` = dense. Defaults to 704
            (one view's pooled width; see :class:`~DCTNetLib.models.generator.ViewFusion`).
        fusion_dropout: Dropout after the FC bridge. Defaults to 0.5 (X2CT-GAN ``base_link``).
        norm: Normalisation. Defaults to "instance" (X2CT-GAN ``norm_G: 'instance3d'``).
        deconv_kernels: ``dctnet`` only: transposed-conv kernel per decoder level, coarsest first (4 or 2);
            ``None`` = 4 everywhere (X2CT-GAN). Defaults to None.
        view_skips: ``dctnet`` only: per decoder level, whether the views' skip features are broadcast into it;
            ``None`` = every level (X2CT-GAN's connection B). Defaults to None.
        head: ``dctnet`` only: ``"conv"`` (3×3×3 conv at full resolution, X2CT-GAN) or ``"deconv"`` (the finest
            level is a 2×2×2 transposed conv to the volume; :class:`~DCTNetLib.models.generator.DCTNetGenerator`).
            Defaults to "conv".
        output_init: ``dctnet`` only: value the output starts at (the head's bias is its logit); ``None`` =
            PyTorch's initialisation. Defaults to None.
        product_channels: ``dctnet`` only: maps per view of the full-resolution product path
            (:class:`~DCTNetLib.models.generator.ViewProductPath`, ours); 0 = none, as in the paper. Defaults to 0.
        output_smoothing: ``dctnet`` only: a fixed [1, 2, 1] / 4 filter per axis on the output volume
            (:class:`~DCTNetLib.models.blocks.BinomialSmoothing3d`, no weights), against the dot pattern of a
            ``"deconv"`` head. Defaults to False (the paper's generator).
        view_decoder_convs: ``x2ct`` only: extra convs per view-decoder level, finest first.
            Defaults to (1, 2, 2, 2, 2, 0) (X2CT-GAN).
        fusion_decoder_convs: ``x2ct`` only: extra convs per fusion-decoder level, finest first.
            Defaults to (1, 1, 1, 1, 1, 0) (X2CT-GAN).
        init: Weight initialisation (:mod:`~DCTNetLib.models.weight_init`): ``"default"`` (PyTorch's; DCT-Net
            does not state one) or ``"normal"`` (N(0, init_gain²), X2CT-GAN's). Defaults to "default".
        init_gain: Standard deviation of ``init="normal"``. Defaults to 0.02 (X2CT-GAN ``init_weights``).
    """

    config_name: ClassVar[str] = "generator config"

    arch: str = "dctnet"
    image_size: int = IMAGE_SIZE
    stem_channels: int = 64
    encoder_blocks: tuple[int, ...] = (6, 12, 24, 16, 6)
    growth_rate: int = 32
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16, 16)
    decoder_convs: tuple[int, ...] = (1, 1, 1, 1, 0)
    attention_levels: tuple[bool, ...] | None = None
    attention: dict[str, Any] = field(default_factory=dict)
    fusion_rank: int | None = 704
    fusion_dropout: float = 0.5
    norm: str = "instance"
    deconv_kernels: tuple[int, ...] | None = None
    view_skips: tuple[bool, ...] | None = None
    head: str = "conv"
    output_init: float | None = None
    product_channels: int = 0
    output_smoothing: bool = False
    view_decoder_convs: tuple[int, ...] = (1, 2, 2, 2, 2, 0)
    fusion_decoder_convs: tuple[int, ...] = (1, 1, 1, 1, 1, 0)
    init: str = "default"
    init_gain: float = X2CT_INIT_GAIN

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_init(self.init, self.init_gain, "generator config")
        if self.arch not in GENERATOR_ARCHS:
            raise InputError(f"generator config: arch must be one of {GENERATOR_ARCHS}, got {self.arch!r}")
        if self.image_size % 2 ** len(self.encoder_blocks):
            raise InputError(f"generator config: image_size={self.image_size} must be divisible by "
                             f"2**len(encoder_blocks)={2 ** len(self.encoder_blocks)}")


@dataclass(frozen=True, kw_only=True)
class DiscriminatorConfig(ConfigBase):
    """Architecture of the discriminator D(· | Y).

    Args:
        arch: ``"triplane"`` (:class:`~DCTNetLib.models.discriminator.TriPlaneDiscriminator`, eq. 7) or
            ``"x2ct3d"`` (:class:`~DCTNetLib.models.x2ct.X2CTDiscriminator`, X2CT-GAN's 3D PatchGAN).
            Defaults to "triplane".
        channels: PatchGAN widths. Defaults to (64, 128, 256, 512) (X2CT-GAN ``ndf: 64``, 3 layers).
        norm: Normalisation. Defaults to "instance" (X2CT-GAN ``norm_D: 'instance3d'``).
        conditional: Condition on the broadcast radiographs (eq. 7's ``| Y``; X2CT-GAN ``conditional_D: True``).
            Defaults to True.
        slices_per_plane: In training, judge this many randomly drawn slices per plane instead of all of them
            (0 = all, eq. 7 exactly). The LSGAN loss is a mean over slices, so a random subset is an unbiased
            estimate of it at a fraction of the cost (our CPU-training option; the paper is silent). Evaluation
            mode always judges every slice. Defaults to 0.
        init: Weight initialisation, as :attr:`GeneratorConfig.init`. Defaults to "default".
        init_gain: Standard deviation of ``init="normal"``. Defaults to 0.02 (X2CT-GAN ``init_weights``).
    """

    config_name: ClassVar[str] = "discriminator config"

    arch: str = "triplane"
    channels: tuple[int, ...] = (64, 128, 256, 512)
    norm: str = "instance"
    conditional: bool = True
    slices_per_plane: int = 0
    init: str = "default"
    init_gain: float = X2CT_INIT_GAIN

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_init(self.init, self.init_gain, "discriminator config")
        if self.arch not in DISCRIMINATOR_ARCHS:
            raise InputError(f"discriminator config: arch must be one of {DISCRIMINATOR_ARCHS}, got {self.arch!r}")


@dataclass(frozen=True, kw_only=True)
class LossConfig(ConfigBase):
    """Weights and switches of the multi-path loss (eq. 10; :class:`~DCTNetLib.models.losses.MultiPathLoss`).

    The paper gives no λ values. λ1, λ3, λ4 are X2CT-GAN's (kylekma/X2CT ``d2_multiview2500.yml``:
    ``gan_lambda: 0.1``, ``idt_lambda: 10.`` with ``idt_loss: 'mse'``, ``map_projection_lambda: 10.`` with
    ``map_projection_loss: 'l1'``). λ2 is ours, calibrated so that ℓ_contr weighs about as much as λ4 · ℓ_proj
    for the difference the two branches should show: for the 128³ phantom and its bone-suppressed copy, eq. 8
    with ImageNet VGG16 (5 taps) gives 2.67 while the projection L1 gives 0.0054, a ratio of ~500, so
    λ2 = λ4 / 500 = 0.02 (``docs/architecture.md``; λ2 = 1 would make ℓ_contr ~50× the voxel terms).

    Args:
        lambda_adv: λ1, weight of ℓ(G) and ℓ(D) (eq. 9). Defaults to 0.1 (X2CT-GAN).
        lambda_contrastive: λ2, weight of ℓ_contr (eq. 8). Defaults to 0.02 (ours, calibrated as above).
        lambda_recon: λ3, weight of the voxel MSE. Defaults to 10.0 (X2CT-GAN).
        lambda_proj: λ4, weight of the three-plane projection L1. Defaults to 10.0 (X2CT-GAN).
        adversarial: Use the adversarial term (and train D). Defaults to True.
        contrastive: Use the contrastive term between G(Y) and G(X). Defaults to True.
        reconstruction: Use the voxel MSE. Defaults to True.
        projection: Use the projection L1. Defaults to True.
        dual_branch: Train G(X) on bone-suppressed radiographs beside G(Y). Defaults to True.
        contrastive_metric: ``"perceptual"`` (eq. 8, VGG16 features) or ``"l1"`` (the "w/o ℓ_perceptual" row:
            the perceptual loss replaced with a projection L1 between the branches; that variant weights it
            like the other projection L1, λ2 = λ4, not with the 0.02 calibrated for eq. 8). Defaults to
            "perceptual".
        perceptual_layers: Indices of the VGG16 taps summed in eq. 8 (0 = relu1_2 … 4 = relu5_3).
            Defaults to all five.
        perceptual_size: side to which the projections are average-pooled before φ; 0 = their own side (eq. 8
            as written). Defaults to 0.
        bone_weight: extra weight of voxels whose ground truth is bone (≥ ``bone_threshold_hu``) in ℓ_recon:
            ``mean(w · (G − GT)²)`` with ``w = 1 + bone_weight`` there and 1 elsewhere. Bone is ~3 % of a chest
            volume, so a plain MSE under uncertainty settles on soft tissue where a rib or vertebra may be (the
            v1–v3 models showed no bone). 0 = the paper's plain MSE. Defaults to 0 (ours; not in the paper).
        lambda_bone_proj: weight of ℓ_bone, the three-plane projection L1 of the *bone component*
            ``softplus(β (v − t)) / β`` (``t`` = ``bone_threshold_hu`` in unit values, β = 1/0.02, a ramp ~50 HU
            wide, so the gradient never vanishes below the threshold): it asks for the bone's mass in the right
            rays, as the raw minus bone-suppressed DRR shows it. 0 = off (the paper). Defaults to 0 (ours).
        bone_threshold_hu: where bone starts for ``bone_weight`` and ℓ_bone. Defaults to 200 (cancellous bone
            is ~200–400 HU; at 2.5 mm a rib's cortex averages down to ~300 HU: :mod:`DCTNetLib.data.bone`).
        lambda_bone_image: weight of an L1 between G(Y)'s product-path estimate of each view's bone image
            (:meth:`~DCTNetLib.models.generator.ViewProductPath.bone_images`) and the training pair's own bone
            image, raw minus bone-suppressed DRR: it teaches the path's 2D maps to find bone in a radiograph
            directly, which the volume losses reach only through the path's zero-started mix. 0 = off; needs a
            generator with a product path. Defaults to 0 (ours).
        lambda_bone_dice: weight of ℓ_dice, a soft Dice loss (as MONAI's ``DiceLoss``) between
            ``sigmoid((G(Y) − t) / 0.02)`` and the ground truth's ``> t`` mask, ``t`` = ``bone_dice_threshold_hu``
            in unit values (0.02 = 50 HU, the ramp of ℓ_bone). The voxel MSE, even bone-weighted, settles below
            the bone threshold wherever a vertebra's or rib's exact place is uncertain (regression to the mean:
            v5's bone Dice rose to 0.108 and fell to 0.037 on the validation CT); a Dice loss is normalised by
            the bone's own size and rewards the overlap itself. 0 = off. Defaults to 0 (ours).
        bone_dice_threshold_hu: ``t`` of ℓ_dice: the bone Dice that ``dctnet evaluate`` reports
            (:data:`DCTNetLib.evaluation.metrics.BONE_HU`, 300 HU; a test keeps them equal). Defaults to 300.
        lambda_ssim: weight of ℓ_ssim = 1 − SSIM of the slices of the three planes, computed as ``dctnet
            evaluate`` computes its SSIM (:func:`~DCTNetLib.models.losses.plane_ssim`). The voxel MSE under
            uncertainty blurs; SSIM asks for the local contrast and structure (Zhao et al., "Loss functions for
            image restoration with neural networks", IEEE TCI 2017, mix an SSIM term with an L1). 0 = off.
            Defaults to 0 (ours).
        ssim_slices: ℓ_ssim on this many random slices per plane (an unbiased estimate; all 128 cost ~3 s per
            128³ volume on one CPU core, forward and backward). 0 = all. Defaults to 16 (ours).
        lambda_fused: weight of G(Y)'s switched-on voxel terms applied once more to the branch mean
            ``½ (G(Y) + G(X))``, the CT a reconstruction gives (:data:`DCTNetLib.inference.FUSIONS`): the loss
            then also trains what is shipped. Needs the dual branch. 0 = off. Defaults to 0 (ours).
    """

    config_name: ClassVar[str] = "loss config"

    lambda_adv: float = 0.1
    lambda_contrastive: float = 0.02
    lambda_recon: float = 10.0
    lambda_proj: float = 10.0
    adversarial: bool = True
    contrastive: bool = True
    reconstruction: bool = True
    projection: bool = True
    dual_branch: bool = True
    contrastive_metric: str = "perceptual"
    perceptual_layers: tuple[int, ...] = (0, 1, 2, 3, 4)
    perceptual_size: int = 0
    bone_weight: float = 0.0
    lambda_bone_proj: float = 0.0
    bone_threshold_hu: float = 200.0
    lambda_bone_image: float = 0.0
    lambda_bone_dice: float = 0.0
    bone_dice_threshold_hu: float = 300.0
    lambda_ssim: float = 0.0
    ssim_slices: int = 16
    lambda_fused: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.contrastive_metric not in CONTRASTIVE_METRICS:
            raise InputError(f"loss config: contrastive_metric must be one of {CONTRASTIVE_METRICS}, "
                             f"got {self.contrastive_metric!r}")
        if self.perceptual_size < 0:
            raise InputError(f"loss config: perceptual_size must be >= 0, got {self.perceptual_size}")
        if not self.perceptual_layers or not all(0 <= i <= 4 for i in self.perceptual_layers):
            raise InputError(f"loss config: perceptual_layers must be indices in 0..4, got {self.perceptual_layers}")
        if self.ssim_slices < 0:
            raise InputError(f"loss config: ssim_slices must be >= 0 (0 = all), got {self.ssim_slices}")
        if self.lambda_fused and not self.dual_branch:
            raise InputError("loss config: lambda_fused needs dual_branch=True (it trains the mean of G(Y) and G(X))")
        if self.contrastive and not self.dual_branch:
            raise InputError("loss config: contrastive=True needs dual_branch=True (it compares G(Y) with G(X))")
        for name in ("lambda_adv", "lambda_contrastive", "lambda_recon", "lambda_proj", "bone_weight",
                     "lambda_bone_proj", "lambda_bone_image", "lambda_bone_dice", "lambda_ssim", "lambda_fused"):
            if getattr(self, name) < 0:
                raise InputError(f"loss config: {name} must be >= 0, got {getattr(self, name)}")

    @property
    def uses_perceptual(self) -> bool:
        """True when the loss needs the perceptual network φ."""
        return self.contrastive and self.contrastive_metric == "perceptual"

    @property
    def perceptual_blocks(self) -> int:
        """How many VGG16 blocks φ needs: up to the deepest tap in :attr:`perceptual_layers`."""
        return max(self.perceptual_layers) + 1


@dataclass(frozen=True, kw_only=True)
class GANPreset(ConfigBase):
    """A complete model configuration of the reconstruction GAN, stored in checkpoints and bundles.

    Args:
        variant: the row of DCT-Net Table 1: ``"dctnet"`` or an entry of :data:`ABLATIONS`.
        size: the widths it was built from: ``"full"``, ``"small"`` or ``"tiny"`` (:data:`SIZES`).
        generator: architecture of G(Y) and G(X).
        discriminator: architecture of D.
        loss: the multi-path loss.
    """

    config_name: ClassVar[str] = "GAN preset"

    variant: str
    size: str
    generator: GeneratorConfig
    discriminator: DiscriminatorConfig
    loss: LossConfig

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.variant not in VARIANTS or self.size not in SIZES:
            raise InputError(f"GAN preset: variant must be one of {VARIANTS} and size one of {SIZES}, got "
                             f"{self.variant!r} and {self.size!r}")

    @property
    def name(self) -> str:
        """``VARIANT@SIZE``, e.g. ``"dctnet@small"`` (what :func:`gan_preset` accepts)."""
        return f"{self.variant}@{self.size}"

    @property
    def image_size(self) -> int:
        """Radiograph side = volume side."""
        return self.generator.image_size

    @classmethod
    def upgrade(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Presets saved before ``variant`` and ``size`` were fields hold ``"name": "VARIANT@SIZE"`` (or a
        shorthand such as ``"small"``) instead; the shipped ``dctnet_small.pt`` is one (``"dctnet@small"``)."""
        if "name" in data and "variant" not in data and "size" not in data:
            name = data.pop("name")
            if not isinstance(name, str):
                raise InputError(f"GAN preset: name expects str, got {name!r}")
            data["variant"], data["size"] = _split(name)
        return data


# ---------------------------------------------------------------------------------------------- sizes
# Widths per size. "full" = the dataclass defaults (paper + X2CT-GAN). "small" trains on a 2-core CPU; it makes
# documented, measured simplifications of the full model (docs/architecture.md, "The small preset"; the
# training-step benchmark compares it with the earlier small recipe, SMALL_RECIPE_V1, side by side):
# - the decoder stops at 64³ and its last level is the head: a 2×2×2 stride-2 transposed conv to the volume
#   (head="deconv"), so no 128³ feature map is ever computed (the 128³ level and 3×3×3 head of v1 were 60 % of
#   G's backward pass); its bias starts at the logit of 0.2, the mean unit value of the development chest CTs
#   (LIDC-IDRI-0002: 0.20, -0003: 0.25, Lung_Dx-A0002: 0.15), because 8 inputs per output voxel move the
#   sigmoid's level too slowly;
# - every level up to 64³ has a 3×3×3 conv after the broadcast view skips: the skips are summed *and then
#   mixed non-linearly*, which v1 did only at 4³/8³ — its finest levels were sums of PA- and lateral-broadcast
#   maps, the cross-shaped grid of bands in its axial slices;
# - self-attention in full up to 8³, reduced keys/values above, queries pooled to 16³ (max_query_tokens 4096)
#   at 32³/64³;
# - below "full" the FC bridge has no dropout: a training step draws no random numbers of its own;
# - the output passes a fixed [1, 2, 1] / 4 filter per axis (output_smoothing), which removes the dot pattern the
#   kernel-2 head leaves (v7 trained without it; added at inference after validation: docs/architecture.md).
# With head="deconv" the finest level's entries of decoder_convs/attention_levels/deconv_kernels/view_skips are
# unused (the head replaces that level). "tiny" is for tests only.
_DCTNET_G = {
    "full": {},
    "small": dict(stem_channels=16, encoder_blocks=(2, 2, 4, 4, 2), growth_rate=12,
                  decoder_channels=(128, 64, 32, 16, 8, 1), decoder_convs=(1, 1, 1, 1, 0), head="deconv",
                  output_init=0.2, output_smoothing=True,
                  attention_levels=(True, True, True, True, False),
                  attention=dict(full_max_tokens=512, max_query_tokens=4096),
                  fusion_rank=64, fusion_dropout=0.0),
    "tiny": dict(image_size=32, stem_channels=8, encoder_blocks=(1, 1, 1), growth_rate=4,
                 decoder_channels=(16, 16, 8, 4), decoder_convs=(1, 1, 0), fusion_rank=16,
                 attention_levels=(True, True, False), attention=dict(head_dim=8, full_max_tokens=64,
                                                                      max_kv_tokens=64),
                 fusion_dropout=0.0),
}
_X2CT_G = {
    "full": dict(arch="x2ct"),
    "small": dict(arch="x2ct", stem_channels=16, encoder_blocks=(2, 2, 4, 4, 2), growth_rate=12,
                  decoder_channels=(64, 32, 16, 8, 4, 2), view_decoder_convs=(0, 1, 1, 1, 1, 0),
                  fusion_decoder_convs=(0, 1, 1, 1, 1, 0), fusion_dropout=0.0),
    "tiny": dict(arch="x2ct", image_size=32, stem_channels=8, encoder_blocks=(1, 1, 1), growth_rate=4,
                 decoder_channels=(16, 16, 8, 4), view_decoder_convs=(1, 1, 1, 0),
                 fusion_decoder_convs=(1, 1, 1, 0), fusion_dropout=0.0),
}
_DISCRIMINATOR = {
    "full": {},
    # small: D judges 8 random slices per plane in training (an unbiased estimate of eq. 9's mean over slices).
    "small": dict(channels=(16, 32, 64, 128), slices_per_plane=8),
    "tiny": dict(channels=(8, 16, 32)),
}
# Loss settings per size. small: eq. 8 on projections average-pooled to 64² with VGG16's first three blocks
# (relu1_2, relu2_2, relu3_3; Johnson et al. 2016 take content from relu2_2): 7× cheaper than all five taps at
# 128², measured in benchmarks (bench_training).
_LOSS = {
    "full": {},
    "small": dict(perceptual_layers=(0, 1, 2), perceptual_size=64),
    "tiny": {},
}
# The small recipe of the first shipped model (v1), kept so the benchmark can time it beside the current one.
SMALL_RECIPE_V1 = dict(
    generator=dict(decoder_channels=(128, 64, 32, 16, 8, 4), decoder_convs=(1, 1, 0, 0, 0), head="conv",
                   attention=dict(full_max_tokens=512)),
    discriminator=dict(slices_per_plane=0),
    loss=dict(perceptual_layers=(0, 1, 2, 3, 4), perceptual_size=0),
)

# ---------------------------------------------------------------------------------------------- variants
# X2CT-GAN weighs plain LSGAN mean squared errors by gan_lambda 0.1, with no ½: kylekma/X2CT
# 3DGAN/lib/model/multiView_CTGAN.py backward_G_basic (criterionGAN(D(fake), True) * gan_lambda) and
# backward_D_basic ((loss_fake + loss_real) * gan_lambda), GANLoss(use_lsgan=True) being nn.MSELoss
# (lib/model/loss/multi_gan_loss.py); gan_lambda 0.1 in experiment/multiview2500/d2_multiview2500.yml.
# MultiPathLoss applies eq. 9's ½ to ℓ(G) and ℓ(D), so the baseline's λ1 is 0.1 / ½ = 0.2: the same weights on
# the same squared errors as X2CT-GAN's, for G and D alike (test_table1_fidelity checks the losses' values).
X2CT_GAN_LAMBDA = 0.1
EQ9_HALF = 0.5  # the ½ of eqs. 9a/9b, as MultiPathLoss applies it
# Table 1 of DCT-Net: three ablation rows and the X2CT-GAN comparison row (our main reference).
# Each entry: (generator arch overrides, discriminator arch, loss overrides, description).
_VARIANTS: dict[str, tuple[bool, str, dict[str, Any], str]] = {
    "dctnet": (False, "triplane", {}, "DCT-Net: CDM + dual-generator Recon-GAN + multi-path loss"),
    "ablation-no-dual-branch": (False, "triplane", dict(dual_branch=False, contrastive=False),
                                "w/o Dual-branch: G(Y) only, no CDM, no contrastive term"),
    "ablation-no-recon-gan": (True, "x2ct3d", {},
                              "w/o Recon-GAN: X2CT-GAN generator and 3D PatchGAN inside the dual-branch framework"),
    # "perceptual loss replaced with projection loss" (DCT-Net §3.3): the replacement is a projection L1, so it
    # is weighted like the other projection L1 (λ2 = λ4 = 10), not with the λ2 = 0.02 calibrated for the VGG
    # term, which is ~500x larger (docs/architecture.md) and would all but switch the coupling off.
    "ablation-no-perceptual": (False, "triplane", dict(contrastive_metric="l1",
                                                       lambda_contrastive=LossConfig.lambda_proj),
                               "w/o l_perceptual: contrastive term is a projection L1 between G(Y) and G(X), "
                               "weighted like l_proj"),
    "x2ct-baseline": (True, "x2ct3d", dict(dual_branch=False, contrastive=False,
                                           lambda_adv=X2CT_GAN_LAMBDA / EQ9_HALF),
                      "X2CT-GAN (Ying et al. 2019): its generator, 3D PatchGAN, loss weights (lambda_adv 0.2 under "
                      "eq. 9's 1/2 = its gan_lambda 0.1), N(0, 0.02) init and training recipe, single branch"),
}
# Weight initialisation per variant (generator and discriminator). X2CT-GAN initialises both networks with
# N(0, 0.02) (kylekma/X2CT config.py NETWORK.init_type 'normal'; nets/utils.py init_weights gain 0.02). DCT-Net
# states no scheme, so its rows — including "w/o Recon-GAN", which swaps X2CT-GAN's networks into DCT-Net's
# framework and otherwise trains like DCT-Net — keep PyTorch's default.
_VARIANT_INIT = {"x2ct-baseline": "normal"}
VARIANTS = tuple(_VARIANTS)
ABLATIONS = ("ablation-no-dual-branch", "ablation-no-recon-gan", "ablation-no-perceptual", "x2ct-baseline")
PRESET_NAMES = SIZES + ABLATIONS + tuple(f"{v}@{s}" for v in ("dctnet",) + ABLATIONS for s in SIZES)


def describe(name: str) -> str:
    """One-line description of a preset's variant."""
    variant, _ = _split(name)
    return _VARIANTS[variant][3]


def _split(name: str) -> tuple[str, str]:
    """``name`` → (variant, size); unknown names raise :class:`InputError` listing the valid ones."""
    variant, _, size = name.partition("@")
    if not size:
        variant, size = ("dctnet", variant) if variant in SIZES else (variant, "full")
    if variant not in _VARIANTS or size not in SIZES:
        valid = ", ".join(SIZES + ABLATIONS)
        raise InputError(f"unknown GAN preset {name!r}; valid names: {valid} "
                         f"(add @full, @small or @tiny to an ablation, e.g. 'ablation-no-perceptual@small')")
    return variant, size


def _route_flat(overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Sort flat keyword overrides into the generator/discriminator/loss config owning that field."""
    owners = {"generator": GeneratorConfig, "discriminator": DiscriminatorConfig, "loss": LossConfig}
    routed: dict[str, dict[str, Any]] = {k: {} for k in owners}
    for key, value in overrides.items():
        if key in owners:
            if not isinstance(value, dict):
                raise InputError(f"GAN preset override {key!r} must be a dict of fields, got {value!r}")
            routed[key].update(value)
            continue
        matches = [k for k, cls in owners.items() if key in cls.field_names()]
        if len(matches) != 1:
            valid = {k: cls.field_names() for k, cls in owners.items()}
            problem = "is ambiguous (use generator={...} or discriminator={...})" if matches else "is unknown"
            raise InputError(f"GAN preset override {key!r} {problem}; valid keys: {valid}")
        routed[matches[0]][key] = value
    return routed


def gan_preset(name: str, **overrides: Any) -> GANPreset:
    """The preset called ``name`` (see the module docstring), with field overrides.

    Args:
        name: ``full``, ``small``, ``tiny``, an entry of :data:`ABLATIONS`, or ``VARIANT@SIZE``.
        **overrides: as in :func:`compose_preset`.

    Raises:
        InputError: unknown name or field, or an invalid value.
    """
    variant, size = _split(name)
    return compose_preset(variant, size, **overrides)


def compose_preset(variant: str, size: str, **overrides: Any) -> GANPreset:
    """The preset of ``variant`` at ``size``: the size's widths, the variant's switches, then ``overrides``.

    Args:
        variant: ``dctnet`` or an entry of :data:`ABLATIONS`.
        size: ``full``, ``small`` or ``tiny``.
        **overrides: ``generator={...}``, ``discriminator={...}``, ``loss={...}`` dicts of fields, or flat field
            names owned by exactly one of the three configs (e.g. ``fusion_rank=None``, ``lambda_recon=5``).

    Raises:
        InputError: unknown variant, size or field, or an invalid value.
    """
    if variant not in _VARIANTS or size not in SIZES:
        raise InputError(f"unknown GAN variant {variant!r} or size {size!r}; variants: {', '.join(VARIANTS)}, "
                         f"sizes: {', '.join(SIZES)}")
    x2ct, d_arch, loss_variant, _ = _VARIANTS[variant]
    routed = _route_flat(overrides)
    init = {"init": _VARIANT_INIT[variant]} if variant in _VARIANT_INIT else {}
    g = {**(_X2CT_G if x2ct else _DCTNET_G)[size], **init, **routed["generator"]}
    d = {**_DISCRIMINATOR[size], "arch": d_arch, **init, **routed["discriminator"]}
    loss = {**_LOSS[size], **loss_variant, **routed["loss"]}
    return GANPreset(variant=variant, size=size, generator=GeneratorConfig.from_dict(g),
                     discriminator=DiscriminatorConfig.from_dict(d), loss=LossConfig.from_dict(loss))


# ---------------------------------------------------------------------------------------------- builders
def build_generator(cfg: GeneratorConfig) -> nn.Module:
    """The generator described by ``cfg``: a :class:`DCTNetGenerator` (``arch="dctnet"``) or an
    :class:`X2CTGenerator` (``arch="x2ct"``). Both map ``(B, 2, n, n)`` → ``(B, 1, n, n, n)``."""
    if cfg.arch == "x2ct":
        generator = X2CTGenerator(image_size=cfg.image_size, stem_channels=cfg.stem_channels,
                                  blocks=cfg.encoder_blocks, growth_rate=cfg.growth_rate,
                                  decoder_channels=cfg.decoder_channels, view_decoder_convs=cfg.view_decoder_convs,
                                  fusion_decoder_convs=cfg.fusion_decoder_convs, fc_dropout=cfg.fusion_dropout,
                                  norm=cfg.norm)
    else:
        generator = DCTNetGenerator(image_size=cfg.image_size, stem_channels=cfg.stem_channels,
                                    encoder_blocks=cfg.encoder_blocks, growth_rate=cfg.growth_rate,
                                    decoder_channels=cfg.decoder_channels, decoder_convs=cfg.decoder_convs,
                                    attention_levels=cfg.attention_levels, attention=dict(cfg.attention),
                                    fusion_rank=cfg.fusion_rank, fusion_dropout=cfg.fusion_dropout, norm=cfg.norm,
                                    deconv_kernels=cfg.deconv_kernels, view_skips=cfg.view_skips,
                                    head=cfg.head, output_init=cfg.output_init,
                                    product_channels=cfg.product_channels, output_smoothing=cfg.output_smoothing)
    init_weights(generator, cfg.init, cfg.init_gain)
    if getattr(generator, "product", None) is not None:
        generator.product.reset_mix()
    return generator


def build_discriminator(cfg: DiscriminatorConfig) -> nn.Module:
    """The discriminator described by ``cfg``: a :class:`TriPlaneDiscriminator` (``arch="triplane"``) or an
    :class:`X2CTDiscriminator` (``arch="x2ct3d"``). Both return a dict of patch-score maps."""
    if cfg.arch == "x2ct3d":
        discriminator = X2CTDiscriminator(channels=cfg.channels, norm=cfg.norm, conditional=cfg.conditional)
    else:
        discriminator = TriPlaneDiscriminator(volume_channels=1, channels=cfg.channels, norm=cfg.norm,
                                              conditional=cfg.conditional, slices_per_plane=cfg.slices_per_plane)
    init_weights(discriminator, cfg.init, cfg.init_gain)
    return discriminator
