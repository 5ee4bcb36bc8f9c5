"""Training on full sequences: every frame a supervised target at its own ``t``.

Why: end frames alone cannot teach how a heart moves in time (docs/acdc4d-headroom.md); the
frames between two frames of a real sequence can. A sample is a triplet of one training
sequence: frames ``i < j < k`` with gap ``g = k - i``, the pair ``(i, k)`` as input and frame
``j`` as the target at ``t = (j - i) / g``. Gaps cover every workflow: ``g = 2`` (upsampling
by 2), 3-4 (by 4) and longer ones up to :data:`MAX_GAP` (end-diastole to end-systole), drawn
with :data:`GAP_WEIGHTS`. The three frames share the pair's joint intensity window
(:func:`.preprocess.prepare_pair`), as at inference; in-plane flips are the only augmentation.

Loss: Charbonnier between the predicted and the true frame, plus ``smooth`` times ``Grad_L2``
of both flows (UVI-Net's smoothness term). Adam; the flow network at :data:`FLOW_LR_FACTOR`
of the learning rate.

Files after every epoch (atomically): the checkpoint ``out``, ``<out>.optim.pt`` (Adam state,
``torch.load(weights_only=True)``) and ``<out>.history.json`` (losses and validation scores
per epoch); ``resume`` continues from them. Reproducibility: the samples of epoch ``e`` come
from ``(seed, e)``, so a resumed run draws what an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ModelConfig, check_seed
from ..data.model_grid import plan_mapping
from ..data.preprocess import prepare_triplet
from ..errors import InputError
from ..fileio.atomic import atomic_write
from ..models.checkpoint import load_checkpoint, save_checkpoint
from ..models.ttt_model import TTTModel
from ..nn.networks import motion_held_along
from ..runtime.device import resolve_device
from ..runtime.precision import autocast, resolve_precision
from ..runtime.progress import NullProgress, Progress
from .train import derived_seed, optimizer_path

#: Longest gap drawn (frames): ACDC's end-systole lies 6 to 15 frames after end-diastole.
MAX_GAP = 15
#: Probability of a gap of 2, of 3-4, and of 5 to :data:`MAX_GAP` (uniform inside each group).
GAP_WEIGHTS = (0.25, 0.25, 0.5)
OPTIMIZER_FORMAT = "tttinterp-sequence-optimizer"
#: The flow network (trained on end frames, it finds the large motion) learns at this fraction
#: of the learning rate, so the noisy frame loss does not wash out what it knows: at the full
#: rate, end-diastole -> end-systole validation fell from 26.79 to 26.61 dB in two epochs.
FLOW_LR_FACTOR = 0.1


@dataclass(frozen=True)
class SequenceTrainOptions:
    """What ``tttinterp train-sequences`` takes; ``epochs`` is the total, resumed runs included."""

    cases: str
    out: str
    epochs: int = 10
    steps_per_epoch: int = 500
    batch: int = 2
    lr: float = 2e-4
    smooth: float = 0.01
    size: tuple[int, int, int] = (112, 96, 16)
    init: str | None = None
    resume: bool = False
    seed: int = 0
    precision: str = "auto"
    device: str = "auto"
    val_cases: str | None = None
    val_split: str = "validation"

    def validate(self) -> None:
        check_seed(self.seed)
        if self.epochs < 1 or self.steps_per_epoch < 1 or self.batch < 1:
            raise InputError("--epochs, --steps-per-epoch and --batch must be >= 1")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"--lr must be > 0, got {self.lr}")
        plan_mapping((16, 16, 16), self.size)


def history_path(checkpoint: str | Path) -> Path:
    """``model.safetensors`` -> ``model.history.json``."""
    return Path(checkpoint).with_suffix(".history.json")


class TripletSampler:
    """Random training triplets from full sequences (frames ``(T, I, J, K)`` each).

    ``held_axes`` (one per sequence, default none) is each sequence's through-plane axis
    (:mod:`.data.slices`): a batch drawn from sequences that share one is trained with the
    motion held along it, as inference runs them.
    """

    def __init__(self, sequences: Sequence[np.ndarray], size: Sequence[int],
                 held_axes: Sequence[int | None] | None = None) -> None:
        axes = list(held_axes) if held_axes is not None else [None] * len(sequences)
        kept = [(s, a) for s, a in zip(sequences, axes, strict=True) if s.shape[0] >= 3]
        if not kept:
            raise InputError("no training sequence has 3 or more frames")
        self.sequences = [s for s, _ in kept]
        self.held_axes = [a for _, a in kept]
        self.size = tuple(int(s) for s in size)
        self._last_axes: list[int | None] = []

    def gap(self, rng: np.random.Generator, frames: int) -> int:
        """A gap of 2, 3-4 or 5-MAX_GAP frames (:data:`GAP_WEIGHTS`), at most ``frames - 1``."""
        group = rng.choice(3, p=GAP_WEIGHTS)
        low, high = ((2, 2), (3, 4), (5, MAX_GAP))[group]
        high = min(high, frames - 1)
        low = min(low, high)
        return int(rng.integers(low, high + 1))

    def sample(self, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        """``(i0, i1, target, t)``: tensors ``(1, 1, *size)`` on the grid and ``t`` as ``(1,)``."""
        return self._draw(rng)[0]

    def _draw(self, rng: np.random.Generator) -> tuple[tuple[torch.Tensor, ...], int | None]:
        """One sample and the held axis of the sequence it came from."""
        index = int(rng.integers(len(self.sequences)))
        seq = self.sequences[index]
        gap = self.gap(rng, seq.shape[0])
        i = int(rng.integers(0, seq.shape[0] - gap))
        j = int(rng.integers(i + 1, i + gap))
        frames = [seq[i], seq[i + gap], seq[j]]
        for axis in (0, 1):
            if rng.random() < 0.5:
                frames = [np.flip(f, axis) for f in frames]
        pair, target = prepare_triplet(frames[0], frames[1], frames[2], self.size)
        t = torch.tensor([(j - i) / gap], dtype=torch.float32)
        return (pair.i0, pair.i1, target, t), self.held_axes[index]

    def batch(self, rng: np.random.Generator, size: int) -> tuple[torch.Tensor, ...]:
        """``size`` samples stacked along the batch axis (their axes: :attr:`batch_axis`)."""
        draws = [self._draw(rng) for _ in range(size)]
        self._last_axes = [axis for _, axis in draws]
        return tuple(torch.cat(parts) for parts in zip(*(d for d, _ in draws), strict=True))

    @property
    def batch_axis(self) -> int | None:
        """The held axis of the last batch: the one its sequences share, else none."""
        axes = set(self._last_axes)
        return axes.pop() if len(axes) == 1 else None


def read_sequences(case_list: str, split: str = "all"
                   ) -> tuple[list[np.ndarray], list[int | None]]:
    """Every sequence of a case list (``path`` column), as float32 ``(T, I, J, K)``, and each
    one's through-plane axis (``motion="auto"``, :mod:`.data.slices`)."""
    from ..data.slices import through_plane_axis
    from ..fileio.volume_io import read_4d
    from .sequence_cases import read_case_list

    frames, axes = [], []
    for row in read_case_list(case_list, split):
        seq = read_4d(row["path"])
        frames.append(seq.frames.astype(np.float32))
        axes.append(through_plane_axis(seq.geometry, seq.shape3d))
    return frames, axes


