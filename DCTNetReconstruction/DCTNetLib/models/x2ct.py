"""X2CT-GAN baseline (Ying et al., CVPR 2019) — the "w/o Recon-GAN" ablation of DCT-Net Table 1.

Rebuilt from the published architecture (paper Fig. 3 and kylekma/X2CT ``3DGAN/lib/model/nets/generator/
dense_generator_multiview.py``, network ``multiview_network_denseUNetFuse_transposed`` of
``experiment/multiview2500/d2_multiview2500.yml``):

- two 2D DenseNet encoders, one per view (:class:`~DCTNetLib.models.encoder.DenseEncoder2d`, 6-12-24-16-6);
- **connection A**: per view, FC(704 → 256·4³) + dropout 0.5 + ReLU to a 3D seed;
- **connection B**: per view and level, 1×1 conv on the 2D skip features, broadcast along the view's projection
  axis, then a 3×3×3 conv (:class:`~DCTNetLib.models.blocks.ViewToVolume` with ``conv3d=True``);
- three decoders — one per view plus a fusion decoder; widths 256-128-64-32-16-16, extra 3×3×3 convs per level
  1-2-2-2-2-0 (view decoders, finest first) and 1-1-1-1-1-0 (fusion decoder); up-sampling by 3×3×3 transposed
  convs; **connection C**: at every level the two view decoders' features are averaged, the average replaces
  both views' features ("back to sub-branch") and is concatenated into the fusion decoder;
- 7×7×7 output convs with ReLU (values clamped to [0, 1] at inference, as X2CT-GAN's ``post_process``).

Deviations (documented in ``docs/architecture.md``): every 3D tensor lives in our (D, H, W) frame, so no
permutation is needed to average the views (X2CT permutes each view's frame; with 3×3×3 kernels this is a
relabelling of weights); instance norm does not track running statistics; the two view output heads are only
evaluated by :meth:`X2CTGenerator.forward_views` (X2CT-GAN computes but does not use them when its auxiliary loss
is off, as in its published config). Parameters: 61.63 M generator, 11.06 M conditional 3D PatchGAN.
"""

from __future__ import annotations

import torch
from torch import nn

from ..conventions import VIEW_LAT, VIEW_PA
from .blocks import ConvNormAct, ViewToVolume, norm_layer
from .discriminator import PatchDiscriminator, condition_on_radiographs
from .encoder import DenseEncoder2d

__all__ = ["X2CTGenerator", "X2CTDiscriminator"]


