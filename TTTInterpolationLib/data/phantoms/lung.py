"""Lung 4D CT phantom: thorax anatomy in HU, the breathing curve and the inverse breathing map."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

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
    _smoothstep,
    _soft,
    _Waves,
)

LUNG_AMPLITUDE_MM = (10.0, 15.0)  # superior-inferior diaphragm excursion

# HU window of the lung phantom: [-1400, 200] HU -> [0, 1].
_HU_LOW, _HU_HIGH = -1400.0, 200.0


def breathing_curve(phase: float) -> float:
    """Exhalation b in [0, 1]: 0 at end-inhale (phase 0), 1 at end-exhale (phase 0.5).

    ``b = 1 - cos^4(pi * phase)`` (Lujan et al. 1999): smooth, periodic, and it lingers near
    exhale longer than near inhale, as free breathing does.
    """
    return 1.0 - math.cos(math.pi * (phase % 1.0)) ** 4


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
