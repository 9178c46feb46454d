"""DCTNetReconstructionTest — the module's own self-test — as Slicer's build machines run it: without torch.

The factory machines that build and test extensions have no torch. The self-test must then test what it can
(radiograph files → nodes, RGB inputs, the layout) and skip the model part with a clear message instead of
failing. This runs the real ``DCTNetReconstruction.py`` and its real Test class on slicer-core's MRML with
``torch`` made unimportable; what slicer-core lacks (the Qt application, ``ScriptedLoadableModule``,
``parameterNodeWrapper``, ``slicer.i18n``) is stood in for by the smallest fakes that behave like Slicer's:

- ``slicer.app.layoutManager()`` is backed by real MRML views (``MRMLViews`` in conftest.py);
- the parameter-node wrapper refuses a node that is not an instance of its field's annotated classes, as
  Slicer's node serializer does;
- Slicer calls a module test's ``runTest()`` directly (``ScriptedLoadableModule.runTest``), so a skip must not
  raise: it is a message.
"""

from __future__ import annotations

import importlib.util
import sys
import types
import typing
import unittest
from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("`slicer` here is not slicer-core's MRML build", allow_module_level=True)

from conftest import MRMLViews  # noqa: E402

MODULE_FILE = Path(__file__).resolve().parents[2] / "DCTNetReconstruction" / "DCTNetReconstruction.py"


def _node_classes(annotation) -> tuple[type, ...]:
    annotation = typing.get_args(annotation)[0] if typing.get_origin(annotation) is typing.Annotated else annotation
    if isinstance(annotation, type):
        return (annotation,) if issubclass(annotation, slicer.vtkMRMLNode) else ()
    return tuple(a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, slicer.vtkMRMLNode))


def fake_parameter_node_wrapper(cls):
    hints = typing.get_type_hints(cls, include_extras=True)
    stored: dict[str, dict] = {}  # the values live with the node, as Slicer keeps them in the node's parameters

    class Wrapped:
        def __init__(self, node) -> None:
            object.__setattr__(self, "node", node)
            object.__setattr__(self, "_values", stored.setdefault(
                node.GetID(), {name: getattr(cls, name, None) for name in hints}))

        def __getattr__(self, name):
            values = object.__getattribute__(self, "_values")
            if name not in values:
                raise AttributeError(f"{cls.__name__} has no parameter {name}")
            return values[name]

        def __setattr__(self, name, value) -> None:
            if name not in hints:
                raise AttributeError(f"{cls.__name__} has no parameter {name}")
            classes = _node_classes(hints[name])
            if classes and value is not None and not isinstance(value, classes):
                raise TypeError(f"{name}: {value.GetClassName()} is not one of {[c.__name__ for c in classes]}")
            self._values[name] = value

    return Wrapped


class FakeLayoutManager:
    def __init__(self, views: MRMLViews) -> None:
        self.views = views

    def layoutLogic(self):  # noqa: N802 (Qt API)
        return self.views.layout_logic

    def setLayout(self, layout_id):  # noqa: N802
        self.views.set_layout(layout_id)

    def sliceWidget(self, tag):  # noqa: N802
        logic = self.views.slice_logic(tag)
        return None if logic is None else types.SimpleNamespace(sliceLogic=lambda: logic)

    def threeDWidget(self, index):  # noqa: N802
        return None


@pytest.fixture
def module_without_torch(scene, views, monkeypatch):
    messages: list[str] = []

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, msec=None):  # noqa: N802 (Slicer API)
            messages.append(message)

    class ScriptedLoadableModuleLogic:
        def getParameterNode(self):  # noqa: N802  (one node per module and scene, as Slicer's)
            return slicer.mrmlScene.GetFirstNodeByName("DCTNetReconstruction") or \
                slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "DCTNetReconstruction")

    scripted = types.ModuleType("slicer.ScriptedLoadableModule")
    scripted.ScriptedLoadableModule = type("ScriptedLoadableModule", (), {})
    scripted.ScriptedLoadableModuleWidget = type("ScriptedLoadableModuleWidget", (), {})
    scripted.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    scripted.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = fake_parameter_node_wrapper
    wrapper.WithinRange = lambda low, high: ("WithinRange", low, high)
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    for name, module in {"slicer.ScriptedLoadableModule": scripted, "slicer.parameterNodeWrapper": wrapper,
                         "slicer.i18n": i18n, "torch": None}.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(layoutManager=lambda: FakeLayoutManager(views)),
                        raising=False)
    spec = importlib.util.spec_from_file_location("DCTNetReconstruction", MODULE_FILE)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "DCTNetReconstruction", module)
    spec.loader.exec_module(module)
    return module, messages


