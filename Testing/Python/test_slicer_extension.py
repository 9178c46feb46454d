"""The 3D Slicer extension, checked without Slicer: packaging, .ui ↔ code, import hygiene, and the logic helpers.

What Slicer itself would only reveal after a build: a file missing from a CMake list (absent from the installed
extension), a ``self.ui.<name>`` with no widget, a node selector without a scene, a ``slicer`` import in the core.
The logic helpers the modules call (radiographs from a CT, training command lines) run here on real arrays and
real processes; the reconstruction command the module runs is tested in test_slicer_reconstruction.py. In-Slicer end-to-end tests are the modules' ``…Test`` classes.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import py_compile
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
MODULES = {"DCTNetReconstruction": REPO / "DCTNetReconstruction", "DCTNetTraining": REPO / "DCTNetTraining"}
CORE = REPO / "DCTNetReconstruction" / "DCTNetLib"
SLICER_LIB = REPO / "DCTNetReconstruction" / "DCTNetSlicerLib"
GUI_MODULES = {"slicer", "qt", "ctk", "vtk", "SlicerPythonQt", "PythonQt", "MRMLCorePython"}



def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"_dctnet_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cmake_sources = _load_script("update_cmake_sources")


# -- packaging ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("module", sorted(MODULES))
def test_cmake_lists_name_every_file_and_only_existing_files(module):
    module_dir = MODULES[module]
    listed = cmake_sources.listed_files((module_dir / "CMakeLists.txt").read_text(encoding="utf-8"))
    for block, entries in listed.items():
        missing = [entry for entry in entries if not (module_dir / entry).is_file()]
        assert not missing, f"{module}/CMakeLists.txt {block} lists files that do not exist: {missing}"
    stale = cmake_sources.stale_entries(module_dir)
    unlisted = {block: pair[0] for block, pair in stale.items() if pair[0]}
    assert not unlisted, (f"{module}/CMakeLists.txt misses files (they would be absent from the installed "
                          f"extension); run `python scripts/update_cmake_sources.py`: {unlisted}")


def test_every_python_file_of_the_core_and_the_modules_is_installed():
    listed = cmake_sources.listed_files((MODULES["DCTNetReconstruction"] / "CMakeLists.txt").read_text(encoding="utf-8"))
    scripts = set(listed["MODULE_PYTHON_SCRIPTS"])
    for folder in (CORE, SLICER_LIB):
        for path in folder.rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            rel = path.relative_to(MODULES["DCTNetReconstruction"]).as_posix()
            assert rel in scripts, f"{rel} is not in DCTNetReconstruction/CMakeLists.txt"
    assert "DCTNetReconstruction.py" in scripts and "DCTNetLib/inference.py" in scripts
    training = cmake_sources.listed_files((MODULES["DCTNetTraining"] / "CMakeLists.txt").read_text(encoding="utf-8"))
    assert training["MODULE_PYTHON_SCRIPTS"][0] == "DCTNetTraining.py"
    assert "Resources/UI/DCTNetTraining.ui" in training["MODULE_PYTHON_RESOURCES"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_cmake_builds_a_tested_scripted_module(module):
    text = (MODULES[module] / "CMakeLists.txt").read_text(encoding="utf-8")
    assert f"set(MODULE_NAME {module})" in text
    macro = re.search(r"slicerMacroBuildScriptedModule\((.*?)\)", text, flags=re.S).group(1)
    for keyword in ("NAME ${MODULE_NAME}", "SCRIPTS ${MODULE_PYTHON_SCRIPTS}", "RESOURCES ${MODULE_PYTHON_RESOURCES}",
                    "WITH_GENERIC_TESTS"):
        assert keyword in macro, f"{module}: slicerMacroBuildScriptedModule lacks {keyword}"
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


def _cmake_set(text: str, name: str) -> str:
    match = re.search(rf'set\({name}\s+"([^"]*)"\)', text)
    assert match, f"top-level CMakeLists.txt does not set {name}"
    return match.group(1)


def test_top_level_cmake_is_a_slicer_extension_depending_on_pytorch():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r"^project\(DCTNet\)", text, flags=re.M)
    for name in ("EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL",
                 "EXTENSION_SCREENSHOTURLS"):
        assert _cmake_set(text, name).strip(), f"{name} is empty"
    assert _cmake_set(text, "EXTENSION_DEPENDS") == "PyTorch"
    ordered = ["find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})", "add_subdirectory(DCTNetReconstruction)",
               "add_subdirectory(DCTNetTraining)", "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
               "include(${Slicer_EXTENSION_CPACK})"]
    positions = [text.find(line) for line in ordered]
    assert -1 not in positions and positions == sorted(positions), dict(zip(ordered, positions))


def test_contributors_are_name_and_organisation_and_the_same_everywhere():
    """EXTENSION_CONTRIBUTORS and each module's ``parent.contributors`` list "Name (Organisation)" entries, the
    form the Extensions Index and Slicer's About box show, and name the same people."""
    listed = [entry.strip() for entry in _cmake_set((REPO / "CMakeLists.txt").read_text(encoding="utf-8"),
                                                   "EXTENSION_CONTRIBUTORS").split(",")]
    assert listed and all(re.fullmatch(r"[^()]+ \([^()]+\)", entry) for entry in listed), listed
    for module, folder in MODULES.items():
        source = (folder / f"{module}.py").read_text(encoding="utf-8")
        match = re.search(r"self\.parent\.contributors = (\[.*?\])", source)
        assert match, f"{module}.py sets no parent.contributors"
        assert ast.literal_eval(match.group(1)) == listed, module


