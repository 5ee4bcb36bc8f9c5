"""Filling the gaps of a sequence: the one engine behind ``interpolate``, ``upsample`` and the
protocol evaluation.

A :class:`FillJob` is a sequence of *visible* frames (what the user has) and the gaps to fill,
each between two visible items. The visible frames are all the model, the adaptation and the
guards ever see. Per job:

1. Every gap becomes a TTT :class:`~.models.ttt.Case` on the model grid (one joint intensity
   window per pair, :mod:`.preprocess`), holding the job's through-plane axis: for a stack of
   thick slices the motion stays in-plane (``FillJob.motion``, :mod:`.data.slices`).
2. Held-in triplets of visible frames (:func:`held_in_triplets`): frame ``m`` predicted from
   ``p < m < q``, real intermediate-frame supervision at a coarser step. Two disjoint sets: one
   the ``frames`` task adapts on, one the guards score on.
3. ``method="linear"``: linear blending; ``method="registration"``: motion fitted to the
   job's visible frames, no network (:mod:`.models.fitted_motion`). ``frames`` task: one
   adaptation per job on its triplets (the scheme runs across jobs), then every gap. The
   paper's tasks (rotation, MAE, cycle) adapt per gap, as the paper does per pair.
4. The linear guard (``TTTConfig.guard``), for jobs whose gaps tile the visible sequence
   (upsampling, every-k-th-frame protocols): where the model's frames on the check triplets
   are worse than linear blending of them, the job's gaps are filled by linear blending. There
   the check triplets come from the same phases of the beat as the gaps. For one gap (a pair,
   end-diastole -> end-systole) the visible frames lie outside it and move differently:
   on the ACDC validation split such a guard chose blending for 6 of 10 cases that the
   model filled better than blending on every case (+0.43 dB fell to +0.24 dB), so it is not
   applied there.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..config import TTTConfig
from ..data.model_grid import GridMapping, plan_mapping
from ..data.preprocess import PreparedPair, prepare_pair, prepare_triplet
from ..data.slices import through_plane_axis
from ..models.fitted_motion import fill_gaps
from ..models.loading import LoadedModel
from ..models.ttt import Case, Triplet, adapt_and_apply, held_in_psnr, predict
from ..models.ttt_model import TTTModel
from ..nn.networks import motion_held_along
from ..runtime.device import resolve_device
from ..runtime.progress import NullProgress, Progress, SubProgress
from ..volume import Sequence4D

#: Held-in triplets drawn per job (a seeded choice among all that qualify).
MAX_TRIPLETS = 36
#: Of those, every third (at most this many) is a check triplet for the guards.
MAX_CHECKS = 8
#: A triplet's outer pair spans at most this many times the longest gap to fill (index values).
SPAN_FACTOR = 2.0
#: The model must beat linear blending on the check triplets by this many dB to be used. The
#: checks span up to twice the gap to fill, where motion is larger and the model does
#: relatively better than at the gap itself: with in-plane motion its lead on the checks
#: overstated its gain at the gap by 0.3-0.6 dB at x2 (ACDC validation and Sunnybrook). Chosen
#: there (docs/acdc4d-headroom.md §7): 0.3 dB keeps Sunnybrook x2 / x4 level with blending
#: (0.2 let one Sunnybrook case through at -0.60 dB) and ACDC validation x4 at +0.08 dB.
GUARD_MARGIN_DB = 0.3


@dataclass(frozen=True)
class Gap:
    """Fill between visible items ``a`` and ``b`` at fractions ``times`` (strictly inside).

    ``hidden`` names, in evaluation, the frame numbers of the full sequence that the new
    frames stand for (numbers only: the frames themselves stay with the scorer).
    """

    a: int
    b: int
    times: tuple[float, ...]
    hidden: tuple[int, ...] = ()


@dataclass
class FillJob:
    """Visible frames and the gaps to fill between them (see the module docstring)."""

    visible: Sequence4D
    gaps: Sequence[Gap]
    name: str = ""
    mapping: GridMapping | None = None
    motion: str = "auto"  # config.MOTIONS: which way the flows may move (:mod:`.data.slices`)

    def grid(self) -> GridMapping:
        return self.mapping or plan_mapping(self.visible.shape3d)

    @property
    def held_axis(self) -> int | None:
        """The axis the motion is held still along (the through-plane axis of a stack of
        slices), or ``None``."""
        return through_plane_axis(self.visible.geometry, self.visible.shape3d, self.motion)

    @property
    def tiles(self) -> bool:
        """Every pair of neighbouring visible frames is a gap (an upsampling job)."""
        pairs = {(min(g.a, g.b), max(g.a, g.b)) for g in self.gaps}
        return self.visible.num_frames > 2 and pairs == {
            (k, k + 1) for k in range(self.visible.num_frames - 1)}


@dataclass
class FillResult:
    """Per gap, the new frames (input grid and units); what filled them and why."""

    frames: list[list[np.ndarray]]
    used: str  # "model", "registration", "linear" (asked for) or "linear (guard)"
    held_in: dict[str, float] = field(default_factory=dict)  # check PSNR: model, linear


@dataclass
class _Prepared:
    """One gap's pair on the model grid as a TTT case, and the raw frames for blending."""

    pair: PreparedPair
    case: Case
    frames: tuple[np.ndarray, np.ndarray]

    def restore(self, frames: Sequence[torch.Tensor]) -> list[np.ndarray]:
        return [self.pair.restore(f) for f in frames]

    def blend(self) -> list[np.ndarray]:
        return [blend(*self.frames, t) for t in self.case.times]


