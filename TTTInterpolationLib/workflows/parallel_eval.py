"""Evaluation of many cases split across the processes of a ``torchrun`` job, one table out.

Why only the ``online`` scheme splits: online TTT resets the weights, optimiser and random
stream for every case, so a case's scores do not depend on which process ran it or on the
cases before it; the merged table equals the single-process one (up to float rounding).
``minibatch`` and ``naive`` carry what they learned from case to case, so splitting would
change the method: they are refused under torchrun instead of silently computing something
else. Linear blending and plain UVI-Net are per-case, so they split too.

Each process computes on its own GPU (``LOCAL_RANK``): a model the caller loaded and passed in
(``model=``) is copied onto that GPU first, or every rank would run on the caller's device.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import InputError
from ..models.loading import LoadedModel
from ..runtime.device import resolve_device
from ..runtime.distributed import DistContext, process_group, rank_device
from .evaluation import ROW_METRICS, EvalCase, evaluate_cases
from .settings import EvalSetting


def evaluate_rows(cases: Sequence[EvalCase], settings: Sequence[EvalSetting],
                  ctx: DistContext | None = None, **options: Any
                  ) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]] | None:
    """Table rows and per-case scores of :func:`~.evaluation.evaluate_cases`.

    Alone: exactly ``evaluate_cases(...)``'s ``rows`` and ``per_case``. Under torchrun: each
    rank evaluates every ``world_size``-th case, rank 0 gathers the partial results and returns
    the merged table (per-case lists in case order); the other ranks return None. ``options``
    go to ``evaluate_cases`` (give rank 0 the progress reporter and the others none).
    """
    ctx = ctx or DistContext.from_env()
    if not ctx.enabled:
        evaluation = evaluate_cases(cases, settings, **options)
        return evaluation.rows, evaluation.per_case
    carried = sorted({s.ttt.scheme for s in settings if s.ttt.enabled} - {"online"})
    if carried:
        raise InputError(f"--scheme {carried[0]} carries weights from case to case and cannot "
                         "be split across processes: run it without torchrun")
    model: LoadedModel | None = options.get("model")
    wanted = model.device if model is not None else resolve_device(options.get("device", "auto"))
    device = rank_device(wanted, ctx)
    if model is not None:
        options = {**options, "model": model_on(model, device)}
    mine = ctx.shard(list(cases))
    with process_group(ctx, "gloo"):  # Python objects only: gloo works for CPU and CUDA runs
        part = None
        if mine:
            evaluation = evaluate_cases(mine, settings, **options)
            part = (evaluation.rows, evaluation.per_case)
        gathered = ctx.all_gather_object(part)
    if not ctx.is_main:
        return None
    parts = [p for p in gathered if p is not None]
    per_case = {s.label: _interleave([p[1][s.label] for p in gathered if p is not None])
                for s in settings}
    return merge_rows([p[0] for p in parts]), per_case


def _interleave(shards: Sequence[Sequence[Any]]) -> list[Any]:
    """Undo ``shard``'s round-robin split: items of rank r were cases r, r + n, r + 2n, ..."""
    out = []
    for i in range(max(len(s) for s in shards)):
        out.extend(s[i] for s in shards if i < len(s))
    return out


def model_on(loaded: LoadedModel, device: torch.device) -> LoadedModel:
    """``loaded`` on ``device``: itself if already there, else a copy moved there.

    A copy, so the caller's model stays where the caller put it.
    """
    if loaded.device == device:
        return loaded
    moved = copy.deepcopy(loaded.model).to(device)
    return dataclasses.replace(loaded, model=moved, device=device)


def merge_rows(shards: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Merge partial tables (same settings, disjoint cases) into one, exactly.

    Means are weighted by frame counts; standard deviations are pooled (population, as in the
    per-shard rows): ``var = sum n_i (s_i^2 + (m_i - m)^2) / N``. ``seconds_per_case`` is
    averaged over cases (compute time per case, not wall time of the parallel run).
    """
    if not shards:
        raise ValueError("no partial tables to merge")
    merged = []
    for rows in zip(*shards, strict=True):
        labels = {r["label"] for r in rows}
        if len(labels) != 1:
            raise ValueError(f"partial tables disagree on their settings: {sorted(labels)}")
        counts = [r["n_frames"] for r in rows]
        cases = [r["n_cases"] for r in rows]
        out = dict(rows[0])
        for name in ROW_METRICS:
            mean = _weighted([r[name] for r in rows], counts)
            spread = [r[f"{name}_std"] ** 2 + (r[name] - mean) ** 2 for r in rows]
            out[name], out[f"{name}_std"] = mean, math.sqrt(_weighted(spread, counts))
        filled: dict[str, int] = {}
        for r in rows:
            for how, n in r.get("filled_by", {}).items():
                filled[how] = filled.get(how, 0) + n
        out.update(n_frames=sum(counts), n_cases=sum(cases),
                   seconds_per_case=_weighted([r["seconds_per_case"] for r in rows], cases),
                   filled_by=filled)
        merged.append(out)
    return merged


def _weighted(values: Sequence[float], weights: Sequence[int]) -> float:
    return sum(v * w for v, w in zip(values, weights, strict=True)) / sum(weights)
