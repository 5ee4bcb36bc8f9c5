"""Shape primitives of the phantoms: soft-edged ellipsoids and cylinders, random smooth fields,
painting and parameter jitter (material coordinates in mm, signed distances in voxels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

# Edge softness: sigmoid of the signed distance (in voxels) with this scale, so an edge rises
# from 10 % to 90 % over ~1.1 voxels at any resolution (images are never binary).
_EDGE_WIDTH_VOX = 0.25

Coords = tuple[np.ndarray, np.ndarray, np.ndarray]  # mm, mutually broadcastable
Spacing = tuple[float, float, float]


def _soft(sdf_vox: np.ndarray) -> np.ndarray:
    """Soft inside-mask from a signed distance in voxels (negative inside)."""
    return 0.5 - 0.5 * np.tanh(sdf_vox * (0.5 / _EDGE_WIDTH_VOX))


def _per_side(d: np.ndarray, above: float, below: float) -> np.ndarray:
    """``above`` where ``d >= 0``, else ``below`` (a two-sided semi-axis), kept float32."""
    return np.where(d >= 0, np.float32(above), np.float32(below))


def _smoothstep(x: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, C1 cubic in between (for motion windows)."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass(frozen=True)
class _Ellipsoid:
    """Axis-aligned ellipsoid; a ``None`` semi-axis makes it a cylinder along that axis.

    ``below`` (optional) is the axis-2 semi-axis on the low-``k`` side of the centre, so one
    shape can be long toward an apex and short on the other side (``math.inf``: open-ended).
    """

    centre: tuple[float, float, float]
    semi: tuple[float | None, float | None, float | None]
    below: float | None = None

    def grown(self, margin: float) -> _Ellipsoid:
        """Same centre, every semi-axis longer by ``margin`` mm (negative shrinks)."""
        semi = tuple(None if a is None else a + margin for a in self.semi)
        below = None if self.below is None else self.below + margin
        return replace(self, semi=semi, below=below)

    def sdf(self, coords: Coords, spacing: Spacing) -> np.ndarray:
        """First-order signed distance in voxels: ``(rho - 1) / |grad_voxel rho|``.

        Measuring the gradient in voxel units keeps edges ~1 voxel wide on anisotropic grids.
        """
        rho2 = grad2 = 0.0
        finite = []
        for axis, (x, c, a, s) in enumerate(
            zip(coords, self.centre, self.semi, spacing, strict=True)
        ):
            if a is None:
                continue
            d = x - c
            finite.append(s / a)
            if axis == 2 and self.below is not None:
                if math.isfinite(self.below):
                    finite.append(s / self.below)
                a = _per_side(d, a, self.below)
            u = d / a
            g = u * (s / a)
            rho2 = rho2 + u * u
            grad2 = grad2 + g * g
        rho = np.sqrt(rho2)
        # |grad rho| >= min(s / a) everywhere; the bound also handles the centre (0 / 0).
        grad = np.maximum(np.sqrt(grad2) / np.maximum(rho, 1e-6), min(finite))
        return (rho - 1.0) / grad

    def mask(self, coords: Coords, spacing: Spacing) -> np.ndarray:
        return _soft(self.sdf(coords, spacing))


@dataclass(frozen=True)
class _Waves:
    """Smooth random field ``sum_k a_k cos(w_k . X + p_k)`` of material coordinates (mm)."""

    vectors: tuple[tuple[float, float, float], ...]  # angular wave vectors, rad/mm
    phases: tuple[float, ...]
    amplitudes: tuple[float, ...]

    def __call__(self, coords: Coords) -> np.ndarray:
        x, y, z = coords
        total = 0.0
        for (wx, wy, wz), p, a in zip(self.vectors, self.phases, self.amplitudes, strict=True):
            total = total + a * np.cos(wx * x + wy * y + wz * z + p)
        return total


def _draw_waves(
    rng: np.random.Generator, n: int, wavelength_mm: tuple[float, float], unit_gradient: bool
) -> _Waves:
    """Random plane waves; amplitudes sum to 1 (field in [-1, 1]), or with ``unit_gradient``
    scaled so the RMS gradient is 1/mm (then |field| ~ distance to its zero set in mm)."""
    directions = rng.normal(size=(n, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    wavenumbers = 2 * np.pi / rng.uniform(*wavelength_mm, size=n)
    phases = rng.uniform(0, 2 * np.pi, size=n)
    amplitudes = rng.uniform(0.5, 1.0, size=n)
    if unit_gradient:
        amplitudes /= np.sqrt(np.sum(amplitudes**2 * wavenumbers**2) / 2)
    else:
        amplitudes /= amplitudes.sum()
    vectors = directions * wavenumbers[:, None]
    return _Waves(
        vectors=tuple(tuple(float(v) for v in row) for row in vectors),
        phases=tuple(float(p) for p in phases),
        amplitudes=tuple(float(a) for a in amplitudes),
    )


def _paint(image: np.ndarray, mask: np.ndarray, value: float) -> None:
    """Draw a soft layer over ``image`` in place (painter's algorithm)."""
    image += mask * (value - image)


def _jitter(rng: np.random.Generator, value: float, relative: float) -> float:
    """``value`` times a uniform factor in [1 - relative, 1 + relative]."""
    return float(value * rng.uniform(1.0 - relative, 1.0 + relative))


def _offset(rng: np.random.Generator, value: float, spread: float) -> float:
    """``value`` plus a uniform offset in [-spread, spread]."""
    return float(value + rng.uniform(-spread, spread))


def _above(coords: Coords, level: float, spacing: Spacing) -> np.ndarray:
    """Soft half-space ``z > level`` (axis 2)."""
    return _soft((level - coords[2]) / spacing[2])
