"""DCT-Net generator (eqs. 5–6) and the dual generator G(Y), G(X) of the dual-branch GAN (§2.2).

Data flow of :class:`DCTNetGenerator` (full preset, ``docs/architecture.md`` has the diagram)::

    (B, 2, 128, 128) ─► PA and lateral as one batch of 2B ─► shared 2D DenseNet encoder EC
         skips: 64 @128², 128 @64², 256 @32², 512 @16², 512 @8²        pooled: 704 per view
    γ = FC([EC(p_PA), EC(p_Lat)]) : 1408 → 256·4³ ─► seed (B, 256, 4, 4, 4)
    5 decoder levels DC_l = SA(Deconv(DC_{l-1})): 4³ → 8³ → … → 128³, widths 128-64-32-16-16;
         each level adds both views' skip features broadcast along their projection axes (connection B)
    3×3×3 conv → sigmoid ─► (B, 1, 128, 128, 128) in [0, 1]
    (small preset: the 64³ level's 2×2×2 transposed conv is the head, then a fixed [1, 2, 1] / 4 filter per axis)

The encoder weights are literally shared: PA and lateral pass through it as one batch of ``2B`` images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..conventions import VIEW_LAT, VIEW_PA
from .attention import SelfAttention3d
from .blocks import BinomialSmoothing3d, ConvNormAct, bilinear_backprojection, broadcast_view, norm_layer
from .encoder import DenseEncoder2d

__all__ = ["ViewFusion", "DecoderLevel", "ViewProductPath", "DCTNetGenerator", "DualGenerator", "DECONV_PADDING", "HEADS"]

# Transposed-conv kernel → padding that doubles the side exactly with stride 2. Kernel 4 is X2CT-GAN's
# (kylekma/X2CT ``Dimension_UpsampleCutBlock``: ConvTranspose3d(k=4, s=2, p=1)); kernel 2 has no overlap between
# neighbouring outputs, so it cannot make the checkerboard pattern of overlapping deconvolutions (Odena et al.,
# "Deconvolution and checkerboard artifacts", Distill 2016) and costs 8× less per output voxel.
DECONV_PADDING = {2: 0, 4: 1}
HEADS = ("conv", "deconv")


def _icnr_(deconv: nn.ConvTranspose3d) -> None:
    """Start a stride-2, kernel-2 transposed conv as nearest-neighbour up-sampling of a 1×1×1 conv: the 8 taps of
    each input channel share one value (ICNR, Aitken et al., "Checkerboard artifact free sub-pixel convolution",
    2017). A freshly initialised sub-voxel head otherwise paints a fixed 2×2×2 dot pattern over the volume."""
    with torch.no_grad():
        deconv.weight.copy_(deconv.weight[..., :1, :1, :1].expand_as(deconv.weight))


class ViewFusion(nn.Module):
    """Fusion γ of eq. 5: an FC layer on the concatenated pooled features of both views, reshaped to a 3D seed.

    The FC is factorised through ``rank`` (two linear maps, no non-linearity in between, i.e. an FC layer of
    rank ≤ ``rank``): at full width a dense 1408 → 16384 map alone holds 23.1 M parameters per generator, which
    with two generators exceeds the paper's 60.70 M total (Table 2). ``rank=None`` uses a dense FC.
    Followed by dropout and ReLU, as X2CT-GAN's FC bridge (kylekma/X2CT ``base_link``).

    Args:
        in_features: Pooled features per view.
        seed_channels: Channels of the 3D seed. X2CT-GAN: 256.
        seed_size: Side of the 3D seed. X2CT-GAN: 4.
        rank: Inner width of the factorised FC; ``None`` = dense. Defaults to None.
        dropout: Dropout probability. Defaults to 0.0.
    """

    def __init__(self, in_features: int, seed_channels: int, seed_size: int, *, rank: int | None = None,
                 dropout: float = 0.0) -> None:
        super().__init__()
        out_features = seed_channels * seed_size ** 3
        if rank is None:
            layers: list[nn.Module] = [nn.Linear(2 * in_features, out_features)]
        else:
            if rank < 1:
                raise ValueError(f"rank must be positive or None, got {rank}")
            layers = [nn.Linear(2 * in_features, rank, bias=False), nn.Linear(rank, out_features)]
        self.fc = nn.Sequential(*layers, nn.Dropout(dropout), nn.ReLU(inplace=True))
        self.seed_channels = seed_channels
        self.seed_size = seed_size

    def forward(self, pa: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
        """Shapes: ``(B, F)``, ``(B, F)`` → ``(B, seed_channels, s, s, s)``."""
        seed = self.fc(torch.cat([pa, lat], dim=1))
        s = self.seed_size
        return rearrange(seed, "b (c x y z) -> b c x y z", c=self.seed_channels, x=s, y=s, z=s)


class DecoderLevel(nn.Module):
    """One decoder level DC_l = SA(Deconv(DC_{l-1})) (eq. 6) with X2CT-GAN's connection B.

    Transposed conv (stride 2; 4×4×4 as X2CT-GAN, or 2×2×2) + norm + ReLU; plus, with ``view_skip``, both views'
    skip features (1×1 conv + norm + ReLU in 2D, broadcast along the projection axis); ``convs`` 3×3×3 conv units;
    then :class:`SelfAttention3d` (or none).

    Args:
        in_channels: Channels of DC_{l-1}.
        out_channels: Channels of DC_l.
        skip_channels: Channels of the encoder features at DC_l's resolution.
        convs: 3×3×3 conv units after the skip sum. Defaults to 1.
        attention: Self-attention keyword arguments, or ``None`` for no attention. Defaults to None.
        norm: Normalisation name. Defaults to "instance".
        deconv_kernel: Transposed-conv kernel, 4 or 2. Defaults to 4.
        view_skip: Add the broadcast skip features of both views. Defaults to True.
    """

    def __init__(self, in_channels: int, out_channels: int, skip_channels: int, *, convs: int = 1,
                 attention: dict | None = None, norm: str = "instance", deconv_kernel: int = 4,
                 view_skip: bool = True) -> None:
        super().__init__()
        if deconv_kernel not in DECONV_PADDING:
            raise ValueError(f"deconv_kernel must be one of {sorted(DECONV_PADDING)}, got {deconv_kernel}")
        self.up = nn.Sequential(
            nn.ConvTranspose3d(in_channels, out_channels, kernel_size=deconv_kernel, stride=2,
                               padding=DECONV_PADDING[deconv_kernel]),
            norm_layer(norm, 3, out_channels), nn.ReLU(inplace=True))
        self.skip_pa = ConvNormAct(2, skip_channels, out_channels, kernel_size=1, norm=norm) if view_skip else None
        self.skip_lat = ConvNormAct(2, skip_channels, out_channels, kernel_size=1, norm=norm) if view_skip else None
        self.convs = nn.Sequential(*[ConvNormAct(3, out_channels, out_channels, norm=norm) for _ in range(convs)])
        self.attn = SelfAttention3d(out_channels, **attention) if attention is not None else nn.Identity()

    def forward(self, x: torch.Tensor, skip_pa: torch.Tensor, skip_lat: torch.Tensor) -> torch.Tensor:
        """Shapes: ``(B, C_in, n, n, n)``, skips ``(B, C_skip, 2n, 2n)`` → ``(B, C_out, 2n, 2n, 2n)``."""
        x = self.up(x)
        if self.skip_pa is not None:
            x = x + broadcast_view(self.skip_pa(skip_pa), VIEW_PA) + broadcast_view(self.skip_lat(skip_lat),
                                                                                    VIEW_LAT)
        return self.attn(self.convs(x))


class ViewProductPath(nn.Module):
    """A full-resolution path that places what both views see where their beams cross (ours, not in the paper).

    Each radiograph gives ``channels`` learned non-negative maps (a small 2D CNN shared by both views, 3×3 convs
    dilated 1, 2, 4: a 15-pixel receptive field, about one vertebral body's width at 128²) and two fixed ones:
    the image itself and its excess over its 15-pixel local mean (bright detail, where bone is on a DRR). The
    fixed maps let the path learn from its first step: a product of learned maps alone starts at a saddle (its
    mix at zero gives its maps no gradient) that took a toy column ~120 Adam steps to leave. Their
    :func:`~DCTNetLib.models.blocks.bilinear_backprojection` (PA map × lateral map, each copied along its beam)
    is mixed by a 1×1×1 conv into one logit map and gated by a sigmoid of the decoder's coarse features, which
    can switch off the crossings that are not there (two bones seen in both views make four crossings).

    The product is what the decoder's additive skips (connection B) lack: a sum of the two copied maps is as high
    along both beams as at their crossing, so without it a thin structure such as the spine has to be found by
    the decoder's few convs at 64³. The mix starts at zero, so a generator given this path starts out exactly as
    the same generator without it (a fine-tuning run starts where its ``--init`` model ended).

    Args:
        channels: Maps per view.
        gate_channels: Channels of the decoder features the gate is computed from.
        hidden: Width of the 2D CNN. Defaults to 16.
    """

    FIXED_MAPS = ("image", "local excess")
    LOCAL_MEAN_PIXELS = 15  # the learned maps' receptive field
    # The mix's output is multiplied by this constant, a learning-rate multiplier of the path in the manner of the
    # equalised learning rate (Karras et al., ICLR 2018): Adam moves each weight by about lr a step, so at a
    # fine-tuning lr of 5e-4 a zero-started mix on unit-sized maps needs thousands of steps to move a logit by
    # one; with the gain ten times fewer.
    MIX_GAIN = 10.0

    def __init__(self, channels: int, gate_channels: int, *, hidden: int = 16) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be positive, got {channels}")
        self.features = nn.Sequential(
            nn.Conv2d(1, hidden, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=2, dilation=2), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=4, dilation=4), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1), nn.Softplus())
        self.mix = nn.Conv3d(channels + len(self.FIXED_MAPS), 1, kernel_size=1)
        self.bone_head = nn.Conv2d(channels, 1, kernel_size=1)  # the learned maps → the view's bone image
        self.gate = nn.Conv3d(gate_channels, 1, kernel_size=1)
        self.reset_mix()

    def reset_mix(self) -> None:
        """Zero the mix, so the path adds nothing until it is trained (after any whole-network initialisation)."""
        nn.init.zeros_(self.mix.weight)
        nn.init.zeros_(self.mix.bias)

    def bone_images(self, radiographs: torch.Tensor) -> torch.Tensor:
        """Each view's bone image (raw minus bone-suppressed radiograph) as the learned maps estimate it, for
        :attr:`~DCTNetLib.models.presets.LossConfig.lambda_bone_image`.

        Shapes: ``(B, 2, n, n)`` → ``(B, 2, n, n)``."""
        learned = self.features(rearrange(radiographs, "b v h w -> (v b) 1 h w"))
        return rearrange(self.bone_head(learned), "(v b) 1 h w -> b v h w", v=2)

    def forward(self, radiographs: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """Shapes: radiographs ``(B, 2, n, n)``, decoder features ``(B, C_gate, m, m, m)`` (m ≤ n) → logit term
        ``(B, 1, n, n, n)``."""
        batch, n = radiographs.shape[0], radiographs.shape[-1]
        images = rearrange(radiographs, "b v h w -> (v b) 1 h w")
        local_mean = F.avg_pool2d(images, self.LOCAL_MEAN_PIXELS, stride=1, padding=self.LOCAL_MEAN_PIXELS // 2,
                                  count_include_pad=False)
        maps = torch.cat([images, F.relu(images - local_mean), self.features(images)], dim=1)
        crossing = self.MIX_GAIN * self.mix(bilinear_backprojection(maps[:batch], maps[batch:]))
        gate = self.gate(coarse)
        if gate.shape[-1] != n:
            gate = F.interpolate(gate, size=(n, n, n), mode="trilinear", align_corners=False)
        return torch.sigmoid(gate) * crossing


class DCTNetGenerator(nn.Module):
    """Encoder–decoder generator of DCT-Net: radiograph pair → volume in [0, 1].

    Args:
        image_size: Side of the radiographs and of the output volume; divisible by ``2 ** len(encoder_blocks)``.
            Defaults to 128 (paper §3.1).
        stem_channels: Encoder stem width. Defaults to 64 (X2CT-GAN).
        encoder_blocks: Dense layers per encoder level. Defaults to (6, 12, 24, 16, 6) (X2CT-GAN).
        growth_rate: Dense growth rate. Defaults to 32 (X2CT-GAN).
        decoder_channels: Seed width then one width per decoder level, coarsest first; ``len(encoder_blocks) + 1``
            entries. Defaults to (256, 128, 64, 32, 16, 16) (X2CT-GAN).
        decoder_convs: 3×3×3 conv units per decoder level, coarsest first. Defaults to (1, 1, 1, 1, 0).
        attention_levels: Per decoder level, whether it has self-attention. Defaults to all True (eq. 6).
        attention: Keyword arguments of :class:`SelfAttention3d`. Defaults to its defaults.
        fusion_rank: Rank of the factorised fusion FC; ``None`` = dense. Defaults to 704 (one view's width).
        fusion_dropout: Dropout after the fusion FC. Defaults to 0.5 (X2CT-GAN).
        norm: Normalisation name. Defaults to "instance" (X2CT-GAN).
        deconv_kernels: Transposed-conv kernel per decoder level, coarsest first (4 or 2, see
            :data:`DECONV_PADDING`). Defaults to 4 everywhere (X2CT-GAN).
        view_skips: Per decoder level, whether both views' skip features are broadcast into it (connection B).
            Defaults to True everywhere (X2CT-GAN).
        head: ``"conv"``: after the last decoder level a 3×3×3 conv to one channel + sigmoid at full resolution
            (X2CT-GAN). ``"deconv"``: the finest decoder level *is* the head, a 2×2×2 stride-2 transposed conv
            to one channel + sigmoid (a learned sub-voxel up-sampling, Shi et al., CVPR 2016, in 3D), so no
            feature map is ever held at full resolution; ``decoder_channels[-1]`` must then be 1.
            Defaults to "conv".
        output_init: Value in (0, 1) that the output starts at: the head's bias is set to its logit
            ("initialise the final layer's bias to the data mean"). A small head (few inputs per output voxel)
            otherwise needs thousands of Adam steps at lr 2e-4 to move the sigmoid from 0.5 to the ~0.2 mean
            of a chest CT. ``None`` keeps PyTorch's initialisation. Defaults to None.
        product_channels: Maps per view of a :class:`ViewProductPath` whose output is added to the head's logit;
            0 = no such path (the paper's generator). Defaults to 0.
        output_smoothing: Pass the output volume through a fixed [1, 2, 1] / 4 filter along each axis
            (:class:`~DCTNetLib.models.blocks.BinomialSmoothing3d`, no weights): it removes the voxel-to-voxel dot
            pattern of a ``"deconv"`` head. Defaults to False (the paper's generator has none).
    """

    def __init__(self, *, image_size: int = 128, stem_channels: int = 64,
                 encoder_blocks: tuple[int, ...] = (6, 12, 24, 16, 6), growth_rate: int = 32,
                 decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16, 16),
                 decoder_convs: tuple[int, ...] = (1, 1, 1, 1, 0), attention_levels: tuple[bool, ...] | None = None,
                 attention: dict | None = None, fusion_rank: int | None = 704, fusion_dropout: float = 0.5,
                 norm: str = "instance", deconv_kernels: tuple[int, ...] | None = None,
                 view_skips: tuple[bool, ...] | None = None, head: str = "conv",
                 output_init: float | None = None, product_channels: int = 0,
                 output_smoothing: bool = False) -> None:
        super().__init__()
        n = len(encoder_blocks)
        attention_levels = tuple(attention_levels) if attention_levels is not None else (True,) * n
        deconv_kernels = tuple(deconv_kernels) if deconv_kernels is not None else (4,) * n
        view_skips = tuple(view_skips) if view_skips is not None else (True,) * n
        if len(decoder_channels) != n + 1:
            raise ValueError(f"decoder_channels needs len(encoder_blocks) + 1 = {n + 1} entries, got {decoder_channels}")
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if head == "deconv" and decoder_channels[-1] != 1:
            raise ValueError(f"head='deconv' outputs the volume from the last level: decoder_channels[-1] must be 1, "
                             f"got {decoder_channels}")
        for name, value in (("decoder_convs", decoder_convs), ("attention_levels", attention_levels),
                            ("deconv_kernels", deconv_kernels), ("view_skips", view_skips)):
            if len(value) != n:
                raise ValueError(f"{name} needs len(encoder_blocks) = {n} entries, got {value}")
        if image_size % 2 ** n:
            raise ValueError(f"image_size={image_size} must be divisible by 2**len(encoder_blocks)={2 ** n}")
        self.image_size = image_size
        self.encoder = DenseEncoder2d(1, stem_channels=stem_channels, blocks=tuple(encoder_blocks),
                                      growth_rate=growth_rate, norm=norm)
        self.fusion = ViewFusion(self.encoder.out_channels, decoder_channels[0], image_size // 2 ** n,
                                 rank=fusion_rank, dropout=fusion_dropout)
        skip_channels = self.encoder.skip_channels[::-1]  # coarsest first, matching the decoder levels
        self.levels = nn.ModuleList(
            DecoderLevel(decoder_channels[i], decoder_channels[i + 1], skip_channels[i], convs=decoder_convs[i],
                         attention=dict(attention or {}) if attention_levels[i] else None, norm=norm,
                         deconv_kernel=deconv_kernels[i], view_skip=view_skips[i])
            for i in range(n if head == "conv" else n - 1))
        if head == "conv":
            self.head = nn.Sequential(nn.Conv3d(decoder_channels[-1], 1, kernel_size=3, padding=1), nn.Sigmoid())
        else:
            self.head = nn.Sequential(nn.ConvTranspose3d(decoder_channels[-2], 1, kernel_size=2, stride=2),
                                      nn.Sigmoid())
            _icnr_(self.head[0])
        if output_init is not None:
            if not 0.0 < output_init < 1.0:
                raise ValueError(f"output_init must be in (0, 1), got {output_init}")
            nn.init.constant_(self.head[0].bias, math.log(output_init / (1.0 - output_init)))
        gate_channels = decoder_channels[-1] if head == "conv" else decoder_channels[-2]
        self.product = ViewProductPath(product_channels, gate_channels) if product_channels else None
        self.smoothing = BinomialSmoothing3d() if output_smoothing else nn.Identity()

    def forward(self, radiographs: torch.Tensor) -> torch.Tensor:
        """Reconstruct a volume from a radiograph pair.

        Args:
            radiographs: ``(B, 2, n, n)`` (channel 0 = PA, 1 = lateral) in [0, 1], ``n == image_size``.

        Shapes:
            ``(B, 2, n, n)`` → ``(B, 1, n, n, n)`` (D, H, W) in [0, 1].
        """
        if radiographs.ndim != 4 or radiographs.shape[1] != 2 or tuple(radiographs.shape[2:]) != (
                self.image_size, self.image_size):
            raise ValueError(f"radiographs must be (B, 2, {self.image_size}, {self.image_size}), "
                             f"got shape {tuple(radiographs.shape)}")
        batch = radiographs.shape[0]
        views = rearrange(radiographs, "b v h w -> (v b) 1 h w")  # PA images first, then lateral: one EC pass
        encoded = self.encoder(views)
        x = self.fusion(encoded.vector[:batch], encoded.vector[batch:])
        for level, skip in zip(self.levels, encoded.skips[::-1]):
            x = level(x, skip[:batch], skip[batch:])
        if self.product is None:
            return self.smoothing(self.head(x))
        logit, sigmoid = self.head
        return self.smoothing(sigmoid(logit(x) + self.product(radiographs, x)))


class DualGenerator(nn.Module):
    """The two generators of the dual-branch GAN: ``g_raw`` = G(Y) on radiographs, ``g_bs`` = G(X) on
    bone-suppressed radiographs (same architecture, separate weights; DCT-Net §2.2, Fig. 2b).

    Args:
        g_raw: Generator of the raw branch.
        g_bs: Generator of the bone-suppressed branch, or ``None`` (single-branch ablation).
    """

    def __init__(self, g_raw: nn.Module, g_bs: nn.Module | None = None) -> None:
        super().__init__()
        self.g_raw = g_raw
        self.g_bs = g_bs

    def forward(self, raw: torch.Tensor, bone_suppressed: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run both branches.

        Args:
            raw: ``(B, 2, n, n)`` radiographs Y.
            bone_suppressed: ``(B, 2, n, n)`` bone-suppressed radiographs X, or ``None`` to skip G(X).

        Shapes:
            ``(B, 2, n, n)``, ``(B, 2, n, n)`` → G(Y) ``(B, 1, n, n, n)``, G(X) ``(B, 1, n, n, n)`` or ``None``.
        """
        fake_raw = self.g_raw(raw)
        if bone_suppressed is None:
            return fake_raw, None
        if self.g_bs is None:
            raise ValueError("bone_suppressed was given but this DualGenerator has no g_bs (single-branch config)")
        return fake_raw, self.g_bs(bone_suppressed)
