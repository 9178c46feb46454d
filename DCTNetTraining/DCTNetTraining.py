"""DCTNet Training: prepare a dataset, train the CDM and the DCT-Net GAN, evaluate, and watch it live.

Every stage is a ``dctnet`` command run in the background with Slicer's own Python
(``PythonSlicer -m DCTNetLib …``, :class:`DCTNetSlicerLib.tasks.SlicerTask`), so Slicer stays responsive for
the hours a run takes. The run's JSON-lines metrics log is tailed into a plot chart of the loss terms and a
table of evaluation results (per case and mean ± std). Stop interrupts the run (Ctrl-C: it exits leaving only
complete files) and kills its process tree if it does not exit. Console use::

    logic = slicer.util.getModuleLogic("DCTNetTraining")
    task = logic.start(logic.request(logic.getParameterNode(), "cdm"))

Requires Slicer ≥ 5.10.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Callable

import qt
import slicer
import vtk
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


def _ensure_core_importable() -> None:
    """Installed, both modules share one folder with ``DCTNetLib``; from a source checkout it is a sibling."""
    here = Path(__file__).resolve().parent
    for folder in (here, here.parent / "DCTNetReconstruction"):
        if (folder / "DCTNetLib").is_dir() and str(folder) not in sys.path:
            sys.path.append(str(folder))
            return


# The core needs Python ≥ 3.10, which Slicer ships from 5.10 on (CMakeLists.txt refuses older Slicer at build time).
if sys.version_info < (3, 10):
    raise RuntimeError(f"DCTNet needs Slicer 5.10 or newer (Python 3.10+; this Slicer has Python "
                       f"{sys.version.split()[0]})")

_ensure_core_importable()

from DCTNetLib.conventions import PAPER_DATASETS  # noqa: E402  (torch-free; importable once the path is set)

# Milliseconds between two reads of the metrics log (the trainers append a record every few steps).
METRICS_POLL_MS = 2000
DEVICES = ("auto", "cpu", "cuda")
DATASETS = tuple(PAPER_DATASETS)  # the order of datasetComboBox's items (their labels are PAPER_DATASETS')


class DCTNetTraining(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("DCTNet Training")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Tomographic Reconstruction")]
        self.parent.dependencies = []
        self.parent.contributors = ["DCTNet contributors (DCTNet project)"]  # as EXTENSION_CONTRIBUTORS
        self.parent.helpText = _(
            "Prepares LIDC-IDRI or CTSpine1K, trains the bone-suppression diffusion model and the DCT-Net "
            "reconstruction network, and evaluates it (PSNR, SSIM, LPIPS), as background processes with a live "
            "loss plot. The best model can be loaded into DCTNet Reconstruction with one click.")
        self.parent.acknowledgementText = _("DCT-Net: Zhang et al., MICCAI 2025.")


@parameterNodeWrapper
class DCTNetTrainingParameterNode:
    """The module's state, saved with the scene (folders as text, "" = not set)."""

    dataset: str = "lidc-idri"
    rawDataDir: str = ""
    preparedDataDir: str = ""
    runDir: str = ""
    preset: str = "small"
    device: str = "auto"
    epochs: Annotated[int, WithinRange(0, 100000)] = 0  # the .ui's range: keeps 0 = "preset default" reachable
    resume: bool = False


class DCTNetTrainingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._metricsTimer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DCTNetTraining.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DCTNetTrainingLogic()

        # text fields of the parameter node ↔ path edits and combo boxes (nodes and numbers use connectGui)
        self._textWidgets = {
            "rawDataDir": self.ui.rawDataPathLineEdit, "preparedDataDir": self.ui.preparedDataPathLineEdit,
            "runDir": self.ui.runDirectoryPathLineEdit,
        }
        for name, edit in self._textWidgets.items():
            edit.connect("currentPathChanged(QString)", lambda path, name=name: self._set(name, path))
        self.ui.datasetComboBox.connect("currentIndexChanged(int)", lambda i: self._set("dataset", DATASETS[i]))
        self.ui.presetComboBox.connect("currentIndexChanged(int)",
                                       lambda i: self._set("preset", self.ui.presetComboBox.itemText(i)))
        self.ui.trainingDeviceComboBox.connect("currentIndexChanged(int)", lambda i: self._set("device", DEVICES[i]))
        self.ui.prepareButton.connect("clicked(bool)", lambda: self.onStart("prepare"))
        self.ui.trainCdmButton.connect("clicked(bool)", lambda: self.onStart("cdm"))
        self.ui.trainGanButton.connect("clicked(bool)", lambda: self.onStart("gan"))
        self.ui.evaluateButton.connect("clicked(bool)", lambda: self.onStart("evaluate"))
        self.ui.stopButton.connect("clicked(bool)", self.onStop)
        self.ui.loadBestButton.connect("clicked(bool)", self.onLoadBest)

        self._metricsTimer = qt.QTimer()
        self._metricsTimer.setInterval(METRICS_POLL_MS)
        self._metricsTimer.connect("timeout()", self.onMetricsTimer)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, lambda *a: self.setParameterNode(None))
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, lambda *a: self.initializeParameterNode())
        # Slicer exits: every run of this session is asked to stop (stop file: a final checkpoint, the GPU freed)
        slicer.app.connect("aboutToQuit()", self.logic.stopAll)
        self.initializeParameterNode()
        self.reattach()

    def cleanup(self) -> None:
        """Module reload or application exit: the run is detached, said so in the log, and re-attached from its run
        folder when the module is set up again (on exit, ``aboutToQuit`` has already asked it to stop)."""
        self._metricsTimer.stop()
        slicer.app.disconnect("aboutToQuit()", self.logic.stopAll)
        self.logic.detach()
        self.removeObservers()

    def reattach(self) -> None:
        """Watch and control a run that is already training into the parameter node's run folder."""
        run = self.logic.attach(self._parameterNode)
        if run is not None:
            self.ui.trainingStatusLabel.text = _("Re-attached to the running {stage} training in {folder} (pid {pid})"
                                                 ).format(stage=run.stage, folder=run.folder, pid=run.pid)
            self._metricsTimer.start()
        self._updateGUI()

    def enter(self) -> None:
        self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUI)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUI)
            self._updateGUI()

    def _set(self, name: str, value: Any) -> None:
        if self._parameterNode:
            setattr(self._parameterNode, name, value)

    def _updateGUI(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None:
            return
        widgets = [*self._textWidgets.values(), self.ui.datasetComboBox, self.ui.presetComboBox,
                   self.ui.trainingDeviceComboBox]
        previous = [w.blockSignals(True) for w in widgets]
        try:
            for name, edit in self._textWidgets.items():
                edit.currentPath = getattr(p, name)
            self.ui.datasetComboBox.currentIndex = DATASETS.index(p.dataset) if p.dataset in DATASETS else 0
            self.ui.presetComboBox.currentIndex = max(0, self.ui.presetComboBox.findText(p.preset))
            self.ui.trainingDeviceComboBox.currentIndex = DEVICES.index(p.device) if p.device in DEVICES else 0
        finally:
            for widget, state in zip(widgets, previous):
                widget.blockSignals(state)
        busy = self.logic.running
        for button in (self.ui.prepareButton, self.ui.trainCdmButton, self.ui.trainGanButton, self.ui.evaluateButton):
            button.enabled = not busy
        self.ui.stopButton.enabled = busy

    # -- actions ---------------------------------------------------------------------------------------------
    def onStart(self, stage: str) -> None:
        from DCTNetSlicerLib import install

        try:
            install.ensure_dependencies(requester="DCTNet Training", purpose="training")
        except install.InstallError as exc:
            slicer.util.errorDisplay(exc.message)
            return
        with slicer.util.tryWithErrorDisplay(_("The run could not start."), waitCursor=True):
            self.ui.logTextEdit.clear()
            self.ui.trainingProgressBar.value = 0
            self.logic.start(self.logic.request(self._parameterNode, stage), onLog=self.ui.logTextEdit.appendPlainText,
                             onProgress=self._onProgress, onFinished=self._onFinished)
            self.ui.trainingStatusLabel.text = _("Running: {stage}").format(stage=stage)
            self._metricsTimer.start()
        self._updateGUI()

    def onStop(self) -> None:
        self.ui.trainingStatusLabel.text = self.logic.stop()

    def onLoadBest(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("No checkpoint to load."), waitCursor=True):
            path = self.logic.loadBestIntoReconstruction(self._parameterNode)
            self.ui.trainingStatusLabel.text = _("DCTNet Reconstruction now uses {path}").format(path=path)

    def onMetricsTimer(self) -> None:
        if self.logic.pollMetrics():
            self.logic.updatePlot()
            table = self.logic.updateEvaluationTable()
            if table is not None:
                self.ui.evaluationTableView.setMRMLTableNode(table)
        if not self.logic.running:
            self._metricsTimer.stop()
            if self.logic.attached is not None:  # a re-attached run has no exit callback: it ended now
                self.logic.attached = None
                self.ui.trainingStatusLabel.text = _("The run has ended")
                self._updateGUI()

    def _onProgress(self, fraction: float | None, message: str) -> None:
        if fraction is not None:
            self.ui.trainingProgressBar.value = int(round(100 * fraction))
        self.ui.trainingStatusLabel.text = message

    def _onFinished(self, success: bool, message: str) -> None:
        self.onMetricsTimer()  # the last records
        self.ui.trainingStatusLabel.text = message
        if success:
            self.ui.trainingProgressBar.value = 100
        self._updateGUI()


class DCTNetTrainingLogic(ScriptedLoadableModuleLogic):
    """Starts, watches and stops ``dctnet`` runs; usable from the Python console."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.task = None
        self.attached = None  # a run found in its run folder (DCTNetSlicerLib.training_runs.AttachedRun)
        self.request_ = None
        self.history = None
        self._tail = None
        from DCTNetSlicerLib.training_nodes import TrainingNodes

        self.nodes = TrainingNodes()

    def getParameterNode(self) -> DCTNetTrainingParameterNode:
        return DCTNetTrainingParameterNode(super().getParameterNode())

    @property
    def running(self) -> bool:
        return (self.task is not None and self.task.running) or (self.attached is not None and self.attached.running)

    def attach(self, p):
        """Find a training that is already running into ``p.runDir`` (started before a module reload, or by another
        Slicer) and watch it; returns its ``AttachedRun`` or None."""
        from DCTNetLib.training.runlog import MetricsTail, RunHistory
        from DCTNetSlicerLib.training_runs import find_running, metrics_log_path

        if self.task is not None and self.task.running or p is None:
            return None
        self.attached = find_running(p.runDir)
        if self.attached is not None:
            self.history = RunHistory()
            self._tail = MetricsTail(metrics_log_path(self.attached.folder))
        return self.attached

    def detach(self) -> None:
        """Stop watching (module reload): a training keeps running, and says where it can be found again."""
        run = self.attached or (self.task if self.task is not None and self.task.running else None)
        if run is not None:
            logging.warning("DCTNet Training: the run keeps training; open DCTNet Training with the same run folder "
                            "to watch or stop it again (or create the file STOP in its run folder)")
        self.attached = None

    def stopAll(self) -> None:
        """Application exit: ask this session's run to stop (stop file: it writes a checkpoint and frees the GPU)."""
        if self.running:
            self.stop()

    def request(self, p, stage: str):
        """A ``DCTNetSlicerLib.training_runs.RunRequest`` for ``stage`` from the parameter node."""
        from DCTNetSlicerLib.training_runs import RunRequest

        return RunRequest(stage=stage, dataset=p.dataset, raw_dir=p.rawDataDir, prepared_dir=p.preparedDataDir,
                          run_dir=p.runDir, preset=p.preset, device=p.device, epochs=p.epochs, resume=p.resume)

    def start(self, request, onLog: Callable[[str], None] | None = None, onProgress=None, onFinished=None):
        """Start ``dctnet <stage>`` in the background and begin tailing its metrics log.

        Raises:
            RuntimeError: a run is already going (stop it first).
            ValueError: the request misses a folder.
        """
        from DCTNetLib.training.runlog import MetricsTail, RunHistory
        from DCTNetSlicerLib.tasks import SlicerTask
        from DCTNetSlicerLib.training_runs import command_args, metrics_log_path, stage_dir

        from DCTNetSlicerLib.training_runs import busy_reason

        if self.running:
            raise RuntimeError("a run is already going; stop it first")
        busy = busy_reason(request)
        if busy:
            raise RuntimeError(busy)
        args = command_args(request)
        self.request_ = request
        self.history = RunHistory()
        self._tail = MetricsTail(metrics_log_path(stage_dir(request))) if request.stage != "prepare" else None
        self.task = SlicerTask(args, on_log=onLog or logging.info, on_progress=onProgress,
                               on_finished=onFinished).start()
        return self.task

    def stop(self) -> str:
        """Stop the run gracefully; returns what was done, in one line.

        Training (CDM, GAN): the stop file is written, which the trainer polls at every step on every platform; it
        stops after the current step with a checkpoint. A second Stop kills it at once. Preparation and evaluation
        are interrupted like Ctrl-C, and killed if they have not exited after a grace period.
        """
        from DCTNetSlicerLib.training_runs import STOPPABLE_STAGES, stage_dir

        from DCTNetLib.training.stop_request import request_stop

        if not self.running:
            return "Nothing is running"
        run = self.attached
        if run is not None or (self.request_ is not None and self.request_.stage in STOPPABLE_STAGES):
            target = run if run is not None else self.task
            if getattr(target, "stopped", False):
                target.cancel()
                return "Killed"
            folder = run.folder if run is not None else stage_dir(self.request_)
            request_stop(folder) if run is None else run.stop()
            if run is None:
                self.task.stopped = True
            return "Stopping after the current step (checkpoint written); press Stop again to kill it"
        self.task.stop()
        return "Interrupted"

    def pollMetrics(self) -> bool:
        """Fold new metrics-log records into :attr:`history`; True when there were any."""
        if self._tail is None:
            return False
        return self.history.update(self._tail.read_new()) > 0

    def updatePlot(self):
        """The loss curves as a plot chart (one series per loss term); put in the view layout when created."""
        return self.nodes.update_plot(self.history)

    def updateEvaluationTable(self):
        """Per-case PSNR / SSIM / LPIPS and mean ± std as a table node; None until there are results."""
        return self.nodes.update_evaluation_table(self.history)

    def loadBestIntoReconstruction(self, p) -> Path:
        """Point DCTNet Reconstruction's model file at this run's best GAN checkpoint; returns its path."""
        from DCTNetSlicerLib.training_runs import RunRequest, best_checkpoint, stage_dir

        run = stage_dir(RunRequest(stage="gan", run_dir=p.runDir))
        path = best_checkpoint(run)
        if path is None:
            raise ValueError(f"no best.pt or latest.pt in {run}")
        slicer.util.getModuleLogic("DCTNetReconstruction").getParameterNode().weightsPath = str(path)
        return path


class DCTNetTrainingTest(ScriptedLoadableModuleTest):
    """Inside Slicer: a short ``dctnet`` run in the background, then stop it (tree killed, GUI never blocked)."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_start_and_stop()

    def test_start_and_stop(self) -> None:
        import time

        from DCTNetSlicerLib.tasks import SlicerTask

        finished = []
        # `python -m timeit` running a 10-minute sleep once stands in for a long training run
        task = SlicerTask(["-n", "1", "-r", "1", "import time; time.sleep(600)"], module="timeit",
                          on_finished=lambda ok, message: finished.append((ok, message))).start()
        deadline = time.monotonic() + 30
        while task.running and time.monotonic() < deadline:
            slicer.app.processEvents()
            if task.process.elapsed_s > 1.0 and not task.stopped:
                task.stop(grace_s=1.0)
            time.sleep(0.05)
        self.assertFalse(task.running)
        self.assertEqual(finished, [(False, "Stopped")])
        self.delayDisplay("Test passed")
