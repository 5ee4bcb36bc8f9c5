"""Summaries over cases and the plain-text tables of ``evaluate``, ``evaluate-pairs``, demo.

Why one home: both evaluations report "mean ± std per setting" in the same layout; written
once, a fix (NaN handling, a wider label) reaches every table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Column", "summarize", "format_table"]

#: A table column: (row key, title, decimals); the row holds ``key`` and ``key + "_std"``.
Column = tuple[str, str, int]

_CELL = 15
_MIN_LABEL = 28


def summarize(scores: Sequence[dict[str, float]], names: Sequence[str]) -> dict[str, float]:
    """Mean and (population) standard deviation of each metric in ``names`` over ``scores``.

    NaN values (a score that does not exist, e.g. Dice of a class absent from both label
    maps) are left out; a metric with no value at all is NaN. Infinite values (PSNR of an
    exact prediction) are kept: the mean is then infinite too, which is the truth.
    """
    out: dict[str, float] = {}
    for name in names:
        values = np.array([s[name] for s in scores], dtype=np.float64)
        values = values[~np.isnan(values)]
        out[name] = float(values.mean()) if values.size else math.nan
        out[f"{name}_std"] = _std(values) if values.size else math.nan
    return out


def _std(values: np.ndarray) -> float:
    """Population std; 0 for equal values, infinite ones included (numpy says NaN there)."""
    if np.all(values == values[0]):
        return 0.0
    with np.errstate(invalid="ignore"):
        return float(values.std())


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column], *,
                 label_title: str, count: tuple[str, str]) -> str:
    """One line per row: label, ``mean ± std`` per column, the count, seconds per case."""
    width = max(_MIN_LABEL, *(len(r["label"]) for r in rows))
    count_key, count_title = count
    count_width = max(5, len(count_title))
    header = (f"{label_title:<{width}} " + " ".join(f"{title:>{_CELL}}" for _, title, _ in columns)
              + f" {count_title:>{count_width}} {'s/case':>8}")
    lines = [header, "-" * len(header)]
    for r in rows:
        cells = [f"{r[key]:.{digits}f} ± {r[key + '_std']:.{digits}f}"
                 for key, _, digits in columns]
        lines.append(f"{r['label']:<{width}} " + " ".join(f"{c:>{_CELL}}" for c in cells)
                     + f" {r[count_key]:>{count_width}} {r['seconds_per_case']:>8.2f}")
    return "\n".join(lines)
