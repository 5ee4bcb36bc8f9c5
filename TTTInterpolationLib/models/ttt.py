"""Test-time training: adapt on each test case's self-supervised loss, then predict.

Three schemes over the test cases b1..bm (docs/method-notes.md §9), implemented as the paper
describes them, not as its code does:
- ``online``: every case starts from the pretrained weights AND a fresh optimiser, adapts for
  ``steps`` steps and is predicted at once; no case sees another.
- ``minibatch``: adapt on b1, predict b1, continue (weights and optimiser) on b2, predict b2...
- ``naive``: adapt on all cases for ``steps`` epochs, then predict every case with the final
  weights.
The caller's model is never modified: adaptation runs on a private copy.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from ..config import TTTConfig
from ..errors import InputError
from ..nn.losses import cycle_reconstruction
from ..nn.metrics import psnr
from ..nn.networks import motion_held_along
from ..runtime.precision import autocast, resolve_precision
from ..runtime.progress import NullProgress, Progress
from .ttt_model import TTTModel

Pair = tuple[torch.Tensor, torch.Tensor]
T = TypeVar("T")


@dataclass(frozen=True)
class Triplet:
    """Three visible frames of the patient's own sequence on one grid and intensity window:
    ``target`` lies at fraction ``t`` between ``i0`` and ``i1`` (tensors ``(1, 1, ...)``).

    Real intermediate-frame supervision at test time (the ``frames`` task) and the held-in
    frames that the linear-blending guard scores on; never a hidden frame.
    """

    i0: torch.Tensor
    i1: torch.Tensor
    target: torch.Tensor
    t: float

    def to(self, device: torch.device) -> Triplet:
        return Triplet(self.i0.to(device), self.i1.to(device), self.target.to(device), self.t)


#: Triplets per optimiser step of the ``frames`` task (one batch).
TRIPLETS_PER_STEP = 2


@dataclass
class Case:
    """One test case: the two end frames ``(1, 1, D1, D2, D3)``, normalised, and the times wanted.

    ``bounds`` is the intensity range predictions are clamped to (that of the two inputs).
    ``triplets`` are held-in frames of the same sequence (:class:`Triplet`) that the
    ``frames`` task adapts on, ``checks`` others that the guards score on (kept apart, so a
    guard does not judge the adapted model on what it was adapted on); both are empty where
    only the pair is known.
    """

    i0: torch.Tensor
    i1: torch.Tensor
    times: Sequence[float]
    bounds: tuple[float, float] = (0.0, 1.0)
    triplets: Sequence[Triplet] = ()
    checks: Sequence[Triplet] = ()
    held_axis: int | None = None  # motion held at zero along it (:mod:`.data.slices`)

    def to(self, device: torch.device) -> None:
        """Move the frames (and the triplets) to ``device``, in place."""
        self.i0, self.i1 = self.i0.to(device), self.i1.to(device)
        self.triplets = [t.to(device) for t in self.triplets]
        self.checks = [t.to(device) for t in self.checks]


def trainable_parameters(model: TTTModel, adapt: str) -> list[torch.nn.Parameter]:
    """``trunk``: what the heads share with the interpolation; ``features``: the feature
    extractor; ``all``: the whole UVI-Net.

    The heads stay frozen at test time (as in TTT-MAE): they only define the loss.
    """
    if adapt == "trunk":
        return model.trunk_parameters()
    if adapt == "features":
        return list(model.uvinet.features.parameters())
    if adapt == "all":
        return list(model.uvinet.parameters())
    raise ValueError(f"adapt must be 'trunk', 'features' or 'all', got {adapt!r}")


def make_optimizer(params: list[torch.nn.Parameter], config: TTTConfig) -> torch.optim.Optimizer:
    """The optimiser named by a resolved config."""
    lr, wd = float(config.lr), float(config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, amsgrad=True)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


def predict(model: TTTModel, case: Case) -> list[torch.Tensor]:
    """UVI-Net frames at the case's times, clamped to the case's intensity bounds."""
    model.eval()
    return model.uvinet.interpolate(case.i0, case.i1, case.times, case.bounds)


class _Adapter:
    """A private copy of the model with its trainable set, optimiser and RNG for one run."""

    def __init__(self, model: TTTModel, config: TTTConfig) -> None:
        self.config = config
        self.pretrained = model
        self.model = copy.deepcopy(model)
        self.reset()

    def reset(self) -> None:
        """Back to the pretrained weights, a fresh optimiser and the seed's first random draw.

        This is the online scheme's reset: afterwards nothing remembers earlier cases, so a
        case's result does not depend on which cases came before it or how many.
        """
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.model.load_state_dict(self.pretrained.state_dict())
        for p in self.model.parameters():
            p.requires_grad_(False)
        params = trainable_parameters(self.model, self.config.adapt)
        for p in params:
            p.requires_grad_(True)
        self.optimizer = make_optimizer(params, self.config)

    def step(self, case: Case) -> float:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        # The training precision's default (float32 on CPU; precision.auto_precision may
        # choose bf16).
        with autocast(case.i0.device, resolve_precision("auto", case.i0.device)):
            if self.config.task == "frames":
                loss = self.model.frame_loss(*triplet_batch(case.triplets, self.generator))[0]
            else:
                loss = self.model.task_loss(self.config.task, case.i0, case.i1, self.generator)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def triplet_batch(triplets: Sequence[Triplet], generator: torch.Generator,
                  size: int = TRIPLETS_PER_STEP) -> tuple[torch.Tensor, ...]:
    """``size`` triplets drawn by ``generator`` (with replacement), stacked as one batch.

    Triplets of one case share a grid; ``(i0, i1, target, t)`` with ``t`` of shape ``(size,)``.
    """
    if not triplets:
        raise InputError("TTT 'frames' needs at least three frames of the sequence outside the "
                         "frames to fill; give the whole sequence, or choose another TTT task")
    picks = torch.randint(len(triplets), (size,), generator=generator).tolist()
    chosen = [triplets[k] for k in picks]
    return (torch.cat([c.i0 for c in chosen]), torch.cat([c.i1 for c in chosen]),
            torch.cat([c.target for c in chosen]),
            torch.tensor([c.t for c in chosen], device=chosen[0].i0.device))


def held_in_psnr(model: TTTModel | None, triplets: Sequence[Triplet]) -> float:
    """Mean PSNR of the model's frames on held-in triplets (each on its pair's window), clamped
    to the pair's range as predictions are; ``model=None`` scores linear blending."""
    scores = []
    with torch.no_grad():
        for tr in triplets:
            if model is None:
                frame = (1.0 - tr.t) * tr.i0 + tr.t * tr.i1
            else:
                model.eval()
                bounds = (float(torch.minimum(tr.i0.min(), tr.i1.min())),
                          float(torch.maximum(tr.i0.max(), tr.i1.max())))
                frame = model.uvinet.interpolate(tr.i0, tr.i1, [tr.t], bounds)[0]
            scores.append(psnr(frame.float(), tr.target.float()))
    return float(sum(scores) / len(scores))


