"""The Python API: interpolate and evaluate on numpy arrays or 4D files.

This is what the CLI, the Slicer module's background process and console scripts call. Arrays
are 3D ``(I, J, K)`` volumes in any intensity range; both frames of a pair are normalised with
one robust intensity window and zero-padded to the network's grid (multiples of 16) by
:func:`.preprocess.prepare_pair`, and mapped back, so outputs lie on the input's grid in the
input's intensity range.

Requests are validated once, at the edge: :func:`interpolate` checks its arrays and times,
:func:`check_request` a 4D input's frame pairs, index values and grid (the CLI calls it before
loading a model, and passes the :class:`CheckedRequest` on), and the work below trusts them.

Example::

    import TTTInterpolationLib as tl
    frames = tl.interpolate(ed, es, [0.25, 0.5, 0.75], ttt="cycle", steps=10)
    seq = tl.interpolate_file("cine.nii.gz", frames=(0, 4), num=3, output="out.seq.nrrd")
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import METHODS, TTTConfig, _check_choice
from .device import resolve_device
from .errors import InputError
from .heads import TTTModel
from .metrics import METRIC_NAMES, all_metrics, psnr
from .model_grid import GridMapping, plan_mapping
from .preprocess import PreparedPair, prepare_pair
from .progress import NullProgress, Progress, SubProgress
from .settings import EvalSetting, evaluation_settings
from .tables import Column, summarize
from .tables import format_table as _format_table
from .ttt import Case, run_ttt
from .volume import Sequence4D

__all__ = ["METHODS", "EvalSetting", "evaluation_settings", "CheckedRequest", "check_request",
           "interpolate", "interpolate_sequence", "interpolate_file", "EvalCase", "make_case",
           "evaluate_cases", "evaluate_sequence", "evaluate_file", "format_table", "load_model",
           "times_between"]
UNTRAINED = "untrained"  # ``weights=UNTRAINED`` (``--weights untrained``): random initialisation
UNTRAINED_NOTE = ("no trained weights: UVI-Net runs with untrained (random) weights and behaves "
                  "like linear blending; pass --weights FILE or a registered model name for a "
                  "trained model")


@dataclass
class LoadedModel:
    """A model with where it came from; ``trained`` is False for a random initialisation."""

    model: TTTModel
    device: torch.device
    trained: bool
    source: str
    info: dict[str, Any] = field(default_factory=dict)


def default_weights(progress: Progress | None = None) -> Path | None:
    """The weights used when none are given: the registry's default model, or ``None``.

    ``None`` (UVI-Net runs untrained, and every command says so) while the registry has no
    default with weights. Resolving may download the default once into the cache (see
    :mod:`.registry`), which is why ``progress`` is accepted.
    """
    from .registry import default_model_name, resolve_weights

    name = default_model_name()
    return None if name is None else resolve_weights(name, progress=progress)


def load_model(weights: str | os.PathLike | None = None, device: str = "auto",
               sha256: str | None = None, seed: int = 0,
               progress: Progress | None = None) -> LoadedModel:
    """Load ``weights`` (a checkpoint path or a registered model name) or the default model.

    ``weights="untrained"``, or neither given nor a default registered, builds an untrained
    model seeded by ``seed`` (a baseline, and the start of pure instance optimisation).
    ``sha256`` checks a file given by path; registered models carry their own checksum.
    """
    from .registry import default_model_name, resolve_weights

    dev = resolve_device(device)
    name = str(weights) if weights is not None else default_model_name()
    if name is None or name == UNTRAINED:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = TTTModel()
        return LoadedModel(model.to(dev).eval(), dev, False, "untrained (random initialisation)")
    from .checkpoint import load_checkpoint

    path = resolve_weights(name, progress=progress)
    model, info = load_checkpoint(path, sha256=sha256, device=dev)
    source = str(path) if Path(name).expanduser() == path else f"{name} ({path})"
    return LoadedModel(model.eval(), dev, bool(info.get("trained", True)), source, info)


def times_between(num: int | None = None, times: Sequence[float] | None = None) -> list[float]:
    """Validated fractional times strictly inside (0, 1): ``k / (num + 1)`` or the given ones."""
    if (num is None) == (times is None):
        raise InputError("give either a number of frames (--num) or the times (--times)")
    if num is not None:
        if num < 1:
            raise InputError(f"number of frames to create must be >= 1, got {num}")
        return [k / (num + 1) for k in range(1, num + 1)]
    result = [float(t) for t in times]  # type: ignore[union-attr]
    if not result:
        raise InputError("--times needs at least one value")
    bad = [t for t in result if not 0.0 < t < 1.0 or not math.isfinite(t)]
    if bad:
        raise InputError(f"times must lie strictly between 0 and 1 (fractions from frame A to "
                         f"frame B), got {bad}")
    return result


def _check_volume(volume: np.ndarray, name: str) -> np.ndarray:
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise InputError(f"{name} must be a 3D volume, got shape {volume.shape}")
    if not np.isfinite(volume).all():
        raise InputError(f"{name} contains NaN or infinite values: clean the image first")
    return volume


@dataclass
class _Prepared:
    """One pair on the model grid (see :mod:`.preprocess`) as a TTT case."""

    pair: PreparedPair
    case: Case
    frames: tuple[np.ndarray, np.ndarray]  # the checked inputs, for linear blending

    def to(self, device: torch.device) -> None:
        self.case.i0, self.case.i1 = self.case.i0.to(device), self.case.i1.to(device)


def _check_pair(frame0: np.ndarray, frame1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f0, f1 = _check_volume(frame0, "frame A"), _check_volume(frame1, "frame B")
    if f0.shape != f1.shape:
        raise InputError(f"frame A {f0.shape} and frame B {f1.shape} must have the same shape")
    return f0, f1


def _prepare(f0: np.ndarray, f1: np.ndarray, times: Sequence[float],
             mapping: GridMapping | None = None) -> _Prepared:
    """A checked pair on the model grid (CPU tensors ``(1, 1, D1, D2, D3)``)."""
    pair = prepare_pair(f0, f1, mapping=mapping)
    return _Prepared(pair, Case(pair.i0, pair.i1, list(times), pair.bounds), (f0, f1))


def _predict(prepared: Sequence[_Prepared], method: str, ttt: TTTConfig,
             loaded: LoadedModel | None, progress: Progress) -> list[list[np.ndarray]]:
    """Per case, the frames at its times on the input's grid, in the input's units."""
    if method == "linear":
        out = [[_blend(*p.frames, t) for t in p.case.times] for p in prepared]
        progress.update("predict", 1.0, "linear blending")
        return out
    if loaded is None:
        raise ValueError("UVI-Net prediction needs a loaded model")
    frames = run_ttt(loaded.model, [p.case for p in prepared], ttt, progress)
    return [[p.pair.restore(f) for f in case_frames]
            for p, case_frames in zip(prepared, frames, strict=True)]


def ttt_config(ttt: str | TTTConfig = "none", *, scheme: str | None = None,
               steps: int | None = None, lr: float | None = None,
               seed: int | None = None) -> TTTConfig:
    """The TTT settings of an API call: a task name or a :class:`TTTConfig`, plus keywords.

    Keywords that are given (not ``None``) override the config's fields, so
    ``ttt=TTTConfig(task="mae"), steps=50`` runs 50 steps (they were silently dropped once).
    """
    base = ttt if isinstance(ttt, TTTConfig) else TTTConfig(task=ttt)
    return base.with_options(scheme=scheme, steps=steps, lr=lr, seed=seed)


def _blend(f0: np.ndarray, f1: np.ndarray, t: float) -> np.ndarray:
    """Linear blending in the inputs' own units (float64 inside, so a still pair stays exact)."""
    return ((1.0 - t) * f0.astype(np.float64) + t * f1.astype(np.float64)).astype(np.float32)