@pytest.mark.parametrize("icon", ["DCTNet.png", "DCTNetReconstruction/Resources/Icons/DCTNetReconstruction.png",
                                  "DCTNetTraining/Resources/Icons/DCTNetTraining.png"])
def test_icons_are_128_pixel_pngs(icon):
    from PIL import Image

    with Image.open(REPO / icon) as image:
        assert image.format == "PNG" and image.size == (128, 128)
        assert len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)) > 8, "icon is (nearly) a single colour"


# -- .ui files ↔ module code ---------------------------------------------------------------------------------------
# The widget class each `self.ui.<name>` must have, by the name's suffix (the convention the modules follow).
SUFFIX_CLASSES = {"CollapsibleButton": "ctkCollapsibleButton", "Button": "QPushButton", "ComboBox": "QComboBox", "PathLineEdit": "ctkPathLineEdit",
                  "Selector": "qMRMLNodeComboBox", "SpinBox": "QSpinBox", "CheckBox": "QCheckBox",
                  "ProgressBar": "QProgressBar", "Label": "QLabel", "TextEdit": "QPlainTextEdit",
                  "TableView": "qMRMLTableView"}


def _ui_widgets(module: str) -> tuple[ET.Element, dict[str, ET.Element]]:
    root = ET.parse(MODULES[module] / "Resources" / "UI" / f"{module}.ui").getroot()
    widgets = {w.get("name"): w for w in root.iter("widget")}
    return root, widgets


def _ui_names_used(module: str) -> set[str]:
    source = (MODULES[module] / f"{module}.py").read_text(encoding="utf-8")
    return set(re.findall(r"self\.ui\.([A-Za-z_]\w*)", source))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_ui_file_is_valid_designer_xml(module):
    root, widgets = _ui_widgets(module)
    assert root.tag == "ui" and root.get("version") == "4.0"
    assert root.findtext("class") == module
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == module
    names = [w.get("name") for w in root.iter("widget")]
    assert len(names) == len(set(names)), "duplicate widget names"
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in widgets.values()}
    assert {c for c in used if not c.startswith("Q")} <= declared, "custom widget classes must be declared"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_ui_name_the_code_uses_exists_with_the_right_class(module):
    _, widgets = _ui_widgets(module)
    used = _ui_names_used(module)
    assert len(used) >= 10
    for name in sorted(used):
        assert name in widgets, f"{module}.py uses self.ui.{name}, which is not in {module}.ui"
        suffix = next((s for s in SUFFIX_CLASSES if name.lower().endswith(s.lower())), None)
        assert suffix, f"self.ui.{name}: no naming convention for its class"
        assert widgets[name].get("class") == SUFFIX_CLASSES[suffix], (name, widgets[name].get("class"))


