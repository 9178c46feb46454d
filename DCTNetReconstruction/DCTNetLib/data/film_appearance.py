"""Film-like appearance for training radiographs: what a real chest film does to a DRR's grey levels.

A DRR is a normalised line integral: linear in attenuation, noise-free, sharp, with the whole 500 mm detector
exposed. A real PA or lateral film is the same projection after the detector and the vendor's processing, which
the model never saw in v1–v3 (on real films its bone-suppression preview did nothing and its volume followed the
framing). We therefore *randomise the appearance* of every training pair instead of translating films into DRRs
(X2CT-GAN's CycleGAN route needs hundreds of unpaired real films, which we do not have, and a second network at
inference time). The chain follows how a film is formed and displayed:

1. **Scatter** — a low-frequency veil: ``(1 − s)·I + s·blur(I, 16 px)``, ``s ∈ [0, 0.25]`` (scatter-to-primary
   ratios of 0.2–1 in chest radiography without a grid lower contrast by up to ~half; a grid removes most of it:
   Chan & Doi, Med. Phys. 1985).
2. **Detector blur** — Gaussian, σ ≤ 1 px of 3.9 mm (a CR plate's MTF, downsampled to 128 px, is near 1 here).
3. **Quantum noise** — Gaussian, σ ≤ 0.03 on [0, 1].
4. **Display LUT** — a window ``[lo, hi]`` then a gamma: processing maps exposure through a vendor curve; a gamma
   of 0.6–1.6 spans the soft (log-like) to hard curves of CR/DX presets.
5. **Edge enhancement** — unsharp masking ``I + k·(I − blur(I, σ))`` with ``k ≤ 1.5``, ``σ`` 1–4 px: the
   "multi-frequency processing" every CR/DX console applies to chest films.
6. **Collimation** — with probability 0.3 a band of up to 12 % of the field along each edge is blanked to black
   (electronic shutters) or white (unexposed, raw display).
7. **Markers** — with probability 0.3 a small bright block (the lead L/R marker or burnt-in text) in a corner.
8. **Renormalisation** — min–max of the raw image to [0, 1] for the stack, as :func:`~DCTNetLib.io.radiograph.read_radiograph` does for a film.

Geometric framing (patient size, position, width) is *not* randomised here: a 2-D zoom without the matching
volume would teach the generator to ignore the patient's size. :mod:`.augment` moves and scales the volume in
3-D and re-renders, so the views and the CT stay consistent.

The raw and the bone-suppressed DRR of one view get the *same* draw (same LUT, noise field and markers), so the
pair still differs only by the bone. All random numbers come from torch's global generator (stored in every
training checkpoint, so resumed runs draw the same appearance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["FilmAppearanceConfig", "gaussian_blur", "film_like"]


@dataclass(frozen=True)
class FilmAppearanceConfig:
    """Ranges of the film-like appearance (sources in the module docstring).

    Args:
        scatter_fraction: range of the scatter veil's weight ``s``. Defaults to (0.0, 0.25).
        scatter_sigma_px: blur of the veil, pixels of the 128² image. Defaults to 16.
        blur_sigma_px: range of the detector blur σ. Defaults to (0.0, 1.0).
        noise_std: range of the noise σ. Defaults to (0.0, 0.03).
        window_low: range of the display window's black point. Defaults to (0.0, 0.1).
        window_high: range of its white point. Defaults to (0.85, 1.0).
        gamma: range of the display gamma (drawn log-uniformly). Defaults to (0.6, 1.6).
        unsharp_amount: range of the unsharp-mask gain ``k``. Defaults to (0.0, 1.5).
        unsharp_sigma_px: range of the unsharp-mask σ. Defaults to (1.0, 4.0).
        collimation_probability: chance of blanked edge bands. Defaults to 0.3.
        collimation_max_fraction: widest band, as a fraction of the side. Defaults to 0.12.
        marker_probability: chance of a burnt-in marker. Defaults to 0.3.
    """

    scatter_fraction: tuple[float, float] = (0.0, 0.25)
    scatter_sigma_px: float = 16.0
    blur_sigma_px: tuple[float, float] = (0.0, 1.0)
    noise_std: tuple[float, float] = (0.0, 0.03)
    window_low: tuple[float, float] = (0.0, 0.1)
    window_high: tuple[float, float] = (0.85, 1.0)
    gamma: tuple[float, float] = (0.6, 1.6)
    unsharp_amount: tuple[float, float] = (0.0, 1.5)
    unsharp_sigma_px: tuple[float, float] = (1.0, 4.0)
    collimation_probability: float = 0.3
    collimation_max_fraction: float = 0.12
    marker_probability: float = 0.3

    def __post_init__(self) -> None:
        for name in ("scatter_fraction", "blur_sigma_px", "noise_std", "window_low", "window_high", "gamma",
                     "unsharp_amount", "unsharp_sigma_px"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must satisfy 0 <= low <= high, got {(low, high)}")
        if self.gamma[0] <= 0 or self.window_low[1] >= self.window_high[0]:
            raise ValueError(f"gamma must be > 0 and the window's black point below its white point: {self}")
        for name in ("collimation_probability", "collimation_max_fraction", "marker_probability"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflected borders (radius 3σ); ``sigma <= 0`` returns the input.

    Shapes:
        ``(N, H, W)`` → ``(N, H, W)``.
    """
    if sigma <= 0:
        return images
    radius = max(1, min(int(math.ceil(3 * sigma)), images.shape[-1] - 1, images.shape[-2] - 1))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = F.pad(images[:, None], (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1))
    return F.conv2d(out, kernel.view(1, 1, -1, 1))[:, 0]


