"""What the module does, without Qt: plan the work, run the engine for it, build the result.

Two kinds of run share one engine driver (:class:`EngineRun`): an :class:`InterpolationRun`
creates new frames (one engine process per pair of frames), an :class:`EvaluationRun` hides
the frames between two frames, has the engine score linear blending, UVI-Net and UVI-Net with
test-time training on them, and shows truth, predictions and errors side by side. A run is
driven by calls to :meth:`EngineRun.poll` (a Qt timer in Slicer, a sleep loop in
:func:`run_to_end`), so the GUI never waits on the engine. The user's scene is touched only
once, after every engine process succeeded and every result was read and checked: a failed
or cancelled run leaves the scene as it was and its temporary folder gone.

Nothing here imports torch or the engine's file readers (nibabel, pynrrd): Slicer's own
process needs only numpy and MRML; the engine's dependencies live in the child process.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import slicer

from . import sequences as seq
from .worker import (
    CONTRACT,
    DEFAULT_MODEL,
    ENGINE_PACKAGE,
    MODELS,
    Device,
    EngineError,
    EngineJob,
    EngineOptions,
    JobState,
    Method,
    Model,
    Scheme,
    TTTTask,
    engine_environment,
    engine_module,
    evaluate_arguments,
    find_python,
    sequence_arguments,
)

frame_pairs = engine_module("frame_pairs")  # the engine's one check of a pair of frames

ProgressCallback = Callable[[float, str], None]
TIME_ATOL = 1e-4  # how far the engine's index values may be from the requested times
ETA_MIN_FRACTION = 0.02  # below this much progress a time estimate is a guess: none is given


class Mode(enum.Enum):
    """What Apply does."""

    BETWEEN = "between"  # n new frames between two chosen frames
    UPSAMPLE = "upsample"  # k-1 new frames between every consecutive pair
    EVALUATE = "evaluate"  # hide frames (EvaluationProtocol), predict and score them

    def label(self) -> str:
        return {Mode.BETWEEN: "Between two frames",
                Mode.UPSAMPLE: "Upsample the whole sequence",
                Mode.EVALUATE: "Evaluate: hide frames, predict them, score"}[self]


class EvaluationProtocol(enum.Enum):
    """What an evaluation hides: the frames between A and B (``evaluate --frames A B``), or
    all but every 2nd / 4th frame of the sequence (``evaluate --protocol x2`` / ``x4``)."""

    BETWEEN = "between"
    X2 = "x2"
    X4 = "x4"

    def label(self) -> str:
        if self is EvaluationProtocol.BETWEEN:
            return "Hide the frames between A and B"
        engine = {c["value"]: c["label"] for c in CONTRACT["choices"]["protocol"]}
        return f"{engine[self.value]}, predict the rest"


def evaluation_pairs(values: Sequence[float], protocol: EvaluationProtocol | str,
                     frameA: int = 0, frameB: int = 0) -> list[tuple[int, int]]:
    """The pairs of visible items whose frames between are hidden (``values``: the index
    values): ``(frameA, frameB)``, or under ``x2`` / ``x4`` each pair of neighbouring kept
    frames (the engine's rule, ``frame_pairs.protocol_pairs``; frames after the last kept one
    are not used). Each pair gets the engine's check; ``ValueError`` says what is wrong."""
    protocol = EvaluationProtocol(protocol)
    pairs = ([(frameA, frameB)] if protocol is EvaluationProtocol.BETWEEN
             else frame_pairs.protocol_pairs(len(values), protocol.value, "the sequence"))
    for a, b in pairs:
        frame_pairs.frames_between(values, a, b)
    return pairs


@dataclass(frozen=True)
class PairTask:
    """New frames at fractions ``times`` of the way from item ``item_a`` to item ``item_b``."""

    item_a: int
    item_b: int
    times: tuple[float, ...]


def model_note(model: Model | str, weightsFile: str | Path | None = None) -> str:
    """One line for the panel about the chosen model: its weights' licence and what it was
    trained on (from the engine's registry), so nobody uses non-commercial weights unaware."""
    model = Model(model)
    if model is Model.CUSTOM:
        if weights_file(weightsFile) is not None:
            return "Your own checkpoint: its licence and intended use are yours to check."
        fallback = (f"the default model ({DEFAULT_MODEL.value}) is used" if DEFAULT_MODEL
                    is not Model.CUSTOM else "UVI-Net runs untrained (no model is registered)")
        return f"Choose a .safetensors or .pt checkpoint; until then {fallback}."
    entry = MODELS[model.value]
    licence = entry.get("license") or "licence not stated"
    return f"{model.label()}: weights {licence}. {entry['description'].rstrip('.')}."


def chosen_weights(model: Model | str, weightsFile: str | Path | None = None
                   ) -> str | Path | None:
    """What ``--weights`` gets for a model choice: a registered model's name, or with
    :attr:`Model.CUSTOM` the file (``None``, no option, while the field is empty)."""
    model = Model(model)
    return weights_file(weightsFile) if model is Model.CUSTOM else model.value


