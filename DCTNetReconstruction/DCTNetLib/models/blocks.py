"""Building blocks shared by the 2D encoders and the 3D decoders (DCT-Net generator and X2CT-GAN baseline).

One lookup by ``spatial_dims`` picks 2D or 3D layers (:func:`conv_layer`, :func:`norm_layer`), so the dense
encoder blocks, the conv/norm/activation units and the patch discriminators are written once.

The 2D → 3D "connection B" of X2CT-GAN (Ying et al., CVPR 2019, §3.2) lives here as :func:`broadcast_view`: a 2D
feature map of one radiograph is copied along that view's projection axis (``docs/conventions.md``):

- PA       ``(B, C, h, w)`` (rows S→I, columns R→L) → ``(B, C, h, n, w)``: broadcast along axis 1 (A→P);
- lateral  ``(B, C, h, w)`` (rows S→I, columns A→P) → ``(B, C, h, w, n)``: broadcast along axis 2 (R→L).

So PA row ``r`` / column ``c`` lands at volume ``(D=r, ·, W=c)`` and lateral row ``r`` / column ``c`` at
``(D=r, H=c, ·)``. X2CT-GAN expands every view along its own first axis and permutes afterwards (its
``CTOrder_Xray1/2``); our conventions need no permutation.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..conventions import VIEW_LAT, VIEW_PA

__all__ = [
    "NORMS",
    "conv_layer",
    "conv_transpose_layer",
    "norm_layer",
    "ConvNormAct",
    "DenseLayer",
    "DenseBlock",
    "broadcast_view", "bilinear_backprojection",
    "ViewToVolume",
    "BinomialSmoothing3d",
]

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
# Instance norm without affine parameters, as X2CT-GAN's "instance"/"instance3d" norms
# (kylekma/X2CT 3DGAN/lib/model/nets/utils.py: affine=False). Running statistics are not tracked: training and
# inference both normalise each volume by its own statistics (X2CT tracks them; a buffer, not a parameter).
NORMS: dict[str, dict[int, Callable[[int], nn.Module]]] = {
    "instance": {
        2: lambda c: nn.InstanceNorm2d(c, affine=False),
        3: lambda c: nn.InstanceNorm3d(c, affine=False),
    },
    "batch": {2: nn.BatchNorm2d, 3: nn.BatchNorm3d},
    "none": {2: lambda c: nn.Identity(), 3: lambda c: nn.Identity()},
}


def _check_dims(spatial_dims: int) -> None:
    if spatial_dims not in _CONV:
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")


def conv_layer(spatial_dims: int) -> type[nn.Module]:
    """``nn.Conv2d`` or ``nn.Conv3d``."""
    _check_dims(spatial_dims)
    return _CONV[spatial_dims]


def conv_transpose_layer(spatial_dims: int) -> type[nn.Module]:
    """``nn.ConvTranspose2d`` or ``nn.ConvTranspose3d``."""
    _check_dims(spatial_dims)
    return _CONV_T[spatial_dims]


def norm_layer(name: str, spatial_dims: int, channels: int) -> nn.Module:
    """Normalisation layer ``name`` ("instance", "batch" or "none") for ``spatial_dims`` over ``channels``."""
    _check_dims(spatial_dims)
    if name not in NORMS:
        raise ValueError(f"norm must be one of {sorted(NORMS)}, got {name!r}")
    return NORMS[name][spatial_dims](channels)


def _act(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "leaky_relu":
        return nn.LeakyReLU(0.2, inplace=True)  # slope 0.2: pix2pix / X2CT-GAN PatchGAN
    if name == "none":
        return nn.Identity()
    raise ValueError(f"act must be 'relu', 'leaky_relu' or 'none', got {name!r}")


class ConvNormAct(nn.Sequential):
    """Convolution → normalisation → activation ("post-activation" unit).

    Args:
        spatial_dims: 2 or 3.
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Kernel side. Defaults to 3.
        stride: Stride. Defaults to 1.
        norm: "instance", "batch" or "none". Defaults to "instance".
        act: "relu", "leaky_relu" or "none". Defaults to "relu".
        bias: Convolution bias. X2CT-GAN keeps it with instance norm (``use_bias``). Defaults to True.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, norm: str = "instance", act: str = "relu", bias: bool = True) -> None:
        super().__init__(
            conv_layer(spatial_dims)(in_channels, out_channels, kernel_size, stride=stride,
                                     padding=kernel_size // 2, bias=bias),
            norm_layer(norm, spatial_dims, out_channels),
            _act(act),
        )


class NormActConv(nn.Sequential):
    """Normalisation → activation → convolution ("pre-activation" unit of DenseNet, Huang et al. 2017)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, norm: str = "instance", bias: bool = True) -> None:
        super().__init__(
            norm_layer(norm, spatial_dims, in_channels),
            nn.ReLU(inplace=True),
            conv_layer(spatial_dims)(in_channels, out_channels, kernel_size, stride=stride,
                                     padding=kernel_size // 2, bias=bias),
        )


class DenseLayer(nn.Module):
    """DenseNet-BC bottleneck layer: norm-ReLU-conv1×1 (bn_size·growth) → norm-ReLU-conv3×3 (growth), concatenated.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Input channels.
        growth_rate: New channels appended. X2CT-GAN: 32.
        bn_size: Bottleneck width multiplier. Defaults to 4 (Huang et al. 2017; X2CT-GAN ``bn_size = 4``).
        norm: Normalisation name. Defaults to "instance".
    """

    def __init__(self, spatial_dims: int, in_channels: int, growth_rate: int, *, bn_size: int = 4,
                 norm: str = "instance") -> None:
        super().__init__()
        self.body = nn.Sequential(
            NormActConv(spatial_dims, in_channels, bn_size * growth_rate, kernel_size=1, norm=norm),
            NormActConv(spatial_dims, bn_size * growth_rate, growth_rate, kernel_size=3, norm=norm),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: ``(B, C, *S)`` → ``(B, C + growth_rate, *S)``."""
        return torch.cat([x, self.body(x)], dim=1)


class DenseBlock(nn.Sequential):
    """``num_layers`` :class:`DenseLayer` in sequence; output has ``in_channels + num_layers * growth_rate`` channels."""

    def __init__(self, spatial_dims: int, num_layers: int, in_channels: int, growth_rate: int, *,
                 bn_size: int = 4, norm: str = "instance") -> None:
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        super().__init__(*[
            DenseLayer(spatial_dims, in_channels + i * growth_rate, growth_rate, bn_size=bn_size, norm=norm)
            for i in range(num_layers)
        ])
        self.out_channels = in_channels + num_layers * growth_rate


def broadcast_view(features: torch.Tensor, view: int, depth: int | None = None) -> torch.Tensor:
    """Copy a 2D feature map of one radiograph along its projection axis (X2CT-GAN connection B).

    Args:
        features: ``(B, C, h, w)`` feature map of the PA (``view=VIEW_PA``) or lateral (``view=VIEW_LAT``) image,
            rows superior→inferior.
        view: :data:`~DCTNetLib.conventions.VIEW_PA` or :data:`~DCTNetLib.conventions.VIEW_LAT`.
        depth: Extent of the projection axis. Defaults to ``w`` (cubic volume).

    Returns:
        A broadcast (no copy) view ``(B, C, h, depth, w)`` for PA, ``(B, C, h, w, depth)`` for lateral.

    Shapes:
        ``(B, C, h, w)`` → ``(B, C, D, H, W)``.
    """
    if features.ndim != 4:
        raise ValueError(f"features must be (B, C, h, w), got shape {tuple(features.shape)}")
    b, c, h, w = features.shape
    n = w if depth is None else depth
    if view == VIEW_PA:  # columns R→L = volume W; beam along A→P (axis 1 = H)
        return features.unsqueeze(3).expand(b, c, h, n, w)
    if view == VIEW_LAT:  # columns A→P = volume H; beam along R→L (axis 2 = W)
        return features.unsqueeze(4).expand(b, c, h, w, n)
    raise ValueError(f"view must be VIEW_PA ({VIEW_PA}) or VIEW_LAT ({VIEW_LAT}), got {view}")


class ViewToVolume(nn.Module):
    """Connection B: 1×1 conv + norm + ReLU on a view's 2D features, then :func:`broadcast_view` into 3D.

    X2CT-GAN's ``Dimension_UpsampleCutBlock`` (kylekma/X2CT ``encoder_decoder_utils.py``) follows the broadcast
    with a 3×3×3 conv + norm + ReLU; ``conv3d=True`` adds it (the baseline), DCT-Net leaves it out (``False``)
    because the decoder level's own convolution / attention mixes the broadcast features (cost: see
    ``docs/architecture.md``).

    Args:
        in_channels: Channels of the encoder feature map.
        out_channels: Channels of the decoder level.
        view: ``VIEW_PA`` or ``VIEW_LAT``.
        norm: Normalisation name. Defaults to "instance".
        conv3d: Add X2CT-GAN's 3×3×3 conv after the broadcast. Defaults to False.
    """

    def __init__(self, in_channels: int, out_channels: int, view: int, *, norm: str = "instance",
                 conv3d: bool = False) -> None:
        super().__init__()
        self.view = view
        self.compress = ConvNormAct(2, in_channels, out_channels, kernel_size=1, norm=norm)
        self.conv3d = ConvNormAct(3, out_channels, out_channels, kernel_size=3, norm=norm) if conv3d else None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Shapes: ``(B, C_in, n, n)`` → ``(B, C_out, n, n, n)`` (a broadcast view unless ``conv3d``)."""
        volume = broadcast_view(self.compress(features), self.view)
        return volume if self.conv3d is None else self.conv3d(volume)




def bilinear_backprojection(pa: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
    """Product of the two views' maps, each copied along its own beam: ``pa(d, w) · lat(d, h)`` at ``(d, h, w)``.

    Where the additive connection B copies each view's evidence along its beam and leaves the network to find the
    crossing, the product is large only where *both* views see something: a structure seen at column ``w`` of the
    PA and column ``h`` of the lateral (same row ``d``) is placed at ``(d, h, w)`` — the one-step, two-view
    multiplicative back-projection of algebraic tomography (MART, Gordon et al., J. Theor. Biol. 1970).

    Args:
        pa: ``(B, C, n, n)`` non-negative maps of the PA view.
        lat: ``(B, C, n, n)`` non-negative maps of the lateral view.

    Shapes:
        ``(B, C, n, n)``, ``(B, C, n, n)`` → ``(B, C, n, n, n)`` (D, H, W).
    """
    if pa.shape != lat.shape:
        raise ValueError(f"pa and lat maps must have one shape, got {tuple(pa.shape)} and {tuple(lat.shape)}")
    return broadcast_view(pa, VIEW_PA) * broadcast_view(lat, VIEW_LAT)


class BinomialSmoothing3d(nn.Module):
    """A fixed separable binomial filter [1, 2, 1] / 4 along each axis of a volume (no parameters, no buffers).

    Its response, cos²(ω/2) per axis, is 1 at zero frequency and 0 at the Nyquist frequency: it removes a pattern
    that alternates from voxel to voxel — what a stride-2, kernel-2 transposed-conv head leaves when its eight taps
    differ (Odena et al., "Deconvolution and checkerboard artifacts", Distill 2016) — and keeps constants and linear
    ramps. The binomial filter is the anti-aliasing filter of Zhang, "Making convolutional networks shift-invariant
    again", ICML 2019. Edges are replicated, so a uniform volume stays uniform up to its faces. The output is a convex
    combination of the input, so it stays in the input's range.

    Shapes:
        ``(B, C, D, H, W)`` → ``(B, C, D, H, W)``.
    """

    TAPS = (0.25, 0.5, 0.25)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        if volume.ndim != 5:
            raise ValueError(f"volume must be (B, C, D, H, W), got shape {tuple(volume.shape)}")
        b, c = volume.shape[:2]
        taps = volume.new_tensor(self.TAPS)
        x = volume.reshape(b * c, 1, *volume.shape[2:])
        for axis in range(3):
            shape = [1, 1, 1, 1, 1]
            shape[2 + axis] = 3
            padding = [0, 0, 0, 0, 0, 0]
            padding[2 * (2 - axis)] = padding[2 * (2 - axis) + 1] = 1  # F.pad lists the last axis first
            x = F.conv3d(F.pad(x, padding, mode="replicate"), taps.view(shape))
        return x.reshape(volume.shape)
