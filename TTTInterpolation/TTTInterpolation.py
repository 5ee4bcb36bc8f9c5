"""TTT Interpolation: new time frames of a 4D sequence with UVI-Net and test-time training.

The thin Slicer layer: module description, parameter node, widget, logic facade and
self-test. The work lives in ``TTTInterpolationSlicerLib`` (MRML helpers, the background
engine process, dependencies) and the engine itself in ``TTTInterpolationLib``.
"""

from __future__ import annotations

import importlib
import logging
import os
import pathlib
from collections.abc import Callable
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLSequenceNode
from slicer.parameterNodeWrapper import (
    Decimals,
    SingleStep,
    WithinRange,
    parameterNodeWrapper,
)
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from TTTInterpolationSlicerLib import dependencies, logic, sequences, worker
from TTTInterpolationSlicerLib.logic import InterpolationRun, Mode
from TTTInterpolationSlicerLib.worker import Device, JobState, Method, Scheme, TTTTask

HELP_TEXT = """
Creates new time frames of a 4D sequence (cine MRI, 4D CT) between existing ones with
UVI-Net, optionally adapted to the data at hand by test-time training (TTT). Pick a sequence,
two frames and the number of frames to create (or upsample the whole sequence), then Apply.
The engine runs in a background process: Slicer stays responsive and Apply turns into Cancel.
<br><br>Python console:
<pre>
logic = slicer.util.getModuleLogic("TTTInterpolation")
out = logic.interpolate(getNode("MySequence"), frameA=0, frameB=4,
                        numberOfFrames=3, ttt="cycle", steps=20)
</pre>
See the <a href="https://github.com/TTTInterpolation/SlicerTTTInterpolation#readme">
documentation</a>.
"""

ACKNOWLEDGEMENT_TEXT = """
Interpolation network: UVI-Net (Kim et al., "Data-Efficient Unsupervised Interpolation Without
Any Intermediate Frame for 4D Medical Images", CVPR 2024). Test-time training: Zhang et al.,
"Test Time Training for 4D Medical Image Interpolation", 2025. This module re-implements both
methods; it does not contain the authors' code.
"""


#
# TTTInterpolation
#


class TTTInterpolation(ScriptedLoadableModule):
    def __init__(self, parent) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "TTT Interpolation"
        self.parent.categories = ["Sequences"]
        self.parent.dependencies = ["Sequences"]
        self.parent.contributors = ["TTTInterpolation contributors"]
        self.parent.helpText = HELP_TEXT
        self.parent.acknowledgementText = ACKNOWLEDGEMENT_TEXT
        worker.add_engine_to_path(pathlib.Path(__file__).resolve().parent.parent)
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """"TTT phantom" in Sample Data: generated on the spot, nothing to download."""
    import SampleData

    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="TTT Interpolation",
        sampleName="TTT phantom",
        thumbnailFileName=os.path.join(os.path.dirname(__file__),
                                       "Resources/Icons/TTTInterpolation.png"),
        customDownloader=lambda source: TTTInterpolationLogic().loadPhantom(),
    )


#
# TTTInterpolationParameterNode
#


@parameterNodeWrapper
class TTTInterpolationParameterNode:
    """Every setting of the module, saved with the scene; the .ui binds each by name."""

    inputSequence: vtkMRMLSequenceNode
    mode: Mode = Mode.BETWEEN
    frameA: Annotated[int, WithinRange(0, 100000)] = 0
    frameB: Annotated[int, WithinRange(0, 100000)] = 1
    numberOfFrames: Annotated[int, WithinRange(1, 99)] = 3
    upsampleFactor: Annotated[int, WithinRange(2, 16)] = 2
    ttt: TTTTask = TTTTask.NONE
    scheme: Scheme = Scheme.ONLINE
    steps: Annotated[int, WithinRange(0, 10000)] = 10
    method: Method = Method.UVINET
    # 0 shows as "task default": the engine picks the published rate of the chosen task.
    learningRate: Annotated[float, WithinRange(0.0, 0.1), Decimals(6), SingleStep(1e-5)] = 0.0
    customWeights: bool = False
    weightsFile: pathlib.Path
    device: Device = Device.AUTO
    seed: Annotated[int, WithinRange(0, 2**31 - 1)] = 0
    outputSequence: vtkMRMLSequenceNode
    createMerged: bool = False


#
# TTTInterpolationWidget
#


class TTTInterpolationWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: TTTInterpolationLogic | None = None
        self._parameterNode: TTTInterpolationParameterNode | None = None
        self._parameterNodeGuiTag = None
        self._inputID: str | None = None
        self._devices: list[Device] = [Device.AUTO, Device.CPU]

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
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
        self._devices = dependencies.available_devices()
        self.ui.deviceInfoLabel.text = dependencies.describe_devices(self._devices)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.logic.cancel()
        self.removeObservers()

    def onReload(self) -> None:
        """Reload re-imports only this file: re-import the helpers first (dependencies first)."""
        for module in (worker, sequences, dependencies, logic):
            importlib.reload(module)
        super().onReload()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.logic.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

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
            model.item(index).setEnabled(device in self._devices)

    def updateGUI(self, caller=None, event=None) -> None:
        """What the parameters imply for the GUI: visible rows, ranges, Apply and info text."""
        p = self._parameterNode
        if p is None:
            return
        running = self.logic.running
        self.ui.betweenFramesWidget.visible = p.mode is Mode.BETWEEN
        self.ui.upsampleWidget.visible = p.mode is Mode.UPSAMPLE
        self.ui.weightsPathLineEdit.enabled = p.customWeights
        count = p.inputSequence.GetNumberOfDataNodes() if p.inputSequence else 0
        if count:
            for spinBox in (self.ui.frameASpinBox, self.ui.frameBSpinBox):
                spinBox.maximum = count - 1
        inputID = p.inputSequence.GetID() if p.inputSequence else None
        if inputID != self._inputID:  # a new input: offer its first and last frame
            self._inputID = inputID
            if count >= 2:
                p.frameA, p.frameB = 0, count - 1
        between = (p.frameA, p.frameB) if p.mode is Mode.BETWEEN else None
        self.ui.inputInfoLabel.text = (sequences.describe(p.inputSequence, between)
                                       if p.inputSequence else "Select a sequence of volumes.")
        self.ui.applyButton.text = "Cancel" if running else "Apply"
        self.ui.applyButton.enabled = running or count >= 2
        self.ui.applyButton.toolTip = ("Stop the engine; the scene stays as it was" if running
                                       else "Create the new frames in a background process")

    def takeBrowserFrame(self, parameter: str) -> None:
        p = self._parameterNode
        if not p or not p.inputSequence:
            return
        item = sequences.current_item(slicer.modules.sequences.logic(), p.inputSequence)
        if item is None:
            self.ui.statusLabel.text = "The input sequence has no browser to take the frame from."
            return
        setattr(p, parameter, item)

    def onApplyButton(self) -> None:
        if self.logic.running:
            self.logic.cancel()
            return
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Interpolation could not start.", waitCursor=True):
            dependencies.ensure_all()
            self.logic.interpolateAsync(
                p.inputSequence, p.frameA, p.frameB, p.numberOfFrames,
                upsampleFactor=p.upsampleFactor if p.mode is Mode.UPSAMPLE else None,
                method=p.method, ttt=p.ttt, scheme=p.scheme, steps=p.steps,
                learningRate=p.learningRate or None,
                weights=p.weightsFile if p.customWeights else None, device=p.device,
                seed=p.seed, outputSequence=p.outputSequence, createMerged=p.createMerged,
                onProgress=self.onProgress, onFinished=self.onFinished)
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = "Running..."
        self.updateGUI()

    def onProgress(self, fraction: float, text: str) -> None:
        self.ui.progressBar.value = round(100 * fraction)
        self.ui.progressBar.format = f"{text} (%p%)"
        self.ui.statusLabel.text = text

    def onFinished(self, run: InterpolationRun) -> None:
        self.updateGUI()
        self.ui.progressBar.format = "%p%"
        if run.state is JobState.SUCCEEDED:
            result = run.result
            self.ui.statusLabel.text = (f"Created {len(run.newValues)} frames in "
                                        f"'{result.outputSequence.GetName()}'.")
        elif run.state is JobState.CANCELLED:
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = "Cancelled; nothing was changed."
        else:
            self.ui.statusLabel.text = f"Failed: {run.error}"
            slicer.util.errorDisplay(f"Interpolation failed: {run.error}",
                                     detailedText=getattr(run.error, "log", "") or None)


#
# TTTInterpolationLogic
#


