"""The one preprocessing path of a frame pair: joint robust intensity window, then model grid.

Training, ``interpolate``, ``evaluate`` and ``evaluate-pairs`` all call :func:`prepare_pair`,
so a voxel reaches the network with the same value whichever command read it.

Why a *joint, robust* window instead of the published per-volume min-max: on real cine MRI a
few bright voxels (flow artefacts, fat) move a frame's maximum by a factor of two from one
frame to the next while the bulk of the intensities stays put (seen on a real-time cine:
max 2308 -> 4396, 99.9th percentile 1800-2000). Min-max per volume then hands the network
the two ends of the motion at different scales, and the blend between them is wrong before
any motion is estimated. One window for both frames, from percentiles of their joint
histogram, keeps the two at one scale and ignores a handful of outliers. Values beyond the
window are not clipped (the network sees them slightly outside [0, 1]); outputs are clamped
to the range the two normalised inputs span, then mapped back with the same window.

Order: normalise on the input's own grid, then zero-pad/crop onto the model grid, so padding
is always 0 after normalisation (the old training path padded first, so a padded CT voxel
became 0.96 there and 0.0 at inference).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from .model_grid import GridMapping, from_model_grid, plan_mapping, to_model_grid

__all__ = ["PERCENTILES", "IntensityWindow", "PreparedPair", "joint_window", "prepare_pair",
           "prepare_triplet"]

#: Joint percentiles of the two frames that map to 0 and 1.
PERCENTILES = (0.5, 99.5)
#: Above this many voxels the percentiles are taken on a regular subsample (same result to
#: well within a grey level, and a 512x512x128 CT pair does not stall on a full sort).
_MAX_SAMPLES = 4_000_000


@dataclass(frozen=True)
class IntensityWindow:
    """``low`` maps to 0 and ``high`` to 1; the inverse maps predictions back to input units."""

    low: float
    high: float

    def normalize(self, volume: np.ndarray) -> np.ndarray:
        """``(volume - low) / (high - low)`` as float32."""
        scaled = (np.asarray(volume, np.float64) - self.low) / (self.high - self.low)
        return scaled.astype(np.float32)

    def denormalize(self, volume: np.ndarray) -> np.ndarray:
        """``low + volume * (high - low)`` as float32."""
        return (self.low + np.asarray(volume, np.float64) * (self.high - self.low)).astype(
            np.float32)


def joint_window(*volumes: np.ndarray,
                 percentiles: tuple[float, float] = PERCENTILES) -> IntensityWindow:
    """The window from the joint ``percentiles`` of all ``volumes``' voxels.

    A degenerate window (a nearly constant pair) widens to the joint min-max, and a constant
    pair gets a unit window, so every pair normalises without dividing by zero.
    """
    values = np.concatenate([np.asarray(v, np.float32).ravel() for v in volumes])
    if values.size == 0:
        raise InputError("cannot normalise an empty volume")
    stride = max(1, values.size // _MAX_SAMPLES)
    low, high = (float(p) for p in np.percentile(values[::stride], percentiles))
    if high <= low:
        low, high = float(values.min()), float(values.max())
    if high <= low:
        high = low + 1.0
    return IntensityWindow(low, high)


@dataclass
class PreparedPair:
    """A frame pair as the network sees it, and what maps its outputs back.

    ``i0``/``i1`` are CPU tensors ``(1, 1, D1, D2, D3)`` on the model grid; ``bounds`` is the
    normalised intensity range the two inputs span (predictions are clamped to it).
    """

    i0: torch.Tensor
    i1: torch.Tensor
    mapping: GridMapping
    window: IntensityWindow
    bounds: tuple[float, float]

    def restore(self, frame: torch.Tensor | np.ndarray) -> np.ndarray:
        """A model-grid frame -> the input's grid, clamped to ``bounds``, in input units."""
        if isinstance(frame, torch.Tensor):
            frame = frame.detach().float().cpu().numpy()
        array = np.asarray(frame, np.float32).reshape(self.mapping.model_shape)
        array = np.clip(array, *self.bounds)
        return self.window.denormalize(from_model_grid(array, self.mapping))


def prepare_pair(frame0: np.ndarray, frame1: np.ndarray, size: Sequence[int] | None = None,
                 mapping: GridMapping | None = None) -> PreparedPair:
    """Normalise two same-shape 3D frames with one joint window and put them on the model grid.

    ``size`` None pads each axis to the next multiple of 16 (nothing lost); a given ``size``
    centre-crops or pads to exactly that (the published fixed grids). A ``mapping`` planned
    already (a checked request) is used as it is.
    """
    f0, f1 = np.asarray(frame0, np.float32), np.asarray(frame1, np.float32)
    if f0.shape != f1.shape:
        raise InputError(f"frame A {f0.shape} and frame B {f1.shape} must have the same shape")
    mapping = mapping or plan_mapping(f0.shape, size)
    window = joint_window(f0, f1)
    n0, n1 = window.normalize(f0), window.normalize(f1)
    bounds = (float(min(n0.min(), n1.min())), float(max(n0.max(), n1.max())))

    def tensor(v: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(to_model_grid(v, mapping)))[None, None]

    return PreparedPair(tensor(n0), tensor(n1), mapping, window, bounds)


def prepare_triplet(frame0: np.ndarray, frame1: np.ndarray, middle: np.ndarray,
                    size: Sequence[int] | None = None,
                    mapping: GridMapping | None = None) -> tuple[PreparedPair, torch.Tensor]:
    """A pair as :func:`prepare_pair` makes it, and a third frame of the same sequence on the
    pair's window and grid: training on full sequences and the ``frames`` TTT task both see
    exactly what inference sees."""
    pair = prepare_pair(frame0, frame1, size, mapping)
    target = to_model_grid(pair.window.normalize(np.asarray(middle, np.float32)), pair.mapping)
    return pair, torch.from_numpy(np.ascontiguousarray(target))[None, None]