def evenly_spaced(count: int) -> tuple[float, ...]:
    """``count`` fractions splitting (0, 1) into equal steps: 3 -> (0.25, 0.5, 0.75)."""
    if count < 1:
        raise ValueError(f"number of new frames must be at least 1, got {count}")
    return tuple(k / (count + 1) for k in range(1, count + 1))


def plan_between(values: Sequence[float], frame_a: int, frame_b: int,
                 number_of_frames: int) -> list[PairTask]:
    """New frames from item ``frame_a`` to item ``frame_b`` (either order), checked as the
    engine checks a pair (``frame_pairs.check_frame_pair``; ``values``: the index values)."""
    frame_pairs.check_frame_pair(values, frame_a, frame_b)
    return [PairTask(frame_a, frame_b, evenly_spaced(number_of_frames))]


def plan_upsample(item_count: int, factor: int) -> list[PairTask]:
    """Every consecutive pair gets ``factor - 1`` new frames (the frame rate times ``factor``)."""
    if factor < 2:
        raise ValueError(f"upsampling factor must be at least 2, got {factor}")
    if item_count < 2:
        raise ValueError(f"upsampling needs at least 2 frames, the sequence has {item_count}")
    times = evenly_spaced(factor - 1)
    return [PairTask(i, i + 1, times) for i in range(item_count - 1)]


