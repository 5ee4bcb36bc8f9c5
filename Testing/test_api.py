"""Python API: arrays in, arrays out on the input's grid; files with geometry; evaluation."""

import numpy as np
import pytest

import TTTInterpolationLib as tl
from TTTInterpolationLib.data.model_grid import normalize_minmax
from TTTInterpolationLib.data.phantoms.sequences import make_phantom_sequence
from TTTInterpolationLib.errors import InputError
from TTTInterpolationLib.fileio.volume_io import read_4d, write_4d
from TTTInterpolationLib.nn.metrics import psnr
from TTTInterpolationLib.volume import Geometry, Sequence4D
from TTTInterpolationLib.workflows.evaluation import evaluate_sequence
from TTTInterpolationLib.workflows.settings import EvalSetting
from TTTInterpolationLib.workflows.validation import times_between

from .conftest import blob_pair

OBLIQUE = Geometry(spacing=(1.5, 1.25, 4.0), origin=(-30.0, 12.5, 7.0),
                   direction=((0.8, -0.6, 0.0), (0.6, 0.8, 0.0), (0.0, 0.0, 1.0)))


def test_outputs_lie_on_the_input_grid_and_intensity_range():
    a, b = blob_pair((30, 27, 13))
    out = tl.interpolate(1000 * a, 1000 * b + 50, [0.25, 0.5], device="cpu", weights="untrained")
    assert [o.shape for o in out] == [(30, 27, 13)] * 2
    assert all(o.dtype == np.float32 for o in out)
    # intensities are mapped back: an untrained UVI-Net is ~ linear blending in input units
    expected = 0.75 * 1000 * a + 0.25 * (1000 * b + 50)
    assert np.abs(out[0] - expected).max() < 2.0


def test_every_workflow_takes_the_flow_resolution():
    """``flow_resolution`` reaches the model through the API itself (the command line's
    ``--flow-resolution`` is a thin caller): half-resolution motion gives other frames."""
    a, b = blob_pair((32, 32, 16), shift=3.0)
    seq = Sequence4D(np.stack([a, b, a]))
    runs = {res: (tl.interpolate(a, b, [0.5], device="cpu", weights="untrained", seed=3,
                                 flow_resolution=res)[0],
                  tl.upsample_sequence(seq, 2, ttt=tl.TTTConfig(guard=False), device="cpu",
                                       weights="untrained",
                                       seed=3, flow_resolution=res).frames)
            for res in ("full", "half")}
    assert np.abs(runs["full"][0] - runs["half"][0]).max() > 0
    assert np.abs(runs["full"][1] - runs["half"][1]).max() > 0
    loaded = tl.load_model("untrained", "cpu")
    with pytest.raises(ValueError, match="flow_resolution"):
        tl.interpolate(a, b, [0.5], model=loaded, flow_resolution="half")


def test_linear_method_is_exact_blending():
    a, b = blob_pair((16, 20, 8))
    out = tl.interpolate(a, b, [0.3], method="linear")[0]
    na, nb = normalize_minmax(a)[0], normalize_minmax(b)[0]
    lo, hi = 0.7 * a.min() + 0.3 * b.min(), 0.7 * a.max() + 0.3 * b.max()
    np.testing.assert_allclose(out, (0.7 * na + 0.3 * nb) * (hi - lo) + lo, atol=1e-5)


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        ((np.full((16, 16, 8), np.nan), np.zeros((16, 16, 8))), "NaN"),
        ((np.zeros((16, 16, 8)), np.zeros((16, 16, 9))), "same shape"),
        ((np.zeros((16, 16)), np.zeros((16, 16))), "must be a 3D volume"),
        ((np.zeros((16, 3, 8)), np.zeros((16, 3, 8))), "too small"),
    ],
)
def test_bad_arrays(frames, match):
    with pytest.raises(InputError, match=match):
        tl.interpolate(*frames, [0.5], device="cpu")


@pytest.mark.parametrize(
    ("num", "times", "match"),
    [(0, None, ">= 1"), (None, [0.0], "strictly between 0 and 1"), (None, [1.2], "strictly"),
     (None, None, "either"), (2, [0.5], "either")],
)
def test_times_validation(num, times, match):
    with pytest.raises(InputError, match=match):
        times_between(num, times)
    assert times_between(3) == [0.25, 0.5, 0.75]


@pytest.mark.parametrize("reverse", [False, True])
def test_file_round_trip_keeps_geometry_and_gives_fractional_index_values(tmp_path, reverse):
    a, b = blob_pair((32, 24, 16))
    frames = np.stack([a, 0.5 * (a + b), b])
    src = tmp_path / "in.seq.nrrd"
    write_4d(src, Sequence4D(frames, OBLIQUE, [0.0, 2.5, 5.0], "time", "ms"))
    pair = (2, 0) if reverse else (0, 2)
    out = tmp_path / "out.seq.nrrd"
    result = tl.interpolate_file(src, pair, out, num=3, device="cpu")
    back = read_4d(out)
    assert back.geometry.allclose(OBLIQUE)
    expected = [1.25, 2.5, 3.75][::-1] if reverse else [1.25, 2.5, 3.75]
    assert back.index_values == pytest.approx(expected)
    assert result.index_values == pytest.approx(expected)
    assert (back.index_name, back.index_unit) == ("time", "ms")
    assert back.frames.shape == (3, 32, 24, 16)


def test_frame_pair_errors(tmp_path):
    src = tmp_path / "in.nii.gz"
    a, b = blob_pair((16, 16, 16))
    write_4d(src, Sequence4D(np.stack([a, b])))
    with pytest.raises(InputError, match="out of range"):
        tl.interpolate_file(src, (0, 5), tmp_path / "o.nii.gz", num=1)
    with pytest.raises(InputError, match="must differ"):
        tl.interpolate_file(src, (1, 1), tmp_path / "o.nii.gz", num=1)
    assert not (tmp_path / "o.nii.gz").exists()


def test_evaluation_rows_and_linear_baseline_by_hand():
    seq = make_phantom_sequence("cardiac", 10, (32, 32, 16), seed=1)
    rows = evaluate_sequence(seq, [(0, 4)], [EvalSetting("linear", "linear"),
                                              EvalSetting("UVI-Net", "uvinet")],
                             device="cpu", weights="untrained").rows
    assert [r["n_frames"] for r in rows] == [3, 3]
    f = seq.frames.astype(np.float64)
    blends = [(1 - t) * f[0] + t * f[4] for t in (0.25, 0.5, 0.75)]
    # published: both on the truth frame's own min-max; PSNR_seq: on the sequence's min-max
    own = [(f[i].min(), f[i].max()) for i in (1, 2, 3)]
    by_hand = np.mean([psnr((p - lo) / (hi - lo), (f[i] - lo) / (hi - lo))
                       for p, i, (lo, hi) in zip(blends, (1, 2, 3), own, strict=True)])
    lo, hi = f.min(), f.max()
    by_hand_seq = np.mean([psnr((p - lo) / (hi - lo), (f[i] - lo) / (hi - lo))
                           for p, i in zip(blends, (1, 2, 3), strict=True)])
    assert rows[0]["PSNR"] == pytest.approx(by_hand, rel=1e-5)
    assert rows[0]["PSNR_seq"] == pytest.approx(by_hand_seq, rel=1e-5)
    assert rows[1]["trained"] is False
    assert rows[1]["PSNR"] == pytest.approx(rows[0]["PSNR"], abs=0.05)  # untrained ~ linear