class TTTInterpolationLogic(ScriptedLoadableModuleLogic):
    """Console and GUI entry points; the work is in ``TTTInterpolationSlicerLib.logic``.

    ``interpolate`` blocks (keeping the GUI painted) and returns the output sequence;
    ``interpolateAsync`` returns at once and reports through callbacks. One async run at a
    time; ``lastResult`` holds the nodes of the last successful run (merged sequence, browser).
    """

    POLL_INTERVAL_MS = 100

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.lastResult: logic.InterpolationResult | None = None
        self._run: InterpolationRun | None = None
        self._onFinished: Callable[[InterpolationRun], None] | None = None
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._poll)

    def getParameterNode(self) -> TTTInterpolationParameterNode:
        return TTTInterpolationParameterNode(super().getParameterNode())

    @property
    def running(self) -> bool:
        return self._run is not None and self._run.running

    def createRun(self, sequenceNode: vtkMRMLSequenceNode, *args, **kwargs) -> InterpolationRun:
        """See ``TTTInterpolationSlicerLib.logic.create_run`` for the arguments."""
        return logic.create_run(slicer.mrmlScene, slicer.modules.sequences.logic(), sequenceNode,
                                *args, python=worker.find_python(),
                                tempParent=slicer.app.temporaryPath, **kwargs)

    def interpolate(self, sequenceNode: vtkMRMLSequenceNode, frameA: int = 0,
                    frameB: int | None = None, numberOfFrames: int = 1,
                    **options) -> vtkMRMLSequenceNode:
        """Create ``numberOfFrames`` frames between items ``frameA`` and ``frameB``; blocks.

        Options: ``upsampleFactor``, ``method``, ``ttt``, ``scheme``, ``steps``,
        ``learningRate``, ``weights``, ``device``, ``seed``, ``outputSequence``,
        ``createMerged``, ``onProgress``. Raises ``ValueError`` for bad settings and
        ``EngineError`` when the engine fails.
        """
        run = self.createRun(sequenceNode, frameA, frameB, numberOfFrames, **options)
        self.lastResult = logic.run_to_end(run, processEvents=slicer.app.processEvents)
        self._showBrowser(self.lastResult.browser)
        return self.lastResult.outputSequence

    def interpolateAsync(self, sequenceNode: vtkMRMLSequenceNode, frameA: int = 0,
                         frameB: int | None = None, numberOfFrames: int = 1, *,
                         onFinished: Callable[[InterpolationRun], None] | None = None,
                         **options) -> InterpolationRun:
        """Start an interpolation and return at once; ``onFinished(run)`` is called at the end."""
        if self.running:
            raise RuntimeError("an interpolation is already running")
        run = self.createRun(sequenceNode, frameA, frameB, numberOfFrames, **options)
        self._run, self._onFinished = run, onFinished
        run.start()
        self._timer.start()
        self._poll()
        return run

    def cancel(self) -> None:
        if self._run is not None:
            self._run.cancel()
            self._poll()

    def _poll(self) -> None:
        run = self._run
        if run is None or run.poll():
            return
        self._timer.stop()
        self._run = None
        if run.result is not None:
            self.lastResult = run.result
            self._showBrowser(run.result.browser)
        if run.error is not None:
            logging.error(f"TTT Interpolation failed: {run.error}\n{getattr(run.error, 'log', '')}")
        if self._onFinished is not None:
            self._onFinished(run)

    @staticmethod
    def _showBrowser(browser: slicer.vtkMRMLSequenceBrowserNode) -> None:
        """Sequence toolbar on the browser, views fitted (skipped without a main window)."""
        if slicer.app.layoutManager() is None:
            return
        slicer.modules.sequences.showSequenceBrowser(browser)
        slicer.util.resetSliceViews()

    def loadPhantom(self, frames: int = 10,
                    size: tuple[int, int, int] = (64, 64, 32)) -> vtkMRMLSequenceNode:
        """Add the synthetic cardiac phantom (exact ground truth at every frame) to the scene."""
        sequence = logic.add_phantom_sequence(slicer.mrmlScene, slicer.modules.sequences.logic(),
                                              frames=frames, size=size)
        self._showBrowser(
            slicer.modules.sequences.logic().GetFirstBrowserNodeForSequenceNode(sequence))
        return sequence


#
# TTTInterpolationTest
#


class TTTInterpolationTest(ScriptedLoadableModuleTest):
    """Self-test on the synthetic phantom; how to run it: docs/slicer-module.md."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()
        dependencies.ensure_all()  # a clear message when torch or a package is missing

    def runTest(self) -> None:
        self.setUp()
        self.test_phantomInterpolation()
        self.setUp()
        self.test_engineFailureLeavesSceneUnchanged()

    def test_phantomInterpolation(self) -> None:
        """Frames between ED and ES of the phantom: count, index values, geometry, quality."""
        from TTTInterpolationLib.phantoms import end_frames

        self.delayDisplay("Creating the phantom")
        frames = 10
        phantom = TTTInterpolationLogic().loadPhantom(frames=frames, size=(64, 64, 32))
        itemA, itemB = end_frames("cardiac", frames)
        count = itemB - itemA - 1

        self.delayDisplay("Interpolating on the CPU with cycle test-time training")
        output = TTTInterpolationLogic().interpolate(
            phantom, itemA, itemB, count, ttt="cycle", steps=30, device="cpu")

        self.assertEqual(output.GetNumberOfDataNodes(), count)
        expected = [float(phantom.GetNthIndexValue(i)) for i in range(itemA + 1, itemB)]
        self.assertEqual(sequences.index_values(output), expected)
        reference = phantom.GetNthDataNode(itemA)
        for item in range(count):
            self.assertTrue(sequences.same_grid(output.GetNthDataNode(item), reference))
        scores = logic.score_against_truth(output, phantom, itemA, itemB)
        mean = sum(s.psnr for s in scores) / count
        linear = sum(s.linearPsnr for s in scores) / count
        self.delayDisplay(f"PSNR {mean:.2f} dB, linear blending {linear:.2f} dB")
        self.assertGreater(mean, linear)

    def test_engineFailureLeavesSceneUnchanged(self) -> None:
        phantom = TTTInterpolationLogic().loadPhantom(frames=4, size=(32, 32, 16))
        nodes = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(worker.EngineError):
            TTTInterpolationLogic().interpolate(phantom, 0, 1, 1, weights=__file__)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes)
