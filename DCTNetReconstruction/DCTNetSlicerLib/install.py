"""First-use install of the Python packages the DCTNet core needs inside 3D Slicer.

Order matters:

1. **PyTorch** through the PyTorch extension's ``PyTorchUtils`` (``EXTENSION_DEPENDS PyTorch``): it picks the
   torch build that matches the user's NVIDIA driver (or the CPU build), which a plain ``pip install torch``
   cannot do. It asks the user before downloading (``askConfirmation=True``).
2. **The other packages** that Slicer does not ship, after the user confirms the list: only those the task needs
   (:data:`RECONSTRUCTION_REQUIREMENTS` for DCTNet Reconstruction; :data:`TRAINING_REQUIREMENTS` adds LPIPS and
   YAML configs for DCTNet Training). ``slicer.packaging.pip_ensure`` (Slicer ≥ 5.12) asks and installs with a
   progress dialog; on Slicer 5.10 the same steps are done here with ``confirmOkCancelDisplay`` and
   ``slicer.util.pip_install``.

**Protected packages** (:data:`PROTECTED`): ``torch``, ``torchvision`` (PyTorchUtils owns them; a pip upgrade could
replace a CUDA build by a CPU one), ``numpy``, ``SimpleITK`` and ``vtk`` (Slicer's C++ code is built against its
own copies; replacing them can break Slicer itself) are never installed or upgraded, not even as a dependency of
a package installed here: pip gets a constraints file pinning the installed version of each (``-c`` on Slicer 5.10,
``pip_ensure(constraints=...)`` on ≥ 5.12). ``skip_packages`` is not used: Slicer documents it as a discouraged
workaround (``--no-deps`` installs, other packages' metadata edited, failures only warned about).

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

All failures raise :class:`InstallError`; ``restartRequired`` tells the widget to offer a restart, which is set
only when a restart fixes the problem (a package already loaded in this session was updated), never when the user
must first do something else (install the PyTorch extension, uninstall an old torch).
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
    "RECONSTRUCTION_REQUIREMENTS",
    "TRAINING_REQUIREMENTS",
    "PYTHON_REQUIREMENTS",
    "PROTECTED",
    "NEVER_INSTALL",
    "requirements_for",
    "constraints_text",
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

# What DCTNet Reconstruction needs beyond Slicer and torch: Slicer's own process (radiograph files, nodes, the
# comparison with a reference CT) and `dctnet reconstruct --extras` in the child (test_slicer_extension.py checks
# this list against the modules a real run loads). Packages Slicer usually ships have no version floor, so they
# are installed only when absent (upgrading Slicer's copy could break Slicer's own modules that use it).
RECONSTRUCTION_REQUIREMENTS: tuple[str, ...] = (
    "scikit-image>=0.21",  # SSIM against the reference CT (skimage.metrics.structural_similarity)
    "einops>=0.7",         # tensor reshapes in the networks
    "tqdm>=4.66",          # progress bars of the core
    "psutil>=5.9",         # cancel: kill a background process with all its children
    "pydicom",             # DICOM CR/DX radiographs (Slicer ships pydicom 2.4 or 3.x; both work)
    "scipy",               # resampling and bone masks
    "Pillow",              # PNG/JPEG/TIFF radiographs
    "matplotlib",          # the figure `dctnet reconstruct --extras` writes next to the volumes
)
# DCTNet Training also evaluates (LPIPS, paper §3.1; its torch requirement is met by step 1) and reads YAML configs.
TRAINING_REQUIREMENTS: tuple[str, ...] = RECONSTRUCTION_REQUIREMENTS + (
    "lpips>=0.1.4",
    "PyYAML>=6",
)
# Every core dependency of pyproject.toml that a Slicer install may lack.
PYTHON_REQUIREMENTS = TRAINING_REQUIREMENTS

# Distributions never installed, upgraded or replaced, even as a dependency (reasons in the module docstring).
PROTECTED = ("torch", "torchvision", "numpy", "SimpleITK", "vtk")
NEVER_INSTALL = PROTECTED


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
        raise InstallError(  # restarting now would not help: the extension must be installed first
            "DCTNet needs PyTorch, which is installed by the 'PyTorch' extension. Install it from the "
            "Extensions Manager, restart Slicer, and try again.",
        ) from exc
    logic = PyTorchUtils.PyTorchUtilsLogic()
    if status == "too old":  # a restart alone changes nothing: torch must be uninstalled first
        raise InstallError(
            f"The installed PyTorch is older than DCTNet needs (torch{TORCH_REQUIREMENT}). Open the PyTorch Utils "
            "module, uninstall PyTorch, restart Slicer and try again.",
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


def constraints_text() -> str:
    """A pip constraints file pinning the installed version of every :data:`PROTECTED` distribution.

    Protected packages that are not installed as distributions (Slicer's own ``vtk``) cannot be pinned; no package
    DCTNet installs depends on them.
    """
    lines = []
    for name in PROTECTED:
        try:
            lines.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return "".join(line + "\n" for line in lines)


def _install(missing: list[str], requester: str, askConfirmation: bool) -> None:  # noqa: N803
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="DCTNet-pip-") as folder:
        constraints = Path(folder) / "constraints.txt"
        constraints.write_text(constraints_text(), encoding="utf-8")
        _install_with(missing, requester, askConfirmation, constraints)


def _install_with(missing: list[str], requester: str, askConfirmation: bool, constraints) -> None:  # noqa: N803
    import slicer

    declined = InstallError(f"{requester} cannot run without: {', '.join(missing)}")
    pip_ensure = pip_ensure_api()
    if pip_ensure is not None:  # Slicer ≥ 5.12
        parameters = inspect.signature(pip_ensure).parameters
        # Constraints only: skip_packages is documented by Slicer as a discouraged workaround (it installs with
        # --no-deps, edits other packages' metadata and only warns on failures).
        protect = {"constraints": str(constraints)} if "constraints" in parameters else {}
        try:
            pip_ensure(_as_requirements(missing), requester=requester, prompt_install=askConfirmation,
                       prompt_restart=False, skip_in_testing=False, **protect)
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
    logger.info("installing %s (constraints: %s)", " ".join(missing), constraints_text().split())
    slicer.util.pip_install(["-c", str(constraints), *missing])


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


def requirements_for(purpose: str) -> tuple[str, ...]:
    """:data:`RECONSTRUCTION_REQUIREMENTS` or :data:`TRAINING_REQUIREMENTS`."""
    choices = {"reconstruction": RECONSTRUCTION_REQUIREMENTS, "training": TRAINING_REQUIREMENTS}
    if purpose not in choices:
        raise ValueError(f"purpose must be one of {sorted(choices)}, got {purpose!r}")
    return choices[purpose]


def ensure_dependencies(requester: str = "DCTNet", askConfirmation: bool = True,  # noqa: N803
                        purpose: str = "reconstruction") -> None:
    """PyTorch first (so pip never pulls a CPU torch in as a dependency), then what ``purpose`` needs."""
    ensure_torch(askConfirmation=askConfirmation)
    ensure_python_packages(requester=requester, askConfirmation=askConfirmation,
                           requirements=requirements_for(purpose))
