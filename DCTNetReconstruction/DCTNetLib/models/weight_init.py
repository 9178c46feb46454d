"""Weight initialisation schemes of the reconstruction GAN's networks.

- ``"default"`` — PyTorch's own initialisation of each layer (Kaiming-uniform for convolutions and linear
  layers), left untouched. DCT-Net does not say how its networks are initialised, so DCT-Net's rows use it.
- ``"normal"`` — X2CT-GAN's scheme (Ying et al., CVPR 2019; kylekma/X2CT ``3DGAN/lib/config/config.py``
  ``NETWORK.init_type = 'normal'``, applied by ``init_weights(net, init_type='normal', gain=0.02)`` in
  ``3DGAN/lib/model/nets/utils.py``, the pix2pix/CycleGAN scheme): the weight of every convolution, transposed
  convolution and linear layer is drawn from N(0, gain²) with gain = 0.02 and its bias set to 0; an affine
  normalisation layer's scale is drawn from N(1, gain²) and its shift set to 0. The X2CT-GAN baseline uses it.

Parameters that belong to no such layer (e.g. the zero-initialised residual gate of
:class:`~DCTNetLib.models.attention.SelfAttention3d`) keep their construction value under both schemes.

Example::

    generator = build_generator(cfg)            # presets.build_generator calls init_weights(cfg.init, ...)
    init_weights(generator, "normal", gain=0.02)
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["INIT_SCHEMES", "X2CT_INIT_GAIN", "init_weights"]

INIT_SCHEMES = ("default", "normal")
# Standard deviation of X2CT-GAN's "normal" initialisation (kylekma/X2CT nets/utils.py, init_weights gain=0.02).
X2CT_INIT_GAIN = 0.02

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
          nn.GroupNorm, nn.LayerNorm)


@torch.no_grad()
def init_weights(module: nn.Module, scheme: str = "normal", gain: float = X2CT_INIT_GAIN) -> int:
    """Initialise ``module``'s layers in place with ``scheme`` (see the module docstring).

    Args:
        module: the network (every sub-module is visited).
        scheme: one of :data:`INIT_SCHEMES`. Defaults to "normal".
        gain: standard deviation of the ``"normal"`` scheme. Defaults to 0.02 (X2CT-GAN).

    Returns:
        The number of layers re-initialised (0 for ``"default"``).

    Raises:
        ValueError: unknown ``scheme`` or ``gain <= 0``.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"weight init scheme must be one of {INIT_SCHEMES}, got {scheme!r}")
    if not gain > 0:
        raise ValueError(f"weight init gain must be > 0, got {gain!r}")
    if scheme == "default":
        return 0
    count = 0
    for layer in module.modules():
        if isinstance(layer, _WEIGHTED):
            nn.init.normal_(layer.weight, 0.0, gain)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
            count += 1
        elif isinstance(layer, _NORMS) and getattr(layer, "weight", None) is not None:
            nn.init.normal_(layer.weight, 1.0, gain)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
            count += 1
    return count