def protocol_validation(case_list: str, split: str = "validation"
                        ) -> Callable[[TTTModel], dict[str, float]]:
    """A validation callback: ``PSNR (seq)`` of the model (no TTT, no guard) and of linear
    blending under every protocol on ``case_list``'s ``split``, keys ``val_<protocol>`` and
    ``val_<protocol>_linear`` (the same scores as ``tttinterp evaluate --protocol``)."""
    from ..config import PROTOCOLS, TTTConfig
    from ..models.loading import LoadedModel
    from .evaluation import evaluate_cases
    from .sequence_cases import load_cases
    from .settings import EvalSetting

    cases = {p: load_cases(case_list, split, protocol=p) for p in PROTOCOLS}
    settings = [EvalSetting("linear", "linear"),
                EvalSetting("model", "uvinet", TTTConfig(guard=False))]

    def validate(model: TTTModel) -> dict[str, float]:
        device = next(model.parameters()).device
        loaded = LoadedModel(model, device, True, "the model in training")
        scores = {}
        for protocol, protocol_cases in cases.items():
            rows = evaluate_cases(protocol_cases, settings, model=loaded).rows
            scores[f"val_{protocol}"] = rows[1]["PSNR_seq"]
            scores[f"val_{protocol}_linear"] = rows[0]["PSNR_seq"]
        return scores

    return validate


