"""Synthetic 4D phantoms with exact ground truth at any continuous time.

There is no real data with frames between end-diastole/end-systole (or end-inhale/end-exhale)
to score an interpolator against, so these phantoms supply it: each frame is rendered
analytically, ``I_t(x) = ref(X_t(x))``, where ``ref`` is a reference anatomy made of soft-edged
shapes plus a smooth tissue texture, and ``X_t`` is an analytic *inverse* motion map (spatial
position at time ``t`` -> material position in the reference). Evaluating ``X_t`` at any real
phase gives the exact frame at that phase, no interpolation involved.

Conventions: arrays are ``(T, I, J, K)`` float32 in [0, 1]; axes 0 and 1 are in-plane (cardiac
short-axis plane; lung axial plane, L-R and A-P), axis 2 is the slice axis (cardiac long axis,
base at low ``k``, apex at high ``k``; lung inferior -> superior). Anatomy is defined in
millimetres over a fixed field of view per kind, so the same seed gives the same anatomy at any
voxel size (``spacing = FOV / size``). Phases are periodic with period 1.

Randomness follows the "draw parameters, then render deterministically" pattern: every random
number comes from ``np.random.default_rng(seed)`` in a params step, rendering is pure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np

from .config import PHANTOM_KINDS as KINDS
from .errors import InputError
from .volume import Geometry, Sequence4D

MIN_SIZE = 8
# Field of view in mm along (I, J, K): cardiac ~ an ACDC crop (1.5 mm in-plane at 128),
# lung ~ a whole thorax (3 x 3 x 2.5 mm at 128^3).
_FOV_MM = {"cardiac": (192.0, 192.0, 160.0), "lung": (384.0, 384.0, 320.0)}
# LPS position of the centre of the field of view: only there to give a realistic origin.
_CENTRE_LPS = {"cardiac": (20.0, 15.0, 40.0), "lung": (0.0, 30.0, -170.0)}
# Edge softness: sigmoid of the signed distance (in voxels) with this scale, so an edge rises
# from 10 % to 90 % over ~1.1 voxels at any resolution (images are never binary).
_EDGE_WIDTH_VOX = 0.25

# Timing of the cardiac cycle (phase in [0, 1)): ED at 0, ES at 0.4, relaxed again by 0.8.
CARDIAC_ES_PHASE = 0.4
CARDIAC_RELAXED_PHASE = 0.8
# Lung: end-inhale at phase 0, end-exhale at 0.5 (see breathing_curve).
# Designed ranges of the per-seed motion parameters (tests and docs refer to them).
CARDIAC_CAVITY_SHRINK = (0.30, 0.35)  # fraction of the LV cavity radius lost at ES
LUNG_AMPLITUDE_MM = (10.0, 15.0)  # superior-inferior diaphragm excursion

# HU window of the lung phantom: [-1400, 200] HU -> [0, 1].
_HU_LOW, _HU_HIGH = -1400.0, 200.0

# Independent random streams of apply_shift, so the bias field does not depend on the noise.
_BIAS_STREAM, _NOISE_STREAM = 1, 2

Coords = tuple[np.ndarray, np.ndarray, np.ndarray]  # mm, mutually broadcastable
Spacing = tuple[float, float, float]


# --------------------------------------------------------------------------------------------
# Distribution shift
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Time
# --------------------------------------------------------------------------------------------


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


def cardiac_contraction(phase: float) -> float:
    """Systolic contraction s in [0, 1]: 0 at ED (phase 0), 1 at ES (0.4), 0 again from 0.8.

    Raised cosines on each side, so s is C1 (zero velocity at ED, ES and end of relaxation).
    """
    p = phase % 1.0
    if p < CARDIAC_ES_PHASE:
        return 0.5 - 0.5 * math.cos(math.pi * p / CARDIAC_ES_PHASE)
    if p < CARDIAC_RELAXED_PHASE:
        span = CARDIAC_RELAXED_PHASE - CARDIAC_ES_PHASE
        return 0.5 + 0.5 * math.cos(math.pi * (p - CARDIAC_ES_PHASE) / span)
    return 0.0


def breathing_curve(phase: float) -> float:
    """Exhalation b in [0, 1]: 0 at end-inhale (phase 0), 1 at end-exhale (phase 0.5).

    ``b = 1 - cos^4(pi * phase)`` (Lujan et al. 1999): smooth, periodic, and it lingers near
    exhale longer than near inhale, as free breathing does.
    """
    return 1.0 - math.cos(math.pi * (phase % 1.0)) ** 4


# --------------------------------------------------------------------------------------------
# Shape primitives (material coordinates in mm, signed distances in voxels)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Cardiac cine MRI (bright-blood contrast)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CardiacParams:
    """Reference anatomy (= end-diastole) and motion parameters of one cardiac phantom.

    In-plane (u, v) = (axis 0, axis 1) in mm from the FOV centre, z along axis 2 from base
    (low) to apex (high). The LV cavity ellipsoid is centred on the basal plane ``z = base``:
    long toward the apex, short on the other side (the atrium, which keeps bright blood).
    """

    lv_cavity: _Ellipsoid
    lv_wall: float  # myocardial thickness at ED, mm
    rv_cavity: _Ellipsoid
    rv_wall: float
    pericardial_fat: float  # fat layer around the heart, mm
    torso: _Ellipsoid
    subcutaneous_fat: float
    lungs: tuple[_Ellipsoid, _Ellipsoid]
    aorta: _Ellipsoid
    blood: float
    myocardium: float
    fat: float
    tissue: float
    lung: float
    cavity_shrink: float  # fraction of the LV cavity radius lost at ES
    rv_shrink: float  # same for the RV (contracts less)
    shortening: float  # fraction of base-to-apex length lost at ES
    twist_deg: tuple[float, float]  # rotation at (apex, base) at ES
    texture: _Waves
    texture_strength: float

    @property
    def base(self) -> float:
        return self.lv_cavity.centre[2]

    @property
    def lv_epicardium(self) -> _Ellipsoid:
        return self.lv_cavity.grown(self.lv_wall)

    @property
    def apex(self) -> float:
        """Axis-2 position of the epicardial apex (fixed during the cycle)."""
        return self.base + self.lv_epicardium.semi[2]

    @property
    def heart_radius(self) -> float:
        """In-plane radius within which the LV motion is not attenuated, mm."""
        return max(self.lv_epicardium.semi[:2]) + self.pericardial_fat


def _cardiac_params(seed: int) -> _CardiacParams:
    """Draw every random number of a cardiac phantom (mild per-seed variation)."""
    rng = np.random.default_rng(seed)
    cu, cv = _offset(rng, 0.0, 3.0), _offset(rng, 0.0, 3.0)
    base = _offset(rng, -42.0, 4.0)
    lv = _Ellipsoid(
        centre=(cu, cv, base),
        semi=(_jitter(rng, 25.0, 0.08), _jitter(rng, 23.0, 0.08), _jitter(rng, 72.0, 0.08)),
        below=_jitter(rng, 28.0, 0.1),
    )
    rv = _Ellipsoid(
        centre=(_offset(rng, cu - 21.0, 3.0), _offset(rng, cv - 13.0, 3.0), base - 5.0),
        semi=(_jitter(rng, 46.0, 0.06), _jitter(rng, 37.0, 0.06), _jitter(rng, 60.0, 0.08)),
        below=_jitter(rng, 30.0, 0.1),
    )
    lungs = (
        _Ellipsoid((_offset(rng, 64.0, 4.0), _offset(rng, 20.0, 4.0), 0.0), (36.0, 72.0, None)),
        _Ellipsoid((_offset(rng, -82.0, 4.0), _offset(rng, 25.0, 4.0), 0.0), (30.0, 66.0, None)),
    )
    return _CardiacParams(
        lv_cavity=lv,
        lv_wall=_jitter(rng, 9.0, 0.1),
        rv_cavity=rv,
        rv_wall=_jitter(rng, 4.0, 0.1),
        pericardial_fat=_jitter(rng, 4.0, 0.1),
        torso=_Ellipsoid(
            (_offset(rng, -20.0, 5.0), _offset(rng, 25.0, 3.0), 0.0), (175.0, 110.0, None)
        ),
        subcutaneous_fat=_jitter(rng, 12.0, 0.15),
        lungs=lungs,
        aorta=_Ellipsoid(
            (_offset(rng, 24.0, 3.0), _offset(rng, 56.0, 3.0), 0.0), (11.0, 11.0, None)
        ),
        blood=_offset(rng, 0.88, 0.04),
        myocardium=_offset(rng, 0.24, 0.03),
        fat=_offset(rng, 0.68, 0.05),
        tissue=_offset(rng, 0.36, 0.03),
        lung=_offset(rng, 0.06, 0.02),
        cavity_shrink=float(rng.uniform(*CARDIAC_CAVITY_SHRINK)),
        rv_shrink=float(rng.uniform(0.15, 0.2)),
        shortening=float(rng.uniform(0.10, 0.14)),
        twist_deg=(_jitter(rng, 7.0, 0.2), _jitter(rng, -3.0, 0.2)),
        texture=_draw_waves(rng, 5, (15.0, 50.0), unit_gradient=False),
        texture_strength=_offset(rng, 0.06, 0.01),
    )


def _rv_motion(p: _CardiacParams, coords: Coords, s: float) -> Coords:
    """Inverse RV contraction: material comes from farther out along rays from the RV centre.

    Inside the RV ellipse (normalised radius < 1) the map is a uniform scaling by
    ``1 + rv_shrink * s``; beyond it the extra scaling fades within ~0.3 RV radii. It also
    fades along axis 2 past the RV and inside the LV (the septum follows the LV map instead).
    """
    x, y, z = coords
    cu, cv, _ = p.lv_cavity.centre
    ru, rv, rz = p.rv_cavity.centre
    a, b, _ = p.rv_cavity.semi
    du, dv = x - ru, y - rv
    radius = np.sqrt((du / a) ** 2 + (dv / b) ** 2)
    beyond = np.exp(-((np.maximum(radius - 1.0, 0.0) / 0.3) ** 2))
    lv_distance = np.sqrt((x - cu) ** 2 + (y - cv) ** 2)
    outside_lv = _smoothstep((lv_distance - p.lv_epicardium.semi[0]) / 12.0)
    length = _per_side(z - rz, p.rv_cavity.semi[2], p.rv_cavity.below)
    along = np.exp(-0.5 * ((z - rz) / length) ** 4)
    gain = (p.rv_shrink * s) * beyond * outside_lv * along
    return x + gain * du, y + gain * dv, z


def _lv_motion(p: _CardiacParams, coords: Coords, s: float) -> Coords:
    """Inverse LV motion (spatial at contraction ``s`` -> material at ED), applied in turn:

    1. base-to-apex shortening with the apex fixed;
    2. torsion about the long axis, apex and base turning opposite ways;
    3. radial contraction in the short-axis plane, incompressible outside the cavity:
       in cavity-normalised radii, ``R^2 = r^2 + q^2 (1 - f^2)`` keeps the area of every
       annulus (so the myocardium thickens), and the cavity scales by ``f = 1 - shrink * s``.
    All three fade with in-plane distance beyond the heart, so the chest barely moves.
    """
    x, y, z = coords
    cu, cv, base = p.lv_cavity.centre
    du, dv = x - cu, y - cv
    distance = np.sqrt(du * du + dv * dv)
    near = np.exp(-((np.maximum(distance - p.heart_radius, 0.0) / 20.0) ** 2))

    length = p.apex - base
    to_apex = p.apex - z
    gain = p.shortening * s / (1.0 - p.shortening * s)
    beyond_base = np.maximum(to_apex - length, 0.0) / 30.0
    lift = gain * np.clip(to_apex, 0.0, length) * np.exp(-(beyond_base**2))
    z_material = z - lift * near

    fraction = np.clip((p.apex - z_material) / length, 0.0, 1.0)
    apex_twist, base_twist = (math.radians(a) * s for a in p.twist_deg)
    angle = (apex_twist + (base_twist - apex_twist) * fraction) * near
    cos, sin = np.cos(angle), np.sin(angle)
    du, dv = cos * du + sin * dv, cos * dv - sin * du

    a, b, c = p.lv_cavity.semi
    rn2 = (du / a) ** 2 + (dv / b) ** 2
    height = z_material - base
    q2 = np.clip(1.0 - (height / _per_side(height, c, p.lv_cavity.below)) ** 2, 0.0, 1.0)
    ventricle = _smoothstep(height / 10.0 + 1.0)
    f = 1.0 - (p.cavity_shrink * s) * ventricle
    delta = q2 * (1.0 - f * f)
    ratio = np.where(rn2 < f * f * q2, 1.0 / f, np.sqrt(1.0 + delta / np.maximum(rn2, 1e-12)))
    ratio = 1.0 + (ratio - 1.0) * near
    return cu + du * ratio, cv + dv * ratio, z_material


def _render_cardiac(
    p: _CardiacParams, coords: Coords, spacing: Spacing, phase: float
) -> np.ndarray:
    """One cine frame ``(I, J, K)`` at ``phase``."""
    s = cardiac_contraction(phase)
    if s > 0:
        coords = _lv_motion(p, _rv_motion(p, coords, s), s)
    epicardium = p.lv_epicardium
    rv_wall = p.rv_cavity.grown(p.rv_wall)
    layers = (
        (p.torso.mask(coords, spacing), p.fat),
        (p.torso.grown(-p.subcutaneous_fat).mask(coords, spacing), p.tissue),
        (p.lungs[0].mask(coords, spacing), p.lung),
        (p.lungs[1].mask(coords, spacing), p.lung),
        (p.aorta.mask(coords, spacing), p.blood),
        (epicardium.grown(p.pericardial_fat).mask(coords, spacing), p.fat),
        (rv_wall.grown(p.pericardial_fat).mask(coords, spacing), p.fat),
        (rv_wall.mask(coords, spacing), p.myocardium),
        (p.rv_cavity.mask(coords, spacing), p.blood),
        (epicardium.mask(coords, spacing) * _above(coords, p.base, spacing), p.myocardium),
        (p.lv_cavity.mask(coords, spacing), p.blood),
    )
    image = np.zeros(np.broadcast_shapes(*(c.shape for c in coords)), dtype=np.float32)
    for mask, value in layers:
        _paint(image, mask, value)
    image *= 1.0 + p.texture_strength * p.texture(coords)
    return np.clip(image, 0.0, 1.0)


def _above(coords: Coords, level: float, spacing: Spacing) -> np.ndarray:
    """Soft half-space ``z > level`` (axis 2)."""
    return _soft((level - coords[2]) / spacing[2])


# --------------------------------------------------------------------------------------------
# Lung 4D CT
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Lung:
    """One lung: an elliptic cylinder with a half-ellipsoid apex (``shape``), floored by a
    paraboloid diaphragm dome rising ``dome`` mm from ``floor`` (the costophrenic recess)."""

    shape: _Ellipsoid
    floor: float
    dome: float

    def mask(self, coords: Coords, spacing: Spacing) -> np.ndarray:
        x, y, z = coords
        cx, cy, _ = self.shape.centre
        a, b, _ = self.shape.semi
        u, v = (x - cx) / a, (y - cy) / b
        surface = self.floor + self.dome * (1.0 - u * u - v * v)
        # Signed distance below the dome, first order: vertical gap / |grad| in voxel units.
        slope_x = -2.0 * self.dome * u / a * spacing[0]
        slope_y = -2.0 * self.dome * v / b * spacing[1]
        grad = np.sqrt(slope_x * slope_x + slope_y * slope_y + spacing[2] ** 2)
        return self.shape.mask(coords, spacing) * _soft((surface - z) / grad)


def _draw_lung(
    rng: np.random.Generator,
    centre: tuple[float, float],
    semi: tuple[float, float],
    floor: float,
    dome: float,
) -> _Lung:
    """A lung with jittered position and size; straight walls for 100 mm above the floor,
    then a rounded apex ~130 mm higher."""
    x, y = (_offset(rng, c, 3.0) for c in centre)
    a, b = (_jitter(rng, r, 0.06) for r in semi)
    shape = _Ellipsoid((x, y, floor + 100.0), (a, b, _jitter(rng, 130.0, 0.05)), below=math.inf)
    return _Lung(shape=shape, floor=floor, dome=_jitter(rng, dome, 0.1))


@dataclass(frozen=True)
class _LungParams:
    """Reference anatomy (= end-inhale) and breathing parameters of one lung phantom.

    In-plane (x, y) = (axis 0 = patient left, axis 1 = posterior) in mm, z = axis 2 superior.
    """

    body: _Ellipsoid
    subcutaneous_fat: float
    ribs: tuple[float, float]  # inner/outer normalised body radius of the rib ring
    rib_pitch: float  # mm between ribs along z
    spine: _Ellipsoid
    trachea: _Ellipsoid
    carina: float  # z where the trachea ends
    lungs: tuple[_Lung, _Lung]
    tumour: _Ellipsoid
    vessels: tuple[_Waves, _Waves]
    vessel_radius: float
    hu_air: float
    hu_lung: float
    hu_lung_exhale: float  # added at end-exhale: less air, denser lung
    hu_fat: float
    hu_tissue: float
    hu_bone: float
    amplitude: float  # superior-inferior excursion at the diaphragm, mm
    ap_expansion: float  # relative A-P chest expansion at inhale
    lr_expansion: float
    texture: _Waves


def _lung_params(seed: int) -> _LungParams:
    """Draw every random number of a lung phantom (mild per-seed variation)."""
    rng = np.random.default_rng(seed)
    floor = _offset(rng, -100.0, 6.0)
    lungs = (  # patient right (-x) first: its dome is higher, over the liver
        _draw_lung(rng, (-72.0, 5.0), (52.0, 76.0), floor, dome=50.0),
        _draw_lung(rng, (74.0, 8.0), (50.0, 74.0), floor, dome=40.0),
    )
    host = lungs[int(rng.integers(2))]
    (hx, hy, _), (ha, hb, _) = host.shape.centre, host.shape.semi
    radius = float(rng.uniform(7.5, 12.5))
    tumour_centre = (
        _offset(rng, hx, 0.3 * ha),
        _offset(rng, hy, 0.3 * hb),
        float(host.floor + host.dome + radius + rng.uniform(15.0, 60.0)),
    )
    return _LungParams(
        body=_Ellipsoid(
            (0.0, _offset(rng, 0.0, 4.0), 0.0),
            (_jitter(rng, 168.0, 0.05), _jitter(rng, 118.0, 0.05), None),
        ),
        subcutaneous_fat=_jitter(rng, 14.0, 0.2),
        ribs=(0.8, 0.87),
        rib_pitch=_jitter(rng, 30.0, 0.1),
        spine=_Ellipsoid((0.0, _offset(rng, 86.0, 3.0), 0.0), (19.0, 19.0, None)),
        trachea=_Ellipsoid((0.0, _offset(rng, -20.0, 3.0), 0.0), (9.0, 9.0, None)),
        carina=floor + _offset(rng, 150.0, 8.0),
        lungs=lungs,
        tumour=_Ellipsoid(tumour_centre, (radius, radius, radius)),
        vessels=(
            _draw_waves(rng, 4, (30.0, 60.0), unit_gradient=True),
            _draw_waves(rng, 4, (30.0, 60.0), unit_gradient=True),
        ),
        vessel_radius=float(rng.uniform(1.8, 2.6)),
        hu_air=-1000.0,
        hu_lung=_offset(rng, -850.0, 20.0),
        hu_lung_exhale=_offset(rng, 50.0, 10.0),
        hu_fat=_offset(rng, -100.0, 10.0),
        hu_tissue=_offset(rng, 40.0, 10.0),
        hu_bone=400.0,
        amplitude=float(rng.uniform(*LUNG_AMPLITUDE_MM)),
        ap_expansion=float(rng.uniform(0.03, 0.05)),
        lr_expansion=float(rng.uniform(0.01, 0.02)),
        texture=_draw_waves(rng, 5, (15.0, 60.0), unit_gradient=False),
    )


def _lung_motion(p: _LungParams, coords: Coords, b: float) -> Coords:
    """Inverse breathing map (spatial at exhalation ``b`` -> material at end-inhale).

    Superior-inferior motion ``b * amplitude`` is largest at and below the diaphragm, fades
    toward the apex and deep in the abdomen, and vanishes at the chest wall (lungs slide along
    it; more posteriorly than anteriorly). The chest also narrows in A-P (about the spine) and
    slightly in L-R as it exhales.
    """
    x, y, z = coords
    floor = p.lungs[0].floor
    ap_pivot = p.spine.centre[1]
    bx, by, _ = p.body.centre
    ba, bb, _ = p.body.semi
    rho = np.sqrt(((x - bx) / ba) ** 2 + ((y - by) / bb) ** 2)
    inside_ribs = _smoothstep((0.86 - rho) / 0.2) * (1.0 + 0.25 * (y - by) / bb)
    thorax = 1.0 / (1.0 + np.exp((z - (floor + 110.0)) / 35.0))
    abdomen = 1.0 / (1.0 + np.exp(-(z - (floor - 110.0)) / 20.0))
    z_material = z - (p.amplitude * b) * inside_ribs * (thorax * abdomen)
    x_material = bx + (x - bx) * (1.0 + p.lr_expansion * b)
    y_material = ap_pivot + (y - ap_pivot) * (1.0 + p.ap_expansion * b)
    return x_material, y_material, z_material


def _render_lung(p: _LungParams, coords: Coords, spacing: Spacing, phase: float) -> np.ndarray:
    """One CT frame ``(I, J, K)`` at ``phase``, HU windowed to [0, 1]."""
    b = breathing_curve(phase)
    if b > 0:
        coords = _lung_motion(p, coords, b)
    lungs = p.lungs[0].mask(coords, spacing) + p.lungs[1].mask(coords, spacing)
    body = p.body.mask(coords, spacing)
    layers = (
        (body, p.hu_fat),
        (p.body.grown(-p.subcutaneous_fat).mask(coords, spacing), p.hu_tissue),
        (_ribs(p, coords, spacing), p.hu_bone),
        (p.spine.mask(coords, spacing), p.hu_bone),
        (lungs, p.hu_lung + p.hu_lung_exhale * b),
        (p.trachea.mask(coords, spacing) * _above(coords, p.carina, spacing), p.hu_air),
        (lungs * _vessels(p, coords, spacing), p.hu_tissue),
        (p.tumour.mask(coords, spacing), p.hu_tissue),
    )
    shape = np.broadcast_shapes(*(c.shape for c in coords))
    hu = np.full(shape, p.hu_air, dtype=np.float32)
    for mask, value in layers:
        _paint(hu, mask, value)
    hu += p.texture(coords) * (15.0 + 25.0 * lungs) * body
    return np.clip(_hu_to_unit(hu), 0.0, 1.0)


def _hu_to_unit(hu: np.ndarray | float) -> np.ndarray | float:
    """The lung window: -1400 HU -> 0, 200 HU -> 1 (linear, unclipped)."""
    return (hu - _HU_LOW) / (_HU_HIGH - _HU_LOW)


def _ribs(p: _LungParams, coords: Coords, spacing: Spacing) -> np.ndarray:
    """Rib cage: a ring inside the body wall, cut into oblique bands along z."""
    inner, outer = p.ribs
    semi = p.body.semi
    ring = _scaled(p.body, outer).mask(coords, spacing) * (
        1.0 - _scaled(p.body, inner).mask(coords, spacing)
    )
    _, y, z = coords
    level = math.cos(0.4 * math.pi)  # bands cover 40 % of the pitch
    wave = np.cos((2 * np.pi / p.rib_pitch) * (z + 0.6 * (y / semi[1]) * p.rib_pitch))
    distance_mm = (level - wave) * p.rib_pitch / (2 * np.pi * math.sin(0.4 * math.pi))
    return ring * _soft(distance_mm / spacing[2])


def _scaled(shape: _Ellipsoid, factor: float) -> _Ellipsoid:
    """Same centre, semi-axes multiplied by ``factor``."""
    return replace(shape, semi=tuple(None if a is None else a * factor for a in shape.semi))


def _vessels(p: _LungParams, coords: Coords, spacing: Spacing) -> np.ndarray:
    """Random tubes: where two unit-gradient random fields are both near zero.

    The intersection of two zero surfaces is a set of curves, and sqrt(f1^2 + f2^2) is about
    the distance to them in mm, so thresholding it draws tubes of ``vessel_radius``.
    """
    first, second = (waves(coords) for waves in p.vessels)
    distance = np.sqrt(first * first + second * second)
    return _soft((distance - p.vessel_radius) / (sum(spacing) / 3.0))


# --------------------------------------------------------------------------------------------
# Public rendering API
# --------------------------------------------------------------------------------------------


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


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)
