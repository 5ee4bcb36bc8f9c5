"""What the module does, without Qt: plan the pairs, run the engine per pair, build the result.

An :class:`InterpolationRun` is driven by calls to :meth:`InterpolationRun.poll` (a Qt timer
in Slicer, a sleep loop in :func:`run_to_end`), so the GUI never waits on the engine. The
user's scene is touched only once, after every pair succeeded and every result was read and
checked: a failed or cancelled run leaves the scene as it was and its temporary folder gone.
"""

from __future__ import annotations

import enum
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer

from . import sequences as seq
from .worker import (
    ENGINE_PACKAGE,
    Device,
    EngineError,
    EngineJob,
    EngineOptions,
    JobState,
    Method,
    Scheme,
    TTTTask,
    engine_environment,
    find_python,
    interpolate_arguments,
)

ProgressCallback = Callable[[float, str], None]
TIME_ATOL = 1e-4  # how far the engine's index values may be from the requested times


class Mode(enum.Enum):
    """Which frames to create."""

    BETWEEN = "between"  # n new frames between two chosen frames
    UPSAMPLE = "upsample"  # k-1 new frames between every consecutive pair

    def label(self) -> str:
        return {Mode.BETWEEN: "Between two frames",
                Mode.UPSAMPLE: "Upsample the whole sequence"}[self]


@dataclass(frozen=True)
class PairTask:
    """New frames at fractions ``times`` of the way from item ``item_a`` to item ``item_b``."""

    item_a: int
    item_b: int
    times: tuple[float, ...]


def evenly_spaced(count: int) -> tuple[float, ...]:
    """``count`` fractions splitting (0, 1) into equal steps: 3 -> (0.25, 0.5, 0.75)."""
    if count < 1:
        raise ValueError(f"number of new frames must be at least 1, got {count}")
    return tuple(k / (count + 1) for k in range(1, count + 1))


def plan_between(item_count: int, frame_a: int, frame_b: int,
                 number_of_frames: int) -> list[PairTask]:
    if not 0 <= frame_a < item_count or not 0 <= frame_b < item_count:
        raise ValueError(f"frames must be between 0 and {item_count - 1}, "
                         f"got A={frame_a} and B={frame_b}")
    if frame_a >= frame_b:
        raise ValueError(f"frame A ({frame_a}) must come before frame B ({frame_b})")
    return [PairTask(frame_a, frame_b, evenly_spaced(number_of_frames))]


def plan_upsample(item_count: int, factor: int) -> list[PairTask]:
    """Every consecutive pair gets ``factor - 1`` new frames (the frame rate times ``factor``)."""
    if factor < 2:
        raise ValueError(f"upsampling factor must be at least 2, got {factor}")
    if item_count < 2:
        raise ValueError(f"upsampling needs at least 2 frames, the sequence has {item_count}")
    times = evenly_spaced(factor - 1)
    return [PairTask(i, i + 1, times) for i in range(item_count - 1)]


@dataclass
class InterpolationResult:
    """Nodes a successful run created or filled."""

    outputSequence: slicer.vtkMRMLSequenceNode
    mergedSequence: slicer.vtkMRMLSequenceNode | None
    browser: slicer.vtkMRMLSequenceBrowserNode

    @property
    def proxyVolume(self) -> slicer.vtkMRMLVolumeNode:
        return self.browser.GetProxyNode(self.browser.GetMasterSequenceNode())