def test_the_self_test_passes_without_torch_and_says_what_it_skipped(module_without_torch):
    module, messages = module_without_torch
    assert importlib.util.find_spec("torch") is None  # as on Slicer's build machines
    module.DCTNetReconstructionTest().runTest()
    assert "Radiographs and views: passed" in messages
    assert any(m.startswith("Skipped the reconstruction test: PyTorch is not installed") for m in messages)
    assert "Test passed" not in messages  # the model part did not run
    assert sys.modules["torch"] is None  # nothing imported torch behind the test's back


def test_the_parameter_node_takes_rgb_radiographs(module_without_torch, scene):
    """An RGB image is a vector volume; the radiograph fields take it (and the fake refuses what Slicer would)."""
    module, _ = module_without_torch
    parameters = module.DCTNetReconstructionLogic().getParameterNode()
    rgb = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode")
    parameters.latVolume = rgb
    assert parameters.latVolume is rgb
    with pytest.raises(TypeError, match="vtkMRMLModelNode"):
        parameters.paVolume = scene.AddNewNodeByClass("vtkMRMLModelNode")


def test_sample_data_pair_is_registered_with_slicers_signature_and_loads_as_the_inputs(module_without_torch, scene,
                                                                                       monkeypatch):
    """Sample Data › DCTNet › DCTNetChestPair: registered through SampleDataLogic.registerCustomSampleDataSource
    (its keyword parameters as in Slicer's SampleData.py, 5.10 to main); its button loads the shipped PA and
    lateral PNGs as radiographs in their planes and selects them, so Reconstruct can be pressed at once."""
    import inspect
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    from DCTNetLib.io.radiograph import read_radiograph

    module, _ = module_without_torch
    calls = []

    def registerCustomSampleDataSource(category="Custom", sampleName=None, uris=None, fileNames=None,  # noqa: N802
                                       nodeNames=None, customDownloader=None, thumbnailFileName=None,
                                       loadFileType="VolumeFile", loadFiles=None, loadFileProperties={},
                                       checksums=None):
        calls.append(inspect.getcallargs(registerCustomSampleDataSource, category, sampleName, uris, fileNames,
                                         nodeNames, customDownloader, thumbnailFileName, loadFileType, loadFiles,
                                         loadFileProperties, checksums))

    sample_data = types.ModuleType("SampleData")
    sample_data.SampleDataLogic = type("SampleDataLogic", (), {
        "registerCustomSampleDataSource": staticmethod(registerCustomSampleDataSource)})
    monkeypatch.setitem(sys.modules, "SampleData", sample_data)
    module.registerSampleData()
    (call,) = calls
    assert call["category"] == "DCTNet" and call["sampleName"] == module.SAMPLE_NAME
    files = [Path(url2pathname(urlparse(uri).path)) for uri in call["uris"]]
    assert files == [Path(module.SAMPLE_FILES["PA"]), Path(module.SAMPLE_FILES["LAT"])]
    assert call["fileNames"] == [f.name for f in files] and len(call["nodeNames"]) == 2
    assert Path(call["thumbnailFileName"]).is_file()
    for path in files:  # small 128² greyscale PNGs: what `dctnet drr` writes, in the repository
        assert path.is_file() and path.stat().st_size < 20_000
        image = read_radiograph(path)
        assert image.shape == (128, 128) and image.std() > 0.05

    pa, lat = call["customDownloader"](None)  # the Sample Data button
    parameters = module.DCTNetReconstructionLogic().getParameterNode()
    assert (parameters.paVolume, parameters.latVolume) == (pa, lat)
    assert slicer.util.arrayFromVolume(pa).shape == (1, 128, 128)
    assert pa.GetAttribute("DCTNet.Role") == "pa" and lat.GetAttribute("DCTNet.Role") == "lat"
    # the reconstruction reads the shipped files themselves (the command line's input)
    from DCTNetSlicerLib.reconstruction import source_file

    assert [source_file(pa), source_file(lat)] == files
