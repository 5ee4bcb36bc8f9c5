"""Which way motion may go in a volume: the through-plane axis of a stack of thick slices.

Why: cine MRI is a stack of 2D slices 8-10 mm apart with 1-2 mm pixels. A flow component
across slices moves content by a fraction of a slice, which trilinear warping turns into a
blend of neighbouring slices: blur, not motion. Holding it at zero (motion in-plane only) was
better on every protocol of ACDC 4D validation and Sunnybrook (docs/acdc4d-headroom.md §7).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..config import MOTIONS, _check_choice
from ..volume import Geometry

#: A slice spacing this many times the in-plane one makes a stack of thick slices.
THICK_SLICE_RATIO = 2.0
#: With no spacing to go by (unit spacing, e.g. files whose spacing was lost), an axis with at
#: most 1/this of the voxels of both others is a stack of few slices (ACDC 4D: 7 of 95).
FEW_SLICES_RATIO = 4


def through_plane_axis(geometry: Geometry, shape: Sequence[int],
                       motion: str = "auto") -> int | None:
    """The array axis along which the flow is held at zero, or ``None`` for free 3D motion.

    ``auto``: the axis whose spacing is at least :data:`THICK_SLICE_RATIO` times both others';
    where the spacing is the same on every axis, the axis with at most 1 /
    :data:`FEW_SLICES_RATIO` of the voxels of both others; else ``None``. ``in-plane``: that
    axis, or (nothing stands out) the one with the largest spacing, then the fewest voxels.
    ``3d``: ``None``.
    """
    _check_choice("motion", motion, MOTIONS)
    if motion == "3d":
        return None
    spacing = [float(s) for s in geometry.spacing]
    sizes = [int(n) for n in shape]
    axes = range(3)
    for k in axes:
        others = [j for j in axes if j != k]
        if all(spacing[k] >= THICK_SLICE_RATIO * spacing[j] for j in others):
            return k
    if max(spacing) - min(spacing) <= 1e-6 * max(spacing):
        for k in axes:
            if all(FEW_SLICES_RATIO * sizes[k] <= sizes[j] for j in axes if j != k):
                return k
    if motion == "in-plane":
        return max(axes, key=lambda k: (spacing[k], -sizes[k]))
    return None