class InterpolationRun:
    """One interpolation request: its checks, its engine jobs, its commit to the scene.

    Construction checks everything that can be checked without the engine (and raises
    ``ValueError``); :meth:`start` writes the first pair and launches the engine; the owner
    then calls :meth:`poll` until it returns ``False`` and reads :attr:`state`,
    :attr:`result` and :attr:`error`.
    """

    def __init__(self, scene: slicer.vtkMRMLScene,
                 sequencesLogic: slicer.vtkSlicerSequencesLogic,
                 inputSequence: slicer.vtkMRMLSequenceNode, tasks: Sequence[PairTask],
                 options: EngineOptions | None = None, *,
                 outputSequence: slicer.vtkMRMLSequenceNode | None = None,
                 createMerged: bool = False, python: str | None = None,
                 tempParent: str | Path | None = None,
                 onProgress: ProgressCallback | None = None) -> None:
        if inputSequence is None:
            raise ValueError("select an input sequence")
        if not tasks:
            raise ValueError("nothing to interpolate")
        if outputSequence is not None and outputSequence.GetID() == inputSequence.GetID():
            raise ValueError("the output sequence must differ from the input sequence")
        self.options = options or EngineOptions()
        self.options.validate()
        self.scene = scene
        self.sequencesLogic = sequencesLogic
        self.inputSequence = inputSequence
        self.tasks = list(tasks)
        self.outputSequence = outputSequence
        self.createMerged = createMerged
        self.python = python or find_python()
        self.tempParent = tempParent
        self.onProgress = onProgress

        self._values = seq.index_values(inputSequence)
        for task in self.tasks:
            a = seq.frame_volume(inputSequence, task.item_a)
            b = seq.frame_volume(inputSequence, task.item_b)
            if not seq.same_grid(a, b):
                raise ValueError(f"frames {task.item_a} and {task.item_b} lie on different "
                                 "voxel grids; resample them to one grid first")
        self.newValues = [self._value(task, t) for task in self.tasks for t in task.times]
        if createMerged:
            self._checkNoCollision()

        self.state = JobState.NOT_STARTED
        self.result: InterpolationResult | None = None
        self.error: Exception | None = None
        self.workFolder: Path | None = None
        self._taskIndex = 0
        self._job: EngineJob | None = None
        self._newFrames: list[tuple[float, slicer.vtkMRMLScalarVolumeNode]] = []

    def _value(self, task: PairTask, t: float) -> float:
        """Index value of a new frame: ``t`` of the way between the pair's index values."""
        va, vb = self._values[task.item_a], self._values[task.item_b]
        return va + t * (vb - va)

    def _checkNoCollision(self) -> None:
        """A new frame on top of an existing one would replace it in the merged sequence."""
        tolerance = self.inputSequence.GetNumericIndexValueTolerance()
        for value in self.newValues:
            clash = [v for v in self._values if abs(v - value) <= tolerance]
            if clash:
                raise ValueError(f"a new frame would fall on the existing index value "
                                 f"{clash[0]:g}; choose other frames or another number of frames, "
                                 "or do not build the merged sequence")

    @property
    def running(self) -> bool:
        return self.state is JobState.RUNNING

    def start(self) -> None:
        if self.state is not JobState.NOT_STARTED:
            raise RuntimeError(f"run already {self.state.value}")
        self.workFolder = Path(tempfile.mkdtemp(prefix="TTTInterpolation-", dir=self.tempParent))
        self.state = JobState.RUNNING
        self._guard(self._startTask)

    def _startTask(self) -> None:
        task = self.tasks[self._taskIndex]
        folder = self.workFolder / f"pair{self._taskIndex:03d}"
        folder.mkdir()
        frameA, frameB = folder / "frameA.nrrd", folder / "frameB.nrrd"
        seq.write_volume(seq.frame_volume(self.inputSequence, task.item_a), frameA)
        seq.write_volume(seq.frame_volume(self.inputSequence, task.item_b), frameB)
        command = [self.python, "-m", ENGINE_PACKAGE, *interpolate_arguments(
            frameA, frameB, task.times, folder / "interpolated.seq.nrrd", self.options)]
        self._job = EngineJob(command, env=engine_environment(), cwd=folder)
        self._job.start()
        self._report(0.0, "starting the engine")

    def poll(self) -> bool:
        """Advance the run without blocking; ``True`` while it is still running."""
        if self.state is not JobState.RUNNING:
            return False
        self._guard(self._step)
        return self.state is JobState.RUNNING

    def _step(self) -> None:
        events = self._job.poll()
        if events:
            last = events[-1]
            self._report(last.fraction, f"{last.stage}: {last.message}" if last.message
                         else last.stage)
        if self._job.state is JobState.FAILED:
            raise self._job.error()
        if self._job.state is JobState.SUCCEEDED:
            self._collect(self.tasks[self._taskIndex])
            self._taskIndex += 1
            if self._taskIndex < len(self.tasks):
                self._startTask()
            else:
                self.result = self._commit()
                self._finish(JobState.SUCCEEDED)
                self._report(1.0, "done")

    def _guard(self, action: Callable[[], None]) -> None:
        """Run ``action``; any error ends the run as failed, with everything cleaned up."""
        try:
            action()
        except Exception as error:
            if self._job is not None:
                self._job.cancel()
            self.error = error
            self._finish(JobState.FAILED)

    def cancel(self) -> None:
        """Stop the engine now; the scene stays as it was and the temporary files go."""
        if self.state is not JobState.RUNNING:
            return
        if self._job is not None:
            self._job.cancel()
        self._finish(JobState.CANCELLED)

    def _finish(self, state: JobState) -> None:
        self.state = state
        self._newFrames = []
        if self.workFolder is not None:
            shutil.rmtree(self.workFolder, ignore_errors=True)

    def _report(self, fraction: float, text: str) -> None:
        if self.onProgress is None:
            return
        count = len(self.tasks)
        overall = (self._taskIndex + fraction) / count if self._taskIndex < count else 1.0
        prefix = f"pair {self._taskIndex + 1}/{count}: " if count > 1 and overall < 1.0 else ""
        self.onProgress(min(overall, 1.0), prefix + text)

    def _collect(self, task: PairTask) -> None:
        """Read one pair's result, check it against the request, keep it off the scene."""
        path = self.workFolder / f"pair{self._taskIndex:03d}" / "interpolated.seq.nrrd"
        frames = seq.read_sequence_file(path)
        times = sorted(value for value, _ in frames)
        if len(times) != len(task.times) or not np.allclose(times, task.times, atol=TIME_ATOL):
            raise EngineError(f"the engine returned frames at {times}, expected {list(task.times)}")
        reference = seq.frame_volume(self.inputSequence, task.item_a)
        for t, volume in sorted(frames, key=lambda frame: frame[0]):
            if not seq.same_grid(volume, reference):
                raise EngineError("the engine returned frames on another voxel grid than the input")
            value = self._value(task, t)
            self._newFrames.append((value, conformed(volume, reference,
                                                     f"{self.inputSequence.GetName()} {value:g}")))

    def _commit(self) -> InterpolationResult:
        """Put the new frames into the scene: output (and merged) sequence, browser, views.

        Should a step fail half-way, the nodes it added are removed again.
        """
        before = {self.scene.GetNthNode(i).GetID() for i in range(self.scene.GetNumberOfNodes())}
        try:
            return self._addToScene()
        except Exception:
            added = [self.scene.GetNthNode(i) for i in range(self.scene.GetNumberOfNodes())]
            for node in added:
                if node.GetID() not in before:
                    self.scene.RemoveNode(node)
            raise

    def _addToScene(self) -> InterpolationResult:
        name = self.inputSequence.GetName()
        output = self.outputSequence or self.scene.AddNewNodeByClass(
            seq.SEQUENCE_CLASS, self.scene.GenerateUniqueName(f"{name} interpolated"))
        seq.fill_sequence(output, self._newFrames, like=self.inputSequence)
        merged = None
        if self.createMerged:
            originals = [(self.inputSequence.GetNthIndexValue(i),
                          self.inputSequence.GetNthDataNode(i))
                         for i in range(self.inputSequence.GetNumberOfDataNodes())]
            merged = self.scene.AddNewNodeByClass(
                seq.SEQUENCE_CLASS, self.scene.GenerateUniqueName(f"{name} merged"))
            seq.fill_sequence(merged, originals + self._newFrames, like=self.inputSequence)
        shown = merged or output
        browser = seq.browser_for(self.scene, self.sequencesLogic, shown)
        proxy = browser.GetProxyNode(shown)
        inputBrowser = self.sequencesLogic.GetFirstBrowserNodeForSequenceNode(self.inputSequence)
        seq.copy_display(inputBrowser.GetProxyNode(self.inputSequence) if inputBrowser else None,
                         proxy)
        seq.show_in_slice_views(self.scene, proxy)
        return InterpolationResult(output, merged, browser)


