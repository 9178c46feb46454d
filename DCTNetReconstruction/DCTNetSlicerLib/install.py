"""First-use install of the Python packages the DCTNet core needs inside 3D Slicer.

Order matters:

1. **PyTorch** through the PyTorch extension's ``PyTorchUtils`` (``EXTENSION_DEPENDS PyTorch``): it picks the
   torch build that matches the user's NVIDIA driver (or the CPU build), which a plain ``pip install torch``
   cannot do. It asks the user before downloading (``askConfirmation=True``).
2. **The other packages** of ``pyproject.toml`` that Slicer does not ship, after the user confirms the list.
   ``slicer.packaging.pip_ensure`` (Slicer ≥ 5.12) asks and installs with a progress dialog; on Slicer 5.10 the
   same steps are done here with ``confirmOkCancelDisplay`` and ``slicer.util.pip_install``.

``pip_ensure`` as read from the Slicer/Slicer sources (``Base/Python/slicer/packaging.py``, commit
4bf416c705675a9bccc55ade3904f04a1ca91750): ``pip_ensure(requirements, constraints=None, skip_packages=None,
prompt_install=True, prompt_restart=True, requester=None, skip_in_testing=True, show_progress=True)``;
``requirements`` is a string, a ``packaging.requirements.Requirement`` or a list of either (earlier development
versions, ``slicer.util``/``slicer.pydeps.pip_ensure``, took only a list of ``Requirement`` and a ``prompt``
flag, hence the ``Requirement`` objects and the signature check below). It installs only the unsatisfied ones
(``pip_install(..., blocking=True, show_progress=...)``), returns ``None`` (or the skipped requirements when
``skip_packages`` is given), raises ``RuntimeError`` when the user declines and ``CalledProcessError`` when pip
fails. Called with ``prompt_restart=False`` and ``skip_in_testing=False`` so that the restart advice and the
behaviour in Slicer's test mode stay the ones of this module on every Slicer version.

Never installed or upgraded from here (see :data:`NEVER_INSTALL`): ``torch``/``torchvision`` (PyTorchUtils
owns them; a pip upgrade could replace a CUDA build by a CPU one), ``SimpleITK`` and ``numpy`` (Slicer ships
builds its own C++ code links against; replacing them can break Slicer itself).

All failures raise :class:`InstallError`; ``restartRequired`` tells the widget to offer a restart.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
import re
import subprocess
from typing import Any, Callable, Sequence

__all__ = [
    "InstallError",
    "TORCH_REQUIREMENT",
    "PYTHON_REQUIREMENTS",
    "NEVER_INSTALL",
    "missing_requirements",
    "torch_status",
    "ensure_torch",
    "pip_ensure_api",
    "ensure_python_packages",
    "ensure_dependencies",
]

logger = logging.getLogger(__name__)

# Same floor as pyproject.toml: torch ≥ 2.1 has scaled_dot_product_attention and weights_only loading.
TORCH_REQUIREMENT = ">=2.1"

# Core packages (pyproject.toml [project] dependencies) that a Slicer install may lack, with the reason:
PYTHON_REQUIREMENTS: tuple[str, ...] = (
    "lpips>=0.1.4",        # LPIPS metric of the evaluation (paper §3.1); its torch requirement is met by step 1
    "scikit-image>=0.21",  # SSIM (skimage.metrics.structural_similarity)
    "pydicom>=2.4",        # DICOM CR/DX radiographs (Slicer ships pydicom; listed so an old copy is updated)
    "einops>=0.7",         # tensor reshapes in the networks
    "tqdm>=4.66",          # progress of data preparation and training
    "PyYAML>=6",           # training config files
    "psutil>=5.9",         # cancel: kill a background process with all its children
    # Usually shipped with Slicer; listed without a floor so they are installed only when absent (upgrading
    # a copy Slicer ships could break Slicer's own modules that use it):
    "scipy",               # bone masks (ndimage) and resampling helpers
    "Pillow",              # PNG/JPEG/TIFF radiographs
    "matplotlib",          # `dctnet figure` (paper-style figures); not needed for reconstruction
)

# Distributions this module never installs, upgrades or replaces (reasons in the module docstring).
NEVER_INSTALL = ("torch", "torchvision", "SimpleITK", "numpy")


class InstallError(Exception):
    """A dependency is missing and could not be (or was not allowed to be) installed.

    Args:
        message: what is missing and what the user can do.
        restartRequired: True when Slicer must restart before the packages can be used.
    """

    def __init__(self, message: str, restartRequired: bool = False) -> None:  # noqa: N803 (Slicer API style)
        super().__init__(message)
        self.message = message
        self.restartRequired = restartRequired


_REQUIREMENT_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)$")


def _split(requirement: str) -> tuple[str, str]:
    match = _REQUIREMENT_RE.match(requirement)
    if match is None:
        raise ValueError(f"not a requirement specifier: {requirement!r}")
    return match.group(1), match.group(2).strip()


def _satisfied(requirement: str) -> bool:
    name, spec = _split(requirement)
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    if not spec:
        return True
    try:
        from packaging.specifiers import SpecifierSet  # shipped with Slicer and pip
    except ImportError:  # cannot compare: an installed package counts as good enough
        return True
    return SpecifierSet(spec).contains(installed, prereleases=True)


def missing_requirements(requirements: Sequence[str] = PYTHON_REQUIREMENTS) -> list[str]:
    """The requirement strings of ``requirements`` that the running Python does not satisfy."""
    for requirement in requirements:
        if _split(requirement)[0].lower() in {n.lower() for n in NEVER_INSTALL}:
            raise ValueError(f"{requirement!r} must not be installed by DCTNet (see NEVER_INSTALL)")
    return [requirement for requirement in requirements if not _satisfied(requirement)]


def torch_status() -> str:
    """``"ok"``, ``"missing"`` or ``"too old"`` for the installed torch."""
    try:
        importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "missing"
    return "ok" if _satisfied(f"torch{TORCH_REQUIREMENT}") else "too old"


def ensure_torch(askConfirmation: bool = True) -> None:  # noqa: N803
    """Make sure a suitable torch is importable, installing it through PyTorchUtils if needed."""
    status = torch_status()
    if status == "ok":
        return
    try:
        import PyTorchUtils  # provided by the PyTorch extension
    except ImportError as exc:
        raise InstallError(
            "DCTNet needs PyTorch, which is installed by the 'PyTorch' extension. Install it from the "
            "Extensions Manager, restart Slicer, and try again.",
            restartRequired=True,
        ) from exc
    logic = PyTorchUtils.PyTorchUtilsLogic()
    if status == "too old":
        raise InstallError(
            f"The installed PyTorch is older than DCTNet needs (torch{TORCH_REQUIREMENT}). Open the PyTorch Utils "
            "module, uninstall PyTorch, restart Slicer and try again.",
            restartRequired=True,
        )
    torch = logic.installTorch(askConfirmation=askConfirmation, torchVersionRequirement=TORCH_REQUIREMENT)
    if torch is None:
        raise InstallError("PyTorch was not installed, so DCTNet cannot run. Try again to install it.")


def _confirm(message: str) -> bool:
    import slicer

    return bool(slicer.util.confirmOkCancelDisplay(message, "DCTNet: install Python packages"))


# Keyword parameters of slicer.packaging.pip_ensure this module passes (Slicer ≥ 5.12).
PIP_ENSURE_PARAMETERS = frozenset({"requester", "prompt_install", "prompt_restart", "skip_in_testing"})


def pip_ensure_api() -> Callable[..., Any] | None:
    """``slicer.packaging.pip_ensure`` when present with the parameters used here (Slicer ≥ 5.12), else None."""
    try:
        from slicer import packaging as packaging_api

        pip_ensure = packaging_api.pip_ensure
        parameters = inspect.signature(pip_ensure).parameters
    except (ImportError, AttributeError, TypeError, ValueError):
        return None
    return pip_ensure if PIP_ENSURE_PARAMETERS <= set(parameters) else None


def _as_requirements(requirements: Sequence[str]) -> list[Any]:
    try:
        from packaging.requirements import Requirement  # shipped with Slicer and pip
    except ImportError:
        return list(requirements)
    return [Requirement(requirement) for requirement in requirements]


def _install(missing: list[str], requester: str, askConfirmation: bool) -> None:  # noqa: N803
    import slicer

    declined = InstallError(f"{requester} cannot run without: {', '.join(missing)}")
    pip_ensure = pip_ensure_api()
    if pip_ensure is not None:  # Slicer ≥ 5.12
        try:
            pip_ensure(_as_requirements(missing), requester=requester, prompt_install=askConfirmation,
                       prompt_restart=False, skip_in_testing=False)
        except RuntimeError as exc:  # the user declined
            raise declined from exc
        except subprocess.CalledProcessError as exc:
            raise InstallError(f"Installing {', '.join(missing)} failed (pip exit status {exc.returncode}); "
                               "see the Python console for pip's output.") from exc
        return
    message = (f"{requester} needs these Python packages, which are not installed yet:\n\n"
               + "\n".join(f"  • {r}" for r in missing)
               + "\n\nInstall them now? This downloads them from the Python Package Index (PyPI) and may "
               "take a few minutes.")
    if askConfirmation and not _confirm(message):
        raise declined
    logger.info("installing %s", " ".join(missing))
    slicer.util.pip_install(list(missing))


def ensure_python_packages(
    requester: str = "DCTNet",
    askConfirmation: bool = True,  # noqa: N803
    requirements: Sequence[str] = PYTHON_REQUIREMENTS,
) -> list[str]:
    """Install the missing ``requirements`` (default :data:`PYTHON_REQUIREMENTS`) after the user agrees.

    Returns the requirements that were missing.
    """
    missing = missing_requirements(requirements)
    if not missing:
        return []
    already_imported = [name for name in (_split(r)[0] for r in missing) if _import_name(name) in _loaded()]
    _install(missing, requester, askConfirmation)
    importlib.invalidate_caches()
    still_missing = missing_requirements(missing)
    if still_missing:
        raise InstallError(f"Installing {', '.join(still_missing)} failed; see the Python console for pip's output.")
    if already_imported:  # an old version is loaded in this session: only a restart replaces it
        raise InstallError(f"Updated {', '.join(already_imported)}; restart Slicer to use the new versions.",
                           restartRequired=True)
    return missing


def _import_name(distribution: str) -> str:
    return {"scikit-image": "skimage", "PyYAML": "yaml", "Pillow": "PIL"}.get(distribution, distribution.replace("-", "_"))


def _loaded() -> set[str]:
    import sys

    return set(sys.modules)


def ensure_dependencies(requester: str = "DCTNet", askConfirmation: bool = True) -> None:  # noqa: N803
    """PyTorch first (so pip never pulls a CPU torch in as a dependency of lpips), then the rest."""
    ensure_torch(askConfirmation=askConfirmation)
    ensure_python_packages(requester=requester, askConfirmation=askConfirmation)