def format_duration(seconds: float) -> str:
    """``"45 s"``, ``"3 min 05 s"``, ``"1 h 02 min"``: short enough for a progress bar."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def remaining_seconds(elapsed: float, fraction: float) -> float | None:
    """Time left if the rest goes as fast as the part done so far; ``None`` while too early."""
    if fraction < ETA_MIN_FRACTION or elapsed <= 0:
        return None
    return elapsed * (1.0 - min(fraction, 1.0)) / fraction


def describe_timing(elapsed: float, remaining: float | None) -> str:
    """``"12 s elapsed, about 30 s left"`` (or ``"estimating"`` while no estimate is made)."""
    left = f"about {format_duration(remaining)} left" if remaining is not None else "estimating"
    return f"{format_duration(elapsed)} elapsed, {left}"


@dataclass
class InterpolationResult:
    """Nodes a successful run created or filled."""

    outputSequence: slicer.vtkMRMLSequenceNode
    mergedSequence: slicer.vtkMRMLSequenceNode | None
    browser: slicer.vtkMRMLSequenceBrowserNode
    folderItem: int = 0  # the subject-hierarchy folder holding the new nodes

    @property
    def proxyVolume(self) -> slicer.vtkMRMLVolumeNode:
        return self.browser.GetProxyNode(self.browser.GetMasterSequenceNode())


@dataclass
class EngineStep:
    """One engine process of a run.

    ``arguments(folder)`` writes the step's input files into its own ``folder`` and returns
    the command line after ``python -m TTTInterpolationLib``; ``collect(folder)`` reads and
    checks the step's output, keeping it off the scene. ``weight`` is its share of progress.
    """

    label: str
    arguments: Callable[[Path], list[str]]
    collect: Callable[[Path], None]
    weight: float = 1.0


class EngineRun:
    """A list of engine steps run one after the other, then one commit to the scene.

    Construction (in the subclasses) checks everything that can be checked without the
    engine and raises ``ValueError``; :meth:`start` launches the first step; the owner then
    calls :meth:`poll` until it returns ``False`` and reads :attr:`state`, :attr:`result`
    and :attr:`error`. :attr:`elapsed`, :attr:`remaining` and :attr:`log` are for the panel.
    """

    def __init__(self, scene: slicer.vtkMRMLScene,
                 sequencesLogic: slicer.vtkSlicerSequencesLogic,
                 inputSequence: slicer.vtkMRMLSequenceNode, options: EngineOptions, *,
                 python: str | None = None, tempParent: str | Path | None = None,
                 onProgress: ProgressCallback | None = None) -> None:
        if inputSequence is None:
            raise ValueError("select an input sequence")
        options.validate()
        self.options = options
        self.scene = scene
        self.sequencesLogic = sequencesLogic
        self.inputSequence = inputSequence
        self.python = python or find_python()
        self.tempParent = tempParent
        self.onProgress = onProgress
        self._values = seq.index_values(inputSequence)

        self.steps: list[EngineStep] = []
        self.state = JobState.NOT_STARTED
        self.result: Any = None
        self.error: Exception | None = None
        self.workFolder: Path | None = None
        self.fraction = 0.0
        self._stepIndex = 0
        self._job: EngineJob | None = None
        self._jobs: list[tuple[list[str], EngineJob]] = []
        self._startTime: float | None = None
        self._endTime: float | None = None
        self.statusText = ""

    def _checkSameGrid(self, items: Sequence[int]) -> None:
        first = seq.frame_volume(self.inputSequence, items[0])
        for item in items[1:]:
            if not seq.same_grid(first, seq.frame_volume(self.inputSequence, item)):
                raise ValueError(f"frames {items[0]} and {item} lie on different voxel grids; "
                                 "resample them to one grid first")

    @property
    def running(self) -> bool:
        return self.state is JobState.RUNNING

    @property
    def elapsed(self) -> float:
        """Seconds since :meth:`start` (until the end, once it ended)."""
        if self._startTime is None:
            return 0.0
        return (self._endTime or time.monotonic()) - self._startTime

    @property
    def remaining(self) -> float | None:
        """Estimated seconds left (``None`` before there is enough progress to tell)."""
        if not self.running:
            return 0.0 if self.state is JobState.SUCCEEDED else None
        return remaining_seconds(self.elapsed, self.fraction)

    @property
    def log(self) -> str:
        """What every engine process of this run said so far, each after its command line."""
        parts = []
        for command, job in self._jobs:
            parts.append("$ " + shlex.join(command))
            if job.transcript:
                parts.append(job.transcript)
            if job.returncode is not None:
                parts.append(f"(exit code {job.returncode})")
        return "\n".join(parts)

    def start(self) -> None:
        if self.state is not JobState.NOT_STARTED:
            raise RuntimeError(f"run already {self.state.value}")
        self._startTime = time.monotonic()
        self.workFolder = Path(tempfile.mkdtemp(prefix="TTTInterpolation-", dir=self.tempParent))
        self.state = JobState.RUNNING
        self._guard(self._startStep)

    def _startStep(self) -> None:
        step = self.steps[self._stepIndex]
        folder = self.workFolder / f"step{self._stepIndex:03d}"
        folder.mkdir()
        command = [self.python, "-m", ENGINE_PACKAGE, *step.arguments(folder)]
        self._job = EngineJob(command, env=engine_environment(), cwd=folder)
        self._jobs.append((command, self._job))
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
            self.steps[self._stepIndex].collect(self.workFolder / f"step{self._stepIndex:03d}")
            self._stepIndex += 1
            if self._stepIndex < len(self.steps):
                self._startStep()
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
        self._endTime = time.monotonic()
        self._discard()
        if self.workFolder is not None:
            shutil.rmtree(self.workFolder, ignore_errors=True)

    def _discard(self) -> None:
        """Drop what the steps collected (subclasses hold it)."""

    def _report(self, fraction: float, text: str) -> None:
        """Progress of the current step -> progress of the run, with the step's label."""
        total = sum(step.weight for step in self.steps)
        if self._stepIndex >= len(self.steps):
            overall = 1.0
        else:
            done = sum(step.weight for step in self.steps[:self._stepIndex])
            overall = (done + fraction * self.steps[self._stepIndex].weight) / total
        prefix = (f"{self.steps[self._stepIndex].label}: "
                  if len(self.steps) > 1 and overall < 1.0 and self._stepIndex < len(self.steps)
                  else "")
        self.fraction = min(max(overall, self.fraction), 1.0)  # never goes backwards
        self.statusText = prefix + text
        if self.onProgress is not None:
            self.onProgress(self.fraction, self.statusText)

    def _commit(self) -> Any:
        """Put the collected results into the scene; remove what it added should it fail."""
        before = {self.scene.GetNthNode(i).GetID() for i in range(self.scene.GetNumberOfNodes())}

        def added() -> list[slicer.vtkMRMLNode]:
            nodes = [self.scene.GetNthNode(i) for i in range(self.scene.GetNumberOfNodes())]
            return [node for node in nodes if node.GetID() not in before]

        try:
            result = self._addToScene()
            # Everything new in one subject-hierarchy folder (the Data module's tree).
            result.folderItem = seq.put_in_folder(
                self.scene, added(),
                self.scene.GenerateUniqueName(f"{self.inputSequence.GetName()} {self.FOLDER}"))
            return result
        except Exception:
            for node in added():
                self.scene.RemoveNode(node)
            raise

    def _addToScene(self) -> Any:
        raise NotImplementedError

    def _inputProxy(self) -> slicer.vtkMRMLVolumeNode | None:
        """The volume that shows the input now (its window/level is copied to the results)."""
        browser = self.sequencesLogic.GetFirstBrowserNodeForSequenceNode(self.inputSequence)
        return browser.GetProxyNode(self.inputSequence) if browser else None