def test_volume_rendering_checkbox_names_the_preset_the_logic_applies():
    from DCTNetSlicerLib.display import VOLUME_RENDERING_PRESET

    _, widgets = _ui_widgets("DCTNetReconstruction")
    tooltip = widgets["volumeRenderingCheckBox"].find("property[@name='toolTip']/string").text
    assert VOLUME_RENDERING_PRESET in tooltip


def test_training_module_lists_the_cores_datasets():
    """The dataset combo box shows PAPER_DATASETS' labels in their order, the module maps its index through them,
    and the run glue accepts exactly those (``dctnet prepare`` itself also reads "generic" folders)."""
    from DCTNetLib.conventions import DATASETS, PAPER_DATASETS
    from DCTNetLib.data import case_discovery
    from DCTNetSlicerLib.training_runs import RunRequest, command_args

    _, widgets = _ui_widgets("DCTNetTraining")
    labels = [item.findtext("property/string") for item in widgets["datasetComboBox"].findall("item")]
    assert labels == list(PAPER_DATASETS.values())
    tree = ast.parse((MODULES["DCTNetTraining"] / "DCTNetTraining.py").read_text(encoding="utf-8"))
    assigned = {node.targets[0].id: ast.unparse(node.value) for node in tree.body
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}
    assert assigned["DATASETS"] == "tuple(PAPER_DATASETS)"
    assert case_discovery.DATASETS is DATASETS and set(PAPER_DATASETS) < set(DATASETS)
    for name in DATASETS:
        request = RunRequest("prepare", dataset=name, raw_dir="raw", prepared_dir="prepared")
        if name in PAPER_DATASETS:
            assert command_args(request)[:3] == ["prepare", "--dataset", name]
        else:
            with pytest.raises(ValueError, match="dataset must be one of"):
                command_args(request)


