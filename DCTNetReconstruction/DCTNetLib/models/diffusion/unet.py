"""Denoising U-Net of the bone-suppression CDM (it predicts ε, v or x₀, see ``CDMConfig.objective``), conditioned
on the clean radiograph, the timestep and the view.

Layout of DDPM / ADM (Ho et al. 2020; Dhariwal & Nichol 2021, openai/guided-diffusion ``UNetModel``): per level
``num_res_blocks`` ResBlocks (GroupNorm → SiLU → conv, time embedding as scale/shift), self-attention after each
ResBlock at the lowest ``attention_levels`` resolutions, a ResBlock–attention–ResBlock middle, and a decoder with
``num_res_blocks + 1`` ResBlocks per level, each taking one skip connection. The condition y is concatenated to the
noisy x_t as input channels (SR3, Saharia et al. 2022; BS-Diff, Chen et al. 2024).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from einops.layers.torch import Rearrange
from torch import Tensor, nn

from .config import CDMConfig

__all__ = ["SinusoidalPosEmb", "TimeViewEmbedding", "ResBlock", "SelfAttention2d", "Downsample", "Upsample",
           "ConditionalUNet"]

# Longest period of the sinusoidal embedding (Vaswani et al. 2017, §3.5; reused by Ho et al. 2020).
MAX_PERIOD = 10_000


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with ``min(groups, channels)`` groups (Wu & He 2018), which must divide ``channels``."""
    groups = min(groups, channels)
    if channels % groups:
        raise ValueError(f"norm_groups={groups} must divide channels={channels}")
    return nn.GroupNorm(groups, channels)


class SinusoidalPosEmb(nn.Module):
    """Sinusoidal embedding of a (possibly fractional) timestep (Vaswani et al. 2017).

    Args:
        dim: Embedding width (even).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"dim must be even, got {dim}")
        self.dim = dim

    def forward(self, t: Tensor) -> Tensor:
        """Shapes: ``(B,)`` → ``(B, dim)``."""
        half = self.dim // 2
        freqs = torch.exp(-math.log(MAX_PERIOD) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = rearrange(t.float(), "b -> b 1") * rearrange(freqs, "d -> 1 d")
        return torch.cat([args.sin(), args.cos()], dim=-1)


class TimeViewEmbedding(nn.Module):
    """Timestep MLP plus a learned view embedding (PA = 0, LAT = 1), summed as ADM adds its class embedding.

    Args:
        base_dim: Width of the sinusoidal embedding (``channels[0]``).
        emb_dim: Output width shared by all ResBlocks.
        num_views: Number of views; ``0`` disables the view embedding.
    """

    def __init__(self, base_dim: int, emb_dim: int, num_views: int) -> None:
        super().__init__()
        self.time_mlp = nn.Sequential(SinusoidalPosEmb(base_dim), nn.Linear(base_dim, emb_dim), nn.SiLU(),
                                      nn.Linear(emb_dim, emb_dim))
        self.view_emb = nn.Embedding(num_views, emb_dim) if num_views > 0 else None

    def forward(self, t: Tensor, view: Tensor | None) -> Tensor:
        """Shapes: t ``(B,)``, view ``(B,)`` long → ``(B, emb_dim)``."""
        emb = self.time_mlp(t)
        if self.view_emb is not None:
            if view is None:
                raise ValueError("view is required: the model was built with a view embedding (PA=0, LAT=1)")
            emb = emb + self.view_emb(view)
        return emb


class ResBlock(nn.Module):
    """Residual block: GN → SiLU → conv, then GN·(1 + scale) + shift from the embedding → SiLU → dropout → conv.

    Args:
        in_channels: Input channels.
        out_channels: Output channels (a 1×1 conv matches the skip when they differ).
        emb_dim: Width of the time/view embedding.
        groups: GroupNorm groups.
        dropout: Dropout probability before the second conv.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, groups: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(group_norm(in_channels, groups), nn.SiLU(),
                                       nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.emb_proj = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_channels))
        self.out_norm = group_norm(out_channels, groups)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """Shapes: x ``(B, C_in, H, W)``, emb ``(B, E)`` → ``(B, C_out, H, W)``."""
        h = self.in_layers(x)
        scale, shift = rearrange(self.emb_proj(emb), "b (two c) -> two b c 1 1", two=2)
        h = self.out_layers(self.out_norm(h) * (1 + scale) + shift)
        return h + self.skip(x)


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over all pixels, with a residual connection (torch's fused SDPA kernel).

    Args:
        channels: Feature channels (divisible by ``heads``).
        heads: Number of attention heads.
        groups: GroupNorm groups.
    """

    def __init__(self, channels: int, heads: int, groups: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"heads={heads} must divide channels={channels}")
        self.heads = heads
        self.norm = group_norm(channels, groups)
        self.to_qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.to_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: ``(B, C, H, W)`` → ``(B, C, H, W)``."""
        h, w = x.shape[-2:]
        q, k, v = rearrange(self.to_qkv(self.norm(x)), "b (qkv heads d) x y -> qkv b heads (x y) d",
                            qkv=3, heads=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)
        out = rearrange(out, "b heads (x y) d -> b (heads d) x y", x=h, y=w)
        return x + self.to_out(out)


class Downsample(nn.Sequential):
    """Halve H and W: space-to-depth then a 1×1 conv (lucidrains/denoising-diffusion-pytorch ``Downsample``).

    Shapes: ``(B, C, H, W)`` → ``(B, C, H/2, W/2)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(Rearrange("b c (h p1) (w p2) -> b (c p1 p2) h w", p1=2, p2=2),
                         nn.Conv2d(4 * channels, channels, 1))


class Upsample(nn.Sequential):
    """Double H and W: nearest-neighbour upsampling then a 3×3 conv (Ho et al. 2020).

    Shapes: ``(B, C, H, W)`` → ``(B, C, 2H, 2W)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels, channels, 3, padding=1))


