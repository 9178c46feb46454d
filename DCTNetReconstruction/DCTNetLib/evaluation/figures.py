"""Figures of a reconstruction: inputs, bone-suppressed previews, and the CT in three planes (PNG, matplotlib).

Used by ``dctnet demo`` (the README's figure) and ``dctnet reconstruct --figure``. Display conventions follow
:mod:`DCTNetLib.conventions`: axial slices are shown in radiological orientation (patient right on the image's
left), coronal and sagittal with the head up.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..conventions import HU_PER_UNIT
from ..io.atomic import atomic_write_bytes

__all__ = ["orthogonal_slices", "reconstruction_figure", "data_figure"]

# Error maps are shown on [0, 0.2] of the unit range (= 0–500 HU) so typical errors are visible (our choice),
# in HU with a colour bar.
ERROR_DISPLAY_MAX = 0.2
ERROR_DISPLAY_MAX_HU = ERROR_DISPLAY_MAX * HU_PER_UNIT
ERROR_LABEL = "|error| (HU)"


def orthogonal_slices(volume: np.ndarray) -> dict[str, np.ndarray]:
    """Central axial, coronal and sagittal slices of a canonical ``(D, H, W)`` = (S→I, A→P, R→L) volume.

    Returns:
        ``{"axial": (H, W) rows A→P, "coronal": (D, W) rows S→I, "sagittal": (D, H) rows S→I}``.
    """
    d, h, w = volume.shape
    return {"axial": volume[d // 2], "coronal": volume[:, h // 2, :], "sagittal": volume[:, :, w // 2]}


def _save(fig, path: str | Path, title: str) -> Path:
    """Title, tight layout, PNG at 80 dpi written atomically; closes the figure."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return atomic_write_bytes(Path(path), buffer.getvalue())


def reconstruction_figure(path: str | Path, pa: np.ndarray, lat: np.ndarray, ct_unit: np.ndarray,
                          pa_bs: np.ndarray | None = None, lat_bs: np.ndarray | None = None,
                          ground_truth_unit: np.ndarray | None = None, title: str = "",
                          metrics: dict[str, float] | None = None, label: str = "reconstruction") -> Path:
    """Write a PNG: row 1 the radiographs (and their bone-suppressed versions), then the CT's three planes
    (``label``, and ground truth when given). Volumes are unit-range ``(D, H, W)`` (HU window → [0, 1]).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = [("PA", pa), ("lateral", lat)]
    if pa_bs is not None and lat_bs is not None:
        images += [("PA, bone-suppressed (CDM)", pa_bs), ("lateral, bone-suppressed (CDM)", lat_bs)]
    rows = [(label, ct_unit, "gray", 1.0)]
    if ground_truth_unit is not None:
        error_hu = np.abs(ct_unit - ground_truth_unit) * HU_PER_UNIT
        rows += [("ground truth", ground_truth_unit, "gray", 1.0),
                 ("|error|", error_hu, "magma", ERROR_DISPLAY_MAX_HU)]
    ncols = max(len(images), 4 if ground_truth_unit is not None else 3)  # the 4th column holds the colour bar
    fig, axes = plt.subplots(1 + len(rows), ncols, figsize=(3.0 * ncols, 3.1 * (1 + len(rows))), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (name, image) in zip(axes[0], images):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ax.set_title(name, fontsize=9)
    for r, (name, volume, cmap, vmax) in enumerate(rows, start=1):
        for ax, (plane, image) in zip(axes[r], orthogonal_slices(volume).items()):
            shown = ax.imshow(image, cmap=cmap, vmin=0, vmax=vmax)
            ax.set_title(f"{name}: {plane}", fontsize=9)
        if name == "|error|":
            bar = fig.colorbar(shown, cax=axes[r][3].inset_axes((0.05, 0.05, 0.1, 0.9)), extend="max")
            bar.set_label(ERROR_LABEL, fontsize=9)
    caption = title
    if metrics:
        caption += ("\n" if caption else "") + "   ".join(f"{k} {v:.3f}" for k, v in metrics.items())
    return _save(fig, path, caption)


def data_figure(path: str | Path, ct_unit: np.ndarray, drr: np.ndarray, drr_bone_suppressed: np.ndarray,
                title: str = "") -> Path:
    """Write a PNG of one prepared case: the 128³ CT in three planes, the PA and lateral DRRs, and their synthetic
    bone-suppressed versions (the CDM's training targets). ``drr``/``drr_bone_suppressed``: ``(2, H, W)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(12, 6.2))
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (plane, image) in zip(axes[0], orthogonal_slices(ct_unit).items()):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"CT 128³: {plane}", fontsize=9)
    panels = [("PA DRR", drr[0]), ("lateral DRR", drr[1]), ("PA, bone removed", drr_bone_suppressed[0]),
              ("lateral, bone removed", drr_bone_suppressed[1])]
    for ax, (name, image) in zip(axes[1], panels):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ax.set_title(name, fontsize=9)
    return _save(fig, path, title)
