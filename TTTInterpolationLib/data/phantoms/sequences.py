"""The phantoms' public entry points: grid geometry, clean frames at any phase, and shifted 4D
sequences (conventions: the docstring of :mod:`TTTInterpolationLib.data.phantoms`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...config import PHANTOM_KINDS as KINDS
from ...errors import InputError
from ...volume import Geometry, Sequence4D
from .cardiac import CARDIAC_ES_PHASE, _cardiac_params, _render_cardiac
from .lung import _lung_params, _render_lung
from .shapes import Coords, Spacing
from .shifts import Shift, _check_seed, apply_shift

MIN_SIZE = 8
# Field of view in mm along (I, J, K): cardiac ~ an ACDC crop (1.5 mm in-plane at 128),
# lung ~ a whole thorax (3 x 3 x 2.5 mm at 128^3).
_FOV_MM = {"cardiac": (192.0, 192.0, 160.0), "lung": (384.0, 384.0, 320.0)}
# LPS position of the centre of the field of view: only there to give a realistic origin.
_CENTRE_LPS = {"cardiac": (20.0, 15.0, 40.0), "lung": (0.0, 30.0, -170.0)}


def phase_of_frame(i: int, n_frames: int) -> float:
    """Phase of frame ``i`` when ``n_frames`` frames sample one periodic cycle evenly."""
    if n_frames < 1:
        raise InputError(f"number of frames must be >= 1, got {n_frames}")
    return i / n_frames


def end_frames(kind: str, n_frames: int) -> tuple[int, int]:
    """The two frames an interpolator is given: cardiac (ED, ES), lung (end-inhale, end-exhale).

    Cardiac ES is frame ``round(0.4 n)`` (systole peaks at phase 0.4), lung end-exhale is
    ``n // 2`` (phase 0.5).
    """
    _check_kind(kind)
    if n_frames < 2:
        raise InputError(f"need at least 2 frames per cycle, got {n_frames}")
    if kind == "cardiac":
        return 0, round(CARDIAC_ES_PHASE * n_frames)
    return 0, n_frames // 2


def phantom_geometry(kind: str, size: Sequence[int] = (64, 64, 32)) -> Geometry:
    """Grid geometry of a phantom: fixed field of view, ``spacing = FOV / size``."""
    _check_kind(kind)
    size = _check_size(size)
    spacing = tuple(f / n for f, n in zip(_FOV_MM[kind], size, strict=True))
    origin = tuple(
        c - 0.5 * (n - 1) * s for c, n, s in zip(_CENTRE_LPS[kind], size, spacing, strict=True)
    )
    return Geometry(spacing=spacing, origin=origin)


def phantom_frames(
    kind: str, phases: Sequence[float], size: Sequence[int] = (64, 64, 32), seed: int = 0
) -> np.ndarray:
    """Clean frames ``(T, I, J, K)`` float32 in [0, 1] at any real ``phases`` (period 1).

    Phase 0 is ED (cardiac) or end-inhale (lung); see :func:`cardiac_contraction` and
    :func:`breathing_curve` for the timing.
    """
    _check_kind(kind)
    size = _check_size(size)
    seed = _check_seed(seed)
    phases = np.asarray(phases, dtype=np.float64)
    if phases.ndim != 1 or not np.all(np.isfinite(phases)):
        raise InputError(
            f"phases must be a 1D sequence of finite numbers, got shape {phases.shape} "
            f"with {int(np.sum(~np.isfinite(phases)))} non-finite values"
        )
    spacing = phantom_geometry(kind, size).spacing
    coords = _grid_mm(size, spacing)
    params, render = (
        (_cardiac_params(seed), _render_cardiac)
        if kind == "cardiac"
        else (_lung_params(seed), _render_lung)
    )
    frames = np.empty((len(phases), *size), dtype=np.float32)
    for t, phase in enumerate(phases):
        frames[t] = render(params, coords, spacing, float(phase))
    return frames


def make_phantom_sequence(
    kind: str = "cardiac",
    n_frames: int = 10,
    size: Sequence[int] = (64, 64, 32),
    seed: int = 0,
    shift: Shift | None = None,
) -> Sequence4D:
    """One periodic cycle of ``n_frames`` evenly spaced frames, optionally shifted.

    Index values are the frame numbers 0..n-1 (unit "frame"); frame ``i`` is at phase
    ``i / n_frames``. Cardiac noise is Rician (MRI magnitude), lung noise Gaussian (CT).
    """
    _check_kind(kind)
    if n_frames < 2:
        raise InputError(f"a phantom sequence needs at least 2 frames, got {n_frames}")
    phases = [phase_of_frame(i, n_frames) for i in range(n_frames)]
    frames = phantom_frames(kind, phases, size, seed)
    if shift is not None and not shift.is_identity():
        frames = apply_shift(frames, shift, seed, rician=kind == "cardiac")
    return Sequence4D(
        frames=frames,
        geometry=phantom_geometry(kind, size),
        index_values=[float(i) for i in range(n_frames)],
        index_name="time",
        index_unit="frame",
    )


def _grid_mm(size: tuple[int, int, int], spacing: Spacing) -> Coords:
    """Voxel-centre coordinates in mm from the FOV centre, shaped (I,1,1), (1,J,1), (1,1,K)."""
    axes = []
    for axis, (n, s) in enumerate(zip(size, spacing, strict=True)):
        values = ((np.arange(n) - 0.5 * (n - 1)) * s).astype(np.float32)
        axes.append(values.reshape([n if a == axis else 1 for a in range(3)]))
    return tuple(axes)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise InputError(f"unknown phantom kind {kind!r}; accepted: {', '.join(KINDS)}")


def _check_size(size: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(size)
    if len(values) != 3 or not all(
        isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= MIN_SIZE
        for n in values
    ):
        raise InputError(f"size must be 3 integers >= {MIN_SIZE}, got {values!r}")
    return tuple(int(n) for n in values)
