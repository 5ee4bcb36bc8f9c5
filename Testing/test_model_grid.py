"""Tests for model_grid: centred crop/pad onto the network grid and back, and min-max scaling.

Windows are worked out by hand: padding n -> m puts (m - n) // 2 zeros before the data,
cropping n -> m starts at (n - m) // 2.
"""

from __future__ import annotations

import numpy as np
import pytest

from TTTInterpolationLib.data.model_grid import (
    MIN_SIZE,
    MULTIPLE,
    GridMapping,
    denormalize,
    from_model_grid,
    normalize_minmax,
    plan_mapping,
    to_model_grid,
)
from TTTInterpolationLib.errors import InputError


@pytest.mark.parametrize(
    ("shape", "size", "model", "source", "target"),
    [
        # pad only: 10 -> 16 (3 before, 3 after), 17 -> 32 (7 before, 8 after), 32 stays
        ((10, 17, 32), None, (16, 32, 32),
         ((0, 10), (0, 17), (0, 32)), ((3, 13), (7, 24), (0, 32))),
        # ACDC-like: crop 130 -> 128 from 1, pad 127 -> 128 (0 before), pad 9 -> 32 (11 before)
        ((130, 127, 9), (128, 128, 32), (128, 128, 32),
         ((1, 129), (0, 127), (0, 9)), ((0, 128), (0, 127), (11, 20))),
        # odd crops: 131 -> 128 starts at 1, 133 -> 128 at 2; 4 -> 16 pads 6 before
        ((131, 133, 4), (128, 128, 16), (128, 128, 16),
         ((1, 129), (2, 130), (0, 4)), ((0, 128), (0, 128), (6, 10))),
        # exact multiples: identity windows
        ((16, 48, 64), None, (16, 48, 64),
         ((0, 16), (0, 48), (0, 64)), ((0, 16), (0, 48), (0, 64))),
    ],
)
def test_plan_mapping_hand_worked(shape, size, model, source, target) -> None:
    mapping = plan_mapping(shape, size)
    assert mapping == GridMapping(shape, model, source, target)


def test_default_size_rounds_up_to_multiple() -> None:
    for n in (MIN_SIZE, 15, 16, 17, 31, 33, 100):
        model = plan_mapping((n, n, n)).model_shape
        assert all(m % MULTIPLE == 0 and n <= m < n + MULTIPLE for m in model)


def test_to_model_grid_places_voxels_hand_checked() -> None:
    volume = np.arange(4 * 4 * 5, dtype=np.float32).reshape(4, 4, 5) + 1
    mapping = plan_mapping(volume.shape)  # -> 16^3, 6 / 6 / 5 zeros before
    out = to_model_grid(volume, mapping)
    assert out.shape == (16, 16, 16)
    assert out.dtype == np.float32
    assert out[6, 6, 5] == volume[0, 0, 0]
    assert out[9, 9, 9] == volume[3, 3, 4]
    assert out.sum() == volume.sum()  # nothing lost, only zeros added
    assert out[5].max() == 0 and out[10].max() == 0 and out[:, :, 10].max() == 0


def test_crop_keeps_the_centre() -> None:
    volume = np.zeros((20, 20, 20), dtype=np.float32)
    volume[2:18, 2:18, 2:18] = 1.0  # 16^3 centre block
    out = to_model_grid(volume, plan_mapping(volume.shape, (16, 16, 16)))
    np.testing.assert_array_equal(out, np.ones((16, 16, 16), dtype=np.float32))


def test_round_trip_pad_is_exact() -> None:
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(11, 23, 5)).astype(np.float32)
    mapping = plan_mapping(volume.shape)
    np.testing.assert_array_equal(from_model_grid(to_model_grid(volume, mapping), mapping), volume)


def test_round_trip_crop_with_fill_is_exact_and_without_fill_zeroes_the_border() -> None:
    rng = np.random.default_rng(1)
    volume = rng.normal(size=(37, 21, 9)).astype(np.float32)
    mapping = plan_mapping(volume.shape, (32, 16, 16))
    model = to_model_grid(volume, mapping)
    np.testing.assert_array_equal(from_model_grid(model, mapping, fill=volume), volume)

    back = from_model_grid(model, mapping)
    kept = mapping.source_slices()
    np.testing.assert_array_equal(back[kept], volume[kept])
    border = np.ones(volume.shape, dtype=bool)
    border[kept] = False
    assert border.sum() == 37 * 21 * 9 - 32 * 16 * 9
    assert not back[border].any()