def _parameter_fields(module: str) -> dict[str, str]:
    """Parameter-node field → its annotation's source (module-level type aliases resolved)."""
    tree = ast.parse((MODULES[module] / f"{module}.py").read_text(encoding="utf-8"))
    aliases = {n.targets[0].id: ast.unparse(n.value) for n in tree.body
               if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(getattr(d, "id", None) == "parameterNodeWrapper"
                                                  for d in node.decorator_list):
            return {stmt.target.id: aliases.get(ast.unparse(stmt.annotation), ast.unparse(stmt.annotation))
                    for stmt in node.body if isinstance(stmt, ast.AnnAssign)}
    raise AssertionError(f"{module}.py has no @parameterNodeWrapper class")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_parameter_bindings_and_scene_connections(module):
    root, widgets = _ui_widgets(module)
    fields = _parameter_fields(module)
    bound = {}
    for name, widget in widgets.items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[name] = prop.findtext("string")
    assert bound, "no widget is bound to the parameter node"
    for name, field in bound.items():
        assert field in fields, f"{name} is bound to '{field}', which the parameter node does not have"
        if widgets[name].get("class") == "qMRMLNodeComboBox":
            # connectGui replaces the selector's nodeTypes by the annotation's classes: keep the .ui the same
            annotated = re.findall(r"vtkMRML\w+", fields[field])
            assert annotated, (name, fields[field])
            listed = [s.text for p in widgets[name].findall("property") if p.get("name") == "nodeTypes"
                      for s in p.iter("string")]
            assert listed == annotated, (name, listed, annotated)
        if widgets[name].get("class") == "QSpinBox":
            assert "int" in fields[field], (name, fields[field])
            # Without WithinRange, connectGui sets the range to ±2^31 (Slicer parameterNodeWrapper/guiConnectors.py),
            # dropping the .ui's minimum (and the special value text shown at it): they must agree.
            bounds = re.search(r"WithinRange\((-?\d+), (-?\d+)\)", fields[field])
            assert bounds, f"{name} is bound to '{field}' without WithinRange: {fields[field]}"
            ui_range = tuple(int(widgets[name].find(f"property[@name='{k}']/number").text) for k in ("minimum", "maximum"))
            assert tuple(map(int, bounds.groups())) == ui_range, (name, bounds.groups(), ui_range)
    # every node selector receives the module's scene (otherwise it stays empty)
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    selectors = {n for n, w in widgets.items() if w.get("class") in ("qMRMLNodeComboBox", "qMRMLTableView")}
    assert selectors <= receivers, f"not connected to the scene: {selectors - receivers}"


# -- compile and import hygiene -----------------------------------------------------------------------------------
def _python_files() -> list[Path]:
    files = [MODULES[m] / f"{m}.py" for m in MODULES]
    for folder in (CORE, SLICER_LIB):
        files += [p for p in folder.rglob("*.py") if "__pycache__" not in p.parts]
    return files


def test_every_module_file_compiles(tmp_path):
    files = _python_files()
    assert len(files) > 40
    for path in files:
        py_compile.compile(str(path), cfile=str(tmp_path / "x.pyc"), doraise=True)


def _imports(tree: ast.AST, top_level_only: bool) -> set[str]:
    nodes = ast.walk(tree) if not top_level_only else _top_level_statements(tree)
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _top_level_statements(tree: ast.Module):
    """Module-level statements, including those nested in top-level ``if`` / ``try`` blocks (not in functions)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            stack += [*node.body, *getattr(node, "orelse", []), *getattr(node, "finalbody", []),
                      *[s for h in getattr(node, "handlers", []) for s in h.body]]


def test_core_never_imports_slicer_and_slicer_lib_only_inside_functions():
    for path in CORE.rglob("*.py"):
        found = _imports(ast.parse(path.read_text(encoding="utf-8")), top_level_only=False) & (GUI_MODULES | {"__main__"})
        assert not found, f"{path.relative_to(REPO)} imports {found} (DCTNetLib must stay Slicer-free)"
    for path in SLICER_LIB.rglob("*.py"):
        found = _imports(ast.parse(path.read_text(encoding="utf-8")), top_level_only=True) & GUI_MODULES
        assert not found, f"{path.relative_to(REPO)} imports {found} at module level"


def test_slicer_lib_imports_without_slicer_in_a_fresh_interpreter():
    names = [p.stem for p in SLICER_LIB.glob("*.py") if p.stem != "__init__"]
    code = ("import sys\n" + "".join(f"import DCTNetSlicerLib.{n}\n" for n in names)
            + f"print(sorted(m for m in {sorted(GUI_MODULES)!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO / "DCTNetReconstruction", capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_install_covers_every_third_party_package_of_the_core():
    from DCTNetSlicerLib import install

    # shipped with Slicer itself (its Python, DICOM and ITK support), or installed through PyTorchUtils
    provided = {"numpy", "SimpleITK", "torch", "torchvision"}
    wanted = {install._import_name(install._split(r)[0]) for r in install.PYTHON_REQUIREMENTS}
    for path in CORE.rglob("*.py"):
        for name in _imports(ast.parse(path.read_text(encoding="utf-8")), top_level_only=False):
            if name in sys.stdlib_module_names or name == "DCTNetLib":
                continue
            assert name in provided | wanted, f"{path.name} imports {name}, which install.py never installs"
    assert install.missing_requirements(["tqdm>=1"]) == []
    assert install.missing_requirements(["tqdm>=999"]) == ["tqdm>=999"]
    with pytest.raises(ValueError, match="NEVER_INSTALL"):
        install.missing_requirements(["torch>=2"])


PROBE = """
import json, runpy, sys
out = sys.argv.pop(1)
try:
    runpy.run_module("DCTNetLib", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
else:
    code = 0
import DCTNetSlicerLib.reconstruction, DCTNetSlicerLib.results, DCTNetSlicerLib.radiographs  # Slicer's side
from DCTNetLib.commands import drr  # the worker's `dctnet drr` (Make radiographs from CT)
from DCTNetLib.evaluation import metrics  # reconstruct --reference
json.dump({"code": code, "modules": sorted(sys.modules)}, open(out, "w"))
"""


def test_reconstruction_requirements_cover_what_a_reconstruction_loads(tmp_path, tiny_bundle_path):
    """The modules a real ``dctnet reconstruct --extras --progress json`` run loads (and the module's own side):
    every third-party package they import is provided by Slicer / PyTorchUtils or in RECONSTRUCTION_REQUIREMENTS;
    LPIPS and YAML are not needed."""
    import SimpleITK as sitk

    from DCTNetSlicerLib import install
    from DCTNetSlicerLib.reconstruction import Options, command_args

    import torch

    from DCTNetLib.conventions import hu_to_unit
    from DCTNetLib.data.drr import make_drrs
    from DCTNetLib.data.phantom import chest_phantom

    hu = chest_phantom(size=32, spacing_mm=10.0, seed=0)  # radiographs of a chest: the input checks refuse blobs
    drr = make_drrs(torch.from_numpy(hu_to_unit(hu).astype(np.float32))[None, None], 10.0)[0].numpy()
    for name, image in zip(("pa", "lat"), drr):
        sitk.WriteImage(sitk.GetImageFromArray(image), str(tmp_path / f"{name}.tif"))
    args = command_args(tmp_path / "pa.tif", tmp_path / "lat.tif", tmp_path / "ct.nrrd",
                        Options(weights=str(tiny_bundle_path), device="cpu", steps=2))
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "loaded.json"), *args],
                         cwd=REPO / "DCTNetReconstruction", capture_output=True, text=True, timeout=900)
    assert (tmp_path / "loaded.json").is_file(), out.stderr[-2000:]
    loaded = json.loads((tmp_path / "loaded.json").read_text())
    assert loaded["code"] == 0, out.stderr[-2000:]
    ours = [name for name in loaded["modules"] if name.split(".")[0] in ("DCTNetLib", "DCTNetSlicerLib")]
    assert "DCTNetLib.commands.reconstruct" in ours
    imported = set()
    for name in ours:
        path = REPO / "DCTNetReconstruction" / Path(*name.split("."))
        source = path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"
        imported |= _imports(ast.parse(source.read_text(encoding="utf-8")), top_level_only=False)
    third_party = {n for n in imported if n not in sys.stdlib_module_names} - {"DCTNetLib", "DCTNetSlicerLib"}
    third_party -= GUI_MODULES  # imported inside functions that only run in Slicer
    provided = {"numpy", "SimpleITK", "torch", "torchvision"}
    wanted = {install._import_name(install._split(r)[0]) for r in install.RECONSTRUCTION_REQUIREMENTS}
    assert third_party - provided <= wanted, f"not installed for reconstruction: {third_party - provided - wanted}"
    loaded_top = {name.split(".")[0] for name in loaded["modules"]}
    assert "lpips" not in loaded_top and "yaml" not in loaded_top


# -- logic helpers on real data ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def phantom_pair():
    import torch

    from DCTNetLib.data.phantom import phantom_ct
    from DCTNetSlicerLib.radiographs import radiographs_from_ct

    torch.set_num_threads(1)
    ct = phantom_ct(size=32)
    return ct, radiographs_from_ct(ct)


def test_radiographs_from_ct_follow_the_view_conventions(phantom_pair):
    ct, pair = phantom_pair
    for image in (pair.pa, pair.lat):
        assert image.shape == (128, 128) and image.dtype == np.float32
        assert 0.0 <= image.min() and image.max() == pytest.approx(1.0)
        assert image.std() > 0.05
    # the spine is posterior and central: the lateral's columns run anterior→posterior, the PA's right→left
    assert np.argmax(pair.lat.mean(axis=0)) > 64
    assert abs(int(np.argmax(pair.pa.mean(axis=0))) - 64) <= 6


def test_reference_grid_is_centred_on_the_ct_and_matches_the_radiograph_placement(phantom_pair):
    from DCTNetLib.conventions import VOXEL_SPACING_MM
    from DCTNetLib.io.geometry import ijk_to_ras_matrix, lps_to_ras, radiograph_ijk_to_ras, volume_centre_ras
    from DCTNetSlicerLib import radiographs

    ct, pair = phantom_pair
    reference = radiographs.reference_ct(pair.prepared)
    assert reference.hu.shape == (128, 128, 128)
    np.testing.assert_allclose(reference.spacing, (VOXEL_SPACING_MM,) * 3)
    ijk_to_ras = ijk_to_ras_matrix(reference.spacing, reference.origin_lps, reference.direction)
    centre = volume_centre_ras(reference.hu.shape, ijk_to_ras)
    np.testing.assert_allclose(centre, lps_to_ras(ct.centre_lps()), atol=1e-6)
    np.testing.assert_allclose(radiographs.radiograph_centre_ras(pair.prepared), centre, atol=1e-6)
    # the PA node's centre pixel sits on the CT centre; the image spans the CT's 320 mm field
    pa_matrix = radiograph_ijk_to_ras("PA", pair.pa.shape, centre_ras=centre)
    np.testing.assert_allclose(volume_centre_ras((1, *pair.pa.shape), pa_matrix), centre, atol=1e-6)
    # HU survive the prepare → reference round trip (air outside, soft tissue / bone inside)
    assert reference.hu.min() == pytest.approx(-1024.0, abs=1.0) and reference.hu.max() > 300.0
    # the geometry travels as JSON in a node attribute
    restored = radiographs.geometry_from_json(radiographs.geometry_to_json(pair.prepared))
    np.testing.assert_allclose(restored.centre_lps(), pair.prepared.centre_lps())
    assert radiographs.geometry_from_json("") is None
    with pytest.raises(ValueError, match="geometry"):
        radiographs.geometry_from_json('{"size": [1, 1, 1]}')


def test_metrics_text():
    from DCTNetSlicerLib.results import format_metrics

    assert format_metrics({"psnr": 26.914, "ssim": 0.6123, "mae_hu": 83.6}) == "PSNR 26.91 dB · SSIM 0.612 · MAE 84 HU"
    assert format_metrics({"psnr": float("nan"), "ssim": 0.5}) == "SSIM 0.500"


def test_training_commands_are_accepted_by_the_dctnet_cli(tmp_path):
    from DCTNetLib.cli import COMMANDS, build_parser
    from DCTNetSlicerLib.training_runs import RunRequest, command_args

    parser = build_parser()
    available = set(parser._subparsers._group_actions[0].choices)
    base = dict(prepared_dir=str(tmp_path / "prep"), run_dir=str(tmp_path / "run"), raw_dir=str(tmp_path / "raw"))
    requests = [RunRequest("prepare", dataset="ctspine1k", **base),
                RunRequest("cdm", preset="tiny", device="cpu", epochs=2, resume=True, **base),
                RunRequest("gan", **base), RunRequest("evaluate", **base)]
    checked = 0
    for request in requests:
        args = command_args(request)
        assert args[0] in COMMANDS
        if args[0] not in available:
            continue  # sub-command not written yet
        parsed = parser.parse_args(args)
        assert Path(parsed.output).parent in (tmp_path, tmp_path / "run")
        checked += 1
    assert checked >= 2  # prepare and train-cdm exist
    cdm = command_args(requests[1])
    assert cdm[:1] == ["train-cdm"] and cdm[cdm.index("--output") + 1] == str(tmp_path / "run" / "cdm")
    assert "--resume" in cdm and cdm[cdm.index("--epochs") + 1] == "2"
    gan = command_args(requests[2])
    assert gan[gan.index("--cdm") + 1] == str(tmp_path / "run" / "cdm" / "best.pt")
    with pytest.raises(ValueError, match="run folder"):
        command_args(RunRequest("cdm", prepared_dir="p"))


def test_loss_plot_and_evaluation_table_from_a_metrics_log(tmp_path):
    from DCTNetLib.training.runlog import MetricsTail, RunHistory
    from DCTNetSlicerLib.training_runs import best_checkpoint, eval_table_rows, loss_table_columns, metrics_log_path

    log = metrics_log_path(tmp_path)
    records = [{"event": "train", "step": 10, "losses": {"recon": 0.5, "adv": 1.0}},
               {"event": "train", "step": 20, "losses": {"recon": 0.25}},
               {"event": "eval", "case": "A", "psnr": 26.0, "ssim": 0.6, "lpips": 0.3},
               {"event": "eval", "case": "B", "psnr": 28.0, "ssim": 0.7, "lpips": 0.2}]
    log.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"event": "train", "st')  # last line unfinished
    history = RunHistory()
    history.update(MetricsTail(log).read_new())
    names, table = loss_table_columns(history)
    assert names == ["step", "adv", "recon"]
    np.testing.assert_array_equal(table[:, 0], [10, 20])
    np.testing.assert_array_equal(table[:, 2], [0.5, 0.25])
    assert table[0, 1] == 1.0 and np.isnan(table[1, 1])
    header, rows = eval_table_rows(history)
    assert header == ["case", "psnr", "ssim", "lpips"]
    assert rows[0][:2] == ["A", "26.0000"] and rows[-1][0] == "mean ± std"
    assert rows[-1][1] == "27.000 ± 1.414"  # sample std of (26, 28)
    assert best_checkpoint(tmp_path) is None
    (tmp_path / "latest.pt").write_bytes(b"x")
    assert best_checkpoint(tmp_path).name == "latest.pt"
    (tmp_path / "best.pt").write_bytes(b"x")
    assert best_checkpoint(tmp_path).name == "best.pt"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")
def test_stop_interrupts_the_whole_run_like_ctrl_c():
    from DCTNetSlicerLib.process import BackgroundProcess, module_command
    from DCTNetSlicerLib.tasks import send_interrupt

    grandchild_code = "import time; print('grandchild ready', flush=True); time.sleep(600)"
    script = ("import subprocess, sys, time\n"
              f"child = subprocess.Popen([sys.executable, '-c', {grandchild_code!r}])\n"
              "print('ready', child.pid, flush=True)\n"
              "try:\n    time.sleep(600)\nexcept KeyboardInterrupt:\n    print('interrupted', flush=True)\n"
              "    child.wait(timeout=10)\n    sys.exit(130)\n")
    proc = BackgroundProcess([sys.executable, "-u", "-c", script]).start()
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while "grandchild ready" not in lines and time.monotonic() < deadline:
        lines += proc.poll().lines
        time.sleep(0.05)
    grandchild = int(next(line for line in lines if line.startswith("ready")).split()[1])
    assert send_interrupt(proc.pid)
    update = proc.wait(timeout=30)
    assert update.finished and update.returncode == 130
    # child and grandchild share the pipe, so their last lines may interleave ("interruptedTraceback ...")
    assert any("interrupted" in line for line in update.lines + lines)
    import psutil

    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
    assert not send_interrupt(proc.pid)  # gone: nothing to interrupt
    assert module_command("DCTNetLib", ["train"])[1:4] == ["-u", "-m", "DCTNetLib"]


def test_results_layout_description():
    from DCTNetSlicerLib import layout

    root = ET.fromstring(layout.layout_xml())
    views = {v.get("singletontag"): v for v in root.iter("view")}
    assert set(layout.CT_VIEWS) | set(layout.RADIOGRAPH_VIEWS) | {"1"} == set(views)

    def prop(tag, name):
        return next(p.text for p in views[tag].iter("property") if p.get("name") == name)

    assert {prop(t, "viewgroup") for t in layout.CT_VIEWS} == {"0"}
    assert {prop(t, "viewgroup") for t in layout.RADIOGRAPH_VIEWS} == {"1"}
    assert prop("Red", "orientation") == "Axial" and prop("DCTNetPA", "orientation") == "Coronal"
    assert prop("DCTNetLAT", "orientation") == "Sagittal"
    assert layout.LAYOUT_ID >= 500  # above Slicer's built-in layout ids