def _renormalise(images: torch.Tensor) -> torch.Tensor:
    """Min–max of the first image applied to all (a bone-suppressed DRR keeps its raw DRR's scale)."""
    low, high = images[0].min(), images[0].max()
    return ((images - low) / (high - low).clamp_min(1e-6)).clamp(0.0, 1.0)


def _collimate(images: torch.Tensor, fraction: float) -> torch.Tensor:
    side_h, side_w = images.shape[-2:]
    value = 0.0 if float(torch.rand(())) < 0.5 else 1.0
    out = images.clone()
    for edge in range(4):
        width = int(_uniform(0.0, fraction) * (side_h if edge < 2 else side_w))
        if width == 0:
            continue
        if edge == 0:
            out[..., :width, :] = value
        elif edge == 1:
            out[..., side_h - width:, :] = value
        elif edge == 2:
            out[..., :, :width] = value
        else:
            out[..., :, side_w - width:] = value
    return out


def _marker(images: torch.Tensor) -> torch.Tensor:
    side_h, side_w = images.shape[-2:]
    height, width = (max(2, int(_uniform(0.03, 0.08) * s)) for s in (side_h, side_w))
    top = int(_uniform(0.02, 0.12) * side_h)
    left = int(_uniform(0.02, 0.12) * side_w)
    if float(torch.rand(())) < 0.5:
        top = side_h - top - height
    if float(torch.rand(())) < 0.5:
        left = side_w - left - width
    out = images.clone()
    out[..., top:top + height, left:left + width] = 1.0
    return out


def film_like(images: torch.Tensor, config: FilmAppearanceConfig | None = None) -> torch.Tensor:
    """One random film-like appearance applied to a stack of images of the *same* view (module docstring).

    Args:
        images: ``(N, H, W)`` radiographs of one view in [0, 1] (e.g. the raw DRR and its bone-suppressed
            version); every image gets the same draw.
        config: ranges. Defaults to ``FilmAppearanceConfig()``.

    Shapes:
        ``(N, H, W)`` → ``(N, H, W)`` in [0, 1].
    """
    if images.ndim != 3:
        raise ValueError(f"images must be (N, H, W), got shape {tuple(images.shape)}")
    cfg = config or FilmAppearanceConfig()
    out = images.float()
    s = _uniform(*cfg.scatter_fraction)
    out = (1.0 - s) * out + s * gaussian_blur(out, cfg.scatter_sigma_px)
    out = gaussian_blur(out, _uniform(*cfg.blur_sigma_px))
    noise = torch.randn(out.shape[-2:]) * _uniform(*cfg.noise_std)
    out = out + noise.to(out)
    low, high = _uniform(*cfg.window_low), _uniform(*cfg.window_high)
    gamma = math.exp(_uniform(math.log(cfg.gamma[0]), math.log(cfg.gamma[1])))
    out = ((out - low) / (high - low)).clamp(0.0, 1.0) ** gamma
    amount, sigma = _uniform(*cfg.unsharp_amount), _uniform(*cfg.unsharp_sigma_px)
    out = (out + amount * (out - gaussian_blur(out, sigma))).clamp(0.0, 1.0)
    if float(torch.rand(())) < cfg.collimation_probability:
        out = _collimate(out, cfg.collimation_max_fraction)
    if float(torch.rand(())) < cfg.marker_probability:
        out = _marker(out)
    return _renormalise(out)
