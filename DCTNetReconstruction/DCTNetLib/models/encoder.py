"""2D DenseNet encoder of one radiograph (EC in DCT-Net eq. 5; one per view in X2CT-GAN).

Layout of X2CT-GAN's encoder (Ying et al., CVPR 2019, Fig. 3; kylekma/X2CT
``3DGAN/lib/model/nets/generator/dense_generator_multiview.py``, ``UNetLike_DownStep5``):

- stem: reflection pad 3, 7×7 conv to ``stem_channels`` (64), norm, ReLU — at full resolution;
- ``len(blocks)`` levels (X2CT: 6-12-24-16-6 dense layers, growth 32, bottleneck 4): norm-ReLU-3×3 stride-2
  conv (the down-sampling), a dense block, then a norm-ReLU-1×1 conv halving the channels (a DenseNet-BC
  transition with compression 0.5) — except the last level, which ends in global average pooling.

At 128² with X2CT's widths the skip features are 64 @128², 128 @64², 256 @32², 512 @16², 512 @8² and the pooled
vector has 704 channels; the encoder holds 13.57 M parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .blocks import DenseBlock, NormActConv, norm_layer

__all__ = ["DenseEncoder2d", "EncoderOutput"]


@dataclass
class EncoderOutput:
    """What :class:`DenseEncoder2d` returns.

    Attributes:
        skips: Feature maps finest first: the stem output at ``n`` and each level's output at ``n / 2**(i+1)``
            for all but the last level — ``len(blocks)`` maps, the inputs of each down-sampling step.
        vector: ``(B, C)`` globally pooled features of the last level (the input of the FC bridge).
    """

    skips: list[torch.Tensor]
    vector: torch.Tensor


class DenseEncoder2d(nn.Module):
    """DenseNet encoder mapping a radiograph to multi-scale skip features and one pooled vector.

    Args:
        in_channels: Channels of the input image. Defaults to 1.
        stem_channels: Channels of the 7×7 stem. Defaults to 64 (X2CT-GAN ``encoder_channel_list = [64]``).
        blocks: Dense layers per level; the input side must be divisible by ``2 ** len(blocks)``.
            Defaults to (6, 12, 24, 16, 6) (X2CT-GAN ``encoder_block_list``).
        growth_rate: Dense growth rate. Defaults to 32 (X2CT-GAN).
        bn_size: Dense bottleneck multiplier. Defaults to 4 (X2CT-GAN).
        norm: Normalisation name. Defaults to "instance" (X2CT-GAN ``encoder_norm: 'instance'``).

    Example:
        >>> enc = DenseEncoder2d(stem_channels=8, blocks=(2, 2), growth_rate=4)
        >>> out = enc(torch.rand(3, 1, 16, 16))
        >>> [tuple(s.shape) for s in out.skips], tuple(out.vector.shape)
        ([(3, 8, 16, 16), (3, 8, 8, 8)], (3, 16))
    """

    def __init__(self, in_channels: int = 1, *, stem_channels: int = 64, blocks: tuple[int, ...] = (6, 12, 24, 16, 6),
                 growth_rate: int = 32, bn_size: int = 4, norm: str = "instance") -> None:
        super().__init__()
        if len(blocks) < 1:
            raise ValueError(f"blocks needs at least one level, got {blocks}")
        self.stem = nn.Sequential(
            nn.ReflectionPad2d(3),  # X2CT-GAN: ReflectionPad2d(3) + 7×7 conv, padding 0
            nn.Conv2d(in_channels, stem_channels, kernel_size=7, padding=0),
            norm_layer(norm, 2, stem_channels),
            nn.ReLU(inplace=True),
        )
        self.levels = nn.ModuleList()
        self.skip_channels: list[int] = [stem_channels]
        channels = stem_channels
        for index, num_layers in enumerate(blocks):
            down = NormActConv(2, channels, channels, kernel_size=3, stride=2, norm=norm)
            dense = DenseBlock(2, num_layers, channels, growth_rate, bn_size=bn_size, norm=norm)
            channels = dense.out_channels
            layers: list[nn.Module] = [down, dense]
            if index < len(blocks) - 1:
                layers.append(NormActConv(2, channels, channels // 2, kernel_size=1, norm=norm))
                channels //= 2
                self.skip_channels.append(channels)
            self.levels.append(nn.Sequential(*layers))
        self.out_channels = channels
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.stride = 2 ** len(blocks)

    def forward(self, image: torch.Tensor) -> EncoderOutput:
        """Encode a batch of radiographs.

        Args:
            image: ``(B, in_channels, n, n)`` radiographs in [0, 1], ``n`` divisible by ``2 ** len(blocks)``.

        Shapes:
            ``(B, 1, n, n)`` → skips ``[(B, C_0, n, n), (B, C_1, n/2, n/2), …]``, vector ``(B, C_out)``.
        """
        if image.ndim != 4 or image.shape[-1] % self.stride or image.shape[-2] % self.stride:
            raise ValueError(f"image must be (B, C, n, n) with n divisible by {self.stride}, "
                             f"got shape {tuple(image.shape)}")
        x = self.stem(image)
        skips = []
        for level in self.levels:
            skips.append(x)
            x = level(x)
        return EncoderOutput(skips=skips, vector=self.pool(x).flatten(1))