def test_fill_takes_only_the_cropped_voxels() -> None:
    mapping = plan_mapping((20, 16, 16), (16, 16, 16))  # crop 2 from each end of axis 0
    model = np.full((16, 16, 16), 5.0, dtype=np.float32)
    fill = np.full((20, 16, 16), -1.0, dtype=np.float32)
    back = from_model_grid(model, mapping, fill=fill)
    assert (back[:2] == -1).all() and (back[18:] == -1).all() and (back[2:18] == 5).all()
    assert (fill == -1).all()  # fill is not modified


def test_leading_axes_pass_through() -> None:
    rng = np.random.default_rng(2)
    batch = rng.normal(size=(2, 3, 18, 7, 5)).astype(np.float32)
    mapping = plan_mapping(batch.shape[-3:], (16, 16, 16))
    model = to_model_grid(batch, mapping)
    assert model.shape == (2, 3, 16, 16, 16)
    np.testing.assert_array_equal(model[1, 2], to_model_grid(batch[1, 2], mapping))
    # a single-frame fill broadcasts over the leading axes
    back = from_model_grid(model, mapping, fill=batch[0, 0])
    np.testing.assert_array_equal(back[:, :, 1:17], batch[:, :, 1:17])
    np.testing.assert_array_equal(back[1, 2, 0], batch[0, 0, 0])


@pytest.mark.parametrize("shape", [(3, 16, 16), (16, 16, 1), (0, 8, 8)])
def test_too_small_volume_is_input_error(shape) -> None:
    with pytest.raises(InputError, match="volume too small for the network.*at least 4 voxels"):
        plan_mapping(shape)


@pytest.mark.parametrize(
    "size", [(128, 128, 30), (0, 16, 16), (-16, 16, 16), (16, 16), (16.0, 16, 16)]
)
def test_bad_model_size_is_input_error(size) -> None:
    with pytest.raises(InputError, match="multiples of 16"):
        plan_mapping((20, 20, 20), size)


def test_wrong_array_shape_is_a_bug_not_input() -> None:
    mapping = plan_mapping((10, 10, 10))
    with pytest.raises(ValueError, match="original grid shape"):
        to_model_grid(np.zeros((16, 16, 16)), mapping)
    with pytest.raises(ValueError, match="model grid shape"):
        from_model_grid(np.zeros((10, 10, 10)), mapping)
    with pytest.raises(ValueError, match="fill"):
        from_model_grid(np.zeros((16, 16, 16)), mapping, fill=np.zeros((16, 16, 16)))


def test_normalize_hand_worked_and_back() -> None:
    volume = np.array([2.0, 4.0, 6.0, 3.0], dtype=np.float32).reshape(1, 1, 4)
    scaled, value_range = normalize_minmax(volume)
    assert value_range == (2.0, 6.0)
    np.testing.assert_array_equal(scaled.ravel(), [0.0, 0.5, 1.0, 0.25])
    assert scaled.dtype == np.float32
    np.testing.assert_array_equal(denormalize(scaled, value_range), volume)


def test_normalize_constant_volume_gives_zeros_and_comes_back() -> None:
    volume = np.full((4, 4, 4), 7.5)
    scaled, value_range = normalize_minmax(volume)
    assert value_range == (7.5, 7.5)
    assert not scaled.any()
    np.testing.assert_array_equal(denormalize(scaled, value_range), volume)


def test_normalize_dtypes() -> None:
    ints, value_range = normalize_minmax(np.array([[[-10, 0, 10]]], dtype=np.int16))
    assert ints.dtype == np.float32 and value_range == (-10.0, 10.0)
    np.testing.assert_array_equal(ints.ravel(), [0.0, 0.5, 1.0])
    doubles, _ = normalize_minmax(np.linspace(-1, 3, 8).reshape(2, 2, 2))
    assert doubles.dtype == np.float64
    assert doubles.min() == 0.0 and doubles.max() == 1.0


def test_normalize_round_trip_random() -> None:
    rng = np.random.default_rng(3)
    volume = rng.normal(100.0, 40.0, size=(9, 8, 7)).astype(np.float32)
    scaled, value_range = normalize_minmax(volume)
    assert scaled.min() == 0.0 and scaled.max() == 1.0
    np.testing.assert_allclose(denormalize(scaled, value_range), volume, rtol=0, atol=1e-4)