def interpolate(
    frame0: np.ndarray,
    frame1: np.ndarray,
    times: Sequence[float],
    *,
    method: str = "uvinet",
    ttt: str | TTTConfig = "none",
    scheme: str | None = None,
    steps: int | None = None,
    lr: float | None = None,
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    seed: int | None = None,
    model: LoadedModel | None = None,
    progress: Progress | None = None,
) -> list[np.ndarray]:
    """Frames at fractional ``times`` (strictly between 0 and 1) between two 3D volumes.

    Returns float32 volumes of the inputs' shape, in the inputs' intensity units (both frames
    share one intensity window, :mod:`.preprocess`). ``model`` reuses an already loaded model.
    ``ttt`` is a task name or a :class:`TTTConfig`; ``scheme``, ``steps``, ``lr`` and ``seed``
    override its fields when given (:func:`ttt_config`). ``seed`` (default: the config's, 0)
    also seeds an untrained model's initialisation.
    """
    times = times_between(times=times)
    config = ttt_config(ttt, scheme=scheme, steps=steps, lr=lr, seed=seed)
    _check_choice("method", method, METHODS)
    f0, f1 = _check_pair(frame0, frame1)
    return _interpolate(f0, f1, times, plan_mapping(f0.shape), method=method, config=config,
                        weights=weights, device=device, model=model, progress=progress)


