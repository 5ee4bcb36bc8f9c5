"""The module's logic class: the console API (``logic.interpolate``, ``logic.evaluate`` and
their async forms) and what the panel calls. The work is in :mod:`.logic`; this class adds
Slicer's scene, the dependency check, a Qt timer that polls runs, and presenting results.
Also the "TTT phantom" sample data source. Needs Slicer (Qt); checked statically by
Testing/test_module_ui.py and Testing/test_slicer_packaging.py.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import qt
import slicer
from slicer import vtkMRMLSequenceNode
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from . import dependencies, logic, worker
from .logic import EngineRun, EvaluationResult
from .parameters import TTTInterpolationParameterNode


def loadProblem() -> str | None:
    """Why this Slicer cannot run the module (too old), or ``None``."""
    return dependencies.version_problem(
        tuple(sys.version_info[:2]), (slicer.app.majorVersion, slicer.app.minorVersion))


def registerSampleData() -> None:
    """"TTT phantom" in Sample Data: generated on the spot, nothing to download.

    SampleData's source runs ``len(uris)`` and ``len(fileNames)`` on what it is given, so
    empty lists, not the default ``None`` (a TypeError at every start).
    """
    import SampleData

    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="TTT Interpolation",
        sampleName="TTT phantom",
        uris=[],
        fileNames=[],
        thumbnailFileName=str(Path(__file__).resolve().parents[1] / "Resources" / "Icons"
                              / "TTTInterpolation.png"),
        customDownloader=loadPhantomSample,
    )


def loadPhantomSample(source) -> vtkMRMLSequenceNode:
    """SampleData's custom downloader: build the phantom (numpy only, no engine packages)."""
    return TTTInterpolationLogic().loadPhantom()


class DeviceWatch:
    """Finds the GPUs torch sees in a short child process (torch stays out of Slicer's own
    process), polled by a Qt timer; ``onFound(info)`` gets the :class:`dependencies.DeviceInfo`.
    """

    POLL_INTERVAL_MS = 250

    def __init__(self, onFound: Callable[[dependencies.DeviceInfo], None]) -> None:
        self._onFound = onFound
        self._probe: dependencies.DeviceProbe | None = None
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._poll)

    def start(self) -> None:
        """Look (again: after torch was installed) and report once found."""
        self.cancel()
        self._probe = dependencies.DeviceProbe(worker.find_python())
        self._probe.start()
        self._timer.start()
        self._poll()

    def _poll(self) -> None:
        info = self._probe.poll() if self._probe is not None else None
        if info is not None:
            self._timer.stop()
            self._onFound(info)

    def cancel(self) -> None:
        self._timer.stop()
        if self._probe is not None:
            self._probe.cancel()