def blend(f0: np.ndarray, f1: np.ndarray, t: float) -> np.ndarray:
    """Linear blending in the inputs' own units (float64 inside, so a still pair stays exact)."""
    return ((1.0 - t) * f0.astype(np.float64) + t * f1.astype(np.float64)).astype(np.float32)


def prepare_gap(f0: np.ndarray, f1: np.ndarray, times: Sequence[float],
                mapping: GridMapping | None = None, held_axis: int | None = None) -> _Prepared:
    """A checked pair on the model grid (CPU tensors ``(1, 1, D1, D2, D3)``)."""
    pair = prepare_pair(f0, f1, mapping=mapping)
    case = Case(pair.i0, pair.i1, list(times), pair.bounds, held_axis=held_axis)
    return _Prepared(pair, case, (f0, f1))


def held_in_triplets(visible: Sequence4D, longest_gap: float, mapping: GridMapping,
                     seed: int = 0) -> tuple[list[Triplet], list[Triplet]]:
    """(adaptation, check) triplets of visible frames ``p < m < q``, outer span at most
    :data:`SPAN_FACTOR` times ``longest_gap`` (index values), :data:`MAX_TRIPLETS` drawn by
    ``seed``, every third of them (up to :data:`MAX_CHECKS`) a check.

    Fewer than three drawn: the same triplets serve both (nothing to spare).
    """
    values = visible.index_values or []
    limit = SPAN_FACTOR * longest_gap
    candidates = [(p, m, q) for p, q in itertools.combinations(range(len(values)), 2)
                  if q - p >= 2 and abs(values[q] - values[p]) <= limit + 1e-9
                  for m in range(p + 1, q)]
    if not candidates:
        return [], []
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(candidates))[:MAX_TRIPLETS]
    triplets = []
    for k in order:
        p, m, q = candidates[int(k)]
        pair, target = prepare_triplet(visible.frames[p], visible.frames[q], visible.frames[m],
                                       mapping=mapping)
        t = (values[m] - values[p]) / (values[q] - values[p])
        triplets.append(Triplet(pair.i0, pair.i1, target, float(t)))
    if len(triplets) < 3:
        return triplets, triplets
    checks = triplets[::3][:MAX_CHECKS]
    return [tr for tr in triplets if not any(tr is c for c in checks)], checks


@dataclass
class _PreparedJob:
    """A job's gaps as TTT cases and its held-in triplets (adaptation set, checks)."""

    gaps: list[_Prepared]
    triplets: list[Triplet]
    checks: list[Triplet]
    tiles: bool
    held_axis: int | None = None

    def to(self, device: torch.device) -> None:
        for p in self.gaps:
            p.case.to(device)
        self.triplets = [t.to(device) for t in self.triplets]
        self.checks = [t.to(device) for t in self.checks]


def _prepare_job(job: FillJob, seed: int, with_triplets: bool) -> _PreparedJob:
    """Every gap's case, and the held-in triplets when ``with_triplets``."""
    mapping = job.grid()
    frames = job.visible.frames
    axis = job.held_axis
    gaps = [prepare_gap(frames[g.a], frames[g.b], g.times, mapping, axis) for g in job.gaps]
    train: list[Triplet] = []
    checks: list[Triplet] = []
    if with_triplets and gaps:
        values = job.visible.index_values or []
        longest = max(abs(values[g.b] - values[g.a]) for g in job.gaps)
        train, checks = held_in_triplets(job.visible, longest, mapping, seed)
    return _PreparedJob(gaps, train, checks, job.tiles, axis)


