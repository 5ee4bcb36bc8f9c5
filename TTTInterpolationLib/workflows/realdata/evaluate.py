"""Evaluation on real ED/ES pairs: settings (no motion, UVI-Net, TTT tasks and schemes), one run
per setting over all cases, rows of means and the plain-text table (the scores are defined in
:mod:`.scores`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ...data.datasets import PairSource
from ...data.model_grid import plan_mapping
from ...fileio.atomic import strict_json
from ...models.loading import LoadedModel, load_model
from ...models.ttt import Case, adapt_and_apply
from ...models.ttt_model import TTTModel
from ...nn.losses import CYCLE_TIMES
from ...runtime.progress import NullProgress, Progress, SubProgress
from ..settings import EvalSetting, evaluation_settings
from ..tables import Column, format_table, summarize
from .cases import (
    DEFAULT_SIZE,
    TEST_SPLIT,
    LabelledPair,
    label_paths,
    load_labelled_pair,
    select_pairs,
)
from .scores import (
    METRICS,
    MotionEstimate,
    _synchronize,
    estimate,
    linear_blend,
    score_case,
    uvinet_interpolator,
)

NO_MOTION = "identity"


def pair_settings(tasks: Iterable[str] = ("none",), schemes: Iterable[str] = ("online",),
                  method: str = "uvinet", **ttt_options: Any) -> list[EvalSetting]:
    """No motion, then (for ``method="uvinet"``) UVI-Net and one row per TTT task and scheme.

    ``ttt_options`` are further :class:`~.config.TTTConfig` fields (steps, lr, optimizer,
    adapt, seed); ``None`` values take the defaults (:func:`~.settings.evaluation_settings`).
    """
    return evaluation_settings(EvalSetting("no motion (ED as is)", NO_MOTION), tasks, schemes,
                               method, **ttt_options)


def _no_motion(pairs: Sequence[LabelledPair]) -> list[MotionEstimate]:
    results = []
    for pair in pairs:
        zero = torch.zeros((1, 3, *pair.ed.shape[2:]), device=pair.ed.device)
        results.append(estimate(pair.ed, pair.es, (zero, zero), linear_blend))
    return results


def _with_model(pairs: Sequence[LabelledPair], setting: EvalSetting, loaded: LoadedModel,
                progress: Progress) -> list[MotionEstimate]:
    """TTT per the setting's scheme (``ttt.adapt_and_apply``), then flows from the adapted model."""
    def apply(model: TTTModel, case: Case) -> MotionEstimate:
        with torch.no_grad():
            flows = model.uvinet.flow(case.i0, case.i1)
        return estimate(case.i0, case.i1, flows, uvinet_interpolator(model))

    cases = [Case(p.ed, p.es, []) for p in pairs]
    return adapt_and_apply(loaded.model, cases, setting.ttt, apply, progress)


def _run_setting(pairs: Sequence[LabelledPair], setting: EvalSetting, loaded: LoadedModel | None,
                 progress: Progress) -> tuple[list[MotionEstimate], float]:
    """Results per case and seconds per case (without the scoring time)."""
    _synchronize(pairs[0].ed.device)
    start = time.perf_counter()
    if setting.method == NO_MOTION:
        results = _no_motion(pairs)
    elif loaded is None:
        raise ValueError(f"setting {setting.label!r} needs a loaded model")
    else:
        results = _with_model(pairs, setting, loaded, progress)
    _synchronize(pairs[0].ed.device)
    total = time.perf_counter() - start - sum(r.scoring_seconds for r in results)
    return results, total / len(pairs)


@dataclass
class PairEvaluation:
    """One row per setting (means, standard deviations, seconds) and every case's scores."""

    rows: list[dict[str, Any]]
    per_case: dict[str, list[dict[str, Any]]]
    cases: list[str]
    size: tuple[int, int, int]

    def to_json(self) -> dict[str, Any]:
        """Plain data for a JSON file; NaN and infinities become null (strict JSON)."""
        return strict_json({"cases": self.cases, "size": list(self.size),
                            "metrics": list(METRICS), "cycle_times": list(CYCLE_TIMES),
                            "rows": self.rows, "per_case": self.per_case})


def check_request(data: str | os.PathLike, cases: str | None, limit: int | None,
                  size: Sequence[int]) -> list[PairSource]:
    """Everything checkable before slow work: grid size, case selection, label files."""
    plan_mapping((16, 16, 16), size)  # an invalid grid size is an InputError
    files = select_pairs(data, cases, limit)
    for pair in files:
        label_paths(pair)
    return files


def evaluate_pairs(data: str | os.PathLike, settings: Sequence[EvalSetting], *,
                   cases: str | None = TEST_SPLIT, limit: int | None = None,
                   size: Sequence[int] = DEFAULT_SIZE, weights: str | os.PathLike | None = None,
                   device: str = "auto", seed: int = 0, model: LoadedModel | None = None,
                   flow_resolution: str | None = None,
                   progress: Progress | None = None) -> PairEvaluation:
    """Score every setting on the selected ED/ES pairs of ``data`` (:mod:`.scores`).

    TTT schemes run across the cases in name order; ``model`` reuses a loaded model.
    """
    progress = progress or NullProgress()
    size = tuple(int(s) for s in size)
    files = check_request(data, cases, limit, size)
    loaded = None
    if any(s.method != NO_MOTION for s in settings):
        loaded = model or load_model(weights, device, seed=seed, flow_resolution=flow_resolution)
    target = loaded.device if loaded is not None else torch.device("cpu")
    pairs = []
    for k, f in enumerate(files):
        progress.update("load", 0.05 * k / len(files), f"reading {f.case}")
        pairs.append(load_labelled_pair(f, size).to(target))
    rows, per_case = [], {}
    for k, setting in enumerate(settings):
        sub = SubProgress(progress, 0.05 + 0.95 * k / len(settings),
                          0.05 + 0.95 * (k + 1) / len(settings))
        results, seconds = _run_setting(pairs, setting, loaded, sub)
        scores = [score_case(p, r) for p, r in zip(pairs, results, strict=True)]
        per_case[setting.label] = [{"case": p.case, **s} for p, s in zip(pairs, scores,
                                                                          strict=True)]
        rows.append(_row(setting, scores, seconds, loaded))
    return PairEvaluation(rows, per_case, [p.case for p in pairs], size)  # type: ignore[arg-type]


def _row(setting: EvalSetting, scores: list[dict[str, float]], seconds: float,
         loaded: LoadedModel | None) -> dict[str, Any]:
    row: dict[str, Any] = {"label": setting.label, "method": setting.method,
                           **summarize(scores, METRICS), "n_cases": len(scores),
                           "seconds_per_case": seconds}
    if setting.method != NO_MOTION and loaded is not None:
        row.update(ttt=setting.ttt.resolved().to_dict(), weights=loaded.source,
                   trained=loaded.trained)
    return row


#: Columns of the real-pair table (``tables.format_table``).
PAIR_COLUMNS: tuple[Column, ...] = (
    ("NCC", "reg NCC", 3), ("PSNR", "reg PSNR", 2), ("Dice", "Dice", 3), ("Dice_RV", "Dice RV", 3),
    ("Dice_Myo", "Dice Myo", 3), ("Dice_LV", "Dice LV", 3), ("cycle_PSNR", "cycle PSNR", 2))


def format_pairs_table(rows: Sequence[dict[str, Any]]) -> str:
    """Plain-text table: one row per setting, mean ± std over cases."""
    return format_table(rows, PAIR_COLUMNS, label_title="setting", count=("n_cases", "cases"))
