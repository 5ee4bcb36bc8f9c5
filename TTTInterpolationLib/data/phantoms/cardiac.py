"""Cardiac cine MRI phantom (bright-blood contrast): anatomy, the timing of the cycle, and the
inverse LV/RV motion maps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .shapes import (
    Coords,
    Spacing,
    _above,
    _draw_waves,
    _Ellipsoid,
    _jitter,
    _offset,
    _paint,
    _per_side,
    _smoothstep,
    _Waves,
)

# Timing of the cardiac cycle (phase in [0, 1)): ED at 0, ES at 0.4, relaxed again by 0.8.
CARDIAC_ES_PHASE = 0.4
CARDIAC_RELAXED_PHASE = 0.8
# Lung: end-inhale at phase 0, end-exhale at 0.5 (see breathing_curve).
# Designed ranges of the per-seed motion parameters (tests and docs refer to them).
CARDIAC_CAVITY_SHRINK = (0.30, 0.35)  # fraction of the LV cavity radius lost at ES


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
