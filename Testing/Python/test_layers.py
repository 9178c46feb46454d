"""The core's layers: every import of a DCTNetLib module points down the layer order, and sits at module level
unless its module is listed in :data:`LAZY_IMPORTS` with the reason; where the reason is speed or what a
reconstruction loads, each such import must really keep a heavy library or a training-only package out.

Layer order, lowest first (a module may import its own layer and the layers below it):

    conventions/errors → io → data → models → checkpoints → training, evaluation → inference → commands → Slicer glue

Imports are read with ``ast`` from every module of DCTNetLib, at module level and inside functions; relative
imports are resolved, and ``from package import name`` counts as an import of ``package.name`` when that is a
module. What ``importlib`` loads by name is not seen: the one such import of the core is ``cli`` dispatching to
``DCTNetLib.commands.<name>`` (the same layer).
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

import pytest

from DCTNetSlicerLib import install

SOURCE = Path(__file__).resolve().parents[2] / "DCTNetReconstruction"
CORE = "DCTNetLib"
PACKAGES = (CORE, "DCTNetSlicerLib")

# Lowest first. A module belongs to the entry naming it, or naming the package that holds it (the longest such
# entry wins); DCTNetLib itself stands for its __init__ only. A new package (e.g. DCTNetLib.checkpoints) goes
# into the tuple of its layer, or into a new layer tuple at its place in the order; a module in no layer fails
# test_every_module_has_a_layer.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("conventions/errors", (CORE, "DCTNetLib.conventions", "DCTNetLib.errors", "DCTNetLib.helpers",
                            "DCTNetLib.config_base", "DCTNetLib.devices", "DCTNetLib.processes",
                            "DCTNetLib.output_roles")),
    ("io", ("DCTNetLib.io",)),
    ("data", ("DCTNetLib.data",)),
    ("models", ("DCTNetLib.models",)),
    ("checkpoints", ("DCTNetLib.checkpoints",)),
    ("training, evaluation", ("DCTNetLib.training", "DCTNetLib.evaluation")),
    ("inference", ("DCTNetLib.inference",)),
    ("commands", ("DCTNetLib.commands", "DCTNetLib.cli", "DCTNetLib.__main__")),
    ("Slicer glue", ("DCTNetSlicerLib",)),
)

# Libraries slow enough to import that a module may defer them (each takes from a tenth of a second to seconds).
HEAVY = frozenset({"torch", "numpy", "SimpleITK"})
# Packages only training needs (yaml configs, LPIPS): Slicer's reconstruction does not install them.
TRAINING_ONLY = frozenset(install._import_name(install._split(r)[0]) for r in install.TRAINING_REQUIREMENTS) - {
    install._import_name(install._split(r)[0]) for r in install.RECONSTRUCTION_REQUIREMENTS}


@dataclass(frozen=True)
class Reason:
    """Why a module keeps imports inside functions. ``checked``: the test checks that each such import keeps
    something out of the importing module (:func:`kept_out_by`)."""

    text: str
    checked: bool


EVERY_RUN_LOADS_COMMANDS = Reason(
    "every dctnet run imports every command module (DCTNetLib.cli builds the parser from them): a command imports "
    "torch, numpy and SimpleITK, and modules using packages only training installs (yaml, lpips), when it runs, "
    "so `dctnet --help` stays fast (test_cli) and a reconstruction in Slicer loads only what it installs "
    "(test_slicer_extension)", checked=True)
TORCH_FREE_CASE_STORE = Reason("the prepared-case store stays free of torch (PreparedCaseDataset imports it on its "
                               "first item), so listing and checking prepared cases stays light; only the "
                               "preprocessing version stamp of a case comes from the torch-based preprocessing",
                               checked=True)
OPTIONAL_LPIPS = Reason("LPIPS (the lpips package) is an evaluation-only dependency that Slicer's reconstruction "
                        "does not install, while the reconstruction path uses the other metrics (re-projection "
                        "check, PSNR/SSIM): metrics loads it only when an LPIPS value is asked for", checked=True)

# Modules whose imports of the core may stay inside functions, and why.
LAZY_IMPORTS: dict[str, Reason] = {
    "DCTNetLib.commands.evaluate": EVERY_RUN_LOADS_COMMANDS,
    "DCTNetLib.commands.export": EVERY_RUN_LOADS_COMMANDS,
    "DCTNetLib.commands.info": EVERY_RUN_LOADS_COMMANDS,
    "DCTNetLib.commands.plot": EVERY_RUN_LOADS_COMMANDS,
    "DCTNetLib.commands.prepare": EVERY_RUN_LOADS_COMMANDS,
    "DCTNetLib.commands.reproduce": EVERY_RUN_LOADS_COMMANDS,
    "DCTNetLib.commands.train": EVERY_RUN_LOADS_COMMANDS,
    "DCTNetLib.commands.train_cdm": EVERY_RUN_LOADS_COMMANDS,
    "DCTNetLib.commands.train_common": EVERY_RUN_LOADS_COMMANDS,
    "DCTNetLib.commands.weights": EVERY_RUN_LOADS_COMMANDS,
    "DCTNetLib.data.prepared_cases": TORCH_FREE_CASE_STORE,
    "DCTNetLib.commands.demo": EVERY_RUN_LOADS_COMMANDS,
    "DCTNetLib.commands.drr": EVERY_RUN_LOADS_COMMANDS,
    "DCTNetLib.commands.reconstruct": EVERY_RUN_LOADS_COMMANDS,
    "DCTNetLib.evaluation.metrics": OPTIONAL_LPIPS,
}

# Imports that point up the layers and stay for now: importing module → (reason, packages it may import from).
UPWARD_IMPORTS: dict[str, tuple[str, tuple[str, ...]]] = {}


@dataclass(frozen=True)
class Import:
    """One ``import`` of a DCTNetLib / DCTNetSlicerLib module."""

    importer: str
    target: str
    path: Path
    line: int
    lazy: bool  # inside a function

    def __str__(self) -> str:
        where = "inside a function" if self.lazy else "at module level"
        return f"{self.path.relative_to(SOURCE.parent)}:{self.line}: {self.importer} imports {self.target} {where}"


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {module_name(path): path for package in PACKAGES
                            for path in sorted((SOURCE / package).rglob("*.py"))}
CORE_MODULES = sorted(name for name in MODULES if name.split(".")[0] == CORE)


def layer_of(module: str) -> int | None:
    """Index in :data:`LAYERS` of the layer ``module`` belongs to, None when it is in none."""
    matches = [(len(entry), index) for index, (_, entries) in enumerate(LAYERS) for entry in entries
               if module == entry or (entry != CORE and module.startswith(entry + "."))]
    return max(matches)[1] if matches else None


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = parts[:len(parts) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def scan(module: str, path: Path, source: str | None = None) -> tuple[list[Import], frozenset[str], frozenset[str]]:
    """Every import of our packages in ``module``, and the top-level names of the other packages it imports: at
    module level (what importing it loads directly), and anywhere."""
    tree = ast.parse(source if source is not None else path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    ours: list[Import] = []
    libraries: set[str] = set()
    anywhere: set[str] = set()

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = _absolute(child, package)
                names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                         for alias in child.names]
            else:
                names = []
            for name in dict.fromkeys(names):
                if name.split(".")[0] in PACKAGES:
                    ours.append(Import(module, name, path, child.lineno, lazy))
                    continue
                anywhere.add(name.split(".")[0])
                if not lazy:
                    libraries.add(name.split(".")[0])
            visit(child, lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return ours, frozenset(libraries), frozenset(anywhere)


@functools.lru_cache(maxsize=None)
def _scanned(module: str) -> tuple[list[Import], frozenset[str], frozenset[str]]:
    return scan(module, MODULES[module])


def core_imports() -> list[Import]:
    return [found for module in CORE_MODULES for found in _scanned(module)[0]]


@functools.lru_cache(maxsize=None)
def loaded_with(module: str) -> frozenset[str]:
    """Our modules that importing ``module`` loads: itself, its packages' ``__init__``, their module-level imports
    and theirs, transitively."""
    todo, seen = [module], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in MODULES:
            continue
        seen.add(name)
        todo += [name.rsplit(".", depth)[0] for depth in range(1, name.count(".") + 1)]  # parent packages
        todo += [found.target for found in _scanned(name)[0] if not found.lazy]
    return frozenset(seen)


def heavy_loaded_by(module: str) -> frozenset[str]:
    """The :data:`HEAVY` libraries that importing ``module`` loads."""
    return frozenset().union(*(_scanned(name)[1] & HEAVY for name in loaded_with(module)))


def training_only_needed_by(module: str) -> frozenset[str]:
    """The :data:`TRAINING_ONLY` packages that the modules loaded with ``module`` import, anywhere in them."""
    return frozenset().union(*(_scanned(name)[2] & TRAINING_ONLY for name in loaded_with(module)))


def kept_out_by(found: Import) -> frozenset[str]:
    """What importing ``found.target`` inside a function keeps out of its module: heavy libraries it would load,
    training-only packages it would bring along."""
    return ((heavy_loaded_by(found.target) - heavy_loaded_by(found.importer))
            | (training_only_needed_by(found.target) - training_only_needed_by(found.importer)))


def points_up(found: Import) -> bool:
    """True when ``found`` imports from a higher layer (modules in no layer are test_every_module_has_a_layer's)."""
    importer, target = layer_of(found.importer), layer_of(found.target)
    return importer is not None and target is not None and target > importer


# ---------------------------------------------------------------------------------------------------- tests
def test_every_module_has_a_layer():
    targets = {found.target for found in core_imports()}
    homeless = sorted(name for name in set(CORE_MODULES) | targets if layer_of(name) is None)
    assert not homeless, f"in no layer of LAYERS (add them where they belong): {homeless}"


def test_imports_never_point_up_the_layers():
    allowed = {importer: prefixes for importer, (_, prefixes) in UPWARD_IMPORTS.items()}
    upward = [found for found in core_imports() if points_up(found)]
    wrong = [f"{found} ({LAYERS[layer_of(found.importer)][0]} → {LAYERS[layer_of(found.target)][0]})"
             for found in upward
             if not any(found.target.startswith(prefix) for prefix in allowed.get(found.importer, ()))]
    assert not wrong, "imports that point up the layers:\n" + "\n".join(wrong)
    unused = [(importer, prefix) for importer, prefixes in allowed.items() for prefix in prefixes
              if not any(f.importer == importer and f.target.startswith(prefix) for f in upward)]
    assert not unused, f"UPWARD_IMPORTS allows what no longer happens (delete it): {unused}"


def test_imports_sit_at_module_level_unless_the_module_says_why():
    lazy = [found for found in core_imports() if found.lazy]
    unlisted = [str(found) for found in lazy if found.importer not in LAZY_IMPORTS]
    assert not unlisted, ("move these imports to module level, or list the module in LAZY_IMPORTS with the "
                          "reason:\n" + "\n".join(unlisted))
    stale = sorted(set(LAZY_IMPORTS) - {found.importer for found in lazy})
    assert not stale, f"LAZY_IMPORTS lists modules that import nothing inside functions any more: {stale}"


def test_imports_kept_inside_functions_keep_something_out():
    needless = [str(found) for found in core_imports()
                if found.lazy and found.importer in LAZY_IMPORTS and LAZY_IMPORTS[found.importer].checked
                and not kept_out_by(found)]
    assert not needless, ("these bring no HEAVY library and no TRAINING_ONLY package that their module does not "
                          "bring already: import them at module level\n" + "\n".join(needless))


def test_the_command_layer_loads_nothing_heavy_nor_training_only_when_imported():
    """The other side of EVERY_RUN_LOADS_COMMANDS: what a command module imports at module level stays light."""
    commands = [name for name in CORE_MODULES if LAYERS[layer_of(name)][0] == "commands"]
    brought = {name: sorted(heavy_loaded_by(name) | training_only_needed_by(name)) for name in commands}
    assert len(commands) > 10 and not {name: found for name, found in brought.items() if found}


def test_the_scan_finds_relative_lazy_and_upward_imports_and_names_the_line():
    path = SOURCE / "DCTNetLib" / "io" / "example.py"
    source = ("from __future__ import annotations\n"
              "import numpy as np\n"
              "from .atomic import display_path\n"
              "from ..training import loop\n"
              "def read():\n"
              "    from .. import errors, __version__\n"
              "    import torch\n")
    imports, libraries, anywhere = scan("DCTNetLib.io.example", path, source)
    assert [(f.target, f.line, f.lazy) for f in imports] == [
        ("DCTNetLib.io.atomic", 3, False), ("DCTNetLib.training.loop", 4, False),
        ("DCTNetLib.errors", 6, True), (CORE, 6, True)]
    assert libraries == {"__future__", "numpy"} and anywhere == libraries | {"torch"}
    assert [points_up(f) for f in imports] == [False, True, False, False]
    assert str(imports[1]) == ("DCTNetReconstruction/DCTNetLib/io/example.py:4: DCTNetLib.io.example imports "
                               "DCTNetLib.training.loop at module level")


@pytest.mark.parametrize("module, layer", [(CORE, "conventions/errors"), ("DCTNetLib.io.ct", "io"),
                                           ("DCTNetLib.models.diffusion.unet", "models"),
                                           ("DCTNetLib.evaluation.metrics", "training, evaluation"),
                                           ("DCTNetLib.cli", "commands"), ("DCTNetSlicerLib.process", "Slicer glue")])
def test_layer_map(module, layer):
    assert LAYERS[layer_of(module)][0] == layer


def test_a_new_package_is_in_no_layer_until_it_is_placed():
    assert layer_of("DCTNetLib.reporting") is None  # the package root stands for its __init__ only


def test_what_a_module_brings_is_followed_through_imports_and_packages():
    assert heavy_loaded_by("DCTNetLib.errors") == frozenset()
    assert heavy_loaded_by("DCTNetLib.io.safe_load") == {"numpy"}
    assert "torch" in heavy_loaded_by("DCTNetLib.models.diffusion.config")  # through models/diffusion/__init__
    assert "torch" in heavy_loaded_by("DCTNetLib.inference")
    assert TRAINING_ONLY == {"yaml", "lpips"}
    assert training_only_needed_by("DCTNetLib.training.config") == {"yaml"}  # imported inside a function
    assert training_only_needed_by("DCTNetLib.commands.train_common") == frozenset()
