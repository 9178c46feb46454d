"""Cost-bounded 3D self-attention SA(·) of the DCT-Net decoder (eq. 6).

Full self-attention over every voxel is quadratic in the token count: at 64³ it would need 262 144² ≈ 6.9·10¹⁰
scores per head, at 128³ 4.4·10¹² — not feasible on any GPU. :class:`SelfAttention3d` therefore works in three
regimes, chosen from the input size at run time:

- **full** (``N ≤ full_max_tokens``, 16³ = 4096 by default): every voxel attends to every voxel
  (``torch.nn.functional.scaled_dot_product_attention``, which uses a memory-efficient kernel where available);
- **spatially reduced** (above): keys and values come from the feature map average-pooled to a ``g³`` grid
  (PVT-v2's "linear spatial-reduction attention", Wang et al., CVM 2022), so every voxel still attends to the
  whole volume, at coarser granularity. ``g`` is the largest power-of-two divisor of the side with
  ``g³ ≤ max_kv_tokens`` and ``N · g³ ≤ max_pairs``; with the defaults (512 keys, 2²⁷ pairs) a 32³ or 64³ map
  attends to an 8³ grid, so the score count per head is at most 2²⁷ ≈ 1.3·10⁸;
- **pooled** (``N > max_query_tokens``, above 32³ by default): the whole block runs on the map average-pooled to
  32³ (queries included, keys/values as above) and its output is trilinearly up-sampled before the gated
  residual — a global-context correction at 32³ granularity, while the decoder's convolutions keep the voxel
  detail. At 128³ this costs ~0.3 GMAC instead of 4.4·10¹² × C for full attention.

The block is a residual with a learnable gate initialised at zero (SAGAN, Zhang et al., ICML 2019):
``y = x + γ · W_o · Attn(W_q x, W_k pool(x), W_v pool(x))`` — at initialisation it is the identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = ["SelfAttention3d", "kv_grid_size"]


def kv_grid_size(side: int, full_max_tokens: int, max_kv_tokens: int, max_pairs: int) -> int:
    """Side ``g`` of the key/value grid for a cubic map of side ``side`` (``g == side`` means full attention).

    Args:
        side: Side of the cubic feature map.
        full_max_tokens: Largest token count attended in full.
        max_kv_tokens: Largest key/value count in the reduced regime.
        max_pairs: Largest query × key product in the reduced regime.
    """
    tokens = side ** 3
    if tokens <= full_max_tokens:
        return side
    grid = side
    while grid > 1 and (grid ** 3 > max_kv_tokens or tokens * grid ** 3 > max_pairs or side % grid):
        grid //= 2
    return max(grid, 1)


class SelfAttention3d(nn.Module):
    """Multi-head 3D self-attention with a zero-initialised residual gate, reduced keys/values and pooled queries.

    Args:
        channels: Feature channels ``C``.
        head_dim: Channels per head; heads = ``max(1, C // head_dim)``. Defaults to 32 (ViT-B/DiT use 64; 32
            keeps ≥ 1 head at the decoder's 16–32-channel levels and 4 at 128 channels).
        full_max_tokens: Token count up to which attention is full. Defaults to 4096 (16³).
        max_kv_tokens: Key/value tokens in the reduced regime. Defaults to 512 (8³).
        max_pairs: Query × key pairs in the reduced regime. Defaults to 2**27.
        max_query_tokens: Token count above which the block runs on a map pooled to at most this many tokens.
            Defaults to 32768 (32³).

    Example:
        >>> sa = SelfAttention3d(16)
        >>> sa(torch.rand(2, 16, 8, 8, 8)).shape
        torch.Size([2, 16, 8, 8, 8])
    """

    def __init__(self, channels: int, head_dim: int = 32, full_max_tokens: int = 4096, max_kv_tokens: int = 512,
                 max_pairs: int = 2 ** 27, max_query_tokens: int = 32768) -> None:
        super().__init__()
        if channels < 1 or head_dim < 1:
            raise ValueError(f"channels and head_dim must be positive, got {channels}, {head_dim}")
        if not 1 <= full_max_tokens <= max_query_tokens:
            raise ValueError(f"need 1 <= full_max_tokens <= max_query_tokens, got {full_max_tokens}, "
                             f"{max_query_tokens}")
        self.heads = max(1, channels // head_dim)
        if channels % self.heads:
            raise ValueError(f"channels={channels} must be divisible by heads={self.heads} (head_dim={head_dim})")
        self.full_max_tokens = full_max_tokens
        self.max_kv_tokens = max_kv_tokens
        self.max_pairs = max_pairs
        self.max_query_tokens = max_query_tokens
        self.to_q = nn.Conv3d(channels, channels, 1)
        self.to_kv = nn.Conv3d(channels, 2 * channels, 1)
        self.to_out = nn.Conv3d(channels, channels, 1)
        self.gate = nn.Parameter(torch.zeros(1))  # γ = 0: the block starts as the identity (SAGAN)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        """Attention output (before the gate) of a cubic map small enough for full or reduced attention."""
        side = x.shape[-1]
        grid = kv_grid_size(side, self.full_max_tokens, self.max_kv_tokens, self.max_pairs)
        source = x if grid == side else F.avg_pool3d(x, side // grid)
        q = rearrange(self.to_q(x), "b (h d) x y z -> b h (x y z) d", h=self.heads)
        k, v = rearrange(self.to_kv(source), "b (two h d) x y z -> two b h (x y z) d", two=2, h=self.heads)
        out = F.scaled_dot_product_attention(q.contiguous(), k.contiguous(), v.contiguous())
        return self.to_out(rearrange(out, "b h (x y z) d -> b (h d) x y z", x=side, y=side, z=side))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: ``(B, C, n, n, n)`` → ``(B, C, n, n, n)``."""
        if x.ndim != 5 or not (x.shape[2] == x.shape[3] == x.shape[4]):
            raise ValueError(f"x must be a cubic (B, C, n, n, n) map, got shape {tuple(x.shape)}")
        side = x.shape[-1]
        pooled = side
        while pooled ** 3 > self.max_query_tokens and pooled % 2 == 0:
            pooled //= 2
        if pooled == side:
            return x + self.gate * self._attend(x)
        out = self._attend(F.avg_pool3d(x, side // pooled))
        return x + self.gate * F.interpolate(out, size=x.shape[2:], mode="trilinear", align_corners=False)