def _interpolate(f0: np.ndarray, f1: np.ndarray, times: Sequence[float], mapping: GridMapping, *,
                 method: str, config: TTTConfig, weights: str | os.PathLike | None,
                 device: str, model: LoadedModel | None,
                 progress: Progress | None) -> list[np.ndarray]:
    """:func:`interpolate` on checked inputs (nothing is validated again here)."""
    progress = progress or NullProgress()
    prepared = _prepare(f0, f1, times, mapping)
    loaded = None
    if method == "uvinet":
        progress.update("load", 0.0, "loading model")
        loaded = model or load_model(weights, device, seed=config.seed,
                                     progress=SubProgress(progress, 0.0, 0.05))
        prepared.to(loaded.device)
    return _predict([prepared], method, config, loaded, SubProgress(progress, 0.05, 0.95))[0]


def check_frame_pair(seq: Sequence4D, a: int, b: int) -> None:
    """Frame numbers must be distinct item positions of ``seq`` with distinct index values."""
    n = seq.num_frames
    for f in (a, b):
        if not 0 <= f < n:
            raise InputError(f"frame {f} is out of range: the input has frames 0 to {n - 1}")
    if a == b:
        raise InputError(f"frames A and B must differ, got {a} twice")
    va, vb = seq.index_values[a], seq.index_values[b]
    if not (math.isfinite(va) and math.isfinite(vb)):
        raise InputError(f"frames {a} and {b} have index values {va:g} and {vb:g}: index values "
                         "must be finite numbers; fix them in the file header")
    if va == vb:
        raise InputError(f"frames {a} and {b} have the same index value {va:g}, so the new "
                         "frames would have no time between them: fix the index values (each "
                         "frame needs its own)")


@dataclass(frozen=True)
class HiddenCase:
    """One evaluation case: frames ``a``, ``b``, the frames between them and their times."""

    a: int
    b: int
    hidden: tuple[int, ...]
    times: tuple[float, ...]


def hidden_case(seq: Sequence4D, a: int, b: int) -> HiddenCase:
    """The frames strictly between items ``a`` and ``b`` and their times in (0, 1).

    Their index values must lie strictly between the ends' and run the same way (sorted):
    otherwise a "between" frame would sit outside the pair, and scoring it would silently
    score an extrapolation.
    """
    check_frame_pair(seq, a, b)
    hidden = tuple(range(a + 1, b)) if a < b else tuple(range(a - 1, b, -1))
    if not hidden:
        raise InputError(f"frames {a} and {b} are neighbours: no frame between them to hide")
    va, vb = seq.index_values[a], seq.index_values[b]
    times = tuple((seq.index_values[i] - va) / (vb - va) for i in hidden)
    if not all(0.0 < t < 1.0 for t in times) or list(times) != sorted(set(times)):
        values = ", ".join(f"{seq.index_values[i]:g}" for i in (a, *hidden, b))
        raise InputError(f"the index values of frames {a} to {b} ({values}) are not strictly "
                         "monotonic, so the frames between them are not between them in time: "
                         "sort the frames by index value first")
    return HiddenCase(a, b, hidden, times)


@dataclass(frozen=True)
class CheckedRequest:
    """A 4D input and frame pairs that passed :func:`check_request`, with their model grid.

    Pass it instead of the sequence to :func:`interpolate_sequence` or
    :func:`evaluate_sequence` and nothing is checked twice.
    """

    seq: Sequence4D
    pairs: tuple[tuple[int, int], ...]
    mapping: GridMapping
    cases: tuple[HiddenCase, ...] | None = None

    def covers(self, pairs: Sequence[tuple[int, int]], hide: bool) -> bool:
        """True if these very pairs were checked (with the hidden-frame check if ``hide``)."""
        return tuple(tuple(p) for p in pairs) == self.pairs and (not hide or self.cases is not None)


def check_request(seq: Sequence4D | CheckedRequest, pairs: Sequence[tuple[int, int]],
                  hide: bool = False) -> CheckedRequest:
    """Everything about a 4D input that can be checked before the slow work starts.

    Frame numbers, index values (finite, distinct; sorted between the ends when ``hide``:
    evaluation hides those frames) and the volume size (big enough for the network). Already
    checked requests are returned as they are.
    """
    if isinstance(seq, CheckedRequest):
        if seq.covers(pairs, hide):
            return seq
        seq = seq.seq
    pairs = tuple((int(a), int(b)) for a, b in pairs)
    mapping = plan_mapping(seq.shape3d)  # raises when a volume is too small for the network
    for a, b in pairs:
        check_frame_pair(seq, a, b)
    cases = tuple(hidden_case(seq, a, b) for a, b in pairs) if hide else None
    return CheckedRequest(seq, pairs, mapping, cases)