class InterpolationRun(EngineRun):
    FOLDER = "TTT interpolation"

    """New frames from one engine process for the whole job (the sequence written once, the
    model loaded once), then output (and merged) sequences.

    ``factor`` set: the tasks are an upsampling plan (:func:`plan_upsample`) and the engine's
    ``upsample`` runs; otherwise one task, the engine's ``interpolate`` on the whole sequence.
    """

    def __init__(self, scene: slicer.vtkMRMLScene,
                 sequencesLogic: slicer.vtkSlicerSequencesLogic,
                 inputSequence: slicer.vtkMRMLSequenceNode, tasks: Sequence[PairTask],
                 options: EngineOptions | None = None, *,
                 outputSequence: slicer.vtkMRMLSequenceNode | None = None,
                 createMerged: bool = False, python: str | None = None,
                 tempParent: str | Path | None = None,
                 onProgress: ProgressCallback | None = None,
                 factor: int | None = None) -> None:
        if inputSequence is None:
            raise ValueError("select an input sequence")
        if not tasks:
            raise ValueError("nothing to interpolate")
        if outputSequence is not None and outputSequence.GetID() == inputSequence.GetID():
            raise ValueError("the output sequence must differ from the input sequence")
        super().__init__(scene, sequencesLogic, inputSequence, options or EngineOptions(),
                         python=python, tempParent=tempParent, onProgress=onProgress)
        self.tasks = list(tasks)
        self.factor = factor
        if factor is None and len(self.tasks) != 1:
            raise ValueError("one pair of frames, or an upsampling factor")
        self.outputSequence = outputSequence
        self.createMerged = createMerged
        self._checkSameGrid(list(range(inputSequence.GetNumberOfDataNodes())))
        self.newValues = [self._value(task, t) for task in self.tasks for t in task.times]
        if createMerged:
            self._checkNoCollision()
        label = f"upsampling by {factor}" if factor else "interpolating"
        self.steps = [EngineStep(label, self._arguments, self._collect)]
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

    def _arguments(self, folder: Path) -> list[str]:
        """The whole sequence to one file; the engine command for it."""
        source, output = folder / "input.seq.nrrd", folder / "interpolated.seq.nrrd"
        seq.write_sequence_file(self.inputSequence,
                                range(self.inputSequence.GetNumberOfDataNodes()), source)
        if self.factor is not None:
            return sequence_arguments(source, output, self.options, factor=self.factor)
        task = self.tasks[0]
        return sequence_arguments(source, output, self.options,
                                  frames=(task.item_a, task.item_b), times=task.times)

    def _collect(self, folder: Path) -> None:
        """The new frames of the engine's output (``upsample`` returns the input frames too:
        they are recognised by their index values and left out)."""
        reference = seq.frame_volume(self.inputSequence, 0)
        found = seq.read_sequence_file(folder / "interpolated.seq.nrrd")
        steps = np.diff(sorted(self._values))
        atol = max(TIME_ATOL, 1e-3 * float(steps.min())) if steps.size else TIME_ATOL
        new = [(v, volume) for v, volume in found
               if any(abs(v - w) <= atol for w in self.newValues)]
        values = sorted(v for v, _ in new)
        if len(new) != len(self.newValues) or not np.allclose(values, sorted(self.newValues),
                                                               atol=atol):
            raise EngineError(f"the engine returned new frames at {values}, expected "
                              f"{sorted(self.newValues)}")
        for value, volume in sorted(new, key=lambda item: item[0]):
            if not seq.same_grid(volume, reference):
                raise EngineError("the engine returned frames on another voxel grid than the "
                                  "input")
            frame = conformed(volume, reference,
                              f"{self.inputSequence.GetName()} {value:g} (synthetic)")
            seq.mark_synthetic(frame)
            self._newFrames.append((value, frame))

    def _discard(self) -> None:
        self._newFrames = []

    def _addToScene(self) -> InterpolationResult:
        name = self.inputSequence.GetName()
        output = self.outputSequence or self.scene.AddNewNodeByClass(
            seq.SEQUENCE_CLASS, self.scene.GenerateUniqueName(f"{name} interpolated"))
        seq.fill_sequence(output, self._newFrames, like=self.inputSequence)
        seq.synthetic_values(output)
        merged = None
        if self.createMerged:
            originals = [(self.inputSequence.GetNthIndexValue(i),
                          self.inputSequence.GetNthDataNode(i))
                         for i in range(self.inputSequence.GetNumberOfDataNodes())]
            merged = self.scene.AddNewNodeByClass(
                seq.SEQUENCE_CLASS, self.scene.GenerateUniqueName(f"{name} merged"))
            seq.fill_sequence(merged, originals + self._newFrames, like=self.inputSequence)
            seq.synthetic_values(merged)
        shown = merged or output
        browser = seq.browser_for(self.scene, self.sequencesLogic, shown)
        proxy = browser.GetProxyNode(shown)
        source = self._inputProxy()
        seq.copy_display(source, proxy)
        # New frames lie on the input's voxel grid: under the input's transform they are drawn
        # where the input is drawn (outside it, a registered volume's frames would be off).
        parent = source.GetParentTransformNode() if source is not None else None
        proxy.SetAndObserveTransformNodeID(parent.GetID() if parent is not None else None)
        seq.show_in_slice_views(self.scene, proxy)
        return InterpolationResult(output, merged, browser)


def read_predictions(path: Path, times: Sequence[float],
                     reference: slicer.vtkMRMLScalarVolumeNode,
                     ) -> list[tuple[float, slicer.vtkMRMLScalarVolumeNode]]:
    """The engine's ``.seq.nrrd`` as (time, volume), sorted, checked against the request."""
    frames = sorted(seq.read_sequence_file(path), key=lambda frame: frame[0])
    found = [t for t, _ in frames]
    if len(found) != len(times) or not np.allclose(found, sorted(times), atol=TIME_ATOL):
        raise EngineError(f"the engine returned frames at {found}, expected {list(times)}")
    for _, volume in frames:
        if not seq.same_grid(volume, reference):
            raise EngineError("the engine returned frames on another voxel grid than the input")
    return frames


