"""The module's parameter node: every setting of the panel, saved with the scene.

Defaults are the engine's (its contract, through ``worker.EngineOptions``); Frame A / B are
frame numbers as the sequence browser shows them (from 1), converted for the logic by
:func:`.panel.frame_item`. Needs Slicer (``parameterNodeWrapper``); checked statically by
Testing/test_module_ui.py against the .ui.
"""

from __future__ import annotations

from typing import Annotated

import ctk
from slicer import vtkMRMLSequenceNode
from slicer.parameterNodeWrapper import (
    GuiConnector,
    WithinRange,
    parameterNodeGuiConnector,
    parameterNodeWrapper,
)

from .logic import EvaluationProtocol, Mode
from .worker import DEFAULT_MODEL, Device, EngineOptions, Method, Model, Scheme, TTTTask

ENGINE_DEFAULTS = EngineOptions()  # the engine's defaults for every setting of the panel


@parameterNodeGuiConnector
class PathLineEditToStrConnector(GuiConnector):
    """A ``ctkPathLineEdit`` bound to a ``str`` parameter, where an empty field is ``""``.

    Slicer's own connector binds the widget to ``pathlib.Path`` only, and ``Path("")`` is
    ``Path(".")``: an unset file would read back, and show, as ".". With ``str`` unset stays
    empty (and means "no file": the logic passes no ``--weights`` then).
    """

    @staticmethod
    def canRepresent(widget, datatype) -> bool:
        base = getattr(datatype, "__origin__", datatype)  # Annotated[str, ...] -> str
        return type(widget) is ctk.ctkPathLineEdit and base is str  # exact class, as Slicer

    @staticmethod
    def create(widget, datatype):
        if PathLineEditToStrConnector.canRepresent(widget, datatype):
            return PathLineEditToStrConnector(widget)
        return None

    def __init__(self, widget) -> None:
        super().__init__()
        self._widget = widget

    def _connect(self) -> None:
        self._widget.currentPathChanged.connect(self.changed)

    def _disconnect(self) -> None:
        self._widget.currentPathChanged.disconnect(self.changed)

    def widget(self):
        return self._widget

    def read(self) -> str:
        return self._widget.currentPath

    def write(self, value: str) -> None:
        self._widget.currentPath = value


@parameterNodeWrapper
class TTTInterpolationParameterNode:
    """Every setting of the module, saved with the scene; the .ui binds each by name."""

    inputSequence: vtkMRMLSequenceNode
    mode: Mode = Mode.BETWEEN
    # Frame numbers as the sequence browser shows them (from 1); the logic takes item
    # indices (from 0): panel.run_request converts them (panel.frame_item).
    frameA: Annotated[int, WithinRange(1, 100000)] = 1
    frameB: Annotated[int, WithinRange(1, 100000)] = 2
    numberOfFrames: Annotated[int, WithinRange(1, 99)] = 3
    upsampleFactor: Annotated[int, WithinRange(2, 16)] = 2
    # Defaults are the engine's (its contract, through worker.EngineOptions).
    ttt: TTTTask = ENGINE_DEFAULTS.ttt
    scheme: Scheme = ENGINE_DEFAULTS.scheme
    steps: Annotated[int, WithinRange(0, 10000)] = ENGINE_DEFAULTS.steps
    method: Method = ENGINE_DEFAULTS.method
    # 0 shows as "task default": the engine picks the published rate of the chosen task.
    # Its decimals and step size are set in the .ui (a QDoubleSpinBox reads no annotation).
    learningRate: Annotated[float, WithinRange(0.0, 0.1)] = 0.0
    # A registered model (the engine's registry; its default first), or Model.CUSTOM: the
    # checkpoint in weightsFile ("" while unset: no --weights, the engine's default model).
    model: Model = DEFAULT_MODEL
    weightsFile: str = ""
    device: Device = ENGINE_DEFAULTS.device
    seed: Annotated[int, WithinRange(0, 2**31 - 1)] = ENGINE_DEFAULTS.seed
    # Motion estimated on frames averaged down 2x: cycle TTT about 2x faster (README, Speed).
    halfResolutionFlow: bool = False
    outputSequence: vtkMRMLSequenceNode
    createMerged: bool = False
    # Evaluate mode: what is hidden (the frames between A and B, or all but every k-th frame),
    # and whether every TTT task gets a row, instead of only the chosen one.
    evaluationProtocol: EvaluationProtocol = EvaluationProtocol.BETWEEN
    compareAllTasks: bool = False
