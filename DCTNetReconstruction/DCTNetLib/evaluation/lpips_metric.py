"""LPIPS (Zhang et al. 2018, the DCT-Net paper's ref [36]) built offline: AlexNet trunk, v0.1 linear layers.

``lpips.LPIPS(pretrained=True)`` would let torchvision download AlexNet, and loads its linear layers with a bare
``torch.load``. Here the model is built with ``pnet_rand=True`` (random trunk: torchvision downloads nothing) and
``pretrained=False`` (no internal load), then

- the trunk gets the ImageNet AlexNet convolutions from :mod:`DCTNetLib.io.imagenet_weights`, and
- the linear layers get ``lpips/weights/v0.1/alex.pth``, which ships inside the ``lpips`` wheel, read with
  :func:`~DCTNetLib.io.safe_load.load_torch_file` (``weights_only=True``).

The result reproduces the published LPIPS-alex values of the calibration pairs in ``shared/data/lpips_calibration``
(see ``Testing/Python/test_evaluation_imagenet.py``).
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import nn

from ..errors import WeightsError
from ..io.imagenet_weights import ARCHS, LPIPS_VERSION, load_imagenet_features, lpips_linear_weights_path
from ..io.safe_load import load_torch_file

__all__ = ["LPIPS_NET", "LPIPS_VERSION", "LPIPS_MIN_SIZE", "build_lpips", "lpips_distance"]

LPIPS_NET = "alex"
# Smallest image side AlexNet's strided conv (11×11, stride 4, pad 2) and two 3×3/2 max-pools accept.
LPIPS_MIN_SIZE = 31


def _trunk_key(feature_index: int) -> str:
    """Name of torchvision ``features.{i}`` inside ``lpips.pretrained_networks.alexnet``, whose five
    ``slice{k}`` sequentials keep torchvision's indices (slice1: 0–1, slice2: 2–4, slice3: 5–7, slice4: 8–9,
    slice5: 10–11)."""
    bounds = (2, 5, 8, 10, 12)  # exclusive end index of each slice (lpips 0.1.4 pretrained_networks.alexnet)
    slice_number = next(k for k, end in enumerate(bounds, start=1) if feature_index < end)
    return f"net.slice{slice_number}.{feature_index}"


def build_lpips(imagenet_weights: str | os.PathLike | None = None,
                device: torch.device | str = "cpu") -> nn.Module:
    """LPIPS-alex v0.1 with offline weights, in eval mode, all parameters frozen.

    Args:
        imagenet_weights: explicit AlexNet ImageNet weights file (``--imagenet-weights``). Defaults to the
            DCTNet weights folder or torchvision's cache
            (see :func:`~DCTNetLib.io.imagenet_weights.find_imagenet_weights`).
        device: where to put the model. Defaults to CPU.

    Returns:
        an ``lpips.LPIPS`` module; call it as ``model(a, b)`` with ``(N, 3, H, W)`` images in [-1, 1].

    Raises:
        WeightsError: AlexNet weights not found ("run `dctnet weights fetch` …") or a weights file is unusable.
    """
    import lpips

    features = load_imagenet_features("alexnet", imagenet_weights)
    linear_path = lpips_linear_weights_path(LPIPS_NET)
    linear = load_torch_file(linear_path)
    with warnings.catch_warnings():  # torchvision's deprecation note about lpips' `pretrained=` argument
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=LPIPS_NET, version=LPIPS_VERSION, pretrained=False, pnet_rand=True, verbose=False)
    state = {f"{_trunk_key(int(key.split('.')[1]))}.{key.rsplit('.', 1)[1]}": value for key, value in features.items()}
    state.update(linear)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Keys allowed to stay at their constructed values: the fixed input scaling buffers, and lpips' `lins`
    # ModuleList, which aliases lin0…lin4 (loaded above).
    missing = [key for key in missing if not key.startswith(("scaling_layer.", "lins."))]
    if missing or unexpected:
        raise WeightsError(f"LPIPS weights do not fit lpips {LPIPS_NET} v{LPIPS_VERSION} "
                           f"(missing {missing}, unexpected {unexpected}; linear layers from {linear_path})")
    expected_convs = len(ARCHS["alexnet"].conv_indices)
    if len(features) != 2 * expected_convs:
        raise WeightsError(f"expected {expected_convs} AlexNet convolutions, got {len(features) // 2}")
    model.requires_grad_(False)
    return model.eval().to(device)


@torch.no_grad()
def lpips_distance(model: nn.Module, image_a: torch.Tensor, image_b: torch.Tensor,
                   batch_size: int = 32) -> torch.Tensor:
    """LPIPS between two batches of images, evaluated ``batch_size`` at a time.

    Args:
        model: from :func:`build_lpips`.
        image_a: images in [-1, 1].
        image_b: images in [-1, 1], same shape as ``image_a``.
        batch_size: images per forward pass (bounds memory). Defaults to 32.

    Shapes:
        ``image_a``, ``image_b``: ``(N, 3, H, W)`` with ``H, W ≥ 31`` → ``(N,)``.
    """
    if image_a.shape != image_b.shape or image_a.ndim != 4 or image_a.shape[1] != 3:
        raise ValueError(f"image_a and image_b must both be (N, 3, H, W); got {tuple(image_a.shape)} and "
                         f"{tuple(image_b.shape)}")
    if min(image_a.shape[-2:]) < LPIPS_MIN_SIZE:
        raise ValueError(f"LPIPS-alex needs images of at least {LPIPS_MIN_SIZE} px per side, got "
                         f"{tuple(image_a.shape[-2:])}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    device = next(model.parameters()).device
    values = [
        model(image_a[start:start + batch_size].to(device), image_b[start:start + batch_size].to(device)).flatten()
        for start in range(0, image_a.shape[0], batch_size)
    ]
    return torch.cat(values).float().cpu()
