"""The ``manifest.json`` beside a model bundle: read it safely, and hold the bundle to the sha256 it records.

``dctnet export --manifest`` (and the shipped model) write a manifest recording the bundle's file name and sha256
(:func:`DCTNetLib.checkpoints.bundle.write_manifest`). A manifest is data from elsewhere like the bundle itself: a
deeply nested or malformed one is one clear :class:`~DCTNetLib.errors.WeightsError`, and a bundle whose bytes do
not hash to the manifest's sha256 is refused before it is unpickled, for the shipped model and for any other.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..errors import WeightsError

__all__ = ["MANIFEST_NAME", "manifest_beside", "read_manifest", "recorded_sha256"]

MANIFEST_NAME = "manifest.json"
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def manifest_beside(bundle: str | Path) -> Path:
    """Where the manifest of ``bundle`` lives: ``manifest.json`` in the same folder."""
    return Path(bundle).with_name(MANIFEST_NAME)


def read_manifest(path: str | Path) -> dict[str, Any] | None:
    """The manifest at ``path`` as a dict, or None when there is no such file.

    Raises:
        WeightsError: it cannot be read, is not JSON (nesting too deep for the parser included) or not an object.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0]
        raise WeightsError(f"cannot read the model manifest {path}: {reason}") from exc
    if not isinstance(manifest, dict):
        raise WeightsError(f"the model manifest {path} is not a JSON object")
    return manifest


def recorded_sha256(manifest: dict[str, Any], bundle: str | Path, manifest_path: str | Path) -> str | None:
    """The sha256 ``manifest`` records for ``bundle`` (None when it records none, or does not name ``bundle`` as
    its ``file``: a manifest.json beside a bundle may describe something else).

    Raises:
        WeightsError: the recorded value is not 64 hexadecimal digits.
    """
    if manifest.get("file") != Path(bundle).name:
        return None
    value = manifest.get("sha256")
    if value is None:
        return None
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise WeightsError(f"the model manifest {manifest_path} records sha256 {str(value)[:70]!r}, which is not a "
                           "sha256 (64 hexadecimal digits)")
    return value