def fill(jobs: Sequence[FillJob], method: str, config: TTTConfig,
         loaded: LoadedModel | None, progress: Progress | None = None,
         device: str | torch.device = "auto") -> list[FillResult]:
    """Fill every gap of every job (see the module docstring for the steps). ``device`` runs
    ``method="registration"`` (a model runs on its own device)."""
    progress = progress or NullProgress()
    if method == "linear":
        prepared = [[prepare_gap(job.visible.frames[g.a], job.visible.frames[g.b], g.times)
                     for g in job.gaps] for job in jobs]
        progress.update("predict", 1.0, "linear blending")
        return [FillResult([p.blend() for p in gaps], "linear") for gaps in prepared]
    if method == "registration":
        where = device if isinstance(device, torch.device) else resolve_device(device)
        if where.type == "mps":  # grid_sample's backward reached MPS only in recent PyTorch
            where = torch.device("cpu")
        return _fill_registered(jobs, where, progress)
    if loaded is None:
        raise ValueError("filling with a model needs a loaded model")
    resolved = config.resolved()
    own_frames = resolved.task == "frames" and resolved.enabled
    # Triplets cost a preparation each: only where the adaptation or the linear guard reads them.
    prepared = [_prepare_job(job, resolved.seed, own_frames or (resolved.guard and job.tiles))
                for job in jobs]
    for job in prepared:
        job.to(loaded.device)
    if own_frames:
        return _fill_adapting_per_job(prepared, resolved, loaded.model, progress)
    return _fill_per_gap(prepared, resolved, loaded.model, progress)


def _fill_registered(jobs: Sequence[FillJob], device: torch.device,
                     progress: Progress) -> list[FillResult]:
    """Motion fitted to each job's visible frames (:mod:`.models.fitted_motion`)."""
    results = []
    for k, job in enumerate(jobs):
        sub = SubProgress(progress, k / len(jobs), (k + 1) / len(jobs))
        frames = fill_gaps(job.visible.frames, [(g.a, g.b, g.times) for g in job.gaps],
                           job.visible.index_values, job.held_axis, single_steps=job.tiles,
                           device=device, progress=sub)
        results.append(FillResult(frames, "registration"))
    return results


def _guarded(model: TTTModel, job: _PreparedJob, frames: list[list[torch.Tensor]],
             config: TTTConfig, progress: Progress, name: str) -> FillResult:
    """The model's frames, or linear blending where the checks say it does better (for jobs
    whose gaps tile the sequence; see the module docstring)."""
    restored = [p.restore(f) for p, f in zip(job.gaps, frames, strict=True)]
    if not (config.guard and job.checks and job.tiles):
        return FillResult(restored, "model")
    with motion_held_along(job.held_axis):
        scores = {"model": held_in_psnr(model, job.checks),
                  "linear": held_in_psnr(None, job.checks)}
    if scores["model"] < scores["linear"] + GUARD_MARGIN_DB:
        progress.update("guard", 1.0, f"{name}: the model is worse than linear blending on the "
                        f"sequence's own frames ({scores['model']:.2f} < {scores['linear']:.2f} "
                        "dB): linear blending used")
        return FillResult([p.blend() for p in job.gaps], "linear (guard)", scores)
    return FillResult(restored, "model", scores)


def _fill_adapting_per_job(prepared: list[_PreparedJob], config: TTTConfig, model: TTTModel,
                           progress: Progress) -> list[FillResult]:
    """The ``frames`` task: one adaptation per job (a case carrying the job's triplets), then
    all its gaps with the model the scheme and guards leave."""
    units = []
    for job in prepared:
        first = job.gaps[0].case
        units.append(Case(first.i0, first.i1, first.times, first.bounds, job.triplets,
                          job.checks, job.held_axis))
    index = {id(case): k for k, case in enumerate(units)}

    def apply(adapted: TTTModel, case: Case) -> FillResult:
        k = index[id(case)]
        frames = [predict(adapted, p.case) for p in prepared[k].gaps]
        return _guarded(adapted, prepared[k], frames, config, progress, f"sequence {k + 1}")

    return adapt_and_apply(model, units, config, apply, progress)


def _fill_per_gap(prepared: list[_PreparedJob], config: TTTConfig, model: TTTModel,
                  progress: Progress) -> list[FillResult]:
    """No TTT or a paper task: every gap is a case of its own; the guard compares the
    pretrained model with linear blending per job."""
    frames = adapt_and_apply(model, [p.case for job in prepared for p in job.gaps], config,
                             predict, progress)
    results, start = [], 0
    for k, job in enumerate(prepared):
        results.append(_guarded(model, job, frames[start:start + len(job.gaps)], config,
                                progress, f"sequence {k + 1}"))
        start += len(job.gaps)
    return results


def describe(results: Sequence[FillResult]) -> dict[str, Any]:
    """How many jobs each filler served (for logs and JSON)."""
    used: dict[str, int] = {}
    for r in results:
        used[r.used] = used.get(r.used, 0) + 1
    return used
