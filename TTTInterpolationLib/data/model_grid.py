"""Mapping volumes onto the network's voxel grid and back, so outputs lie on the input's grid.

Why: the network halves each spatial size four times, so every size must be a multiple of
:data:`MULTIPLE`. We never resample (that would blur the frames and move voxels off the
input's grid); we only centre-crop or zero-pad each axis, which is also the published ACDC
preprocessing (docs/method-notes.md §6: in-plane centre crop to 128, slices padded/cropped to 32).
The mapping is a pair of index windows per axis, so going back is exact: the model-grid
window is copied into the original-grid window, and voxels that were cropped away come from
``fill``.

Arrays are ``(I, J, K)`` or ``(..., I, J, K)``: leading (batch, time, channel) axes pass through.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..config import DEFAULT_GRID_SIZE
from ..errors import InputError

__all__ = [
    "MULTIPLE",
    "MIN_SIZE",
    "GridMapping",
    "plan_mapping",
    "to_model_grid",
    "from_model_grid",
    "normalize_minmax",
    "denormalize",
]

#: Every spatial size on the model grid is a multiple of this (four 2x downsamplings).
MULTIPLE = 16
#: Smaller axes carry too little content for the network to be meaningful.
MIN_SIZE = 4

Window = tuple[int, int]  # (start, stop) along one axis


@dataclass(frozen=True)
class GridMapping:
    """How one 3D grid maps onto the model grid: centred crop or zero-pad, per axis.

    ``source[a]`` is the ``(start, stop)`` window kept from the original axis ``a`` and
    ``target[a]`` is where it lands on the model grid; both windows have the same length.
    """

    original_shape: tuple[int, int, int]
    model_shape: tuple[int, int, int]
    source: tuple[Window, Window, Window]
    target: tuple[Window, Window, Window]

    def source_slices(self) -> tuple[slice, ...]:
        """Index for the kept part of an ``(..., I, J, K)`` array on the original grid."""
        return (Ellipsis, *(slice(start, stop) for start, stop in self.source))

    def target_slices(self) -> tuple[slice, ...]:
        """Index for the same part of an ``(..., I, J, K)`` array on the model grid."""
        return (Ellipsis, *(slice(start, stop) for start, stop in self.target))


def plan_mapping(shape: Sequence[int], size: Sequence[int] | None = None) -> GridMapping:
    """Plan the mapping of a 3D grid of ``shape`` onto the model grid.

    ``size`` None: zero-pad each axis, centred, up to the next multiple of 16 (nothing lost).
    ``size`` given: centre-crop or zero-pad each axis to exactly ``size`` (each a positive
    multiple of 16). An odd difference puts the extra voxel after the centre (pad) or crops
    it from the end.
    """
    original = _checked_shape(shape)
    model = _round_up(original) if size is None else _checked_size(size)
    windows = [_axis_windows(n, m) for n, m in zip(original, model, strict=True)]
    return GridMapping(
        original_shape=original,
        model_shape=model,
        source=tuple(source for source, _ in windows),  # type: ignore[arg-type]
        target=tuple(target for _, target in windows),  # type: ignore[arg-type]
    )


def to_model_grid(volume: np.ndarray, mapping: GridMapping) -> np.ndarray:
    """``(..., I, J, K)`` on the original grid -> ``(..., *model_shape)``, zeros where padded."""
    volume = np.asarray(volume)
    _require_spatial_shape(volume, mapping.original_shape, "original")
    out = np.zeros(volume.shape[:-3] + mapping.model_shape, dtype=volume.dtype)
    out[mapping.target_slices()] = volume[mapping.source_slices()]
    return out


def from_model_grid(
    volume: np.ndarray, mapping: GridMapping, fill: np.ndarray | None = None
) -> np.ndarray:
    """``(..., *model_shape)`` -> ``(..., *original_shape)``: the inverse of :func:`to_model_grid`.

    Voxels cropped away on the way in take their values from ``fill`` (an array on the
    original grid, broadcast over leading axes; typically the input frame) or 0, so an output
    has the input's shape and every voxel is defined.
    """
    volume = np.asarray(volume)
    _require_spatial_shape(volume, mapping.model_shape, "model")
    shape = volume.shape[:-3] + mapping.original_shape
    if fill is None:
        out = np.zeros(shape, dtype=volume.dtype)
    else:
        fill = np.asarray(fill)
        _require_spatial_shape(fill, mapping.original_shape, "original (fill)")
        out = np.broadcast_to(fill, shape).astype(volume.dtype, copy=True)
    out[mapping.source_slices()] = volume[mapping.target_slices()]
    return out


def normalize_minmax(volume: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """Per-volume min-max to [0, 1] (docs/method-notes.md §6), plus the range to undo it.

    A constant volume has no range: it maps to zeros and reports ``(v, v)``, which
    :func:`denormalize` turns back into ``v``. Floating inputs keep their dtype, others
    become float32.
    """
    volume = np.asarray(volume)
    dtype = volume.dtype if np.issubdtype(volume.dtype, np.floating) else np.float32
    low, high = float(volume.min()), float(volume.max())
    if high <= low:
        return np.zeros(volume.shape, dtype=dtype), (low, high)
    scaled = (volume.astype(np.float64) - low) / (high - low)
    return scaled.astype(dtype), (low, high)


def denormalize(volume: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """Undo :func:`normalize_minmax`: ``low + volume * (high - low)``, keeping float dtypes."""
    volume = np.asarray(volume)
    dtype = volume.dtype if np.issubdtype(volume.dtype, np.floating) else np.float32
    low, high = (float(v) for v in value_range)
    return (low + volume.astype(np.float64) * (high - low)).astype(dtype)


def _axis_windows(n: int, m: int) -> tuple[Window, Window]:
    """Source and target windows for one axis of length ``n`` mapped to length ``m``."""
    if m >= n:
        before = (m - n) // 2
        return (0, n), (before, before + n)
    start = (n - m) // 2
    return (start, start + m), (0, m)


def _round_up(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(-(-n // MULTIPLE) * MULTIPLE for n in shape)  # type: ignore[return-value]


def _checked_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    dims = tuple(int(n) for n in shape)
    if len(dims) != 3:
        raise ValueError(f"expected a 3D shape (I, J, K), got {dims}")
    if min(dims) < MIN_SIZE:
        raise InputError(
            f"volume too small for the network: shape {dims}; "
            f"it needs at least {MIN_SIZE} voxels per axis"
        )
    return dims  # type: ignore[return-value]


def _checked_size(size: Sequence[int]) -> tuple[int, int, int]:
    dims = tuple(size)
    if len(dims) != 3 or not all(
        isinstance(n, (int, np.integer)) and n > 0 and n % MULTIPLE == 0 for n in dims
    ):
        raise InputError(
            f"model grid size {dims} is invalid; give 3 positive multiples of {MULTIPLE}, "
            f"e.g. {' '.join(map(str, DEFAULT_GRID_SIZE))}"
        )
    return tuple(int(n) for n in dims)  # type: ignore[return-value]


def _require_spatial_shape(array: np.ndarray, expected: tuple[int, ...], grid: str) -> None:
    """Catch swapped arguments early: shapes that do not fit are a bug, not bad input."""
    if array.ndim < 3 or tuple(array.shape[-3:]) != expected:
        raise ValueError(
            f"array of shape {array.shape} does not end in the {grid} grid shape {expected}"
        )
