"""Configuration objects: the one place each setting and its default lives.

``ModelConfig`` is saved inside checkpoints and rebuilds the network; ``TTTConfig`` describes
one test-time-training run. Both validate themselves and raise :class:`InputError` with a
message that names the bad value and the accepted ones, so the CLI, the Python API and the
Slicer module share the same checks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import InputError

# The choice lists of every option, in the order the command line and the Slicer module show
# them. This module imports nothing heavy (no torch, no numpy), so the CLI builds its parser
# from these without loading torch, and the Slicer worker's own copies are checked against
# them by Testing/test_worker.py.
METHODS = ("uvinet", "linear", "registration")
#: The method of ``interpolate`` and ``upsample`` (and the Slicer module) unless one is asked
#: for: motion fitted to the sequence's own frames beat UVI-Net (shipped weights, with or
#: without own-frame TTT) on every protocol of ACDC validation and Sunnybrook
#: (docs/acdc4d-headroom.md §8).
DEFAULT_METHOD = "registration"

#: ``frames`` adapts on the patient's own frames (predict a visible frame from two others of the
#: same sequence, :mod:`.models.ttt`); the other three are the paper's self-supervised tasks.
TASKS = ("none", "rotation", "mae", "cycle", "frames")
SCHEMES = ("online", "minibatch", "naive")
OPTIMIZERS = ("adam", "adamw", "sgd")
ADAPT = ("auto", "trunk", "features", "all")
#: Where the self-supervised heads attach: ``flow`` = the flow network's encoder (the trunk
#: then estimates the motion, so TTT moves the motion), ``features`` = the feature extractor
#: that feeds only the refinement residual (the TTT4MII paper's Y-model).
HEAD_TRUNKS = ("flow", "features")
#: Where the flow network estimates the motion: ``full`` = on the frames as they are (the
#: published model); ``half`` = on the frames averaged down 2x per axis, the flows upsampled
#: back (the flow network then costs about 1/8; the README's "Speed" has the measured effect
#: on the ACDC 4D validation split).
FLOW_RESOLUTIONS = ("full", "half")
#: Which way the estimated motion may go (:mod:`.data.slices`): ``in-plane`` holds the
#: through-plane displacement at zero (stacks of thick 2D slices: cine MRI with 8-10 mm
#: slices, where a displacement across slices is noise the warp turns into blur); ``3d`` lets
#: the flow move along every axis (isotropic volumes, 4D CT); ``auto`` picks ``in-plane`` for
#: a stack of thick or few slices and ``3d`` otherwise. Chosen on ACDC 4D validation and
#: Sunnybrook (docs/acdc4d-headroom.md §7): in-plane was better on every protocol of both.
MOTIONS = ("auto", "in-plane", "3d")
#: Interpolation networks (:mod:`.nn.architectures`): ``uvinet`` = the paper's UVI-Net (motion
#: linear in time, trained on end frames); ``uvinet-temporal`` = UVI-Net's flows corrected in
#: time by a network trained on full sequences (:mod:`.nn.temporal`).
ARCHITECTURES = ("uvinet", "uvinet-temporal")
#: Test-time training of ``upsample --method uvinet`` when none is asked for (chosen on the
#: ACDC 4D validation split: own-frame TTT with the guard beat UVI-Net without TTT at x2 and
#: x4, docs/acdc4d-headroom.md); sequences of fewer than 3 frames have nothing to adapt on.
UPSAMPLE_DEFAULT_TASK = "frames"
#: Evaluation protocols on real sequences (:mod:`.workflows.protocols`): ``edes`` hides every
#: frame between end-diastole and end-systole; ``x2`` / ``x4`` keep every 2nd / 4th frame and
#: fill the rest (upsampling).
PROTOCOLS = ("edes", "x2", "x4")
#: Rows of a case list (``evaluate --cases``): the ACDC 4D split names, or every row.
SPLITS = ("all", "validation", "test")
#: Training augmentation: ``none`` = centre crops (the default: chosen on the ACDC 4D validation
#: split, where ``full`` trained a worse model); ``full`` = organ-centred crops, time reversal,
#: intensity shifts (data/augment.py).
AUGMENT_CHOICES = ("none", "full")
DEVICES = ("auto", "cpu", "cuda", "mps")
PROGRESS_KINDS = ("bar", "jsonl", "none")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PHANTOM_KINDS = ("cardiac", "lung")

#: The model grid of training and of real-pair evaluation: the published ACDC crop (in-plane
#: 128 x 128, 32 slices; docs/method-notes.md §6).
DEFAULT_GRID_SIZE: tuple[int, int, int] = (128, 128, 32)

#: Seeds go to torch and numpy generators: non-negative and within a signed 64-bit integer.
MAX_SEED = 2**63 - 1


def check_seed(seed: int, what: str = "seed") -> int:
    """``seed`` if it is a whole number in [0, MAX_SEED], else one InputError line.

    Why: torch.manual_seed raises a bare ValueError (a traceback) beyond 64 bits, numpy
    refuses negative seeds; checked here, the message names the option instead.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InputError(f"{what} must be a whole number from 0 to {MAX_SEED}, got {seed!r}")
    return seed


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of UVI-Net plus its self-supervised heads (docs/method-notes.md §3, §9).

    Defaults are the published sizes (about 0.51 M parameters for UVI-Net). ``width`` scales
    every channel count, for quick experiments; the published model has ``width=1``.
    ``heads`` says which trunk the rotation and MAE heads read (:data:`HEAD_TRUNKS`); it
    defaults to the paper's ``features`` so checkpoints saved before the choice existed load
    as what they are (``tttinterp train`` makes ``flow`` models unless told otherwise).
    ``flow_resolution`` (:data:`FLOW_RESOLUTIONS`) says where the flow network runs; it
    defaults to the published ``full``, which checkpoints saved before it existed used.
    ``architecture`` (:data:`ARCHITECTURES`) names the network; checkpoints saved before it
    existed are ``uvinet``.
    """

    width: float = 1.0
    mae_patch: tuple[int, int, int] = (8, 8, 4)
    mae_mask_ratio: float = 0.8
    heads: str = "features"
    flow_resolution: str = "full"
    architecture: str = "uvinet"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.width) and self.width > 0):
            raise InputError(f"model width must be positive and finite, got {self.width}")
        if not 0.0 < self.mae_mask_ratio < 1.0:
            raise InputError(f"MAE mask ratio must be in (0, 1), got {self.mae_mask_ratio}")
        object.__setattr__(self, "mae_patch", tuple(int(p) for p in self.mae_patch))
        _check_choice("head trunk", self.heads, HEAD_TRUNKS)
        _check_choice("flow resolution", self.flow_resolution, FLOW_RESOLUTIONS)
        _check_choice("architecture", self.architecture, ARCHITECTURES)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"checkpoint config has unknown model settings {sorted(unknown)}")
        return cls(**data)


# Published-style defaults per task: Adam 1e-4 for rotation, AdamW 2e-4 wd 0.05 for MAE
# (docs/method-notes.md §9); the cycle loss is UVI-Net's own training objective, so it uses the
# training optimiser (Adam, amsgrad). Its rate was measured on a phantom-trained model and a
# shifted cardiac phantom (10 steps, all parameters): 1e-4 gave +0.11 dB over no TTT, 3e-4
# -0.06 dB and 1e-3 -1.19 dB (the refinement net drifts).
_TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "rotation": {"optimizer": "adam", "lr": 1e-4, "weight_decay": 0.0},
    "mae": {"optimizer": "adamw", "lr": 2e-4, "weight_decay": 0.05},
    "cycle": {"optimizer": "adam", "lr": 1e-4, "weight_decay": 0.0},
    "frames": {"optimizer": "adam", "lr": 1e-4, "weight_decay": 0.0},
    "none": {"optimizer": "adam", "lr": 1e-4, "weight_decay": 0.0},  # unused: no adaptation
}


@dataclass(frozen=True)
class TTTConfig:
    """One test-time-training run.

    ``adapt`` chooses the trainable parameters: ``trunk`` = what the rotation and MAE heads
    share with the interpolation (the flow encoder or the feature extractor, by the model's
    ``heads``), ``features`` = the feature extractor (the paper's choice), ``all`` = the whole
    UVI-Net (what instance optimisation with the cycle loss needs to move the flow), ``auto``
    = ``all`` for ``cycle`` and ``frames``, ``trunk`` otherwise. ``lr``, ``optimizer`` and
    ``weight_decay`` of ``None`` take the task's published default. ``steps`` counts
    optimiser steps per case (``online``, ``minibatch``) or epochs over all cases (``naive``).
    ``guard`` keeps the pretrained prediction for a case that adaptation made less
    self-consistent (:func:`.ttt.adapt_and_apply`), and fills a sequence by linear blending
    where its own held-in frames show the model doing worse (:mod:`.workflows.fill`).
    """

    task: str = "none"
    scheme: str = "online"
    steps: int = 10
    lr: float | None = None
    optimizer: str | None = None
    weight_decay: float | None = None
    adapt: str = "auto"
    seed: int = 0
    guard: bool = True

    def __post_init__(self) -> None:
        _check_choice("TTT task", self.task, TASKS)
        _check_choice("TTT scheme", self.scheme, SCHEMES)
        _check_choice("parameters to adapt", self.adapt, ADAPT)
        if self.optimizer is not None:
            _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.steps < 0:
            raise InputError(f"TTT steps must be >= 0, got {self.steps}")
        check_seed(self.seed)
        # NaN fails every comparison and inf passes "> 0": both need the finite check.
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"learning rate must be > 0 and finite, got {self.lr}")
        if self.weight_decay is not None and not (math.isfinite(self.weight_decay)
                                                  and self.weight_decay >= 0):
            raise InputError(f"weight decay must be >= 0 and finite, got {self.weight_decay}")

    @property
    def enabled(self) -> bool:
        return self.task != "none" and self.steps > 0

    def resolved(self) -> TTTConfig:
        """A copy with every ``None``/``auto`` replaced by the task's default."""
        defaults = _TASK_DEFAULTS[self.task]
        return replace(
            self,
            lr=self.lr if self.lr is not None else defaults["lr"],
            optimizer=self.optimizer or defaults["optimizer"],
            weight_decay=(self.weight_decay if self.weight_decay is not None
                          else defaults["weight_decay"]),
            adapt=self.adapt if self.adapt != "auto" else (
                "all" if self.task in ("cycle", "frames") else "trunk"),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_options(self, **options: Any) -> TTTConfig:
        """A copy with the given fields changed; ``None`` values leave a field as it is.

        The one builder of TTT settings from loose options (command-line arguments, API
        keywords): ``None`` means "not given", so a default is never written twice.
        """
        unknown = set(options) - {f.name for f in fields(self)}
        if unknown:
            raise TypeError(f"unknown TTT settings {sorted(unknown)}")
        return replace(self, **{k: v for k, v in options.items() if v is not None})

    @classmethod
    def from_options(cls, task: str = "none", **options: Any) -> TTTConfig:
        """``TTTConfig(task=task)`` with :meth:`with_options` applied."""
        return cls(task=task).with_options(**options)


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"unknown {what} {value!r}: choose one of {', '.join(choices)}")


def resolve_method(method: str | None, task: str | None = None,
                   *network_options: object) -> str:
    """The method a run uses: ``method`` when given, else UVI-Net where a TTT ``task`` is
    asked for (test-time training adapts UVI-Net) or any of ``network_options`` is given
    (weights, a loaded model, a flow resolution: asking for a network's setting asks for the
    network), else :data:`DEFAULT_METHOD`."""
    if method is not None:
        _check_choice("method", method, METHODS)
        return method
    wants_network = task not in (None, "none") or any(o is not None for o in network_options)
    return "uvinet" if wants_network else DEFAULT_METHOD


def check_method_task(method: str, task: str) -> None:
    """Test-time training adapts UVI-Net: a task with another method is an input error (the
    one check behind ``interpolate``, ``upsample`` and ``evaluate``)."""
    if method != "uvinet" and task not in (None, "none"):
        raise InputError(f"test-time training (task {task}) adapts UVI-Net: add --method uvinet "
                         f"(method {method} adapts no network)")
