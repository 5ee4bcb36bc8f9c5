"""Published metrics: hand-computed values and an independent full-3D-kernel formulation."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from TTTInterpolationLib.nn import metrics


def _rand(shape=(20, 18, 12), seed=0):
    return np.random.default_rng(seed).random(shape)


def test_psnr_of_constant_offset_is_exact():
    gt = np.full((10, 10, 10), 0.5)
    assert metrics.psnr(gt + 0.1, gt) == pytest.approx(20.0, abs=1e-9)
    assert metrics.psnr(gt + 0.01, gt) == pytest.approx(40.0, abs=1e-9)
    assert math.isinf(metrics.psnr(gt, gt))


def test_nmse_is_mse_over_mean_square_times_100():
    gt = np.full((6, 6, 6), 0.5)
    assert metrics.nmse(gt + 0.1, gt) == pytest.approx(100 * 0.01 / 0.25)


def test_nmse_of_an_all_zero_ground_truth_is_zero_or_infinite_not_a_crash():
    """Was: ZeroDivisionError (mean(GT^2) = 0, e.g. a constant frame after min-max)."""
    zero = np.zeros((6, 6, 6))
    assert metrics.nmse(zero, zero) == 0.0
    assert math.isinf(metrics.nmse(zero + 0.1, zero))
    assert math.isinf(metrics.all_metrics(zero + 0.1, zero)["NMSE"])


def test_ssim_of_identical_volumes_is_one_and_drops_with_noise():
    a = _rand()
    assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    noisy = a + 0.5 * _rand(seed=1)
    assert metrics.ssim(noisy, a) < 0.9


def _box_sums(x: np.ndarray, w: int) -> np.ndarray:
    """Sum over the w^3 window centred on each voxel, zero padding, by a summed-area table.

    Independent of the engine's separable convolutions (and needs no scipy, which no install
    extra provides): pad, take cumulative sums on every axis, and read each box sum from the
    table's eight corners by inclusion-exclusion.
    """
    r = w // 2
    table = np.pad(x, r + 1).cumsum(0).cumsum(1).cumsum(2)
    n0, n1, n2 = x.shape
    hi = [slice(w, w + n) for n in (n0, n1, n2)]
    lo = [slice(0, n) for n in (n0, n1, n2)]
    total = np.zeros(x.shape)
    for corner in range(8):
        picks = [lo[a] if corner >> a & 1 else hi[a] for a in range(3)]
        sign = (-1) ** bin(corner).count("1")
        total += sign * table[tuple(picks)]
    return total


def _ncc_reference(a: np.ndarray, b: np.ndarray, w: int = 9) -> float:
    """Independent formulation: full w^3 box sums, variance/covariance written out."""
    def box(x):  # sum over the window with zero padding
        return _box_sums(x, w)

    n = w**3
    ma, mb = box(a) / n, box(b) / n
    # sum (a - ma)(b - mb) over the window = sum ab - n ma mb (with ma taken at the centre)
    cross = box(a * b) - n * ma * mb
    va = box(a * a) - n * ma * ma
    vb = box(b * b) - n * mb * mb
    return float(np.mean(cross**2 / (va * vb + 1e-5)))


def test_box_sums_match_brute_force():
    x = _rand((7, 6, 5), seed=9)
    padded = np.pad(x, 1)
    brute = np.array([[[padded[i:i + 3, j:j + 3, k:k + 3].sum() for k in range(5)]
                       for j in range(6)] for i in range(7)])
    assert np.allclose(_box_sums(x, 3), brute, rtol=0, atol=1e-12)


def test_ncc_matches_independent_formulation():
    a, b = _rand(seed=2), _rand(seed=3)
    b = 0.6 * a + 0.4 * b
    assert metrics.ncc(a, b) == pytest.approx(_ncc_reference(a, b), rel=1e-9)


def test_ncc_hand_values():
    # Against zeros every window sum vanishes (zero padding included): cc = 0 exactly.
    a = _rand()
    assert metrics.ncc(a, np.zeros_like(a)) == 0.0
    # Against itself cross = var in every window, so cc = var^2 / (var^2 + 1e-5) ~ 1.
    assert 0.999 < metrics.ncc(a, a) <= 1.0
    # Squared correlation ignores the sign and an affine intensity change (where the window
    # does not reach the zero padding).
    ta = torch.from_numpy(a)[None, None]
    cc = metrics.local_squared_correlation(ta, 2.0 - 3.0 * ta)[0, 0, 4:-4, 4:-4, 4:-4]
    assert torch.allclose(cc, torch.ones_like(cc), atol=1e-3)


def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """The published construction: full 11^3 outer-product Gaussian window, conv3d, padding 5."""
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    g /= g.sum()
    window = torch.from_numpy(np.einsum("i,j,k->ijk", g, g, g))[None, None]
    ta, tb = (torch.from_numpy(x)[None, None] for x in (a, b))

    def conv(x):
        return F.conv3d(x, window, padding=5)

    mu1, mu2 = conv(ta), conv(tb)
    s1, s2, s12 = conv(ta * ta) - mu1**2, conv(tb * tb) - mu2**2, conv(ta * tb) - mu1 * mu2
    c1, c2 = 0.01**2, 0.03**2
    m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))
    return float(m.mean())


def test_ssim_matches_published_full_kernel():
    a, b = _rand(seed=4), _rand(seed=5)
    b = 0.7 * a + 0.3 * b
    assert metrics.ssim(a, b) == pytest.approx(_ssim_reference(a, b), rel=1e-9)


def test_metrics_accept_5d_tensors_and_reject_other_shapes():
    a = torch.rand(1, 1, 16, 16, 8)
    assert metrics.all_metrics(a, a)["SSIM"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="3D volumes"):
        metrics.psnr(np.zeros((4, 4)), np.zeros((4, 4)))
