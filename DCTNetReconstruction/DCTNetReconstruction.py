"""DCTNet Reconstruction: a 128³ CT from a PA and a lateral radiograph (DCT-Net, Zhang et al., MICCAI 2025).

Module, Widget, Logic and Test in the order of Slicer's scripted-module template
(Slicer/Slicer ``Utilities/Templates/Modules/Scripted/TemplateKey.py``). The Widget only wires the UI to the
parameter node and the Logic; the Logic does the work through ``DCTNetLib`` (the pure-Python core) and
``DCTNetSlicerLib`` (node glue, layout, background runner), and works without the GUI::

    logic = slicer.util.getModuleLogic("DCTNetReconstruction")
    pa, lat = logic.radiographsFromCT(slicer.util.getNode("CTChest"))   # or logic.loadRadiograph(path, "PA")
    volumes = logic.reconstruct(pa, lat)                                # {"ct": node, "soft_tissue": …, …}

Requires Slicer ≥ 5.10 (``parameterNodeWrapper``, the bundled Python 3.12 and torch 2.x via the PyTorch extension).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated, Any, Callable, Optional, Union

import slicer

# The core needs Python ≥ 3.10, which Slicer ships from 5.10 on (CMakeLists.txt refuses older Slicer at build time).
MINIMUM_SLICER = (5, 10)
MINIMUM_PYTHON = (3, 10)
if sys.version_info < MINIMUM_PYTHON:
    raise RuntimeError(f"DCTNet needs Slicer {MINIMUM_SLICER[0]}.{MINIMUM_SLICER[1]} or newer (Python "
                       f"{MINIMUM_PYTHON[0]}.{MINIMUM_PYTHON[1]}+; this Slicer has Python {sys.version.split()[0]})")
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLVectorVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

DEVICES = ("auto", "cpu", "cuda")
# A radiograph node: grey images load as scalar volumes, RGB ones (PNG/JPEG through Add Data) as vector volumes.
# parameterNodeWrapper gives a node selector the classes of this Union as its nodeTypes; with the .ui's
# showChildNodeTypes=false, label maps and other scalar-volume subclasses stay hidden.
RadiographNode = Optional[Union[vtkMRMLScalarVolumeNode, vtkMRMLVectorVolumeNode]]
# Sample Data › DCTNet: PA and lateral DRRs of LIDC-IDRI-0001 (TCIA, CC BY 3.0), 128² PNGs rendered by
# scripts/make_sample_radiographs.py as "Make radiographs from CT" renders them.
SAMPLE_NAME = "DCTNetChestPair"
SAMPLE_FILES = {view: os.path.join(os.path.dirname(__file__), "Resources", "SampleData", f"DCTNetChest_{view}.png")
                for view in ("PA", "LAT")}


class DCTNetReconstruction(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("DCTNet Reconstruction")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Tomographic Reconstruction")]
        self.parent.dependencies = []
        self.parent.contributors = ["DCTNet contributors (DCTNet project)"]  # as EXTENSION_CONTRIBUTORS
        self.parent.helpText = _(
            "Reconstructs a 128³ CT (2.5 mm voxels, in HU) from a posterior-anterior and a lateral chest "
            "radiograph with DCT-Net: a diffusion model suppresses the bones, and two generators reconstruct the "
            "CT from the original and the bone-suppressed radiographs. Radiographs can be loaded from PNG/JPEG/"
            "DICOM files or made from any CT in the scene. "
            "<a href=\"https://github.com/dctnet/SlicerDCTNet/blob/main/docs/slicer.md\">Documentation</a> · "
            "<a href=\"https://github.com/dctnet/SlicerDCTNet/blob/main/docs/architecture.md\">the method and the "
            "paper it implements</a> (Zhang et al., DCT-Net, MICCAI 2025). "
            "To try it at once: Sample Data › DCTNet › DCTNetChestPair, then Reconstruct.")
        self.parent.acknowledgementText = _(
            "DCT-Net: Zhang et al., MICCAI 2025. Radiograph geometry and preprocessing follow X2CT-GAN "
            "(Ying et al., CVPR 2019). The module layout follows Slicer's scripted-module template and "
            "SlicerTotalSegmentator / SlicerMONAIAuto3DSeg. The Sample Data pair (DCTNetChestPair) are radiographs "
            "rendered by this project from the chest CT LIDC-IDRI-0001 of The Cancer Imaging Archive's LIDC-IDRI "
            "collection, licensed CC BY 3.0 (Armato et al., Medical Physics 2011; "
            "<a href=\"https://doi.org/10.7937/K9/TCIA.2015.LO9QL9SX\">doi:10.7937/K9/TCIA.2015.LO9QL9SX</a>).")
        # Sample Data registers its sources once the application has started (Slicer's scripted-module template)
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """Sample Data › DCTNet › DCTNetChestPair: the PA and lateral pair shipped in Resources/SampleData.

    ``SampleData.SampleDataLogic.registerCustomSampleDataSource(category, sampleName, uris, fileNames, nodeNames,
    customDownloader, thumbnailFileName, loadFileType, loadFiles, loadFileProperties, checksums)`` (keywords as in
    Slicer/Slicer ``Modules/Scripted/SampleData/SampleData.py``, 5.10 to main). The Sample Data button calls
    ``customDownloader`` (the module's own loader: each film in its plane, selected as the module's inputs);
    ``SampleData.downloadSamples`` copies the ``file://`` URIs into the cache and loads them as plain volumes.
    """
    import pathlib

    import SampleData

    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="DCTNet", sampleName=SAMPLE_NAME,
        uris=[pathlib.Path(path).as_uri() for path in SAMPLE_FILES.values()],
        fileNames=[os.path.basename(path) for path in SAMPLE_FILES.values()],
        nodeNames=[f"DCTNetChest {view}" for view in SAMPLE_FILES],
        thumbnailFileName=SAMPLE_FILES["PA"], loadFileType="VolumeFile",
        customDownloader=lambda source: list(DCTNetReconstructionLogic().loadSampleRadiographs()))


@parameterNodeWrapper
class DCTNetReconstructionParameterNode:
    """The module's state, saved with the scene.

    paVolume, latVolume: input radiographs (single-slice scalar or RGB vector volumes).
    sourceCT: CT to make radiographs from (optional).
    weightsPath: model file; empty = the shipped weights.
    dicomFolder: folder to export each reconstruction into as a DICOM series (a new sub-folder per run); empty =
        no DICOM export.
    device: "auto", "cpu" or "cuda".
    samplingSteps: DDIM steps of the bone suppression; 0 = the model's default.
    seed: sampling seed.
    registerToRadiographs: the default registration of the CT to the radiographs (off: --no-registration).
    mixAtlases: after it, the default atlas prior: real chest CTs registered to the radiographs, their median mixed
        into the CT (off: --no-atlas).
    refineToRadiographs: refine the CT until its DRRs agree with the radiographs (dctnet reconstruct --refine;
        for radiographs made from a CT: on real films it imprints the film's borders and display curve).
    atlasPrior: with the refinement, also mix in real chest CTs registered to the radiographs (--atlas).
    ctVolume, fromBoneSuppressedVolume, branchDifferenceVolume, uncertaintyVolume, paBoneSuppressed,
    latBoneSuppressed: outputs.
    windowPreset: "CT_LUNG" or "CT_BONE".
    """

    paVolume: RadiographNode
    latVolume: RadiographNode
    sourceCT: vtkMRMLScalarVolumeNode
    weightsPath: str = ""
    dicomFolder: str = ""
    device: str = "auto"
    samplingSteps: Annotated[int, WithinRange(0, 1000)] = 0
    seed: Annotated[int, WithinRange(0, 1000000)] = 0
    registerToRadiographs: bool = True
    mixAtlases: bool = True
    refineToRadiographs: bool = False
    atlasPrior: bool = False
    ctVolume: vtkMRMLScalarVolumeNode
    fromBoneSuppressedVolume: vtkMRMLScalarVolumeNode
    branchDifferenceVolume: vtkMRMLScalarVolumeNode
    uncertaintyVolume: vtkMRMLScalarVolumeNode
    paBoneSuppressed: vtkMRMLScalarVolumeNode
    latBoneSuppressed: vtkMRMLScalarVolumeNode
    windowPreset: str = "CT_LUNG"


class DCTNetReconstructionWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._task = None

    # -- set-up ----------------------------------------------------------------------------------------------
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DCTNetReconstruction.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DCTNetReconstructionLogic()

        self.ui.loadPAButton.connect("clicked(bool)", lambda: self.onLoadRadiograph("PA"))
        self.ui.loadLateralButton.connect("clicked(bool)", lambda: self.onLoadRadiograph("LAT"))
        self.ui.makeRadiographsButton.connect("clicked(bool)", self.onMakeRadiographs)
        self.ui.previewButton.connect("clicked(bool)", self.onPreview)
        self.ui.reconstructButton.connect("clicked(bool)", self.onReconstruct)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.weightsPathLineEdit.connect("currentPathChanged(QString)", self.onWeightsPathChanged)
        self.ui.dicomFolderPathLineEdit.connect("currentPathChanged(QString)", self.onDicomFolderChanged)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.ui.windowPresetComboBox.connect("currentIndexChanged(int)", self.onWindowPresetChanged)
        self.ui.refineCheckBox.connect("toggled(bool)", self.ui.atlasCheckBox.setEnabled)  # the prior is a refinement
        self.ui.atlasCheckBox.setEnabled(self.ui.refineCheckBox.checked)
        for box in (self.ui.refineCheckBox, self.ui.registerCheckBox):
            box.connect("toggled(bool)", lambda on: self.updateDefaultStepBoxes())
        self.updateDefaultStepBoxes()
        self.ui.showUncertaintyCheckBox.connect("toggled(bool)", lambda checked: self.showResults())
        self.ui.volumeRenderingCheckBox.connect("toggled(bool)", lambda checked: self.showResults())

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def updateDefaultStepBoxes(self) -> None:
        """The refinement brings its own registration; the default atlas prior follows the default registration."""
        refine = self.ui.refineCheckBox.checked
        self.ui.registerCheckBox.setEnabled(not refine)
        self.ui.mixAtlasesCheckBox.setEnabled(self.ui.registerCheckBox.checked and not refine)

    def cleanup(self) -> None:
        """Module reload or application exit: cancel a running reconstruction and end the worker process."""
        if self._task is not None and self._task.running:
            self._task.cancel()
        self.logic.shutdown()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUI)

    def onSceneStartClose(self, caller, event) -> None:
        # the run itself is cancelled by its own scene observer (DCTNetSlicerLib.reconstruction.SceneGuard)
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUI)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # node selectors and spin boxes are bound through their SlicerParameterName property in the .ui
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUI)
            self._updateGUI()

    def _updateGUI(self, caller=None, event=None) -> None:
        """Parameter node → the widgets not bound by connectGui, and button states."""
        p = self._parameterNode
        if p is None:
            return
        with _blockSignals(self.ui.weightsPathLineEdit, self.ui.deviceComboBox, self.ui.windowPresetComboBox,
                           self.ui.dicomFolderPathLineEdit):
            self.ui.weightsPathLineEdit.currentPath = p.weightsPath
            self.ui.dicomFolderPathLineEdit.currentPath = p.dicomFolder
            self.ui.deviceComboBox.currentIndex = DEVICES.index(p.device) if p.device in DEVICES else 0
            self.ui.windowPresetComboBox.currentIndex = max(0, self.ui.windowPresetComboBox.findText(p.windowPreset))
        busy = self._task is not None and self._task.running
        haveInputs = bool(p.paVolume and p.latVolume)
        self.ui.previewButton.enabled = haveInputs and not busy
        self.ui.reconstructButton.enabled = haveInputs and not busy
        self.ui.makeRadiographsButton.enabled = bool(p.sourceCT) and not busy
        self.ui.cancelButton.enabled = busy

    # -- GUI → parameter node ---------------------------------------------------------------------------------
    def onWeightsPathChanged(self, path: str) -> None:
        if self._parameterNode:
            self._parameterNode.weightsPath = path

    def onDicomFolderChanged(self, path: str) -> None:
        if self._parameterNode:
            self._parameterNode.dicomFolder = path

    def onDeviceChanged(self, index: int) -> None:
        if self._parameterNode and 0 <= index < len(DEVICES):
            self._parameterNode.device = DEVICES[index]

    def onWindowPresetChanged(self, index: int) -> None:
        if not self._parameterNode:
            return
        self._parameterNode.windowPreset = self.ui.windowPresetComboBox.currentText
        self.logic.applyWindowPreset(self._parameterNode)

    # -- actions ---------------------------------------------------------------------------------------------
    def onLoadRadiograph(self, view: str) -> None:
        import qt

        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), _("Load {view} radiograph").format(view=view), "",
            _("Radiographs (*.png *.jpg *.jpeg *.tif *.tiff *.dcm);;All files (*)"))
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not load the radiograph."), waitCursor=True):
            node = self.logic.loadRadiograph(path, view)
            setattr(self._parameterNode, "paVolume" if view == "PA" else "latVolume", node)

    def onMakeRadiographs(self) -> None:
        if not self._ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay(_("Could not make radiographs from the CT."), waitCursor=True):
            pa, lat = self.logic.radiographsFromCT(self._parameterNode.sourceCT)
            self._parameterNode.paVolume, self._parameterNode.latVolume = pa, lat
            self._setStatus(_("Radiographs made from '{name}'.").format(name=self._parameterNode.sourceCT.GetName()))

    def onPreview(self) -> None:
        self._start(self.logic.previewInBackground, _("Bone suppression preview"))

    def onReconstruct(self) -> None:
        self._start(self.logic.reconstructInBackground, _("Reconstruction"))

    def onCancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _start(self, launcher: Callable, title: str) -> None:
        if not self._ensureDependencies():
            return
        self.ui.progressBar.value = 0
        self.ui.logTextEdit.clear()
        self._setStatus(_("{title}: starting…").format(title=title))
        with slicer.util.tryWithErrorDisplay(_("{title} could not start.").format(title=title), waitCursor=True):
            self._task = launcher(self._parameterNode, onProgress=self._onProgress,
                                  onFinished=lambda ok, message: self._onFinished(title, ok, message),
                                  onLog=self.ui.logTextEdit.appendPlainText)
        self._updateGUI()

    def _onProgress(self, fraction: float | None, message: str) -> None:
        if fraction is not None:
            self.ui.progressBar.value = int(round(100 * fraction))
        self._setStatus(message)

    def _onFinished(self, title: str, success: bool, message: str) -> None:
        self._task = None
        self._updateGUI()
        if success:
            self.ui.progressBar.value = 100
            self._setStatus(f"{title}: {message}")
            if self.logic.lastDicomFolder:
                self.ui.logTextEdit.appendPlainText(
                    _("DICOM series written to {folder}").format(folder=self.logic.lastDicomFolder))
            self.ui.metricsLabel.text = self.logic.metricsText()
            if self.logic.lastWarnings:
                self.ui.logCollapsibleButton.collapsed = False  # the films' warnings: visible, not only logged
            self.showResults()
        else:
            self._setStatus(f"{title}: {message}")
            if message not in ("Cancelled", "Stopped"):
                slicer.util.errorDisplay(_("{title} failed: {message}").format(title=title, message=message),
                                         detailedText=_("See the Python console and the application log."))

    def showResults(self) -> None:
        if self._parameterNode:
            self.logic.showResults(self._parameterNode, showUncertainty=self.ui.showUncertaintyCheckBox.checked,
                                   volumeRendering=self.ui.volumeRenderingCheckBox.checked)

    def _setStatus(self, text: str) -> None:
        self.ui.statusLabel.text = text
        logging.info(text)

    def _ensureDependencies(self) -> bool:
        from DCTNetSlicerLib import install

        try:
            install.ensure_dependencies(requester="DCTNet")
        except install.InstallError as exc:
            if exc.restartRequired and slicer.util.confirmOkCancelDisplay(
                    exc.message + "\n\n" + _("Restart Slicer now?")):
                slicer.util.restart()
            else:
                slicer.util.errorDisplay(exc.message)
            return False
        return True


class _blockSignals:
    """Context manager blocking the signals of some Qt widgets (so GUI updates do not echo back)."""

    def __init__(self, *widgets) -> None:
        self.widgets = widgets

    def __enter__(self):
        self.previous = [w.blockSignals(True) for w in self.widgets]

    def __exit__(self, *exc_info) -> None:
        for widget, previous in zip(self.widgets, self.previous):
            widget.blockSignals(previous)


class DCTNetReconstructionLogic(ScriptedLoadableModuleLogic):
    """Everything the module does, callable from the Python console without the GUI.

    Nodes in, nodes out; options are passed explicitly (defaults: shipped weights, CUDA when available, the
    model's number of sampling steps). The work is done by ``DCTNetSlicerLib.reconstruction``: the reconstruction
    and the preview run the public ``dctnet reconstruct`` command in a ``PythonSlicer`` child process, waiting for
    it (:meth:`reconstruct`, :meth:`previewBoneSuppression`) or not (the ``…InBackground`` variants the widget
    uses). *Make radiographs from CT* (:meth:`radiographsFromCT`, ``dctnet drr``) and the comparison with its CT
    (``dctnet reconstruct --reference``) run on the same worker: torch is never imported in Slicer's own process.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.lastMetrics: dict[str, float] = {}
        self.lastNotes: list[str] = []  # what the last run said the user must know (e.g. a demonstration model)
        self.lastWarnings: list[str] = []  # the command line's warnings (what could not be checked on the films)
        self.lastDicomFolder: str | None = None  # where the last reconstruction wrote its DICOM series, if asked

    def getParameterNode(self) -> DCTNetReconstructionParameterNode:
        return DCTNetReconstructionParameterNode(super().getParameterNode())

    # -- inputs ----------------------------------------------------------------------------------------------
    def loadRadiograph(self, path: str, view: str = "PA"):
        """Read a PNG/JPEG/TIFF/DICOM CR/DX radiograph into a single-slice volume node in [0, 1].

        Args:
            path: image file.
            view: ``"PA"`` or ``"LAT"``: places the image in a coronal / sagittal plane.
        """
        from DCTNetSlicerLib import reconstruction

        return reconstruction.load_radiograph(path, view)

    def radiographsFromCT(self, ctNode) -> tuple[Any, Any]:
        """PA and lateral DRRs of a CT node with the training geometry; also adds the 128³ reference CT.

        Runs ``dctnet drr`` on the worker process (started on first use, kept for the reconstruction) and waits
        for it with the window alive, as :meth:`reconstruct` does.

        Returns:
            ``(paNode, latNode)``; both reference the prepared CT (role ``DCTNetReference``), so a reconstruction
            lands on that grid and is compared with it.
        """
        from DCTNetSlicerLib import reconstruction

        return reconstruction.radiographs_from_ct(ctNode)

    makeRadiographs = radiographsFromCT  # the name used in the issue and the README

    def loadSampleRadiographs(self) -> tuple[Any, Any]:
        """The Sample Data pair (PA and lateral DRRs of LIDC-IDRI-0001, CC BY 3.0) as radiograph nodes, selected as
        the module's inputs, so *Reconstruct* can be pressed at once. Returns ``(paNode, latNode)``."""
        pa, lat = (self.loadRadiograph(SAMPLE_FILES[view], view) for view in ("PA", "LAT"))
        p = self.getParameterNode()
        p.paVolume, p.latVolume = pa, lat
        return pa, lat

    # -- the model (blocking) ------------------------------------------------------------------------------------
    @staticmethod
    def options(weights: str | None = None, device: str = "auto", steps: int | None = None, seed: int = 0,
                dicomFolder: str | None = None, refine: bool = False, fusion: str = "mean", atlas: bool = False,
                register: bool = True, mixAtlases: bool = True):
        from DCTNetSlicerLib.reconstruction import Options

        return Options(weights=weights or None, device=device, steps=steps or None, seed=int(seed),
                       dicom_folder=str(dicomFolder) if dicomFolder else None, refine=bool(refine), fusion=fusion,
                       atlas=bool(atlas), register=bool(register), mix_atlases=bool(mixAtlases))

    @staticmethod
    def _dicomSeriesFolder(exportFolder: str | None, paNode) -> str | None:
        """A new sub-folder of the export folder for this reconstruction's DICOM series (None: no export)."""
        from DCTNetSlicerLib.reconstruction import dicom_series_folder

        return str(dicom_series_folder(exportFolder, paNode.GetName())) if exportFolder and paNode else None

    def previewBoneSuppression(self, paNode, latNode, weights: str | None = None, device: str = "auto",
                               steps: int | None = None, seed: int = 0, show: bool = True) -> tuple[Any, Any]:
        """Bone-suppressed PA and lateral radiographs (``dctnet reconstruct --images-only``: the diffusion model
        alone), in the parameter node's preview nodes (created the first time)."""
        from DCTNetSlicerLib import reconstruction

        p = self.getParameterNode()
        made, _ = reconstruction.reconstruct(paNode, latNode, self.options(weights, device, steps, seed),
                                             existing=self._outputs(p), images_only=True, on_notes=self._keepNotes)
        self._storeOutputs(p, made)
        if show:
            reconstruction.show_radiographs(paNode, latNode, made)
        return made["pa_bs"], made["lat_bs"]

    def reconstruct(self, paNode, latNode, weights: str | None = None, device: str = "auto",
                    steps: int | None = None, seed: int = 0, progress: Callable[[float, str], None] | None = None,
                    show: bool = True, dicomFolder: str | None = None, refine: bool = False,
                    fusion: str = "mean", atlas: bool = False, register: bool = True,
                    mixAtlases: bool = True) -> dict[str, Any]:
        """Reconstruct the CT from two radiograph nodes; returns when ``dctnet reconstruct`` has finished (Slicer's
        window stays alive meanwhile: a local event loop runs, no sleep).

        The first call starts a worker process that keeps the model loaded, so later calls cost only the
        reconstruction. The output nodes of the parameter node are reused, role by role.

        Args:
            paNode, latNode: single-slice radiograph volumes (any size; scalar or RGB).
            weights: model file. Defaults to the shipped weights.
            device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
            steps: DDIM steps of the bone suppression. Defaults to the model's.
            seed: sampling seed.
            progress: ``callback(fraction, message)``.
            show: switch to the results layout.
            dicomFolder: also write the CT as a DICOM series (``dctnet reconstruct --dicom``) into a new
                sub-folder of this folder, under the PA film's patient and study when the PA is a DICOM film;
                :attr:`lastDicomFolder` then names it.
            refine: refine the CT until its DRRs agree with the radiographs (``dctnet reconstruct --refine``;
                for radiographs made from a CT: on real films it imprints the film's borders and display curve).
            fusion: ``"mean"`` (the default: the CT is the mean of G(Y) and G(X)) or ``"raw"`` (G(Y) alone,
                ``dctnet reconstruct --fusion raw``).
            atlas: with ``refine``, also mix in the shipped chest atlases registered to the radiographs
                (``dctnet reconstruct --refine --atlas``; about 35 s more on a CPU).
            register: the default registration of the CT to the radiographs (robust to films, bone kept rigid;
                about 2 s on a CPU); False gives the generators' CT (``dctnet reconstruct --no-registration``).
            mixAtlases: after that registration, the default atlas prior (seven real chest CTs registered to the
                radiographs the same robust way, the median of the best five mixed in where it agrees with the CT;
                about 7 s on a CPU); False keeps the registration alone (``dctnet reconstruct --no-atlas``).

        Returns:
            Nodes by role: those the module shows (``DCTNetSlicerLib.results.OUTPUT_PARAMETERS``, from the table
            ``DCTNetLib.output_roles``: ``ct`` is the mean of G(Y) and G(X) in HU) and, for radiographs made from a
            CT, ``difference`` (reconstruction − reference); :attr:`lastMetrics` then holds ``psnr``, ``ssim`` and
            ``mae_hu`` against that CT, :attr:`lastWarnings` what the command warned about.
        """
        from DCTNetSlicerLib import reconstruction

        p = self.getParameterNode()
        series = self._dicomSeriesFolder(dicomFolder, paNode)
        self.lastDicomFolder = None
        volumes, self.lastMetrics = reconstruction.reconstruct(
            paNode, latNode, self.options(weights, device, steps, seed, series, refine, fusion, atlas, register,
                                                mixAtlases),
            existing=self._outputs(p), progress=progress, on_notes=self._keepNotes)
        self.lastDicomFolder = series
        self._storeOutputs(p, volumes)
        if show:
            reconstruction.show_results(volumes, paNode, latNode)
        return volumes

    @staticmethod
    def _outputs(p) -> dict[str, Any]:
        """The parameter node's output nodes by role (fields: ``DCTNetSlicerLib.results.OUTPUT_PARAMETERS``)."""
        from DCTNetSlicerLib.results import OUTPUT_PARAMETERS

        return {role: getattr(p, name) for role, name in OUTPUT_PARAMETERS.items()}

    @staticmethod
    def _storeOutputs(p, made: dict[str, Any]) -> None:
        """Keep the nodes of a run in the parameter node, each in its role's field."""
        from DCTNetSlicerLib.results import OUTPUT_PARAMETERS

        for role, node in made.items():
            if role in OUTPUT_PARAMETERS:
                setattr(p, OUTPUT_PARAMETERS[role], node)

    def shutdown(self) -> None:
        """End the worker process that keeps the model loaded (module cleanup; the next run starts a new one)."""
        from DCTNetSlicerLib import reconstruction

        reconstruction.shutdown_workers()

    # -- background (widget) -----------------------------------------------------------------------------------
    def previewInBackground(self, parameterNode, onProgress=None, onFinished=None, onLog=None):
        """Start the bone-suppression preview (``--images-only``) of the parameter node's radiographs."""
        return self._startRun(parameterNode, True, onProgress, onFinished, onLog)

    def reconstructInBackground(self, parameterNode, onProgress=None, onFinished=None, onLog=None):
        """Start the reconstruction of the parameter node's radiographs on the worker process.

        Returns:
            The running ``DCTNetSlicerLib.tasks.SlicerTask`` (``cancel()`` kills it; closing the scene too). When it
            succeeds, the output nodes are created or updated and stored in the parameter node before
            ``onFinished`` is called.
        """
        return self._startRun(parameterNode, False, onProgress, onFinished, onLog)

    def _startRun(self, p, imagesOnly: bool, onProgress, onFinished, onLog=None):
        from DCTNetSlicerLib import reconstruction

        series = None if imagesOnly else self._dicomSeriesFolder(p.dicomFolder, p.paVolume)

        def finished(success: bool, message: str, made: dict[str, Any], metrics: dict[str, float]) -> None:
            if success:
                self._storeOutputs(p, made)
                if not imagesOnly:
                    self.lastMetrics, self.lastDicomFolder = metrics, series
            if onFinished:
                onFinished(success, message)

        if not imagesOnly:
            self.lastDicomFolder = None
        options = self.options(p.weightsPath, p.device, p.samplingSteps, p.seed, series, p.refineToRadiographs,
                               atlas=p.refineToRadiographs and p.atlasPrior, register=p.registerToRadiographs,
                               mixAtlases=p.mixAtlases)
        return reconstruction.reconstruct_in_background(p.paVolume, p.latVolume, options, existing=self._outputs(p),
                                                        on_progress=onProgress, on_finished=finished,
                                                        images_only=imagesOnly, on_notes=self._keepNotes,
                                                        on_log=onLog)

    def _keepNotes(self, notes: list[str], warnings: list[str] = ()) -> None:
        self.lastNotes, self.lastWarnings = list(notes), list(warnings)

    # -- results ---------------------------------------------------------------------------------------------
    def metricsText(self) -> str:
        """PSNR / SSIM / MAE of the last reconstruction against its reference CT, and the notes of the last run
        (e.g. that the shipped model is a demonstration model trained on DRRs); "" when there is neither."""
        from DCTNetSlicerLib import results

        lines = [results.format_metrics(self.lastMetrics)] if self.lastMetrics else []
        lines += [_("Note: {note}").format(note=note) for note in self.lastNotes]
        lines += [_("Warning: {warning}").format(warning=warning) for warning in self.lastWarnings]
        return "\n".join(lines)

    def applyWindowPreset(self, p) -> None:
        """Put the parameter node's window/level preset on its CT outputs."""
        from DCTNetSlicerLib import nodes, results

        outputs = self._outputs(p)
        for node in (outputs[role] for role in results.CT_ROLES):
            if node is not None and p.windowPreset in nodes.WINDOW_LEVEL_PRESETS:
                nodes.set_window_level(node, p.windowPreset)

    def showResults(self, p, showUncertainty: bool = False, volumeRendering: bool = False) -> None:
        """Switch to the results layout with the parameter node's outputs (the radiographs only, before).

        Args:
            p: the parameter node.
            showUncertainty: overlay the uncertainty map on the CT views, with its colour legend (title and HU).
            volumeRendering: show the CT in the 3D view with the volume-rendering preset
                (``DCTNetSlicerLib.display.VOLUME_RENDERING_PRESET``); False hides it.
        """
        from DCTNetSlicerLib import reconstruction

        if p.ctVolume is None:
            reconstruction.show_radiographs(p.paVolume, p.latVolume, self._outputs(p))
            return
        self.applyWindowPreset(p)
        reconstruction.show_results(self._outputs(p), p.paVolume, p.latVolume, showUncertainty,
                                    volume_rendering=volumeRendering)

    def showVolumeRendering(self, ctNode, show: bool = True, preset: str | None = None):
        """Show a CT node in the 3D view with a volume-rendering preset (default
        ``DCTNetSlicerLib.display.VOLUME_RENDERING_PRESET``, any name of Slicer's Volume Rendering presets), or
        hide it; returns its volume-rendering display node (None when hidden)."""
        from DCTNetSlicerLib import display

        return display.show_volume_rendering(ctNode, show, preset or display.VOLUME_RENDERING_PRESET)


class DCTNetReconstructionTest(ScriptedLoadableModuleTest):
    """End to end inside Slicer, in two parts.

    1. Without the model (:meth:`test_radiographs_and_views`): radiograph files and an RGB image → nodes in the
       right planes, the files the reconstruction command would read, the results layout. Needs no torch, so it
       runs on Slicer's build machines, which have none.
    2. With the model (:meth:`test_reconstruct_from_ct_chest`): SampleData CTChest → DRRs → ``dctnet reconstruct``
       → nodes, geometry, window/level, linked views. Skipped with a message when torch is not installed. Uses
       the shipped weights, or the model file named by the ``DCTNET_TEST_WEIGHTS`` environment variable.
    """

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_radiographs_and_views()
        self.setUp()
        self.test_reconstruct_from_ct_chest()

    def test_radiographs_and_views(self) -> None:
        import tempfile
        from pathlib import Path

        import numpy as np
        import SimpleITK as sitk

        from DCTNetLib.io.geometry import volume_centre_ras
        from DCTNetLib.io.radiograph import read_radiograph
        from DCTNetSlicerLib import layout, nodes, reconstruction

        logic = DCTNetReconstructionLogic()
        rng = np.random.default_rng(0)
        grey = rng.random((96, 80)).astype(np.float32)
        rgb = rng.integers(0, 256, size=(1, 64, 72, 3), dtype=np.uint8)
        with tempfile.TemporaryDirectory() as folder:
            self.delayDisplay("Loading a radiograph file")
            path = os.path.join(folder, "chest.tif")
            sitk.WriteImage(sitk.GetImageFromArray(grey), path)
            paNode = logic.loadRadiograph(path, "PA")
            self.assertEqual(slicer.util.arrayFromVolume(paNode).shape, (1, 96, 80))
            np.testing.assert_allclose(slicer.util.arrayFromVolume(paNode)[0], (grey - grey.min()) / np.ptp(grey),
                                       atol=1e-6)
            ijkToRas = nodes.node_ijk_to_ras(paNode)
            self.assertAlmostEqual(float(ijkToRas[1, 0]), 0.0)  # rows and columns span R-L and S-I: coronal
            self.assertAlmostEqual(float(ijkToRas[1, 1]), 0.0)
            np.testing.assert_allclose(volume_centre_ras((1, 96, 80), ijkToRas), (0.0, 0.0, 0.0), atol=1e-6)

            self.delayDisplay("An RGB image, as Add Data loads a colour PNG")
            latNode = slicer.util.addVolumeFromArray(rgb, name="lateral RGB", nodeClassName="vtkMRMLVectorVolumeNode")
            parameters = logic.getParameterNode()
            parameters.paVolume, parameters.latVolume = paNode, latNode  # a vector volume is a valid input
            self.assertIs(parameters.latVolume, latNode)
            exported = reconstruction.export_radiograph(latNode, Path(folder) / "lat")
            np.testing.assert_allclose(read_radiograph(exported), nodes.node_to_radiograph(latNode), atol=1e-6)

        self.delayDisplay("The results layout before a reconstruction")
        logic.showResults(parameters)
        views = layout.AppViews()
        self.assertEqual(views.layout_node().GetViewArrangement(), layout.LAYOUT_ID)
        for role, tag in layout.RADIOGRAPH_ROLES.items():
            composite = views.slice_logic(tag).GetSliceCompositeNode()
            self.assertFalse(composite.GetLinkedControl())
            expected = {"pa": paNode, "lat": latNode}.get(role)
            self.assertEqual(composite.GetBackgroundVolumeID(), expected.GetID() if expected else None)
        self.delayDisplay("Radiographs and views: passed")

    def test_reconstruct_from_ct_chest(self) -> None:
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            message = ("Skipped the reconstruction test: PyTorch is not installed in this Slicer (install the "
                       "PyTorch extension and press Make radiographs from CT once). The test without the model "
                       "passed.")
            logging.warning(message)
            self.delayDisplay(message)
            return
        import numpy as np
        import SampleData

        from DCTNetLib.conventions import HU_MAX, HU_MIN, VOXEL_SPACING_MM
        from DCTNetLib.io.geometry import volume_centre_ras
        from DCTNetSlicerLib import layout, nodes

        self.delayDisplay("Loading CTChest")
        ctNode = SampleData.downloadSample("CTChest")
        logic = DCTNetReconstructionLogic()

        self.delayDisplay("Making radiographs")
        paNode, latNode = logic.radiographsFromCT(ctNode)
        for node in (paNode, latNode):
            image = slicer.util.arrayFromVolume(node)
            self.assertEqual(image.shape, (1, 128, 128))
            self.assertGreaterEqual(float(image.min()), 0.0)
            self.assertLessEqual(float(image.max()), 1.0)
            self.assertGreater(float(image.std()), 0.05)  # a real projection, not a blank image
        reference = paNode.GetNodeReference(nodes.REFERENCE_ROLE)
        bounds = [0.0] * 6
        ctNode.GetRASBounds(bounds)
        ctCentre = np.asarray(bounds).reshape(3, 2).mean(axis=1)
        referenceCentre = volume_centre_ras(slicer.util.arrayFromVolume(reference).shape,
                                            nodes.node_ijk_to_ras(reference))
        np.testing.assert_allclose(referenceCentre, ctCentre, atol=VOXEL_SPACING_MM)

        self.delayDisplay("Reconstructing (dctnet reconstruct in a child process)")
        volumes = logic.reconstruct(paNode, latNode, weights=os.environ.get("DCTNET_TEST_WEIGHTS") or None,
                                    device="cpu", steps=2)
        ct = volumes["ct"]
        hu = slicer.util.arrayFromVolume(ct)
        self.assertEqual(hu.shape, (128, 128, 128))
        np.testing.assert_allclose(ct.GetSpacing(), (VOXEL_SPACING_MM,) * 3, rtol=1e-6)
        np.testing.assert_allclose(nodes.node_ijk_to_ras(ct), nodes.node_ijk_to_ras(reference), atol=1e-4)
        self.assertGreaterEqual(float(hu.min()), HU_MIN - 1e-3)
        self.assertLessEqual(float(hu.max()), HU_MAX + 1e-3)
        display = ct.GetDisplayNode()
        self.assertEqual((display.GetWindow(), display.GetLevel()), nodes.WINDOW_LEVEL_PRESETS["CT_LUNG"])
        self.assertIn("difference", volumes)
        self.assertTrue(np.isfinite(logic.lastMetrics["psnr"]))

        self.delayDisplay("Checking the views")
        views = layout.AppViews()
        self.assertEqual(views.layout_node().GetViewArrangement(), layout.LAYOUT_ID)
        for tag in layout.CT_VIEWS:
            composite = views.slice_logic(tag).GetSliceCompositeNode()
            self.assertEqual(composite.GetBackgroundVolumeID(), ct.GetID())
            self.assertTrue(composite.GetLinkedControl())
        for role, tag in layout.RADIOGRAPH_ROLES.items():
            composite = views.slice_logic(tag).GetSliceCompositeNode()
            self.assertFalse(composite.GetLinkedControl())
            expected = {"pa": paNode, "lat": latNode}.get(role) or volumes[role]
            self.assertEqual(composite.GetBackgroundVolumeID(), expected.GetID())
        self.delayDisplay("Test passed")