# Columns of the evaluation table (GUI and console): the engine's metric keys, headings and
# decimals, from its contract.
EVALUATION_METRICS = tuple((c["key"], c["heading"], c["decimals"])
                           for c in CONTRACT["evaluation_columns"])
EVALUATION_COLUMNS = ("Setting", *(heading for _, heading, _ in EVALUATION_METRICS), "Seconds")


@dataclass(frozen=True)
class EvaluationSetting:
    """One row of an evaluation: how its frames are predicted."""

    label: str
    method: Method
    ttt: TTTTask = TTTTask.NONE


def evaluation_settings(tasks: Sequence[TTTTask]) -> list[EvaluationSetting]:
    """Linear blending, registration, UVI-Net, then UVI-Net + each task: the rows the engine's
    evaluate makes."""
    settings = [EvaluationSetting("linear blending", Method.LINEAR),
                EvaluationSetting("registration", Method.REGISTRATION),
                EvaluationSetting("UVI-Net", Method.UVINET)]
    for task in dict.fromkeys(tasks):
        if task is not TTTTask.NONE:
            settings.append(EvaluationSetting(f"UVI-Net + TTT {task.label().lower()}",
                                              Method.UVINET, task))
    return settings


def evaluation_tasks(ttt: TTTTask, compareAll: bool = False) -> list[TTTTask]:
    """The TTT tasks an evaluation from the panel compares: the chosen one, or all of them."""
    return [task for task in TTTTask if task is not TTTTask.NONE] if compareAll else [ttt]


@dataclass
class EvaluatedSetting:
    """Scores and sequences of one setting: predicted frames and their absolute error."""

    setting: EvaluationSetting
    scores: dict[str, Any]
    predictionSequence: slicer.vtkMRMLSequenceNode
    errorSequence: slicer.vtkMRMLSequenceNode

    @property
    def label(self) -> str:
        return self.setting.label

    def cells(self) -> list[str]:
        """The setting's row of the table: mean +- standard deviation, then seconds per case."""
        metrics = [f"{self.scores[key]:.{n}f} \u00b1 {self.scores[key + '_std']:.{n}f}"
                   for key, _, n in EVALUATION_METRICS]
        return [self.label, *metrics, f"{self.scores['seconds_per_case']:.1f}"]


@dataclass
class EvaluationResult:
    """What an evaluation added: the hidden frames, each setting's results, one browser."""

    truthSequence: slicer.vtkMRMLSequenceNode
    settings: list[EvaluatedSetting]
    browser: slicer.vtkMRMLSequenceBrowserNode
    engineReport: dict[str, Any] = field(default_factory=dict)
    tableNode: slicer.vtkMRMLTableNode | None = None  # :meth:`table` in the scene
    folderItem: int = 0  # the subject-hierarchy folder holding the new nodes
    previousLayout: int | None = None  # the view arrangement before the 1 x 3 layout

    def table(self) -> list[list[str]]:
        """Rows of :data:`EVALUATION_COLUMNS`, one per setting."""
        return [setting.cells() for setting in self.settings]

    def best(self) -> EvaluatedSetting:
        """The setting with the highest mean PSNR."""
        return max(self.settings, key=lambda s: s.scores["PSNR"])

    def show(self, setting: EvaluatedSetting | None = None) -> None:
        """Truth, ``setting``'s prediction (default: the best) and its error side by side."""
        setting = setting or self.best()
        proxies = [self.browser.GetProxyNode(sequence) for sequence in
                   (self.truthSequence, setting.predictionSequence, setting.errorSequence)]
        scene = self.truthSequence.GetScene()
        replaced = seq.use_side_by_side_layout(scene)
        if replaced is not None:
            self.previousLayout = replaced
        seq.show_side_by_side(scene, proxies)

    def restoreLayout(self) -> None:
        """The view arrangement from before :meth:`show` (unless the user changed it since)."""
        seq.restore_layout(self.truthSequence.GetScene(), self.previousLayout)
        self.previousLayout = None


def checked_row(setting: EvaluationSetting, row: dict[str, Any]) -> dict[str, Any]:
    """The engine's table row for ``setting``, checked to be that setting's and complete."""
    task = (row.get("ttt") or {}).get("task", "none")
    if setting.method is Method.LINEAR:
        task = "none"  # the engine's linear row carries no TTT settings
    if row.get("method") != setting.method.value or task != setting.ttt.value:
        raise EngineError(f"the engine's row '{row.get('label')}' does not match the "
                          f"setting '{setting.label}'")
    missing = [k for k, _, _ in EVALUATION_METRICS if k not in row or k + "_std" not in row]
    if missing or "seconds_per_case" not in row:
        raise EngineError(f"the engine's row '{row.get('label')}' lacks {missing}")
    return row


