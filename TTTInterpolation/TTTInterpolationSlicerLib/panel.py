"""The panel without Qt: its words and what its settings ask the logic to do.

The module's help and acknowledgement, the sentences the panel computes (the line under the
inputs, the status at the end of a run, the evaluation view's caption) and the logic call
that Apply makes from the parameter node (:func:`run_request`). The module file only puts
these on its widgets; everything here is tested headless (Testing/test_slicer_logic.py)
against slicer-core nodes.
"""

from __future__ import annotations

from typing import Any

import slicer

from . import sequences
from .logic import (
    EngineRun,
    EvaluationProtocol,
    EvaluationResult,
    Mode,
    chosen_weights,
    evaluation_pairs,
    evaluation_tasks,
    format_duration,
)
from .worker import JobState, Method, TTTTask

HELP_TEXT = """
Creates new time frames of a 4D sequence (cine MRI, 4D CT) between existing ones: by
default with motion fitted to the sequence's own frames (registration of neighbouring
frames), or with UVI-Net, optionally adapted to the data at hand by test-time training (TTT;
choose Method: UVI-Net under Advanced to enable that section). Pick a sequence,
two frames and the number of frames to create (or upsample the whole sequence), then Apply.
Evaluate mode hides frames (those between A and B, or all but every 2nd / 4th frame),
predicts them with linear blending, registration, UVI-Net and test-time training, and shows a
table of scores and the errors side by side.
The engine runs in a background process: Slicer stays responsive and Apply turns into Cancel.
<br><br>Python console:
<pre>
logic = slicer.util.getModuleLogic("TTTInterpolation")
out = logic.interpolate(getNode("MySequence"), frameA=0, frameB=4,
                        numberOfFrames=3, ttt="cycle", steps=20)
result = logic.evaluate(getNode("MySequence"), frameA=0, frameB=4, ttt="cycle")
print(result.table())
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


def help_text(problem: str | None = None) -> str:
    """The module's help, led by why this Slicer cannot run it (when it cannot)."""
    return f"<b>{problem}</b><br><br>{HELP_TEXT}" if problem else HELP_TEXT


def frame_item(frame_number: int) -> int:
    """The item index (from 0, as the logic and the engine count) of a frame number as the
    panel and the sequence browser show it (from 1)."""
    return frame_number - 1


def run_request(p: Any) -> tuple[str, tuple, dict[str, Any]]:
    """What Apply asks of the logic for the panel's settings ``p`` (the parameter node, or
    anything with its fields): ``("evaluate" | "interpolate", positional arguments after the
    input sequence, keyword arguments)``, in the console API's terms (items from 0)."""
    common = dict(scheme=p.scheme, steps=p.steps, learningRate=p.learningRate or None,
                  weights=chosen_weights(p.model, p.weightsFile), device=p.device, seed=p.seed,
                  halfResolutionFlow=p.halfResolutionFlow)
    items = (frame_item(p.frameA), frame_item(p.frameB))
    if p.mode is Mode.EVALUATE:
        return "evaluate", items, dict(ttt=evaluation_tasks(p.ttt, p.compareAllTasks),
                                       protocol=p.evaluationProtocol, **common)
    return "interpolate", (*items, p.numberOfFrames), dict(
        upsampleFactor=p.upsampleFactor if p.mode is Mode.UPSAMPLE else None, method=p.method,
        ttt=p.ttt if adapts(p.method) else TTTTask.NONE, outputSequence=p.outputSequence,
        createMerged=p.createMerged, **common)


def adapts(method: Method) -> bool:
    """Whether test-time training applies: it adapts UVI-Net; the other methods adapt no
    network (the engine refuses a TTT task with them)."""
    return method is Method.UVINET


def input_info(sequence: slicer.vtkMRMLSequenceNode | None, mode: Mode, itemA: int,
               itemB: int, protocol: EvaluationProtocol = EvaluationProtocol.BETWEEN
               ) -> tuple[str, bool]:
    """The line under the inputs, and whether there is enough to run.

    ``itemA`` / ``itemB``: the chosen frames as item indices (from 0); ``protocol``: what an
    evaluation hides (frames A and B count only for :attr:`EvaluationProtocol.BETWEEN`).
    """
    if sequence is None:
        return "Select a sequence of volumes.", False
    count = sequence.GetNumberOfDataNodes()
    pair = mode is Mode.BETWEEN or (mode is Mode.EVALUATE
                                    and protocol is EvaluationProtocol.BETWEEN)
    text = sequences.describe(sequence, (itemA, itemB) if pair else None)
    if mode is not Mode.EVALUATE:
        return text, count >= 2
    if protocol is EvaluationProtocol.BETWEEN:
        hidden = itemB - itemA - 1
        text += (f" {hidden} frames between A and B are hidden and predicted." if hidden > 0
                 else " Frame B must be at least two frames after A.")
        return text, count >= 2 and hidden > 0
    try:
        pairs = evaluation_pairs(sequences.index_values(sequence), protocol)
    except ValueError as error:
        return f"{text} {str(error)[0].upper()}{str(error)[1:]}.", False
    kept, hidden, last = len(pairs) + 1, pairs[-1][1] - len(pairs), pairs[-1][1]
    numbers = [1, *(b + 1 for _, b in pairs)]  # as the browser counts
    shown = ", ".join(map(str, numbers)) if kept <= 3 else f"1, {numbers[1]}, ..., {last + 1}"
    text += f" {kept} frames kept ({shown}), the {hidden} between them hidden and predicted"
    unused = count - 1 - last
    return text + (f"; the last {unused} not used." if unused else "."), True


def finished_status(run: EngineRun) -> str:
    """The status line once a run ended: what it made, or why it did not."""
    took = format_duration(run.elapsed)
    if run.state is JobState.SUCCEEDED:
        if isinstance(run.result, EvaluationResult):
            return (f"Evaluated {len(run.result.settings)} settings on {len(run.hidden)} hidden "
                    f"frames in {took}.")
        return (f"Created {len(run.newValues)} frames in "
                f"'{run.result.outputSequence.GetName()}' in {took}.")
    if run.state is JobState.CANCELLED:
        return "Cancelled; nothing was changed."
    return f"Failed after {took}: {run.error}"


def evaluation_caption(label: str, clicked: bool = False) -> str:
    """What the slice views show after an evaluation (the best setting) or a click on a row."""
    if clicked:
        return f"Showing '{label}': truth (red), prediction (yellow), error (green)."
    return ("Slice views: truth (red), prediction (yellow), absolute error (green) of "
            f"'{label}'. Click a row to show another setting; the sequence toolbar's slider "
            "moves through the hidden frames in all three.")