def conformed(volume: slicer.vtkMRMLScalarVolumeNode, reference: slicer.vtkMRMLScalarVolumeNode,
              name: str) -> slicer.vtkMRMLScalarVolumeNode:
    """``volume`` with the voxel type and exact geometry of ``reference``.

    The engine computes in float; giving new frames the input's type keeps a merged
    sequence homogeneous, and copying the matrix removes the rounding of the file header.
    """
    array = seq.array_ijk(volume)
    dtype = slicer.util.arrayFromVolume(reference).dtype
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = np.clip(np.rint(array), info.min, info.max)
    return seq.volume_from_array(array.astype(dtype), seq.ijk_to_ras(reference), name)


def run_to_end(run: InterpolationRun, interval: float = 0.1,
               processEvents: Callable[[], None] | None = None) -> InterpolationResult:
    """Start ``run`` and wait for its end; raises its error. Cancels it if interrupted."""
    run.start()
    try:
        while run.poll():
            if processEvents is not None:
                processEvents()
            time.sleep(interval)
    except BaseException:
        run.cancel()
        raise
    if run.error is not None:
        raise run.error
    if run.result is None:
        raise RuntimeError(f"interpolation {run.state.value}")
    return run.result


def create_run(scene: slicer.vtkMRMLScene, sequencesLogic: slicer.vtkSlicerSequencesLogic,
               sequenceNode: slicer.vtkMRMLSequenceNode, frameA: int = 0,
               frameB: int | None = None, numberOfFrames: int = 1, *,
               upsampleFactor: int | None = None, method: Method | str = Method.UVINET,
               ttt: TTTTask | str = TTTTask.NONE, scheme: Scheme | str = Scheme.ONLINE,
               steps: int = 10, learningRate: float | None = None,
               weights: str | Path | None = None, device: Device | str = Device.AUTO,
               seed: int = 0, outputSequence: slicer.vtkMRMLSequenceNode | None = None,
               createMerged: bool = False, python: str | None = None,
               tempParent: str | Path | None = None,
               onProgress: ProgressCallback | None = None) -> InterpolationRun:
    """An :class:`InterpolationRun` from plain arguments (the console API's one entry point).

    ``upsampleFactor`` set: every consecutive pair gets ``upsampleFactor - 1`` new frames and
    the frame arguments are ignored; otherwise ``numberOfFrames`` new frames go between items
    ``frameA`` and ``frameB`` (default: the last item). Choices accept enum members or their
    command-line names (``ttt="cycle"``).
    """
    if sequenceNode is None:
        raise ValueError("select an input sequence")
    count = sequenceNode.GetNumberOfDataNodes()
    if upsampleFactor is not None:
        tasks = plan_upsample(count, upsampleFactor)
    else:
        tasks = plan_between(count, frameA, count - 1 if frameB is None else frameB,
                             numberOfFrames)
    options = EngineOptions(method=Method(method), ttt=TTTTask(ttt), scheme=Scheme(scheme),
                            steps=steps, learning_rate=learningRate,
                            weights=Path(weights) if weights else None, device=Device(device),
                            seed=seed)
    return InterpolationRun(scene, sequencesLogic, sequenceNode, tasks, options,
                            outputSequence=outputSequence, createMerged=createMerged,
                            python=python, tempParent=tempParent, onProgress=onProgress)