class TTTInterpolationLogic(ScriptedLoadableModuleLogic):
    """Console and GUI entry points; the work is in ``TTTInterpolationSlicerLib.logic``.

    ``interpolate`` and ``evaluate`` block (keeping the GUI painted) and return their result;
    ``interpolateAsync`` and ``evaluateAsync`` return at once and report through callbacks.
    One async run at a time; ``lastResult`` holds the nodes of the last successful run and
    ``lastRun`` the last run itself (its ``log`` is what the engine said).
    """

    POLL_INTERVAL_MS = 100

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.lastResult: logic.InterpolationResult | EvaluationResult | None = None
        self.lastRun: EngineRun | None = None
        self._run: EngineRun | None = None
        self._onFinished: Callable[[EngineRun], None] | None = None
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._poll)

    def getParameterNode(self) -> TTTInterpolationParameterNode:
        node = super().getParameterNode()
        logic.repair_saved_parameters(node)  # what an older scene saved and no longer reads
        return TTTInterpolationParameterNode(node)

    @property
    def running(self) -> bool:
        return self._run is not None and self._run.running

    def _context(self) -> dict:
        """What every run needs from Slicer: scene, sequences logic, interpreter, temp folder."""
        problem = loadProblem()
        if problem:
            raise RuntimeError(problem)
        dependencies.ensure_all()  # the console API too: asks once, before any process starts
        return dict(python=worker.find_python(), tempParent=slicer.app.temporaryPath)

    def createRun(self, sequenceNode: vtkMRMLSequenceNode, *args, **kwargs) -> EngineRun:
        """See ``TTTInterpolationSlicerLib.logic.create_run`` for the arguments."""
        return logic.create_run(slicer.mrmlScene, slicer.modules.sequences.logic(), sequenceNode,
                                *args, **self._context(), **kwargs)

    def createEvaluation(self, sequenceNode: vtkMRMLSequenceNode, *args, **kwargs) -> EngineRun:
        """See ``TTTInterpolationSlicerLib.logic.create_evaluation`` for the arguments."""
        return logic.create_evaluation(slicer.mrmlScene, slicer.modules.sequences.logic(),
                                       sequenceNode, *args, **self._context(), **kwargs)

    def _runToEnd(self, run: EngineRun):
        self.lastRun = run
        self.lastResult = logic.run_to_end(run, processEvents=slicer.app.processEvents)
        self._present(self.lastResult)
        return self.lastResult

    def _present(self, result) -> None:
        """Show a result: its browser in the toolbar (an evaluation has already switched to
        its linked 1 x 3 layout, ``EvaluationResult.show``; the previous one comes back when
        the module is left, :meth:`restoreLayout`)."""
        self._showBrowser(result.browser)

    def restoreLayout(self) -> None:
        """The view layout from before the last evaluation's 1 x 3 layout."""
        if isinstance(self.lastResult, EvaluationResult):
            self.lastResult.restoreLayout()

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
        return self._runToEnd(run).outputSequence

    def evaluate(self, sequenceNode: vtkMRMLSequenceNode, frameA: int = 0,
                 frameB: int | None = None, **options) -> EvaluationResult:
        """Hide the frames between ``frameA`` and ``frameB`` (or with ``protocol="x2"`` /
        ``"x4"`` all but every 2nd / 4th frame), predict and score them; blocks.

        Options: ``protocol``, ``ttt`` (one task or a list; linear blending, registration and
        UVI-Net are always compared), ``scheme``, ``steps``, ``learningRate``, ``weights``,
        ``device``, ``seed``, ``onProgress``. The result has ``table()``, the truth, prediction and
        error sequences per setting, and one browser that plays them together.
        """
        return self._runToEnd(self.createEvaluation(sequenceNode, frameA, frameB, **options))

    def interpolateAsync(self, sequenceNode: vtkMRMLSequenceNode, frameA: int = 0,
                         frameB: int | None = None, numberOfFrames: int = 1, *,
                         onFinished: Callable[[EngineRun], None] | None = None,
                         **options) -> EngineRun:
        """Start an interpolation and return at once; ``onFinished(run)`` is called at the end."""
        self._checkIdle()
        return self._startAsync(
            self.createRun(sequenceNode, frameA, frameB, numberOfFrames, **options), onFinished)

    def evaluateAsync(self, sequenceNode: vtkMRMLSequenceNode, frameA: int = 0,
                      frameB: int | None = None, *,
                      onFinished: Callable[[EngineRun], None] | None = None,
                      **options) -> EngineRun:
        """Start an evaluation and return at once; ``onFinished(run)`` is called at the end."""
        self._checkIdle()
        return self._startAsync(self.createEvaluation(sequenceNode, frameA, frameB, **options),
                                onFinished)

    def _checkIdle(self) -> None:
        if self.running:
            raise RuntimeError("the engine is already running")

    def _startAsync(self, run: EngineRun,
                    onFinished: Callable[[EngineRun], None] | None) -> EngineRun:
        self._run, self._onFinished, self.lastRun = run, onFinished, run
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
            self._present(run.result)
        if run.error is not None:
            logging.error(f"TTT Interpolation failed: {run.error}\n{run.log}")
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
