"""Requests are validated once, at the edge: times, arrays, frame pairs, index values and the model
grid of a 4D input (:func:`check_request`; the CLI calls it before loading a model). The work
after it trusts them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .. import frame_pairs
from ..data.model_grid import GridMapping, plan_mapping
from ..errors import InputError
from ..volume import Sequence4D


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


def _check_pair(frame0: np.ndarray, frame1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f0, f1 = _check_volume(frame0, "frame A"), _check_volume(frame1, "frame B")
    if f0.shape != f1.shape:
        raise InputError(f"frame A {f0.shape} and frame B {f1.shape} must have the same shape")
    return f0, f1


def check_frame_pair(seq: Sequence4D, a: int, b: int) -> None:
    """Frame numbers must be distinct item positions of ``seq`` with distinct index values
    (:func:`.frame_pairs.check_frame_pair`, shared with the Slicer module)."""
    frame_pairs.check_frame_pair(seq.index_values or [], a, b)


@dataclass(frozen=True)
class HiddenCase:
    """One evaluation case: frames ``a``, ``b``, the frames between them and their times."""

    a: int
    b: int
    hidden: tuple[int, ...]
    times: tuple[float, ...]


def hidden_case(seq: Sequence4D, a: int, b: int) -> HiddenCase:
    """The frames strictly between items ``a`` and ``b`` and their times in (0, 1)
    (:func:`.frame_pairs.frames_between`)."""
    hidden, times = frame_pairs.frames_between(seq.index_values or [], a, b)
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
