"""Distribution shifts of image appearance (noise, gamma, scale, bias, blur): what test-time
training should absorb, applied to any frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from ...errors import InputError

# Independent random streams of apply_shift, so the bias field does not depend on the noise.
_BIAS_STREAM, _NOISE_STREAM = 1, 2

_SHIFT_HELP = (
    "accepted: comma-separated name=value pairs with names noise, gamma, scale, bias, blur "
    "(noise, scale, bias, blur >= 0; gamma > 0), e.g. 'noise=0.05,gamma=1.5', or 'none'"
)


@dataclass(frozen=True)
class Shift:
    """A distribution shift of image appearance, the kind test-time training should absorb.

    Applied by :func:`apply_shift` in the order blur, bias, gamma, scale, noise.
    """

    noise: float = 0.0  # std of additive noise on [0, 1] intensities (Rician for MRI)
    gamma: float = 1.0  # I -> I ** gamma
    scale: float = 1.0  # I -> scale * I
    bias: float = 0.0  # strength B of a smooth multiplicative field exp(B * f), |f| <= 1
    blur: float = 0.0  # Gaussian blur sigma in voxels

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InputError(f"shift {f.name} must be a number, got {value!r}; {_SHIFT_HELP}")
            if not math.isfinite(value):
                raise InputError(f"shift {f.name} must be finite, got {value}; {_SHIFT_HELP}")
            object.__setattr__(self, f.name, float(value))
        if self.gamma <= 0:
            raise InputError(f"shift gamma must be > 0, got {self.gamma:g}; {_SHIFT_HELP}")
        for name in ("noise", "scale", "bias", "blur"):
            if getattr(self, name) < 0:
                raise InputError(
                    f"shift {name} must be >= 0, got {getattr(self, name):g}; {_SHIFT_HELP}"
                )

    @classmethod
    def parse(cls, text: str) -> Shift:
        """Parse ``"noise=0.05,gamma=1.5"`` (any subset, any order) or ``"none"``."""
        stripped = text.strip()
        if stripped in ("", "none"):
            return cls()
        names = {f.name for f in fields(cls)}
        values: dict[str, float] = {}
        for item in stripped.split(","):
            name, sep, raw = (part.strip() for part in item.partition("="))
            if not sep or not name:
                raise InputError(f"shift item {item.strip()!r} is not name=value; {_SHIFT_HELP}")
            if name not in names:
                raise InputError(f"unknown shift parameter {name!r}; {_SHIFT_HELP}")
            if name in values:
                raise InputError(f"shift parameter {name!r} given twice; {_SHIFT_HELP}")
            try:
                values[name] = float(raw)
            except ValueError:
                raise InputError(
                    f"shift {name} value {raw!r} is not a number; {_SHIFT_HELP}"
                ) from None
        return cls(**values)

    def is_identity(self) -> bool:
        """True when applying the shift changes nothing (all fields at their defaults)."""
        return self == Shift()

    def __str__(self) -> str:
        """Canonical text, only non-default fields, in field order; ``"none"`` if identity."""
        default = Shift()
        parts = [
            f"{f.name}={_format_number(getattr(self, f.name))}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        ]
        return ",".join(parts) if parts else "none"


def _format_number(value: float) -> str:
    """Shortest text that parses back to exactly ``value`` ("1" rather than "1.0")."""
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def apply_shift(
    frames: np.ndarray, shift: Shift, seed: int = 0, *, rician: bool = False
) -> np.ndarray:
    """Apply ``shift`` to ``frames`` ``(T, I, J, K)``; returns a new float32 array, same shape.

    Order: blur (spatial axes only), bias (one field for all frames), gamma, scale, noise
    (different per frame, deterministic by ``seed``); the result is clipped to >= 0 but not
    above, since a scaled image may legitimately exceed 1. ``rician=True`` makes the noise
    the magnitude of complex Gaussian noise, as in MRI magnitude images.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4:
        raise InputError(f"frames must be 4D (T, I, J, K), got shape {frames.shape}")
    seed = _check_seed(seed)
    out = np.array(frames, dtype=np.float32)
    if shift.blur > 0:
        out = _gaussian_blur(out, shift.blur)
    if shift.bias > 0:
        out *= _bias_field(out.shape[1:], shift.bias, seed)[None]
    if shift.gamma != 1.0:
        out = np.power(np.maximum(out, 0.0), shift.gamma, dtype=np.float32)
    if shift.scale != 1.0:
        out *= shift.scale
    if shift.noise > 0:
        out = _add_noise(out, shift.noise, seed, rician)
    return np.maximum(out, 0.0, out=out)


def _gaussian_blur(frames: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of ``(T, I, J, K)`` along I, J, K (not time); edges replicate.

    Plain numpy (no scipy) because Slicer's Python does not ship scipy.
    """
    radius = max(1, math.ceil(4.0 * sigma))
    taps = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (taps / sigma) ** 2)
    weights /= weights.sum()
    for axis in (1, 2, 3):
        frames = _convolve_axis(frames, weights.astype(np.float32), axis)
    return frames


def _convolve_axis(array: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """Correlate ``array`` with the odd-length symmetric ``weights`` along ``axis``."""
    radius = len(weights) // 2
    pad = [(0, 0)] * array.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(array, pad, mode="edge")
    out = np.zeros_like(array)
    n = array.shape[axis]
    for offset, weight in enumerate(weights):
        window = [slice(None)] * array.ndim
        window[axis] = slice(offset, offset + n)
        out += weight * padded[tuple(window)]
    return out


def _bias_field(shape: tuple[int, ...], strength: float, seed: int) -> np.ndarray:
    """Smooth multiplicative field ``exp(strength * f)`` of shape ``(I, J, K)``.

    ``f`` is a random quadratic polynomial of the normalised coordinates in [-1, 1] (like a
    receive-coil sensitivity), scaled so that max |f| = 1 over the grid.
    """
    rng = np.random.default_rng((seed, _BIAS_STREAM))
    x, y, z = (
        np.linspace(-1.0, 1.0, n).reshape([n if a == axis else 1 for a in range(3)])
        for axis, n in enumerate(shape)
    )
    terms = (x, y, z, x * x, y * y, z * z, x * y, x * z, y * z)
    coefficients = rng.normal(size=len(terms))
    field = sum(c * t for c, t in zip(coefficients, terms, strict=True)) + np.zeros(shape)
    peak = float(np.abs(field).max())
    if peak > 0:
        field /= peak
    return np.exp(strength * field).astype(np.float32)


def _add_noise(frames: np.ndarray, std: float, seed: int, rician: bool) -> np.ndarray:
    """Additive Gaussian noise, or Rician: ``|I + n1 + i n2|`` with n1, n2 ~ N(0, std^2)."""
    rng = np.random.default_rng((seed, _NOISE_STREAM))
    real = frames + std * rng.standard_normal(frames.shape, dtype=np.float32)
    if not rician:
        return real
    imaginary = std * rng.standard_normal(frames.shape, dtype=np.float32)
    return np.sqrt(real * real + imaginary * imaginary)


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)