class EvaluationRun(EngineRun):
    FOLDER = "TTT evaluation"

    """Hide frames, predict them with every setting, score them, show them.

    What is hidden: the frames between A and B, or under ``x2`` / ``x4`` all but every 2nd /
    4th frame (:class:`EvaluationProtocol`, :func:`evaluation_pairs`). One engine process
    (``evaluate --predictions``): the scores (the published metrics, in the engine's own
    normalisation) and the very frames they were computed on, every setting in one run, so
    the TTT scheme carries from setting to setting as it does on the command line.
    """

    def __init__(self, scene: slicer.vtkMRMLScene,
                 sequencesLogic: slicer.vtkSlicerSequencesLogic,
                 inputSequence: slicer.vtkMRMLSequenceNode, frameA: int, frameB: int,
                 tasks: Sequence[TTTTask] = (), options: EngineOptions | None = None, *,
                 protocol: EvaluationProtocol | str = EvaluationProtocol.BETWEEN,
                 python: str | None = None, tempParent: str | Path | None = None,
                 onProgress: ProgressCallback | None = None) -> None:
        if inputSequence is None:
            raise ValueError("select an input sequence")
        super().__init__(scene, sequencesLogic, inputSequence, options or EngineOptions(),
                         python=python, tempParent=tempParent, onProgress=onProgress)
        self.protocol = EvaluationProtocol(protocol)
        # The engine's own checks of every pair (either order), before any file is written.
        self.pairs = evaluation_pairs(self._values, self.protocol, frameA, frameB)
        self.frameA, self.frameB = self.pairs[0][0], self.pairs[-1][1]
        self.hidden = sorted(item for a, b in self.pairs
                             for item in frame_pairs.frames_between(self._values, a, b)[0])
        ends = [item for pair in self.pairs for item in pair]
        # Written for the engine: the items from the first to the last visible one (a
        # protocol's kept frames start at item 0, so the engine keeps the very same ones).
        self._low, self._high = min(ends), max(ends)
        self._checkSameGrid(list(range(self._low, self._high + 1)))
        self.settings = evaluation_settings(tasks)
        evaluate_options = dataclasses.replace(self.options, method=Method.UVINET)
        tttTasks = [s.ttt for s in self.settings if s.ttt is not TTTTask.NONE]
        self.steps = [EngineStep("scoring", self._arguments(tttTasks, evaluate_options),
                                 self._collect)]
        self._report_data: dict[str, Any] = {}
        self._scores: dict[EvaluationSetting, dict[str, Any]] = {}
        self._frames: dict[EvaluationSetting, list[tuple[slicer.vtkMRMLScalarVolumeNode,
                                                         slicer.vtkMRMLScalarVolumeNode]]] = {}

    def _arguments(self, tasks: Sequence[TTTTask],
                   options: EngineOptions) -> Callable[[Path], list[str]]:
        def arguments(folder: Path) -> list[str]:
            path = folder / "frames.seq.nrrd"
            seq.write_sequence_file(self.inputSequence, range(self._low, self._high + 1), path)
            if self.protocol is EvaluationProtocol.BETWEEN:
                pair, protocol = (self.frameA - self._low, self.frameB - self._low), None
            else:
                pair, protocol = None, self.protocol.value
            return evaluate_arguments(path, pair, tasks, folder / "scores.json", options,
                                      predictions=folder / "predictions", protocol=protocol)
        return arguments

    def _collect(self, folder: Path) -> None:
        try:
            report = json.loads((folder / "scores.json").read_text(encoding="utf-8"))
            protocol = report["protocols"][0]
            rows, (paths,), (pairs,) = protocol["table"], protocol["predictions"], protocol["pairs"]
        except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
            raise EngineError(f"the engine's evaluation report is unreadable: {error}") from error
        expected = [[a - self._low, b - self._low] for a, b in self.pairs]
        if pairs != expected:
            raise EngineError(f"the engine hid the frames between {pairs}, expected {expected}")
        if len(rows) != len(self.settings) or len(paths) != len(self.settings):
            raise EngineError(f"the engine scored {len(rows)} settings, expected "
                              f"{len(self.settings)}")
        for setting, row, path in zip(self.settings, rows, paths, strict=True):
            self._scores[setting] = checked_row(setting, row)
            self._frames[setting] = self._readFrames(
                setting, folder / "predictions" / Path(path).name)
        self._report_data = report

    def _readFrames(self, setting: EvaluationSetting, path: Path
                    ) -> list[tuple[slicer.vtkMRMLScalarVolumeNode,
                                    slicer.vtkMRMLScalarVolumeNode]]:
        """A setting's predicted frames and their absolute error against the hidden frames
        (in the order of :attr:`hidden`; the engine's file holds them by index value)."""
        reference = seq.frame_volume(self.inputSequence, self.frameA)
        predicted = read_predictions(path, [self._values[i] for i in self.hidden], reference)
        byValue = sorted(self.hidden, key=lambda item: self._values[item])
        volumes = {item: volume for item, (_, volume) in zip(byValue, predicted, strict=True)}
        name = self.inputSequence.GetName()
        pairs = []
        for item in self.hidden:
            volume = volumes[item]
            truth = seq.array_ijk(seq.frame_volume(self.inputSequence, item))
            error = np.abs(seq.array_ijk(volume).astype(np.float32) - truth.astype(np.float32))
            pairs.append((conformed(volume, reference, f"{name} {setting.label} {item}"),
                          seq.volume_from_array(error, seq.ijk_to_ras(reference),
                                                f"{name} {setting.label} error {item}")))
        return pairs

    def _discard(self) -> None:
        self._frames = {}

    def _addToScene(self) -> EvaluationResult:
        name = self.inputSequence.GetName()
        values = [self.inputSequence.GetNthIndexValue(i) for i in self.hidden]

        def new_sequence(suffix: str,
                         volumes: Sequence[slicer.vtkMRMLVolumeNode]) -> slicer.vtkMRMLSequenceNode:
            node = self.scene.AddNewNodeByClass(
                seq.SEQUENCE_CLASS, self.scene.GenerateUniqueName(f"{name} {suffix}"))
            seq.fill_sequence(node, list(zip(values, volumes, strict=True)),
                              like=self.inputSequence)
            return node

        truth = new_sequence("truth", [self.inputSequence.GetNthDataNode(i) for i in self.hidden])
        evaluated = []
        for setting in self.settings:
            frames = self._frames[setting]
            evaluated.append(EvaluatedSetting(
                setting, self._scores[setting],
                new_sequence(setting.label, [p for p, _ in frames]),
                new_sequence(f"{setting.label} error", [e for _, e in frames])))
        browser = self.scene.AddNewNodeByClass(
            seq.BROWSER_CLASS, self.scene.GenerateUniqueName(f"{name} evaluation"))
        browser.SetAndObserveMasterSequenceNodeID(truth.GetID())
        for item in evaluated:
            browser.AddSynchronizedSequenceNode(item.predictionSequence)
            browser.AddSynchronizedSequenceNode(item.errorSequence)
        browser.SetSelectedItemNumber(0)
        self.sequencesLogic.UpdateProxyNodesFromSequences(browser)
        source = self._inputProxy()
        for sequence in [truth, *(item.predictionSequence for item in evaluated)]:
            seq.copy_display(source, browser.GetProxyNode(sequence))
        for item in evaluated:  # errors: their own window/level (near zero), not the input's
            seq.copy_display(None, browser.GetProxyNode(item.errorSequence))
        result = EvaluationResult(truth, evaluated, browser, self._report_data)
        result.tableNode = seq.add_table(self.scene, f"{name} evaluation scores",
                                         EVALUATION_COLUMNS, result.table())
        result.show()
        return result


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


