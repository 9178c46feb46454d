"""Tri-plane conditional patch discriminator D(· | Y) of DCT-Net (eq. 7).

D judges a volume (G(Y) or the ground truth) conditioned on the radiographs Y and returns, for every axial,
coronal and sagittal slice ``j``, an ``m × n`` map of patch scores ``d_{j,v}``:

1. **Condition.** Each radiograph is broadcast along its projection axis (PA along axis 1, lateral along axis 2;
   :func:`~DCTNetLib.models.blocks.broadcast_view`) and concatenated to the volume as channels, as X2CT-GAN's
   conditional D does (kylekma/X2CT ``multiView_CTGAN.py``, ``conditional_D: True``): input ``(B, 3, D, H, W)``.
2. **Slice.** The conditioned volume is cut along each axis into 2D slices with 3 channels: axial ``(H, W)``
   slices (fixed D), coronal ``(D, W)`` (fixed H) and sagittal ``(D, H)`` (fixed W). A coronal slice carries the
   whole PA image; a sagittal slice the whole lateral image.
3. **Judge.** One 2D PatchGAN trunk (pix2pix/X2CT-GAN ``NLayer_2D_Discriminator``: 4×4 convs, widths
   64-128-256-512, instance norm, LeakyReLU 0.2, no sigmoid = LSGAN) is **shared by the three planes**; each
   plane has its own 1-channel output conv. Sharing keeps D at 2.8 M parameters (three separate trunks would
   be 8.3 M, pushing G(Y)+G(X)+D to ~68 M against the paper's 60.70 M, Table 2) and lets every slice
   orientation train the same low-level texture filters; the per-plane heads let D score each orientation on
   its own scale.

Output: ``{"axial": (B·D, 1, m, n), "coronal": (B·H, 1, m, n), "sagittal": (B·W, 1, m, n)}``.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from ..conventions import VIEW_LAT, VIEW_PA
from .blocks import broadcast_view, conv_layer, norm_layer

__all__ = ["PLANES", "PatchDiscriminator", "TriPlaneDiscriminator", "condition_on_radiographs", "slice_planes"]

PLANES = ("axial", "coronal", "sagittal")
# einops patterns cutting (B, C, D, H, W) into a batch of 2D slices, one pattern per plane.
_SLICE_PATTERNS = {
    "axial": "b c d h w -> (b d) c h w",
    "coronal": "b c d h w -> (b h) c d w",
    "sagittal": "b c d h w -> (b w) c d h",
}
# pix2pix / X2CT-GAN PatchGAN: 4×4 kernels with padding ceil((4 - 1) / 2) = 2 (kylekma/X2CT patch_discriminator.py).
_KERNEL = 4
_PADDING = 2


def condition_on_radiographs(volume: torch.Tensor, radiographs: torch.Tensor) -> torch.Tensor:
    """Concatenate the radiographs, broadcast along their projection axes, to a volume as channels.

    Args:
        volume: ``(B, C, n, n, n)`` volume in [0, 1].
        radiographs: ``(B, 2, n, n)`` pair (channel 0 = PA, 1 = lateral) in [0, 1].

    Shapes:
        ``(B, C, n, n, n)``, ``(B, 2, n, n)`` → ``(B, C + 2, n, n, n)``.
    """
    if radiographs.ndim != 4 or radiographs.shape[1] != 2:
        raise ValueError(f"radiographs must be (B, 2, n, n), got shape {tuple(radiographs.shape)}")
    if volume.ndim != 5 or tuple(volume.shape[2:]) != (radiographs.shape[2],) + tuple(radiographs.shape[2:]) \
            or volume.shape[0] != radiographs.shape[0]:
        raise ValueError(f"volume {tuple(volume.shape)} does not match radiographs {tuple(radiographs.shape)}: "
                         "expected (B, C, n, n, n) with the radiographs' B and n")
    pa = broadcast_view(radiographs[:, VIEW_PA:VIEW_PA + 1], VIEW_PA)
    lat = broadcast_view(radiographs[:, VIEW_LAT:VIEW_LAT + 1], VIEW_LAT)
    return torch.cat([volume, pa, lat], dim=1)


def slice_planes(volume: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cut ``(B, C, D, H, W)`` into axial ``(B·D, C, H, W)``, coronal ``(B·H, C, D, W)``, sagittal ``(B·W, C, D, H)``."""
    return {plane: rearrange(volume, pattern) for plane, pattern in _SLICE_PATTERNS.items()}