def _initial_model(options: SequenceTrainOptions) -> tuple[TTTModel, dict[str, Any]]:
    """A resumed checkpoint, or a new temporal model with UVI-Net's weights from ``init``."""
    if options.resume:
        return load_checkpoint(options.out)
    base_config = ModelConfig(heads="flow")
    state: dict[str, torch.Tensor] = {}
    if options.init is not None:
        base, _ = load_checkpoint(options.init)
        base_config, state = base.config, base.state_dict()
    config = replace(base_config, architecture="uvinet-temporal")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        model = TTTModel(config)
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return model, {"init": options.init}


def train_sequences(options: SequenceTrainOptions,
                    validate: Callable[[TTTModel], dict[str, float]] | None = None,
                    progress: Progress | None = None,
                    log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train for ``options.epochs`` epochs in total; returns the history (one record an epoch)."""
    options.validate()
    progress = progress or NullProgress()
    if validate is None and options.val_cases is not None:
        validate = protocol_validation(options.val_cases, options.val_split)
    device = resolve_device(options.device)
    dtype = resolve_precision(options.precision, device)
    model, info = _initial_model(options)
    model.to(device).train()
    net = model.uvinet
    flow = set(map(id, net.flow.parameters()))
    others = [p for p in net.parameters() if id(p) not in flow]
    flow_lr, lr = _rates(options.lr)
    optimizer = torch.optim.Adam([{"params": list(net.flow.parameters()), "lr": flow_lr},
                                  {"params": others, "lr": lr}])
    history: list[dict[str, Any]] = []
    if options.resume:
        state = torch.load(optimizer_path(options.out), map_location=device, weights_only=True)
        if state.get("format") != OPTIMIZER_FORMAT:
            raise InputError(f"{optimizer_path(options.out)} is not a sequence-training state")
        optimizer.load_state_dict(state["optimizer"])
        # Adam's state restores the saved rates; a resumed run may lower them (``--lr``).
        for group, lr in zip(optimizer.param_groups, _rates(options.lr), strict=True):
            group["lr"] = lr
        history = json.loads(history_path(options.out).read_text())
    frames, axes = read_sequences(options.cases)
    sampler = TripletSampler(frames, options.size, held_axes=axes)
    log(f"{len(sampler.sequences)} sequences, {options.steps_per_epoch} steps of "
        f"{options.batch} per epoch, precision {dtype or 'float32'}, device {device}")
    for epoch in range(len(history), options.epochs):
        rng = np.random.default_rng(derived_seed(options.seed, epoch))
        start, losses = time.time(), []
        for step in range(options.steps_per_epoch):
            i0, i1, target, t = (x.to(device) for x in sampler.batch(rng, options.batch))
            with autocast(device, dtype), motion_held_along(sampler.batch_axis):
                total, image = model.frame_loss(i0, i1, target, t, options.smooth)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            losses.append(float(image))
            progress.update("train", (step + 1) / options.steps_per_epoch,
                            f"epoch {epoch + 1} step {step + 1} loss {np.mean(losses):.4f}")
        record: dict[str, Any] = {"epoch": epoch + 1, "loss": float(np.mean(losses)),
                                  "seconds": time.time() - start}
        if validate is not None:
            model.eval()
            record.update(validate(model))
            model.train()
        history.append(record)
        _save(model, optimizer, history, options, info)
        log(json.dumps(record))
    return history


def _rates(lr: float) -> tuple[float, float]:
    """Learning rates of the optimiser's groups: the flow network's, everything else's."""
    return lr * FLOW_LR_FACTOR, lr


def _save(model: TTTModel, optimizer: torch.optim.Optimizer, history: list[dict[str, Any]],
          options: SequenceTrainOptions, info: dict[str, Any]) -> None:
    out = Path(options.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {**info, "trained_on": options.cases, "epochs": len(history),
            "options": {k: (list(v) if isinstance(v, tuple) else v)
                        for k, v in asdict(options).items() if k not in ("resume",)},
            "history": history[-1]}
    save_checkpoint(out, model, meta)
    atomic_write(optimizer_path(out), lambda tmp: torch.save(
        {"format": OPTIMIZER_FORMAT, "optimizer": optimizer.state_dict()}, tmp))
    atomic_write(history_path(out), lambda tmp: tmp.write_text(json.dumps(history, indent=1)))