def run_to_end(run: EngineRun, interval: float = 0.1,
               processEvents: Callable[[], None] | None = None) -> Any:
    """Start ``run`` and wait for its end; returns its result, raises its error.

    Cancels the run if the wait is interrupted (Ctrl+C in a console, an exception in
    ``processEvents``).
    """
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
        raise RuntimeError(f"run {run.state.value}")
    return run.result


def weights_file(weights: str | Path | None) -> Path | None:
    """The checkpoint to pass as ``--weights``, or ``None`` for none (the engine's default
    model): an unset file is ``None``, ``""`` or ``"."`` (what a ``pathlib.Path`` parameter
    made of an empty field, as scenes saved before the panel kept it as text hold)."""
    if weights is None or str(weights).strip() in ("", "."):
        return None
    return Path(weights)


def weights_argument(weights: Model | str | Path | None) -> str | Path | None:
    """``weights`` of the console API as ``--weights`` takes it: a :class:`Model` choice or a
    registered model's name stays a name, anything else is a file (unset: ``None``)."""
    if isinstance(weights, Model):
        return chosen_weights(weights)
    if isinstance(weights, str) and weights in MODELS:
        return weights
    return weights_file(weights)


def repair_saved_parameters(node: slicer.vtkMRMLScriptedModuleNode) -> None:
    """Forget what a scene saved that this version cannot read back, before the parameter
    node wrapper reads it: a model no longer registered (an unknown choice would make the
    whole parameter node unreadable), the "." that stood for no weights file, and the
    ``customWeights`` switch the model choice replaced (on: a custom file)."""
    if node.GetParameter("model") and node.GetParameter("model") not in Model.__members__:
        node.UnsetParameter("model")
    custom = node.GetParameter("customWeights").lower() in ("true", "1")  # bool as written
    if custom and not node.GetParameter("model"):
        node.SetParameter("model", Model.CUSTOM.name)  # a scene from before the model choice
    node.UnsetParameter("customWeights")
    if node.GetParameter("weightsFile") == ".":
        node.UnsetParameter("weightsFile")


def engine_options(method: Method | str | None = None, ttt: TTTTask | str = TTTTask.NONE,
                   scheme: Scheme | str = Scheme.ONLINE, steps: int = 10,
                   learningRate: float | None = None,
                   weights: Model | str | Path | None = None,
                   device: Device | str = Device.AUTO, seed: int = 0,
                   halfResolutionFlow: bool = False) -> EngineOptions:
    """:class:`EngineOptions` from the console API's names; choices by member or by name.

    ``method=None`` resolves as on the command line: UVI-Net where a TTT task, weights or
    the half-resolution flow are asked for (settings of the network), else the engine's
    default method."""
    task = TTTTask(ttt)
    if method is None:
        method = engine_module("config").resolve_method(
            None, task.value, weights_argument(weights), "half" if halfResolutionFlow else None)
    return EngineOptions(method=Method(method), ttt=task, scheme=Scheme(scheme),
                         steps=steps, learning_rate=learningRate,
                         weights=weights_argument(weights), device=Device(device),
                         seed=seed, half_resolution_flow=bool(halfResolutionFlow))