class PatchDiscriminator(nn.Sequential):
    """N-layer PatchGAN (Isola et al. 2017) in 2D or 3D, as X2CT-GAN's ``NLayer_{2,3}D_Discriminator``.

    ``len(channels) - 1`` stride-2 4×4 convs, one stride-1 4×4 conv, then a stride-1 4×4 conv to
    ``out_channels`` scores (no sigmoid: LSGAN). The first conv has no norm; the others use ``norm`` and no bias.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Input channels.
        channels: Widths. Defaults to (64, 128, 256, 512) (X2CT-GAN ``ndf: 64``, ``n_layers_D`` 3).
        norm: Normalisation name. Defaults to "instance".
        out_channels: Score channels; ``0`` leaves the output conv out (a trunk). Defaults to 1.
    """

    def __init__(self, spatial_dims: int, in_channels: int, *, channels: tuple[int, ...] = (64, 128, 256, 512),
                 norm: str = "instance", out_channels: int = 1) -> None:
        if len(channels) < 2:
            raise ValueError(f"channels needs at least 2 widths, got {channels}")
        conv = conv_layer(spatial_dims)
        layers: list[nn.Module] = [conv(in_channels, channels[0], _KERNEL, stride=2, padding=_PADDING),
                                   nn.LeakyReLU(0.2, inplace=True)]
        for index, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
            stride = 1 if index == len(channels) - 2 else 2
            layers += [conv(c_in, c_out, _KERNEL, stride=stride, padding=_PADDING, bias=False),
                       norm_layer(norm, spatial_dims, c_out), nn.LeakyReLU(0.2, inplace=True)]
        if out_channels:
            layers.append(conv(channels[-1], out_channels, _KERNEL, stride=1, padding=_PADDING))
        super().__init__(*layers)


class TriPlaneDiscriminator(nn.Module):
    """Conditional patch discriminator over axial, coronal and sagittal slices (DCT-Net eq. 7).

    Args:
        volume_channels: Channels of the judged volume. Defaults to 1.
        channels: PatchGAN widths. Defaults to (64, 128, 256, 512) (X2CT-GAN ``ndf: 64``, 3 layers).
        norm: Normalisation name. Defaults to "instance".
        conditional: Concatenate the broadcast radiographs (eq. 7's ``| Y``). Defaults to True.
        slices_per_plane: In training mode, score only this many randomly drawn slices per plane (0 = all; see
            :class:`~DCTNetLib.models.presets.DiscriminatorConfig`). Defaults to 0.
    """

    def __init__(self, *, volume_channels: int = 1, channels: tuple[int, ...] = (64, 128, 256, 512),
                 norm: str = "instance", conditional: bool = True, slices_per_plane: int = 0) -> None:
        super().__init__()
        if slices_per_plane < 0:
            raise ValueError(f"slices_per_plane must be >= 0, got {slices_per_plane}")
        self.conditional = conditional
        self.slices_per_plane = int(slices_per_plane)
        in_channels = volume_channels + (2 if conditional else 0)
        self.trunk = PatchDiscriminator(2, in_channels, channels=channels, norm=norm, out_channels=0)
        self.heads = nn.ModuleDict({
            plane: nn.Conv2d(channels[-1], 1, _KERNEL, stride=1, padding=_PADDING) for plane in PLANES
        })

    def forward(self, volume: torch.Tensor, radiographs: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Score every slice of ``volume`` along the three planes.

        Args:
            volume: ``(B, 1, n, n, n)`` G(Y) or ground truth in [0, 1].
            radiographs: ``(B, 2, n, n)`` the condition Y (required when ``conditional``).

        Shapes:
            ``(B, 1, D, H, W)`` → ``{"axial": (B·D, 1, m, n), "coronal": (B·H, 1, m, n), "sagittal": (B·W, 1, m, n)}``.
        """
        if self.conditional:
            if radiographs is None:
                raise ValueError("radiographs are required by a conditional discriminator")
            volume = condition_on_radiographs(volume, radiographs)
        elif volume.ndim != 5:
            raise ValueError(f"volume must be (B, C, D, H, W), got shape {tuple(volume.shape)}")
        planes = slice_planes(volume)
        if self.training and self.slices_per_plane:
            planes = {plane: _random_subset(slices, self.slices_per_plane) for plane, slices in planes.items()}
        return {plane: self.heads[plane](self.trunk(slices)) for plane, slices in planes.items()}


def _random_subset(slices: torch.Tensor, k: int) -> torch.Tensor:
    """``k`` slices drawn without replacement (torch's global RNG, so checkpoints resume the same draws)."""
    if k >= slices.shape[0]:
        return slices
    return slices[torch.randperm(slices.shape[0])[:k].to(slices.device)]
