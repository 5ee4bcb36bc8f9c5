"""TTT Interpolation: new time frames of a 4D sequence (fitted motion, or UVI-Net + TTT).

The thin Slicer layer: the module's description and its widget's wiring, nothing else
(Testing/test_module_ui.py keeps it so). The parameter node, logic class, self-test, sample
data and texts live in ``TTTInterpolationSlicerLib`` (imported here, where Slicer looks for
them by name), with the MRML helpers, the engine process and the dependencies; the engine,
``TTTInterpolationLib``, runs in a child process only: torch never enters Slicer's process.

This file must load under Python 3.9 (Slicer 5.8) far enough to say that the module needs a
newer Slicer (``dependencies.version_problem``): no 3.10-only syntax here.
"""

from __future__ import annotations

import logging
import pathlib

import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

import TTTInterpolationSlicerLib
from TTTInterpolationSlicerLib import dependencies, logic, module_logic, panel, sequences, worker
from TTTInterpolationSlicerLib.logic import EngineRun, EvaluationProtocol, EvaluationResult, Mode
from TTTInterpolationSlicerLib.module_logic import TTTInterpolationLogic, loadProblem
from TTTInterpolationSlicerLib.parameters import TTTInterpolationParameterNode
from TTTInterpolationSlicerLib.self_test import TTTInterpolationTest
from TTTInterpolationSlicerLib.worker import Device, JobState, Model

# Slicer finds the module's logic, parameter node and self-test by these names here.
__all__ = ["TTTInterpolation", "TTTInterpolationLogic", "TTTInterpolationParameterNode",
           "TTTInterpolationTest", "TTTInterpolationWidget"]


class TTTInterpolation(ScriptedLoadableModule):
    def __init__(self, parent) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "TTT Interpolation"
        self.parent.categories = ["Sequences"]
        self.parent.dependencies = ["Sequences"]
        self.parent.contributors = ["TTTInterpolation contributors"]
        self.parent.helpText = panel.HELP_TEXT
        self.parent.acknowledgementText = panel.ACKNOWLEDGEMENT_TEXT
        problem = loadProblem()
        if problem:  # said once at load, shown in the panel, and no sample data to offer
            logging.error(problem)
            self.parent.helpText = panel.help_text(problem)
            return
        worker.add_engine_to_path(pathlib.Path(__file__).resolve().parent.parent)
        slicer.app.connect("startupCompleted()", module_logic.registerSampleData)


class TTTInterpolationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    CLOCK_MS = 1000  # elapsed/remaining time and the engine log refresh this often

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: TTTInterpolationLogic | None = None
        self._parameterNode: TTTInterpolationParameterNode | None = None
        self._parameterNodeGuiTag = None
        self._inputID: str | None = None
        self._devices: list[Device] = [Device.AUTO, Device.CPU]
        self._evaluation: EvaluationResult | None = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        problem = loadProblem()
        if problem:
            label = qt.QLabel(problem)
            label.wordWrap = True
            self.layout.addWidget(label)
            self.layout.addStretch(1)
            return
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/TTTInterpolation.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = TTTInterpolationLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.frameAFromBrowserButton.connect("clicked()",
                                                lambda: self.takeBrowserFrame("frameA"))
        self.ui.frameBFromBrowserButton.connect("clicked()",
                                                lambda: self.takeBrowserFrame("frameB"))
        self.ui.metricsTableWidget.connect("cellClicked(int,int)", self.onMetricsRowClicked)
        self.ui.metricsTableWidget.setColumnCount(len(logic.EVALUATION_COLUMNS))
        self.ui.metricsTableWidget.setHorizontalHeaderLabels(list(logic.EVALUATION_COLUMNS))
        self._deviceWatch = module_logic.DeviceWatch(self.onDevicesFound)
        self._clock = qt.QTimer()
        self._clock.setInterval(self.CLOCK_MS)
        self._clock.connect("timeout()", self.showRunState)
        self.startDeviceProbe()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self.logic is None:  # the panel only showed the version message
            return
        self.logic.cancel()
        self._deviceWatch.cancel()
        self._clock.stop()
        self.removeObservers()

    def onReload(self) -> None:
        """Reload re-imports only this file: re-import the helpers first."""
        TTTInterpolationSlicerLib.reload()
        super().onReload()

    def enter(self) -> None:
        if self.logic is not None:
            self.initializeParameterNode()

    def exit(self) -> None:
        if self.logic is not None:
            self.logic.restoreLayout()  # the layout from before an evaluation's 1 x 3 views
            self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.logic.cancel()
        self.setParameterNode(None)
        self._evaluation = None
        self.ui.metricsTableWidget.setRowCount(0)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def startDeviceProbe(self) -> None:
        """Find the GPUs in a short child process (torch stays out of Slicer's process)."""
        self.ui.deviceInfoLabel.text = "Looking for a GPU..."
        self._deviceWatch.start()

    def onDevicesFound(self, info: dependencies.DeviceInfo) -> None:
        self._devices = info.devices
        self.ui.deviceInfoLabel.text = info.describe()
        self._disableMissingDevices()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputSequence:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSequenceNode")
            if first:
                self._parameterNode.inputSequence = first

    def setParameterNode(self, parameterNode: TTTInterpolationParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self._disableMissingDevices()
            # Frames saved with the scene stay; only a later change of input resets them.
            self._inputID = (parameterNode.inputSequence.GetID()
                             if parameterNode.inputSequence else None)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
            self.updateGUI()

    def _disableMissingDevices(self) -> None:
        """Grey out the GPUs torch does not see (the connector fills the items in enum order)."""
        model = self.ui.deviceComboBox.model()
        for index, device in enumerate(Device):
            item = model.item(index)
            if item is not None:
                item.setEnabled(device in self._devices)

    def updateGUI(self, caller=None, event=None) -> None:
        """What the parameters imply for the GUI: visible rows, ranges, Apply and info text."""
        p = self._parameterNode
        if p is None:
            return
        running = self.logic.running
        evaluate = p.mode is Mode.EVALUATE
        self.ui.betweenFramesWidget.visible = p.mode is Mode.BETWEEN or (
            evaluate and p.evaluationProtocol is EvaluationProtocol.BETWEEN)
        self.ui.numberOfFramesLabel.visible = p.mode is Mode.BETWEEN
        self.ui.numberOfFramesSpinBox.visible = p.mode is Mode.BETWEEN
        self.ui.upsampleWidget.visible = p.mode is Mode.UPSAMPLE
        self.ui.evaluationCollapsibleButton.visible = evaluate
        self.ui.outputsCollapsibleButton.visible = not evaluate
        self.ui.methodComboBox.enabled = not evaluate  # an evaluation compares every method
        self.ui.trainingCollapsibleButton.enabled = evaluate or panel.adapts(p.method)
        self.ui.weightsPathLineEdit.enabled = p.model is Model.CUSTOM
        self.ui.modelInfoLabel.text = logic.model_note(p.model, p.weightsFile)  # the licence
        count = p.inputSequence.GetNumberOfDataNodes() if p.inputSequence else 0
        if count:
            for spinBox in (self.ui.frameASpinBox, self.ui.frameBSpinBox):
                spinBox.minimum, spinBox.maximum = 1, count
        inputID = p.inputSequence.GetID() if p.inputSequence else None
        if inputID != self._inputID:  # a new input: offer its first and last frame
            self._inputID = inputID
            if count >= 2:
                p.frameA, p.frameB = 1, count
        text, ready = panel.input_info(p.inputSequence, p.mode, panel.frame_item(p.frameA),
                                       panel.frame_item(p.frameB), p.evaluationProtocol)
        self.ui.inputInfoLabel.text = text
        self.ui.applyButton.text = "Cancel" if running else ("Evaluate" if evaluate else "Apply")
        self.ui.applyButton.enabled = running or ready
        self.ui.applyButton.toolTip = ("Stop the engine; the scene stays as it was" if running
                                       else "Run the engine in a background process")

    def takeBrowserFrame(self, parameter: str) -> None:
        p = self._parameterNode
        if not p or not p.inputSequence:
            return
        item = sequences.current_item(slicer.modules.sequences.logic(), p.inputSequence)
        if item is None:
            self.ui.statusLabel.text = "The input sequence has no browser to take the frame from."
            return
        setattr(p, parameter, item + 1)  # the browser's frame number

    def onApplyButton(self) -> None:
        if self.logic.running:
            self.logic.cancel()
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("The engine could not start.", waitCursor=True):
            hadTorch = dependencies.torch_problem() is None
            dependencies.ensure_all()
            if not hadTorch:  # torch arrived just now: look for the GPUs again
                self.startDeviceProbe()
            kind, args, options = panel.run_request(p)
            start = self.logic.evaluateAsync if kind == "evaluate" else self.logic.interpolateAsync
            start(p.inputSequence, *args, onProgress=self.onProgress, onFinished=self.onFinished,
                  **options)
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = "Running..."
            self._clock.start()
        self.updateGUI()

    def onProgress(self, fraction: float, text: str) -> None:
        self.ui.progressBar.value = round(100 * fraction)
        self.ui.progressBar.format = f"{text} (%p%)"
        self.showRunState()

    def showRunState(self) -> None:
        """Status line with elapsed and remaining time, and the engine log, of the current run."""
        run = self.logic.lastRun
        if run is None:
            return
        if run.running:
            self.ui.statusLabel.text = (f"{run.statusText}\n"
                                        f"{logic.describe_timing(run.elapsed, run.remaining)}")
        log = run.log
        if log != self.ui.engineLogTextEdit.plainText:
            # Follow the end only when the reader was at the end: someone reading further up
            # keeps their place while the log grows.
            scrollBar = self.ui.engineLogTextEdit.verticalScrollBar()
            atEnd, position = scrollBar.value >= scrollBar.maximum, scrollBar.value
            self.ui.engineLogTextEdit.setPlainText(log)
            scrollBar.setValue(scrollBar.maximum if atEnd else position)

    def onFinished(self, run: EngineRun) -> None:
        self._clock.stop()
        self.showRunState()
        self.updateGUI()
        self.ui.progressBar.format = "%p%"
        self.ui.statusLabel.text = panel.finished_status(run)
        if run.state is JobState.SUCCEEDED and isinstance(run.result, EvaluationResult):
            self.showEvaluation(run.result)
        elif run.state is JobState.CANCELLED:
            self.ui.progressBar.value = 0
        elif run.state is JobState.FAILED:
            # Only pass details that exist: the message box does not take None for them.
            log = getattr(run.error, "log", "") or run.log
            details = {"detailedText": log} if log else {}
            slicer.util.errorDisplay(f"The engine failed: {run.error}", **details)

    def showEvaluation(self, result: EvaluationResult) -> None:
        """The metrics table; clicking a row shows that setting next to the truth."""
        self._evaluation = result
        table = self.ui.metricsTableWidget
        rows = result.table()
        table.setRowCount(len(rows))
        for row, cells in enumerate(rows):
            for column, text in enumerate(cells):
                item = qt.QTableWidgetItem(text)
                item.setFlags(qt.Qt.ItemIsSelectable | qt.Qt.ItemIsEnabled)
                table.setItem(row, column, item)
        table.resizeColumnsToContents()
        best = result.settings.index(result.best())
        table.selectRow(best)
        self.ui.evaluationInfoLabel.text = panel.evaluation_caption(result.best().label)

    def onMetricsRowClicked(self, row: int, column: int) -> None:
        if self._evaluation is not None and 0 <= row < len(self._evaluation.settings):
            setting = self._evaluation.settings[row]
            self._evaluation.show(setting)
            self.ui.evaluationInfoLabel.text = panel.evaluation_caption(setting.label, True)