def run_ttt(
    model: TTTModel,
    cases: Sequence[Case],
    config: TTTConfig,
    progress: Progress | None = None,
    on_loss: Callable[[int, int, float], None] | None = None,
) -> list[list[torch.Tensor]]:
    """Predict every case after test-time training with ``config`` (resolved here).

    Returns, per case, the frames at its times. ``on_loss(case, step, loss)`` sees every
    adaptation step (for logging and tests). Without an enabled task this is plain inference.
    """
    return adapt_and_apply(model, cases, config, predict, progress, on_loss)


def consistency(model: TTTModel, case: Case) -> float:
    """PSNR of the case's two frames rebuilt from virtual frames at fixed times.

    UVI-Net's own self-supervised signal (:func:`.losses.cycle_reconstruction`), needing no
    intermediate frame: the guard of test-time training compares it before and after. A case
    with held-in check frames is scored on them instead (:func:`held_in_psnr`): real frames.
    """
    if case.checks:
        return held_in_psnr(model, case.checks)
    model.eval()
    with torch.no_grad():
        flows = model.uvinet.flow(case.i0, case.i1)
        rebuilt = cycle_reconstruction(case.i0, case.i1, flows,
                                       lambda a, b, t: model.uvinet(a, b, t))
        return psnr(torch.cat(rebuilt).float(), torch.cat([case.i0, case.i1]).float())


def adapt_and_apply(
    model: TTTModel,
    cases: Sequence[Case],
    config: TTTConfig,
    apply: Callable[[TTTModel, Case], T],
    progress: Progress | None = None,
    on_loss: Callable[[int, int, float], None] | None = None,
    on_guard: Callable[[int, float, float], None] | None = None,
) -> list[T]:
    """Run ``config``'s scheme and call ``apply(adapted_model, case)`` where it would predict.

    With ``config.guard`` (the default), a case whose adapted model rebuilds the pair worse
    than the pretrained one (:func:`consistency`, the pretrained value being the bar) is
    predicted by the pretrained model instead, so TTT cannot make a case worse by the only
    measure available at test time; ``on_guard(case, before, after)`` sees every comparison.
    The adapted weights still carry on to the next case (minibatch, naive).

    ``apply`` sees each case's model exactly as the scheme leaves it at prediction time (after
    that case's adaptation for online/minibatch, after all epochs for naive), in eval mode.
    This is how callers get more than frames out of the adapted model (its flows, say) without
    repeating the scheme logic. ``apply`` must not train or modify the model; without an
    enabled task it receives the caller's own model.
    """
    progress = progress or NullProgress()
    config = config.resolved()

    def applied(adapted: TTTModel, case: Case, index: int | None = None) -> T:
        with motion_held_along(case.held_axis):
            return _applied(adapted, case, index)

    def _applied(adapted: TTTModel, case: Case, index: int | None = None) -> T:
        if index is not None and config.guard:
            before, after = consistency(model, case), consistency(adapted, case)
            if on_guard is not None:
                on_guard(index, before, after)
            if after < before:
                progress.update("ttt", done / total, f"case {index + 1}: TTT rebuilt the pair "
                                f"worse ({after:.2f} < {before:.2f} dB): pretrained model kept")
                adapted = model
        adapted.eval()
        return apply(adapted, case)

    if not config.enabled:
        results = []
        for i, case in enumerate(cases):
            results.append(applied(model, case))
            progress.update("predict", (i + 1) / len(cases), f"case {i + 1}/{len(cases)}")
        return results

    adapter = _Adapter(model, config)
    total = config.steps * len(cases)
    done = 0

    def adapt_on(index: int, case: Case, step: int) -> None:
        nonlocal done
        with motion_held_along(case.held_axis):
            loss = adapter.step(case)
        done += 1
        if on_loss is not None:
            on_loss(index, step, loss)
        progress.update("ttt", done / total,
                        f"{config.task} case {index + 1}/{len(cases)} step {step + 1}"
                        f"/{config.steps} loss {loss:.4f}")

    results: list[T] = []
    if config.scheme == "naive":
        for epoch in range(config.steps):
            for index, case in enumerate(cases):
                adapt_on(index, case, epoch)
        results = [applied(adapter.model, case, i) for i, case in enumerate(cases)]
    else:
        for index, case in enumerate(cases):
            if config.scheme == "online":
                adapter.reset()
            for step in range(config.steps):
                adapt_on(index, case, step)
            results.append(applied(adapter.model, case, index))
    return results