class _Upsample(nn.Sequential):
    """X2CT-GAN ``Upsample_TransposedConvBlock``: 3×3×3 transposed conv, stride 2, output padding 1, norm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, norm: str) -> None:
        super().__init__(
            nn.ConvTranspose3d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1),
            norm_layer(norm, 3, out_channels),
            nn.ReLU(inplace=True),
        )


def _level(in_channels: int, out_channels: int | None, convs: int, compress: bool, norm: str) -> nn.Sequential:
    """[3×3×3 conv 2C→C] + ``convs`` × 3×3×3 conv C→C + [up-sample C→out]."""
    layers: list[nn.Module] = []
    if compress:
        layers.append(ConvNormAct(3, 2 * in_channels, in_channels, norm=norm))
    layers += [ConvNormAct(3, in_channels, in_channels, norm=norm) for _ in range(convs)]
    if out_channels is not None:
        layers.append(_Upsample(in_channels, out_channels, norm))
    return nn.Sequential(*layers)


class _ViewBranch(nn.Module):
    """Encoder, connections A and B and view decoder of one radiograph."""

    def __init__(self, view: int, *, image_size: int, stem_channels: int, blocks: tuple[int, ...], growth_rate: int,
                 decoder_channels: tuple[int, ...], decoder_convs: tuple[int, ...], fc_dropout: float,
                 norm: str) -> None:
        super().__init__()
        self.encoder = DenseEncoder2d(1, stem_channels=stem_channels, blocks=blocks, growth_rate=growth_rate, norm=norm)
        self.seed_size = image_size // self.encoder.stride
        fine = decoder_channels[::-1]  # finest first, X2CT-GAN's decoder_channel_list order
        self.link_a = nn.Sequential(
            nn.Linear(self.encoder.out_channels, decoder_channels[0] * self.seed_size ** 3),
            nn.Dropout(fc_dropout), nn.ReLU(inplace=True))
        self.link_b = nn.ModuleList(
            ViewToVolume(c_skip, fine[i], view, norm=norm, conv3d=True)
            for i, c_skip in enumerate(self.encoder.skip_channels))
        n = len(blocks)
        # level i (finest first, i = n-1 … 0) up-samples fine[i+1] → fine[i]; level n-1 has no compress/convs.
        self.levels = nn.ModuleList(
            _level(fine[i + 1], fine[i], 0 if i == n - 1 else decoder_convs[i + 1], i != n - 1, norm)
            for i in range(n))
        self.last = _level(fine[0], None, decoder_convs[0], True, norm)
        self.head = nn.Sequential(nn.Conv3d(fine[0], 1, 7, padding=3), nn.ReLU(inplace=True))


class X2CTGenerator(nn.Module):
    """Two-view X2CT-GAN generator.

    Args:
        image_size: Side of the radiographs and of the output volume. Defaults to 128.
        stem_channels: Encoder stem width. Defaults to 64.
        blocks: Dense layers per encoder level. Defaults to (6, 12, 24, 16, 6).
        growth_rate: Dense growth rate. Defaults to 32.
        decoder_channels: Decoder widths, coarsest (seed) first. Defaults to (256, 128, 64, 32, 16, 16).
        view_decoder_convs: Extra convs per view-decoder level, finest first. Defaults to (1, 2, 2, 2, 2, 0).
        fusion_decoder_convs: Extra convs per fusion-decoder level, finest first. Defaults to (1, 1, 1, 1, 1, 0).
        fc_dropout: Dropout after the FC bridge. Defaults to 0.5 (X2CT-GAN ``base_link``).
        norm: Normalisation name. Defaults to "instance" (X2CT-GAN ``norm_G: 'instance3d'``).
    """

    def __init__(self, *, image_size: int = 128, stem_channels: int = 64, blocks: tuple[int, ...] = (6, 12, 24, 16, 6),
                 growth_rate: int = 32, decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16, 16),
                 view_decoder_convs: tuple[int, ...] = (1, 2, 2, 2, 2, 0),
                 fusion_decoder_convs: tuple[int, ...] = (1, 1, 1, 1, 1, 0),
                 fc_dropout: float = 0.5, norm: str = "instance") -> None:
        super().__init__()
        n = len(blocks)
        for name, value in (("decoder_channels", decoder_channels), ("view_decoder_convs", view_decoder_convs),
                            ("fusion_decoder_convs", fusion_decoder_convs)):
            if len(value) != n + 1:
                raise ValueError(f"{name} needs len(blocks) + 1 = {n + 1} entries, got {value}")
        if image_size % 2 ** n:
            raise ValueError(f"image_size={image_size} must be divisible by 2**len(blocks)={2 ** n}")
        options = dict(image_size=image_size, stem_channels=stem_channels, blocks=tuple(blocks),
                       growth_rate=growth_rate, decoder_channels=tuple(decoder_channels),
                       decoder_convs=tuple(view_decoder_convs), fc_dropout=fc_dropout, norm=norm)
        self.pa = _ViewBranch(VIEW_PA, **options)
        self.lat = _ViewBranch(VIEW_LAT, **options)
        fine = tuple(decoder_channels)[::-1]
        self.fusion_levels = nn.ModuleList(
            _level(fine[i + 1], fine[i], 0 if i == n - 1 else fusion_decoder_convs[i + 1], i != n - 1, norm)
            for i in range(n))
        self.fusion_last = _level(fine[0], None, fusion_decoder_convs[0], True, norm)
        self.fusion_head = nn.Sequential(nn.Conv3d(fine[0], 1, 7, padding=3), nn.ReLU(inplace=True))
        self.image_size = image_size
        self.seed_channels = decoder_channels[0]

    def _decode(self, radiographs: torch.Tensor, views: bool) -> tuple[torch.Tensor, ...]:
        if radiographs.ndim != 4 or radiographs.shape[1] != 2 or radiographs.shape[-1] != self.image_size \
                or radiographs.shape[-2] != self.image_size:
            raise ValueError(f"radiographs must be (B, 2, {self.image_size}, {self.image_size}), "
                             f"got shape {tuple(radiographs.shape)}")
        feats, links = [], []
        for branch, index in ((self.pa, VIEW_PA), (self.lat, VIEW_LAT)):
            enc = branch.encoder(radiographs[:, index:index + 1])
            s = branch.seed_size
            feats.append(branch.link_a(enc.vector).view(-1, self.seed_channels, s, s, s))
            links.append([link(skip) for link, skip in zip(branch.link_b, enc.skips)])
        n = len(self.fusion_levels)
        fused_path = None
        for i in range(n - 1, -1, -1):  # connection C at every level, coarsest first
            if i != n - 1:
                feats = [torch.cat([f, link[i + 1]], dim=1) for f, link in zip(feats, links)]
                feats = [branch.levels[i][0](f) for branch, f in zip((self.pa, self.lat), feats)]  # compress
            avg = (feats[0] + feats[1]) / 2
            fused_path = avg if fused_path is None else torch.cat([avg, fused_path], dim=1)
            fused_path = self.fusion_levels[i](fused_path)
            start = 0 if i == n - 1 else 1
            feats = [branch.levels[i][start:](avg) for branch in (self.pa, self.lat)]
        feats = [branch.last[0](torch.cat([f, link[0]], dim=1)) for branch, f, link in zip((self.pa, self.lat), feats, links)]
        avg = (feats[0] + feats[1]) / 2
        fused = self.fusion_head(self.fusion_last(torch.cat([avg, fused_path], dim=1)))
        if not views:
            return (self._post(fused),)
        outs = [branch.head(branch.last[1:](avg)) for branch in (self.pa, self.lat)]
        return self._post(outs[0]), self._post(outs[1]), self._post(fused)

    def _post(self, volume: torch.Tensor) -> torch.Tensor:
        return volume if self.training else volume.clamp(max=1.0)

    def forward(self, radiographs: torch.Tensor) -> torch.Tensor:
        """Reconstruct the fused volume (X2CT-GAN's output).

        Args:
            radiographs: ``(B, 2, n, n)`` pair (channel 0 = PA, 1 = lateral) in [0, 1].

        Shapes:
            ``(B, 2, n, n)`` → ``(B, 1, n, n, n)``.
        """
        return self._decode(radiographs, views=False)[0]

    def forward_views(self, radiographs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All three outputs (PA decoder, lateral decoder, fused), as X2CT-GAN's generator returns them.

        Shapes:
            ``(B, 2, n, n)`` → three ``(B, 1, n, n, n)``.
        """
        return self._decode(radiographs, views=True)  # type: ignore[return-value]


class X2CTDiscriminator(nn.Module):
    """X2CT-GAN's conditional 3D PatchGAN (``which_model_netD: 'basic3d'``, ``conditional_D: True``, 11.06 M params).

    Args:
        channels: Widths. Defaults to (64, 128, 256, 512) (X2CT-GAN ``ndf: 64``, 3 layers).
        norm: Normalisation name. Defaults to "instance" (``norm_D: 'instance3d'``).
        conditional: Concatenate the broadcast radiographs. Defaults to True.
    """

    def __init__(self, *, channels: tuple[int, ...] = (64, 128, 256, 512), norm: str = "instance",
                 conditional: bool = True) -> None:
        super().__init__()
        self.conditional = conditional
        self.net = PatchDiscriminator(3, 1 + (2 if conditional else 0), channels=tuple(channels), norm=norm)

    def forward(self, volume: torch.Tensor, radiographs: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Score 3D patches.

        Args:
            volume: ``(B, 1, n, n, n)`` in [0, 1].
            radiographs: ``(B, 2, n, n)`` condition (required when ``conditional``).

        Shapes:
            ``(B, 1, n, n, n)`` → ``{"volume": (B, 1, m, m, m)}`` (a dict like :class:`TriPlaneDiscriminator`'s).
        """
        if self.conditional:
            if radiographs is None:
                raise ValueError("radiographs are required by a conditional discriminator")
            volume = condition_on_radiographs(volume, radiographs)
        return {"volume": self.net(volume)}