def add_phantom_sequence(scene: slicer.vtkMRMLScene,
                         sequencesLogic: slicer.vtkSlicerSequencesLogic, kind: str = "cardiac",
                         frames: int = 10, size: tuple[int, int, int] = (64, 64, 32),
                         seed: int = 0, name: str = "TTT phantom") -> slicer.vtkMRMLSequenceNode:
    """The engine's synthetic 4D phantom as a sequence with a browser, shown in the views.

    It has an exact ground truth at every frame, which makes it the self-test's input and
    the "TTT phantom" sample data set (generated here, nothing is downloaded).
    """
    from TTTInterpolationLib.phantoms import make_phantom_sequence
    from TTTInterpolationLib.volume_io import ras_affine_from_geometry

    phantom = make_phantom_sequence(kind, frames, size, seed)
    sequence = seq.sequence_from_arrays(scene, phantom.frames,
                                        ras_affine_from_geometry(phantom.geometry),
                                        phantom.index_values, name, phantom.index_name,
                                        phantom.index_unit)
    browser = seq.browser_for(scene, sequencesLogic, sequence)
    seq.show_in_slice_views(scene, browser.GetProxyNode(sequence))
    return sequence


@dataclass(frozen=True)
class FrameScore:
    """PSNR of one new frame and of linear blending at the same time point."""

    indexValue: float
    psnr: float
    linearPsnr: float


def score_against_truth(output: slicer.vtkMRMLSequenceNode, truth: slicer.vtkMRMLSequenceNode,
                        itemA: int, itemB: int) -> list[FrameScore]:
    """Compare each frame of ``output`` with the frame of ``truth`` at the same index value.

    Intensities are scaled to [0, 1] by the range of the two input frames, as the published
    metrics expect; linear blending of those two frames is the baseline.
    """
    truthValues = seq.index_values(truth)
    stack = seq.frames_as_arrays(truth, [itemA, itemB])
    low, high = float(stack.frames.min()), float(stack.frames.max())
    scale = 1.0 / max(high - low, 1e-12)
    first, last = ((f.astype(np.float64) - low) * scale for f in stack.frames)
    va, vb = truthValues[itemA], truthValues[itemB]
    from TTTInterpolationLib.metrics import psnr

    scores = []
    for item, value in enumerate(seq.index_values(output)):
        match = truth.GetItemNumberFromIndexValue(output.GetNthIndexValue(item))
        if match < 0:
            raise ValueError(f"no ground-truth frame at index value {value:g}")
        expected = (seq.array_ijk(seq.frame_volume(truth, match)) - low) * scale
        predicted = (seq.array_ijk(seq.frame_volume(output, item)) - low) * scale
        t = (value - va) / (vb - va)
        linear = (1 - t) * first + t * last
        scores.append(FrameScore(value, psnr(predicted, expected), psnr(linear, expected)))
    return scores