def create_run(scene: slicer.vtkMRMLScene, sequencesLogic: slicer.vtkSlicerSequencesLogic,
               sequenceNode: slicer.vtkMRMLSequenceNode, frameA: int = 0,
               frameB: int | None = None, numberOfFrames: int = 1, *,
               upsampleFactor: int | None = None,
               outputSequence: slicer.vtkMRMLSequenceNode | None = None,
               createMerged: bool = False, python: str | None = None,
               tempParent: str | Path | None = None,
               onProgress: ProgressCallback | None = None, **options: Any) -> InterpolationRun:
    """An :class:`InterpolationRun` from plain arguments (the console API's one entry point).

    ``upsampleFactor`` set: every consecutive pair gets ``upsampleFactor - 1`` new frames and
    the frame arguments are ignored; otherwise ``numberOfFrames`` new frames go between items
    ``frameA`` and ``frameB`` (default: the last item). ``options`` are those of
    :func:`engine_options` (``method``, ``ttt``, ``scheme``, ``steps``, ``learningRate``,
    ``weights``, ``device``, ``seed``, ``halfResolutionFlow``); choices accept enum members or
    their command-line names (``ttt="cycle"``).
    """
    if sequenceNode is None:
        raise ValueError("select an input sequence")
    count = sequenceNode.GetNumberOfDataNodes()
    if upsampleFactor is not None:
        tasks = plan_upsample(count, upsampleFactor)
    else:
        tasks = plan_between(seq.index_values(sequenceNode), frameA,
                             count - 1 if frameB is None else frameB, numberOfFrames)
    return InterpolationRun(scene, sequencesLogic, sequenceNode, tasks, engine_options(**options),
                            outputSequence=outputSequence, createMerged=createMerged,
                            python=python, tempParent=tempParent, onProgress=onProgress,
                            factor=upsampleFactor)


def create_evaluation(scene: slicer.vtkMRMLScene,
                      sequencesLogic: slicer.vtkSlicerSequencesLogic,
                      sequenceNode: slicer.vtkMRMLSequenceNode, frameA: int = 0,
                      frameB: int | None = None, *,
                      ttt: TTTTask | str | Sequence[TTTTask | str] = (),
                      protocol: EvaluationProtocol | str = EvaluationProtocol.BETWEEN,
                      python: str | None = None, tempParent: str | Path | None = None,
                      onProgress: ProgressCallback | None = None,
                      **options: Any) -> EvaluationRun:
    """An :class:`EvaluationRun`: hide the items between ``frameA`` and ``frameB`` (default:
    the last item), or with ``protocol="x2"`` / ``"x4"`` all but every 2nd / 4th item of the
    sequence (the frame arguments are then not used); predict and score them.

    ``ttt`` is one task or several (``"cycle"``, ``["rotation", "cycle"]``); linear blending
    and UVI-Net without TTT are always compared. ``options`` as for :func:`create_run`
    (``method`` is ignored: every method is compared).
    """
    if sequenceNode is None:
        raise ValueError("select an input sequence")
    tasks = [ttt] if isinstance(ttt, (str, TTTTask)) else list(ttt)
    options.pop("method", None)
    count = sequenceNode.GetNumberOfDataNodes()
    return EvaluationRun(scene, sequencesLogic, sequenceNode, frameA,
                         count - 1 if frameB is None else frameB,
                         [TTTTask(task) for task in tasks], engine_options(**options),
                         protocol=protocol, python=python, tempParent=tempParent,
                         onProgress=onProgress)


def add_phantom_sequence(scene: slicer.vtkMRMLScene,
                         sequencesLogic: slicer.vtkSlicerSequencesLogic, kind: str = "cardiac",
                         frames: int = 10, size: tuple[int, int, int] = (64, 64, 32),
                         seed: int = 0, name: str = "TTT phantom") -> slicer.vtkMRMLSequenceNode:
    """The engine's synthetic 4D phantom as a sequence with a browser, shown in the views.

    It has an exact ground truth at every frame, which makes it the self-test's input and
    the "TTT phantom" sample data set (generated here, nothing is downloaded). Only the
    engine's numpy-only phantom code runs in this process: no file reader (nibabel, pynrrd)
    and no torch, which a fresh Slicer does not have before the first Apply.
    """
    from TTTInterpolationLib.data.phantoms.sequences import make_phantom_sequence

    phantom = make_phantom_sequence(kind, frames, size, seed)
    sequence = seq.sequence_from_arrays(scene, phantom.frames,
                                        seq.ras_from_lps(phantom.geometry.ijk_to_lps()),
                                        phantom.index_values, name, phantom.index_name,
                                        phantom.index_unit)
    browser = seq.browser_for(scene, sequencesLogic, sequence)
    seq.show_in_slice_views(scene, browser.GetProxyNode(sequence))
    return sequence
