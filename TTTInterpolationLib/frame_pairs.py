"""The one check of a pair of frames of a sequence: items, index values, the frames between;
and the pairs the ``x2`` / ``x4`` protocols keep.

Pure Python (no numpy, no torch), so the engine's request checks and the Slicer module's
logic run the very same code: a pair is refused or accepted alike everywhere, in either order,
and a protocol hides the same frames everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .errors import InputError


def check_frame_pair(values: Sequence[float], a: int, b: int) -> None:
    """Items ``a`` and ``b`` (either order) must be distinct items of a sequence whose index
    values are ``values``, with distinct finite index values."""
    n = len(values)
    for f in (a, b):
        if not 0 <= f < n:
            raise InputError(f"frame {f} is out of range: the input has frames 0 to {n - 1}")
    if a == b:
        raise InputError(f"frames A and B must differ, got {a} twice")
    va, vb = values[a], values[b]
    if not (math.isfinite(va) and math.isfinite(vb)):
        raise InputError(f"frames {a} and {b} have index values {va:g} and {vb:g}: index values "
                         "must be finite numbers; fix them in the file header")
    if va == vb:
        raise InputError(f"frames {a} and {b} have the same index value {va:g}, so the new "
                         "frames would have no time between them: fix the index values (each "
                         "frame needs its own)")


def frames_between(values: Sequence[float], a: int, b: int
                   ) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The items strictly between ``a`` and ``b`` (in the order from ``a``) and their times in
    (0, 1) from ``a``, after :func:`check_frame_pair`.

    Their index values must lie strictly between the ends' and run the same way (sorted):
    otherwise a "between" frame would sit outside the pair, and scoring it would silently
    score an extrapolation.
    """
    check_frame_pair(values, a, b)
    hidden = tuple(range(a + 1, b)) if a < b else tuple(range(a - 1, b, -1))
    if not hidden:
        raise InputError(f"frames {a} and {b} are neighbours: no frame between them to hide")
    va, vb = values[a], values[b]
    times = tuple((values[i] - va) / (vb - va) for i in hidden)
    if not all(0.0 < t < 1.0 for t in times) or list(times) != sorted(set(times)):
        shown = ", ".join(f"{values[i]:g}" for i in (a, *hidden, b))
        raise InputError(f"the index values of frames {a} to {b} ({shown}) are not strictly "
                         "monotonic, so the frames between them are not between them in time: "
                         "sort the frames by index value first")
    return hidden, times


#: Protocols that keep every k-th frame (0, k, 2k, ...) and hide the frames between.
KEEP_EVERY = {"x2": 2, "x4": 4}


def kept_frames(num_frames: int, factor: int) -> list[int]:
    """``0, factor, 2 factor, ...`` up to the last frame."""
    return list(range(0, num_frames, factor))


def protocol_pairs(num_frames: int, protocol: str, name: str = "the input"
                   ) -> list[tuple[int, int]]:
    """The pairs of neighbouring kept frames under ``x2`` / ``x4``: the frames between each
    pair are hidden (and filled). Frames after the last kept one are dropped: neither seen
    nor scored."""
    factor = KEEP_EVERY[protocol]
    kept = kept_frames(num_frames, factor)
    if len(kept) < 2:
        nth = {2: "2nd", 3: "3rd"}.get(factor, f"{factor}th")
        raise InputError(f"{name}: {num_frames} frames are too few to keep every {nth} frame "
                         f"and fill between them (at least {factor + 1})")
    return list(zip(kept, kept[1:], strict=False))