def interpolate_sequence(seq: Sequence4D | CheckedRequest, frames: tuple[int, int],
                         times: Sequence[float], *, method: str = "uvinet",
                         ttt: str | TTTConfig = "none", scheme: str | None = None,
                         steps: int | None = None, lr: float | None = None,
                         seed: int | None = None, weights: str | os.PathLike | None = None,
                         device: str = "auto", model: LoadedModel | None = None,
                         progress: Progress | None = None) -> Sequence4D:
    """New frames between items ``frames`` of ``seq``, at fractional index values.

    The index value of ``t`` is ``v_A + t (v_B - v_A)``, strictly between the two frames' own.
    ``seq`` may be a :class:`CheckedRequest` (the checks are then not repeated). Keywords as
    :func:`interpolate`.
    """
    request = check_request(seq, [frames])
    times = times_between(times=times)
    config = ttt_config(ttt, scheme=scheme, steps=steps, lr=lr, seed=seed)
    _check_choice("method", method, METHODS)
    a, b = request.pairs[0]
    frames4d = request.seq.frames
    f0, f1 = _check_pair(frames4d[a], frames4d[b])
    out = _interpolate(f0, f1, times, request.mapping, method=method, config=config,
                       weights=weights, device=device, model=model, progress=progress)
    va, vb = request.seq.index_values[a], request.seq.index_values[b]
    return Sequence4D(np.stack(out), request.seq.geometry, [va + t * (vb - va) for t in times],
                      request.seq.index_name, request.seq.index_unit)


def interpolate_file(inputs: str | os.PathLike | Sequence[str | os.PathLike],
                     frames: tuple[int, int], output: str | os.PathLike, *,
                     num: int | None = None, times: Sequence[float] | None = None,
                     **options: Any) -> Sequence4D:
    """Read a 4D file (or a list of 3D frame files), interpolate, write ``output`` atomically."""
    from .volume_io import check_output_path, read_4d, write_4d

    check_output_path(output)
    fractions = times_between(num, times)
    seq = read_4d(inputs)
    result = interpolate_sequence(seq, frames, fractions, **options)
    write_4d(output, result)
    return result


#: Row metrics: the published per-frame ones, then PSNR on the case's sequence-wide window.
ROW_METRICS = (*METRIC_NAMES, "PSNR_seq")


@dataclass(frozen=True)
class EvalCase:
    """One test case: frames ``a`` and ``b`` of ``seq`` are given, ``hidden`` are predicted.

    ``times`` are the hidden frames' fractions from ``a`` to ``b`` by index value.
    """

    name: str
    seq: Sequence4D
    a: int
    b: int
    hidden: list[int]
    times: list[float]

    @property
    def window(self) -> tuple[float, float]:
        """The whole sequence's min and max: the scale of the sequence-normalised PSNR."""
        low, high = float(self.seq.frames.min()), float(self.seq.frames.max())
        return low, (high if high > low else low + 1.0)


def make_case(seq: Sequence4D, a: int, b: int, name: str | None = None,
              checked: HiddenCase | None = None) -> EvalCase:
    """The case that hides every frame strictly between items ``a`` and ``b`` of ``seq``.

    ``checked`` is the pair's :func:`hidden_case` when the caller has it already.
    """
    case = checked or hidden_case(seq, a, b)
    return EvalCase(name or f"{a}->{b}", seq, case.a, case.b, list(case.hidden),
                    list(case.times))


def score_frame(pred: np.ndarray, truth: np.ndarray,
                window: tuple[float, float]) -> dict[str, float]:
    """Published metrics with both frames on the truth's own min-max scale (method notes §7),
    plus ``PSNR_seq``: PSNR with both on the sequence's ``window``.

    The published per-frame scale exaggerates errors in dark frames and hides them in bright
    ones; one window per sequence weighs every frame of a case alike.
    """
    low, high = float(truth.min()), float(truth.max())
    high = high if high > low else low + 1.0
    scores = all_metrics((pred - low) / (high - low), (truth - low) / (high - low))
    seq_low, seq_high = window
    scores["PSNR_seq"] = psnr((pred - seq_low) / (seq_high - seq_low),
                              (truth - seq_low) / (seq_high - seq_low))
    return scores


