"""Evaluation on 4D series: hide the frames between a pair, predict them with every setting, score
them (published per-frame metrics and a sequence-wide PSNR) and tabulate the rows.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import METHODS, MOTIONS, _check_choice
from ..contract import EVALUATION_COLUMNS
from ..models.loading import LoadedModel, load_model
from ..nn.metrics import METRIC_NAMES, all_metrics, psnr
from ..runtime.progress import NullProgress, Progress, SubProgress
from ..volume import Sequence4D
from .fill import FillJob, describe, fill
from .protocols import EvalCase, pair_case
from .settings import EvalSetting
from .tables import Column, summarize
from .tables import format_table as _format_table
from .validation import CheckedRequest, check_request

#: Row metrics: the published per-frame ones, then PSNR on the case's sequence-wide window.
ROW_METRICS = (*METRIC_NAMES, "PSNR_seq")


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
    cases = [pair_case(request.seq, c.a, c.b, checked=c) for c in request.cases or ()]
    return evaluate_cases(cases, settings, **options)


#: ``on_frames(case_index, setting_index, frames)``: a case's predicted frames under one
#: setting, in the input's units and on its grid, in the order of ``EvalCase.hidden``.
FramesSink = Callable[[int, int, list[np.ndarray]], None]


def evaluate_cases(cases: Sequence[EvalCase], settings: Sequence[EvalSetting], *,
                   weights: str | os.PathLike | None = None, device: str = "auto",
                   seed: int = 0, model: LoadedModel | None = None,
                   flow_resolution: str | None = None, motion: str = "auto",
                   progress: Progress | None = None,
                   on_frames: FramesSink | None = None) -> Evaluation:
    """Predict every case's hidden frames with every setting and score them (:func:`score_frame`).

    TTT schemes run across the cases in the given order. One row per setting with means and
    standard deviations over all predicted frames, ``n_frames``, ``n_cases`` and
    ``seconds_per_case``; ``per_case`` holds each case's means. ``on_frames`` receives the
    scored frames themselves (``evaluate --predictions`` writes them: the frames a user is
    shown are the frames that were scored, from the same process).
    """
    progress = progress or NullProgress()
    _check_choice("motion", motion, MOTIONS)
    for setting in settings:
        _check_choice("method", setting.method, METHODS)
    loaded = None
    if any(s.method == "uvinet" for s in settings):
        loaded = model or load_model(weights, device, seed=seed, flow_resolution=flow_resolution)
    jobs = [FillJob(c.visible, c.gaps, c.name, motion=motion) for c in cases]
    truths = [[g for gap in c.truths for g in gap] for c in cases]
    evaluation = Evaluation([], list(cases), [], {})
    for k, setting in enumerate(settings):
        sub = SubProgress(progress, k / len(settings), (k + 1) / len(settings))
        start = time.perf_counter()
        results = fill(jobs, setting.method, setting.ttt, loaded, sub, device)
        seconds = (time.perf_counter() - start) / len(cases)
        predicted = [[f for gap in r.frames for f in gap] for r in results]
        if on_frames is not None:
            for c, frames in enumerate(predicted):
                on_frames(c, k, frames)
        per_case = [[score_frame(p, g, c.window) for p, g in zip(preds, gts, strict=True)]
                    for c, preds, gts in zip(cases, predicted, truths, strict=True)]
        scores = [s for case_scores in per_case for s in case_scores]
        row: dict[str, Any] = {
            "label": setting.label, "method": setting.method,
            "ttt": setting.ttt.resolved().to_dict() if setting.method == "uvinet" else None,
            **summarize(scores, ROW_METRICS), "n_frames": len(scores), "n_cases": len(cases),
            "seconds_per_case": seconds, "filled_by": describe(results)}
        if loaded is not None and setting.method == "uvinet":
            row.update(weights=loaded.source, trained=loaded.trained)
        evaluation.rows.append(row)
        evaluation.per_case[setting.label] = [
            {"case": c.name, **summarize(cs, ROW_METRICS), "filled_by": r.used, **(
                {f"held_in_{k}": v for k, v in r.held_in.items()})}
            for c, cs, r in zip(cases, per_case, results, strict=True)]
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
    from ..fileio.volume_io import read_4d

    return evaluate_sequence(read_4d(inputs), pairs, settings, **options)


#: Columns of the interpolation table (``tables.format_table``): the engine's one list.
TABLE_COLUMNS: tuple[Column, ...] = EVALUATION_COLUMNS


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Plain-text table: one row per setting, metrics as mean ± std."""
    return _format_table(rows, TABLE_COLUMNS, label_title="method", count=("n_frames", "frames"))
