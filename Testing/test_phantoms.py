"""Tests for phantoms: determinism, exact periodic time, designed motion, and appearance shifts.

The anatomy checks measure the images (never the renderer's own masks): LV cavity area and wall
thickness come from rays cast from the LV centre in a mid-ventricular slice, the diaphragm from
an intensity profile along axis 2. Shift effects are compared with values worked out by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from TTTInterpolationLib.config import PHANTOM_KINDS as KINDS
from TTTInterpolationLib.data.phantoms import cardiac, sequences, shapes
from TTTInterpolationLib.data.phantoms.lung import (
    _hu_to_unit,
    _lung_motion,
    _lung_params,
    breathing_curve,
)
from TTTInterpolationLib.data.phantoms.sequences import (
    end_frames,
    make_phantom_sequence,
    phantom_frames,
    phase_of_frame,
)
from TTTInterpolationLib.data.phantoms.shifts import Shift, apply_shift
from TTTInterpolationLib.errors import InputError
from TTTInterpolationLib.volume import Sequence4D

SMALL = (32, 24, 16)  # non-cubic and fast
ES_PHASE = {"cardiac": 0.4, "lung": 0.5}  # second end frame of each kind


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.float64) - b)))


# --------------------------------------------------------------------------------------------
# Rendering: determinism, shapes, time
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_is_bit_identical_and_seeds_differ(kind: str) -> None:
    first = phantom_frames(kind, [0.0, 0.37], SMALL, seed=3)
    again = phantom_frames(kind, [0.0, 0.37], SMALL, seed=3)
    other = phantom_frames(kind, [0.0, 0.37], SMALL, seed=4)
    assert np.array_equal(first, again)
    assert mean_abs(first, other) > 0.005


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [(64, 64, 32), (40, 24, 12), (8, 9, 10)])
def test_shape_dtype_and_range(kind: str, size: tuple[int, int, int]) -> None:
    frames = phantom_frames(kind, [0.0, 0.5, 0.93], size, seed=1)
    assert frames.shape == (3, *size)
    assert frames.dtype == np.float32
    assert frames.min() >= 0.0 and frames.max() <= 1.0
    if min(size) >= 12:  # real contrast and soft, non-binary edges
        assert frames.std() > 0.1
        assert len(np.unique(frames[0])) > 0.3 * frames[0].size


@pytest.mark.parametrize("kind", KINDS)
def test_phase_is_periodic(kind: str) -> None:
    frames = phantom_frames(kind, [0.0, 1.0, -1.0, 0.3, 2.3], SMALL, seed=2)
    assert np.array_equal(frames[0], frames[1])
    assert np.array_equal(frames[0], frames[2])
    np.testing.assert_allclose(frames[3], frames[4], atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_motion_is_continuous_in_time(kind: str) -> None:
    frames = phantom_frames(kind, [0.30, 0.31, 0.40], SMALL, seed=0)
    near, far = mean_abs(frames[0], frames[1]), mean_abs(frames[0], frames[2])
    assert 0 < near < 0.5 * far


@pytest.mark.parametrize("kind", KINDS)
def test_motion_is_large_and_not_a_linear_blend(kind: str) -> None:
    es = ES_PHASE[kind]
    start, end, middle = phantom_frames(kind, [0.0, es, es / 2], SMALL, seed=0)
    ends_differ = mean_abs(start, end)
    assert ends_differ > 0.015
    # Moving edges make the middle frame unlike the cross-fade of the ends (measured: 0.16-0.27
    # of the end-to-end difference at this size, more on finer grids).
    assert mean_abs(middle, 0.5 * (start + end)) > 0.12 * ends_differ


def test_soft_edges_are_about_one_voxel_wide() -> None:
    # For a sphere the first-order distance (rho - 1) / |grad rho| is exact: (r - R) / spacing.
    sphere = shapes._Ellipsoid((0.0, 0.0, 0.0), (10.0, 10.0, 10.0))
    r = np.array([0.0, 4.0, 10.0, 12.0, 16.0], dtype=np.float32).reshape(5, 1, 1)
    coords = (r, np.zeros((1, 1, 1), np.float32), np.zeros((1, 1, 1), np.float32))
    spacing = (2.0, 3.0, 5.0)
    sdf = sphere.sdf(coords, spacing).ravel()
    np.testing.assert_allclose(sdf[1:], [-3.0, 0.0, 1.0, 3.0], atol=1e-5)
    mask = sphere.mask(coords, spacing).ravel()
    assert mask[0] == 1.0 and mask[2] == 0.5  # centre fully inside, boundary half
    assert 0.0 < mask[3] < 0.03  # one voxel out: nearly outside, but not binary


def test_phase_of_frame() -> None:
    assert phase_of_frame(0, 10) == 0.0
    assert phase_of_frame(3, 10) == 0.3
    assert phase_of_frame(5, 4) == 1.25
    with pytest.raises(InputError, match="frames must be >= 1"):
        phase_of_frame(0, 0)


@pytest.mark.parametrize(
    ("kind", "n", "expected"),
    [
        ("cardiac", 10, (0, 4)),
        ("cardiac", 20, (0, 8)),
        ("cardiac", 25, (0, 10)),
        ("cardiac", 3, (0, 1)),
        ("lung", 10, (0, 5)),
        ("lung", 7, (0, 3)),
        ("lung", 2, (0, 1)),
    ],
)
def test_end_frames(kind: str, n: int, expected: tuple[int, int]) -> None:
    assert end_frames(kind, n) == expected


def test_end_frames_are_the_extremes_of_the_motion() -> None:
    _, es = end_frames("cardiac", 10)
    _, exhale = end_frames("lung", 10)
    assert cardiac.cardiac_contraction(phase_of_frame(es, 10)) == 1.0
    assert breathing_curve(phase_of_frame(exhale, 10)) == 1.0
    assert cardiac.cardiac_contraction(0.0) == breathing_curve(0.0) == 0.0
    assert cardiac.cardiac_contraction(0.85) == 0.0  # relaxed before the next beat


def test_end_frames_errors() -> None:
    with pytest.raises(InputError, match="unknown phantom kind 'brain'; accepted: cardiac, lung"):
        end_frames("brain", 10)
    with pytest.raises(InputError, match="at least 2 frames"):
        end_frames("lung", 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "heart"}, "unknown phantom kind"),
        ({"size": (64, 64, 7)}, r"size must be 3 integers >= 8"),
        ({"size": (64, 64)}, r"size must be 3 integers >= 8"),
        ({"size": (64.0, 64, 32)}, r"size must be 3 integers >= 8"),
        ({"phases": [0.1, float("nan")]}, "phases must be a 1D sequence of finite numbers"),
        ({"phases": [[0.1]]}, "phases must be a 1D sequence"),
        ({"seed": -1}, "seed must be an integer >= 0"),
    ],
)
def test_phantom_frames_errors(kwargs: dict, match: str) -> None:
    args = {"kind": "cardiac", "phases": [0.0], "size": SMALL, "seed": 0, **kwargs}
    with pytest.raises(InputError, match=match):
        phantom_frames(**args)


# --------------------------------------------------------------------------------------------
# Cardiac anatomy and motion
# --------------------------------------------------------------------------------------------


def ray(image: np.ndarray, centre: tuple[float, float], angle: float, length: float) -> np.ndarray:
    """Bilinear samples of a 2D image every 0.1 voxel along a ray from ``centre``."""
    t = np.arange(0.0, length, 0.1)
    i = np.clip(centre[0] + t * math.cos(angle), 0, image.shape[0] - 1.001)
    j = np.clip(centre[1] + t * math.sin(angle), 0, image.shape[1] - 1.001)
    i0, j0 = np.floor(i).astype(int), np.floor(j).astype(int)
    di, dj = i - i0, j - j0
    return (
        image[i0, j0] * (1 - di) * (1 - dj)
        + image[i0 + 1, j0] * di * (1 - dj)
        + image[i0, j0 + 1] * (1 - di) * dj
        + image[i0 + 1, j0 + 1] * di * dj
    )


def crossing(profile: np.ndarray, level: float, start: int = 0, rising: bool = False) -> int:
    """Index of the first sample at or after ``start`` that crosses ``level``."""
    beyond = profile[start:] > level if rising else profile[start:] < level
    return start + int(np.argmax(beyond))


@pytest.fixture(scope="module")
def cardiac_mid_slices() -> tuple[cardiac._CardiacParams, np.ndarray, tuple[float, float], float]:
    """ED and ES of a mid-ventricular slice (96 x 96 in-plane, 2 mm voxels), LV centre in voxels."""
    size, seed = (96, 96, 32), 0
    params = cardiac._cardiac_params(seed)
    spacing = sequences.phantom_geometry("cardiac", size).spacing
    z = params.base + 0.35 * (params.apex - params.base)
    k = round(z / spacing[2] + (size[2] - 1) / 2)
    frames = phantom_frames("cardiac", [0.0, 0.4], size, seed)[:, :, :, k]
    cu, cv, _ = params.lv_cavity.centre
    centre = (cu / spacing[0] + (size[0] - 1) / 2, cv / spacing[1] + (size[1] - 1) / 2)
    return params, frames, centre, spacing[0]


def test_lv_cavity_area_shrinks_by_design(cardiac_mid_slices) -> None:
    params, frames, centre, _ = cardiac_mid_slices
    level = 0.5 * (params.blood + params.myocardium)
    angles = np.linspace(0, 2 * np.pi, 72, endpoint=False)

    def area(image: np.ndarray) -> float:  # polar area of the region seen from the centre
        radii = [0.1 * crossing(ray(image, centre, a, 30.0), level) for a in angles]
        return float(np.pi * np.mean(np.square(radii)))

    ratio = area(frames[1]) / area(frames[0])
    designed = (1.0 - params.cavity_shrink) ** 2  # radius shrinks by cavity_shrink at ES
    # Base-to-apex shortening brings a wider part of the cavity into this slice: up to ~+10 %.
    assert designed * 0.95 < ratio < designed * 1.2
    assert cardiac.CARDIAC_CAVITY_SHRINK[0] <= params.cavity_shrink
    assert params.cavity_shrink <= cardiac.CARDIAC_CAVITY_SHRINK[1]


def test_myocardium_thickens_at_end_systole(cardiac_mid_slices) -> None:
    params, frames, centre, pixel_mm = cardiac_mid_slices
    inner = 0.5 * (params.blood + params.myocardium)
    outer = 0.5 * (params.fat + params.myocardium)

    def thickness(image: np.ndarray) -> float:  # lateral wall (+axis 0): blood, muscle, fat
        widths = []
        for angle in np.radians(np.arange(-40, 41, 10)):
            profile = ray(image, centre, angle, 30.0)
            endo = crossing(profile, inner)
            epi = crossing(profile, outer, start=crossing(profile, outer, endo), rising=True)
            widths.append(0.1 * (epi - endo) * pixel_mm)
        return float(np.mean(widths))

    ed, es = thickness(frames[0]), thickness(frames[1])
    assert ed == pytest.approx(params.lv_wall, abs=2.0)
    assert es > 1.15 * ed


def test_far_tissue_barely_moves() -> None:
    size = (48, 48, 16)
    ed, es = phantom_frames("cardiac", [0.0, 0.4], size, seed=0)
    change = np.abs(es - ed).max(axis=2)
    assert change[:, :6].max() < 0.05  # anterior chest wall, > 70 mm from the LV centre
    assert change.max() > 0.5  # while the heart edges move by voxels


# --------------------------------------------------------------------------------------------
# Lung anatomy and motion
# --------------------------------------------------------------------------------------------


def test_diaphragm_moves_up_at_exhale() -> None:
    size, seed = (48, 48, 64), 0
    params = _lung_params(seed)
    spacing = sequences.phantom_geometry("lung", size).spacing
    inhale, exhale = phantom_frames("lung", [0.0, 0.5], size, seed)
    level = 0.5 * (_hu_to_unit(params.hu_tissue) + _hu_to_unit(params.hu_lung))
    shifts = []
    for lung in params.lungs:  # column through the centre of each lung, bottom to top
        cx, cy, _ = lung.shape.centre
        i = round(cx / spacing[0] + (size[0] - 1) / 2)
        j = round(cy / spacing[1] + (size[1] - 1) / 2)
        edges = [crossing(np.repeat(f[i, j], 10), level) / 10 for f in (inhale, exhale)]
        shifts.append((edges[1] - edges[0]) * spacing[2])
    for shift in shifts:  # most of the excursion reaches the dome (it fades toward the apex)
        assert 0.6 * params.amplitude < shift < 1.2 * params.amplitude


def test_lung_motion_is_mostly_superior_inferior() -> None:
    params = _lung_params(0)
    centre = tuple(np.array([[[c]]], dtype=np.float32) for c in params.tumour.centre)
    material = _lung_motion(params, centre, 1.0)
    dx, dy, dz = (float(np.squeeze(m - c)) for m, c in zip(material, centre, strict=True))
    assert abs(dz) > 5.0
    assert abs(dz) > 2.0 * math.hypot(dx, dy)


# --------------------------------------------------------------------------------------------
# Shift: parsing and text
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("noise=0.05", Shift(noise=0.05)),
        ("gamma=1.5,noise=0.05", Shift(noise=0.05, gamma=1.5)),
        (" blur = 1 , scale=2 ", Shift(blur=1.0, scale=2.0)),
        ("bias=0.3,blur=1,gamma=0.8,noise=0.02,scale=1.2", Shift(0.02, 0.8, 1.2, 0.3, 1.0)),
        ("gamma=1", Shift()),
        ("none", Shift()),
        ("", Shift()),
    ],
)
def test_shift_parse(text: str, expected: Shift) -> None:
    assert Shift.parse(text) == expected


@pytest.mark.parametrize(
    ("shift", "text"),
    [
        (Shift(), "none"),
        (Shift(noise=0.05, gamma=1.5), "noise=0.05,gamma=1.5"),
        (Shift(blur=1), "blur=1"),
        (Shift(gamma=1.0, scale=0.5, bias=0.25), "scale=0.5,bias=0.25"),
        (Shift(noise=0.1 + 0.2), "noise=0.30000000000000004"),
    ],
)
def test_shift_text_round_trip(shift: Shift, text: str) -> None:
    assert str(shift) == text
    assert Shift.parse(str(shift)) == shift


def test_shift_is_identity() -> None:
    assert Shift().is_identity()
    assert Shift.parse("noise=0,gamma=1,scale=1,bias=0,blur=0").is_identity()
    assert not Shift(noise=0.01).is_identity()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("foo=1", "unknown shift parameter 'foo'"),
        ("Noise=0.1", "unknown shift parameter 'Noise'"),
        ("noise", "shift item 'noise' is not name=value"),
        ("=0.1", "is not name=value"),
        ("noise=0.1,", "shift item '' is not name=value"),
        ("noise=abc", "shift noise value 'abc' is not a number"),
        ("noise=", "shift noise value '' is not a number"),
        ("noise=nan", "shift noise must be finite"),
        ("blur=inf", "shift blur must be finite"),
        ("noise=-0.1", "shift noise must be >= 0, got -0.1"),
        ("blur=-1", "shift blur must be >= 0"),
        ("scale=-2", "shift scale must be >= 0"),
        ("bias=-0.2", "shift bias must be >= 0"),
        ("gamma=0", "shift gamma must be > 0, got 0"),
        ("gamma=-1.5", "shift gamma must be > 0"),
        ("noise=0.1,noise=0.2", "shift parameter 'noise' given twice"),
    ],
)
def test_shift_parse_errors(text: str, match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        Shift.parse(text)
    message = str(info.value)
    assert "\n" not in message
    assert "accepted: comma-separated name=value pairs with names noise, gamma" in message


def test_shift_constructor_validates() -> None:
    with pytest.raises(InputError, match="shift noise must be >= 0"):
        Shift(noise=-1.0)
    with pytest.raises(InputError, match="shift gamma must be a number"):
        Shift(gamma="2")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# apply_shift: effects worked out by hand
# --------------------------------------------------------------------------------------------


def test_identity_shift_returns_an_equal_float32_copy() -> None:
    frames = np.linspace(0, 1, 2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    out = apply_shift(frames, Shift())
    assert out.dtype == np.float32 and out is not frames
    np.testing.assert_array_equal(out, frames.astype(np.float32))


@pytest.mark.parametrize(
    ("shift", "expected"),
    [
        (Shift(gamma=2.0), [0.0, 0.0625, 0.25, 1.0, 4.0]),
        (Shift(scale=3.0), [0.0, 0.75, 1.5, 3.0, 6.0]),
        # gamma before scale: 4 * 0.25 ** 0.5 = 2 (not (4 * 0.25) ** 0.5 = 1); no top clip
        (Shift(gamma=0.5, scale=4.0), [0.0, 2.0, 2.0 * math.sqrt(2), 4.0, 4.0 * math.sqrt(2)]),
    ],
)
def test_gamma_and_scale_are_exact(shift: Shift, expected: list[float]) -> None:
    frames = np.array([0.0, 0.25, 0.5, 1.0, 2.0], dtype=np.float32).reshape(1, 1, 1, 5)
    out = apply_shift(frames, shift)
    np.testing.assert_allclose(out.ravel(), expected, rtol=1e-6)


def test_negative_values_are_clipped_to_zero() -> None:
    frames = np.array([-0.5, 0.5], dtype=np.float32).reshape(1, 1, 1, 2)
    np.testing.assert_array_equal(apply_shift(frames, Shift(scale=2.0)).ravel(), [0.0, 1.0])
    np.testing.assert_array_equal(apply_shift(frames, Shift(gamma=2.0)).ravel(), [0.0, 0.25])


@pytest.mark.parametrize("rician", [False, True])
def test_noise_std_on_a_flat_region(rician: bool) -> None:
    frames = np.full((3, 24, 24, 24), 0.5, dtype=np.float32)
    out = apply_shift(frames, Shift(noise=0.05), seed=7, rician=rician)
    # At SNR 10 Rician noise is nearly Gaussian: std ~ 0.05, mean ~ sqrt(0.5^2 + 0.05^2)
    assert float(np.std(out)) == pytest.approx(0.05, rel=0.05)
    assert float(np.mean(out)) == pytest.approx(0.5 if not rician else 0.5025, abs=0.002)
    assert not np.array_equal(out[0], out[1])  # different noise per frame
    assert np.array_equal(out, apply_shift(frames, Shift(noise=0.05), seed=7, rician=rician))
    assert not np.array_equal(out, apply_shift(frames, Shift(noise=0.05), seed=8, rician=rician))


def test_rician_noise_on_background_is_rayleigh() -> None:
    frames = np.zeros((2, 24, 24, 24), dtype=np.float32)
    out = apply_shift(frames, Shift(noise=0.05), rician=True)
    assert out.min() >= 0.0
    assert float(out.mean()) == pytest.approx(0.05 * math.sqrt(math.pi / 2), rel=0.03)


def test_blur_is_a_normalised_gaussian_in_space_only() -> None:
    sigma = 1.5
    impulse = np.zeros((2, 17, 17, 17), dtype=np.float32)
    impulse[0, 8, 8, 8] = 1.0
    impulse[1] = 0.25  # constant frame: unchanged, and not mixed with frame 0 (no time blur)
    out = apply_shift(impulse, Shift(blur=sigma))
    for d in (1, 2, 3):
        assert out[0, 8, 8, 8 + d] / out[0, 8, 8, 8] == pytest.approx(
            math.exp(-(d**2) / (2 * sigma**2)), rel=1e-4
        )
    assert float(out[0].sum()) == pytest.approx(1.0, rel=1e-4)
    np.testing.assert_allclose(out[1], 0.25, rtol=1e-6)


def test_blur_softens_an_edge() -> None:
    edge = np.zeros((1, 8, 8, 16), dtype=np.float32)
    edge[..., 8:] = 1.0
    out = apply_shift(edge, Shift(blur=1.5))
    steepest = float(np.abs(np.diff(out, axis=3)).max())
    assert steepest == pytest.approx(1 / (1.5 * math.sqrt(2 * math.pi)), rel=0.05)


def test_bias_field_is_smooth_deterministic_and_shared_by_frames() -> None:
    ones = np.ones((3, 10, 12, 14), dtype=np.float32)
    out = apply_shift(ones, Shift(bias=0.3), seed=5)
    assert np.array_equal(out[0], out[1]) and np.array_equal(out[0], out[2])
    assert np.array_equal(out, apply_shift(ones, Shift(bias=0.3), seed=5))
    assert not np.allclose(out, apply_shift(ones, Shift(bias=0.3), seed=6))
    # exp(B * f) with max |f| = 1: the log reaches +-B somewhere and never exceeds it
    assert float(np.abs(np.log(out)).max()) == pytest.approx(0.3, rel=1e-5)
    assert float(np.abs(np.diff(np.log(out), axis=1)).max()) < 0.3  # smooth, no speckle


def test_full_shift_keeps_shape_and_is_nonnegative() -> None:
    frames = phantom_frames("cardiac", [0.0, 0.4], SMALL)
    shift = Shift.parse("noise=0.05,gamma=1.5,scale=1.2,bias=0.3,blur=1")
    out = apply_shift(frames, shift, seed=1, rician=True)
    assert out.shape == frames.shape and out.dtype == np.float32
    assert out.min() >= 0.0


def test_apply_shift_errors() -> None:
    with pytest.raises(InputError, match="frames must be 4D"):
        apply_shift(np.zeros((4, 4, 4)), Shift())
    with pytest.raises(InputError, match="seed must be an integer >= 0"):
        apply_shift(np.zeros((1, 4, 4, 4)), Shift(noise=0.1), seed=-3)


# --------------------------------------------------------------------------------------------
# make_phantom_sequence
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_sequence_index_and_frames(kind: str) -> None:
    seq = make_phantom_sequence(kind, 6, SMALL, seed=2)
    assert isinstance(seq, Sequence4D)
    assert seq.index_values == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert (seq.index_name, seq.index_unit) == ("time", "frame")
    expected = phantom_frames(kind, [i / 6 for i in range(6)], SMALL, seed=2)
    assert np.array_equal(seq.frames, expected)
    assert np.array_equal(make_phantom_sequence(kind, 6, SMALL, 2, Shift()).frames, expected)
    shifted = make_phantom_sequence(kind, 6, SMALL, 2, Shift(noise=0.05))
    assert mean_abs(shifted.frames, expected) > 0.02


@pytest.mark.parametrize(
    ("kind", "size", "spacing"),
    [
        ("cardiac", (64, 64, 32), (3.0, 3.0, 5.0)),
        ("cardiac", (128, 128, 16), (1.5, 1.5, 10.0)),
        ("lung", (128, 128, 128), (3.0, 3.0, 2.5)),
        ("lung", (64, 64, 32), (6.0, 6.0, 10.0)),
    ],
)
def test_sequence_geometry(kind: str, size: tuple[int, int, int], spacing: tuple) -> None:
    geometry = make_phantom_sequence(kind, 2, size).geometry
    assert geometry.spacing == pytest.approx(spacing)
    assert np.all(np.abs(geometry.origin) > 1.0)
    assert np.array_equal(geometry.direction_matrix(), np.eye(3))
    fov = np.array(spacing) * size
    assert 160 <= fov[0] <= 400 and fov[0] == fov[1]
    # The centre of the field of view stays put whatever the grid size.
    centre = geometry.ijk_to_lps() @ np.append((np.array(size) - 1) / 2, 1.0)
    assert centre[:3] == pytest.approx(sequences._CENTRE_LPS[kind])


def test_sequence_errors() -> None:
    with pytest.raises(InputError, match="at least 2 frames"):
        make_phantom_sequence("cardiac", 1, SMALL)
    with pytest.raises(InputError, match="unknown phantom kind"):
        make_phantom_sequence("brain", 4, SMALL)