@dataclass
class Evaluation:
    """Scores per setting (``rows``, ``per_case``) and what they came from, for figures/files.

    ``truths`` and ``predictions`` are on each case's sequence-normalised scale.
    """

    rows: list[dict[str, Any]]
    cases: list[EvalCase]
    truths: list[list[np.ndarray]]
    predictions: dict[str, list[list[np.ndarray]]]
    per_case: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def evaluate_sequence(seq: Sequence4D | CheckedRequest, pairs: Sequence[tuple[int, int]],
                      settings: Sequence[EvalSetting], **options: Any) -> Evaluation:
    """Hide the frames strictly between each pair, predict them with every setting, score them.

    Each pair is one test case (:func:`evaluate_cases`). The index values between each pair
    must be sorted (:func:`hidden_case`). ``seq`` may be a :class:`CheckedRequest`.
    """
    request = check_request(seq, pairs, hide=True)
    cases = [make_case(request.seq, c.a, c.b, checked=c) for c in request.cases or ()]
    return evaluate_cases(cases, settings, **options)


def evaluate_cases(cases: Sequence[EvalCase], settings: Sequence[EvalSetting], *,
                   weights: str | os.PathLike | None = None, device: str = "auto",
                   seed: int = 0, model: LoadedModel | None = None,
                   progress: Progress | None = None) -> Evaluation:
    """Predict every case's hidden frames with every setting and score them (:func:`score_frame`).

    TTT schemes run across the cases in the given order. One row per setting with means and
    standard deviations over all predicted frames, ``n_frames``, ``n_cases`` and
    ``seconds_per_case``; ``per_case`` holds each case's means.
    """
    progress = progress or NullProgress()
    for setting in settings:
        _check_choice("method", setting.method, METHODS)
    prepared = [_prepare(*_check_pair(c.seq.frames[c.a], c.seq.frames[c.b]), c.times)
                for c in cases]
    loaded = None
    if any(s.method == "uvinet" for s in settings):
        loaded = model or load_model(weights, device, seed=seed)
        for p in prepared:
            p.to(loaded.device)
    truths = [[c.seq.frames[i] for i in c.hidden] for c in cases]
    evaluation = Evaluation([], list(cases), [], {})
    for k, setting in enumerate(settings):
        sub = SubProgress(progress, k / len(settings), (k + 1) / len(settings))
        start = time.perf_counter()
        predicted = _predict(prepared, setting.method, setting.ttt, loaded, sub)
        seconds = (time.perf_counter() - start) / len(cases)
        per_case = [[score_frame(p, g, c.window) for p, g in zip(preds, gts, strict=True)]
                    for c, preds, gts in zip(cases, predicted, truths, strict=True)]
        scores = [s for case_scores in per_case for s in case_scores]
        row: dict[str, Any] = {
            "label": setting.label, "method": setting.method,
            "ttt": setting.ttt.resolved().to_dict() if setting.method == "uvinet" else None,
            **summarize(scores, ROW_METRICS), "n_frames": len(scores), "n_cases": len(cases),
            "seconds_per_case": seconds}
        if loaded is not None and setting.method == "uvinet":
            row.update(weights=loaded.source, trained=loaded.trained)
        evaluation.rows.append(row)
        evaluation.per_case[setting.label] = [
            {"case": c.name, **summarize(cs, ROW_METRICS)}
            for c, cs in zip(cases, per_case, strict=True)]
        evaluation.predictions[setting.label] = [
            [_on_window(p, c.window) for p in preds]
            for c, preds in zip(cases, predicted, strict=True)]
    evaluation.truths = [[_on_window(g, c.window) for g in gts]
                         for c, gts in zip(cases, truths, strict=True)]
    return evaluation


def _on_window(volume: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    return ((volume - window[0]) / (window[1] - window[0])).astype(np.float32)


def evaluate_file(inputs: str | os.PathLike | Sequence[str | os.PathLike],
                  pairs: Sequence[tuple[int, int]], settings: Sequence[EvalSetting],
                  **options: Any) -> Evaluation:
    """:func:`evaluate_sequence` on a 4D file or a list of 3D frame files."""
    from .volume_io import read_4d

    return evaluate_sequence(read_4d(inputs), pairs, settings, **options)


#: Columns of the interpolation table (``tables.format_table``).
TABLE_COLUMNS: tuple[Column, ...] = (("PSNR", "PSNR", 3), ("NCC", "NCC", 3), ("SSIM", "SSIM", 3),
                                     ("NMSE", "NMSE (x100)", 3), ("PSNR_seq", "PSNR (seq)", 3))


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Plain-text table: one row per setting, metrics as mean ± std."""
    return _format_table(rows, TABLE_COLUMNS, label_title="method", count=("n_frames", "frames"))