class ConditionalUNet(nn.Module):
    """ε_θ(x_t, y, t, view): predicts the noise in x_t given the clean radiograph y, the step t and the view.

    Args:
        config: Architecture settings (``channels``, ``num_res_blocks``, ``attention_levels``, …).

    Example:
        >>> net = ConditionalUNet(CDMConfig.tiny())
        >>> net(torch.randn(2, 1, 32, 32), torch.randn(2, 1, 32, 32), torch.tensor([5, 80]),
        ...     torch.tensor([0, 1])).shape
        torch.Size([2, 1, 32, 32])
    """

    def __init__(self, config: CDMConfig) -> None:
        super().__init__()
        self.config = config
        chans, groups, emb_dim = config.channels, config.norm_groups, config.time_emb_dim
        levels = len(chans)
        self.downsample_factor = 2 ** (levels - 1)
        self.embed = TimeViewEmbedding(chans[0], emb_dim, config.num_views)
        self.init_conv = nn.Conv2d(config.unet_in_channels, chans[0], 3, padding=1)

        def block(c_in: int, c_out: int) -> ResBlock:
            return ResBlock(c_in, c_out, emb_dim, groups, dropout=config.dropout)

        def attention(level: int) -> nn.Module:
            return SelfAttention2d(chans[level], config.attention_heads, groups) if config.has_attention(level) \
                else nn.Identity()

        # Encoder: every ResBlock output and every downsampled map is kept as a skip connection.
        self.downs = nn.ModuleList()
        skip_channels, c = [chans[0]], chans[0]
        for level, c_out in enumerate(chans):
            for _ in range(config.num_res_blocks):
                self.downs.append(nn.ModuleList([block(c, c_out), attention(level)]))
                c = c_out
                skip_channels.append(c)
            if level < levels - 1:
                self.downs.append(Downsample(c))
                skip_channels.append(c)

        self.mid_block1 = block(c, c)
        self.mid_attn = SelfAttention2d(c, config.attention_heads, groups)
        self.mid_block2 = block(c, c)

        # Decoder: num_res_blocks + 1 ResBlocks per level, each concatenating one skip connection.
        self.ups = nn.ModuleList()
        for level in reversed(range(levels)):
            for _ in range(config.num_res_blocks + 1):
                self.ups.append(nn.ModuleList([block(c + skip_channels.pop(), chans[level]), attention(level)]))
                c = chans[level]
            if level > 0:
                self.ups.append(Upsample(c))

        self.out = nn.Sequential(group_norm(c, groups), nn.SiLU(), nn.Conv2d(c, config.image_channels, 3, padding=1))

    def forward(self, x_t: Tensor, y: Tensor, t: Tensor, view: Tensor | None = None) -> Tensor:
        """Predict ε.

        Args:
            x_t: Noisy bone-suppressed radiograph in the diffusion domain [-1, 1] (+ noise).
            y: Clean conditioning radiograph in [-1, 1].
            t: Timestep indices in [0, T-1] (long, or float for fractional steps).
            view: View indices (PA = 0, LAT = 1), long.

        Shapes:
            x_t ``(B, 1, H, W)``, y ``(B, 1, H, W)``, t ``(B,)``, view ``(B,)`` → ``(B, 1, H, W)``;
            H and W divisible by ``2 ** (len(channels) - 1)``.
        """
        if x_t.shape[-2] % self.downsample_factor or x_t.shape[-1] % self.downsample_factor:
            raise ValueError(f"x_t height and width must be divisible by {self.downsample_factor}, "
                             f"got {tuple(x_t.shape[-2:])}")
        if y.shape[0] != x_t.shape[0] or y.shape[-2:] != x_t.shape[-2:]:
            raise ValueError(f"y must match x_t in batch and size, got y {tuple(y.shape)} vs x_t {tuple(x_t.shape)}")
        emb = self.embed(t, view)
        h = self.init_conv(torch.cat([x_t, y], dim=1))
        skips = [h]
        for layer in self.downs:
            if isinstance(layer, Downsample):
                h = layer(h)
            else:
                res, attn = layer
                h = attn(res(h, emb))
            skips.append(h)

        h = self.mid_block2(self.mid_attn(self.mid_block1(h, emb)), emb)

        for layer in self.ups:
            if isinstance(layer, Upsample):
                h = layer(h)
            else:
                res, attn = layer
                h = attn(res(torch.cat([h, skips.pop()], dim=1), emb))
        return self.out(h)
