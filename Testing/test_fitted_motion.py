"""Motion fitted to a sequence's own frames (``--method registration``): the trajectory, the
fields, and the method through every workflow and the command line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import TTTInterpolationLib as tl
from TTTInterpolationLib.models import fitted_motion
from TTTInterpolationLib.models.fitted_motion import (
    _aligned,
    fill_gaps,
    fit_fields,
    gap_timing,
    quadratic,
)
from TTTInterpolationLib.volume import Sequence4D
from TTTInterpolationLib.workflows.evaluation import evaluate_cases
from TTTInterpolationLib.workflows.protocols import protocol_case
from TTTInterpolationLib.workflows.settings import EvalSetting

SHAPE = (40, 40, 4)  # a stack of four thick slices: motion in-plane (axis 2 held)


def moving_disc(positions: list[float], shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """A textured disc in every slice, centred at ``x = positions[k]`` in frame ``k``."""
    x, y = np.meshgrid(np.arange(shape[0], dtype=np.float64),
                       np.arange(shape[1], dtype=np.float64), indexing="ij")
    frames = []
    for p in positions:
        r = np.sqrt((x - p) ** 2 + (y - shape[1] / 2) ** 2)
        body = 1.0 / (1.0 + np.exp((r - 9.0) * 1.5))
        texture = 0.6 + 0.3 * np.sin((x - p) * 0.3) * np.cos(y * 0.25)
        frames.append(np.repeat((100.0 * body * texture)[..., None], shape[2], axis=2))
    return np.stack(frames).astype(np.float32)


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 100.0) -> float:
    return float(10 * np.log10(peak**2 / np.mean((a.astype(np.float64) - b) ** 2)))


def test_the_trajectory_runs_through_its_three_frames():
    near, far = torch.full((1, 3, 2, 2, 2), 2.0), torch.full((1, 3, 2, 2, 2), -1.5)
    assert torch.equal(quadratic(near, far, -1.0, 0.0), torch.zeros_like(near))
    torch.testing.assert_close(quadratic(near, far, -1.0, 1.0), near)
    torch.testing.assert_close(quadratic(near, far, -0.7, -0.7), far)
    torch.testing.assert_close(quadratic(near, None, 0.0, 0.25), 0.25 * near)
    # A steady motion (far = -near at -1) stays linear in time.
    torch.testing.assert_close(quadratic(near, -near, -1.0, 0.4), 0.4 * near)


@pytest.mark.parametrize("single_steps", [False, True])
def test_where_nothing_moves_it_is_linear_blending(single_steps):
    """Identical frames: blending, but for Adam's last jitter (well under 0.01 voxel). Frames
    apart only by noise (1 % of the range): the fields stay near zero, so the frames stay
    within a fraction of the noise of blending."""
    still = moving_disc([20.0] * 4)
    out = fill_gaps(still, [(1, 2, (0.25, 0.5))], held_axis=2, single_steps=single_steps)
    for frame in out[0]:
        assert psnr(frame, still[1]) > 60.0
    noisy = still + np.random.default_rng(0).normal(0.0, 1.0, still.shape).astype(np.float32)
    out = fill_gaps(noisy, [(1, 2, (0.25, 0.5))], held_axis=2, single_steps=single_steps)
    for t, frame in zip((0.25, 0.5), out[0], strict=True):
        blend = (1 - t) * noisy[1].astype(np.float64) + t * noisy[2]
        assert psnr(frame, blend) > 45.0


def test_the_timing_curve_runs_from_zero_to_one_and_eases_in_and_out():
    assert gap_timing(0.0) == 0.0 and gap_timing(1.0) == pytest.approx(1.0)
    assert gap_timing(0.3, (1.0, 1.0)) == pytest.approx(0.3)  # end slopes 1: linear in time
    curve = [gap_timing(t) for t in np.linspace(0.0, 1.0, 101)]
    assert all(b > a for a, b in zip(curve, curve[1:], strict=False))  # monotone
    assert gap_timing(0.1) < 0.1 and gap_timing(0.9) > 0.9  # slower near both ends


def test_a_pair_alone_stays_still_and_follows_motion_that_eases_in_and_out(monkeypatch):
    """Two frames alone (no neighbour bends the gap): identical frames give that frame;
    frames apart only by noise give blending weighted by the timing curve; a disc that
    eases from x = 12 to 26 is found nearer its place than by motion linear in time."""
    still = moving_disc([20.0] * 2)
    for frame in fill_gaps(still, [(0, 1, (0.25, 0.5))], held_axis=2)[0]:
        assert psnr(frame, still[0]) > 60.0
    noisy = still + np.random.default_rng(1).normal(0.0, 1.0, still.shape).astype(np.float32)
    for t, frame in zip((0.25, 0.5), fill_gaps(noisy, [(0, 1, (0.25, 0.5))], held_axis=2)[0],
                        strict=True):
        s = gap_timing(t)
        assert psnr(frame, (1 - s) * noisy[0].astype(np.float64) + s * noisy[1]) > 45.0
    times = (0.2, 0.8)
    eased = [12.0 + 14.0 * (1 - np.cos(np.pi * t)) / 2 for t in times]
    truth = moving_disc(eased)
    ends = moving_disc([12.0, 26.0])
    found = fill_gaps(ends, [(0, 1, times)], held_axis=2)[0]
    monkeypatch.setattr(fitted_motion, "GAP_TIMING_SLOPES", (1.0, 1.0))
    in_time = fill_gaps(ends, [(0, 1, times)], held_axis=2)[0]
    gains = [psnr(frame, true) - psnr(linear, true)
             for frame, linear, true in zip(found, in_time, truth, strict=True)]
    assert min(gains) > 0.0 and np.mean(gains) > 1.0


def test_alignment_moves_two_disagreeing_frames_to_meet_where_the_blend_weights_say():
    """Discs 4 voxels apart, weight 0.25 on the second: each moves towards the other, the
    first by a quarter of the way, so both end up one voxel from the first."""
    discs = torch.from_numpy(moving_disc([16.0, 20.0, 17.0]) / 100.0)[:, None]
    (first, second, s), = _aligned([(discs[0:1], discs[1:2], 0.25)], 2, False, 100,
                                   tl.runtime.progress.NullProgress())
    target = discs[2].numpy() * 100.0
    before = psnr((0.75 * discs[0] + 0.25 * discs[1]).numpy() * 100.0, target)
    for moved in (first, second):
        assert psnr(moved[0].numpy() * 100.0, target) > before + 5.0


@pytest.mark.parametrize("single_steps", [False, True])
def test_it_follows_motion_that_linear_blending_smears_and_bends_with_the_neighbours(single_steps):
    """An accelerating disc (x = 10 + 0.3 k^2 in frame k): every 2nd frame kept; the fitted
    motion beats blending, and the quadratic trajectory beats motion linear in time."""
    positions = [10.0 + 0.3 * k * k for k in range(7)]
    seq = moving_disc(positions)
    kept, hidden = seq[::2], seq[1::2]
    gaps = [(k, k + 1, (0.5,)) for k in range(len(kept) - 1)]
    fitted = [f[0] for f in fill_gaps(kept, gaps, held_axis=2, single_steps=single_steps)]
    blended = [0.5 * kept[k] + 0.5 * kept[k + 1] for k in range(len(kept) - 1)]
    linear_in_time = [f[0] for f in fill_gaps(kept[1:3], [(0, 1, (0.5,))], held_axis=2,
                                              single_steps=single_steps)]
    scores = {name: [psnr(p, h) for p, h in zip(preds, hidden, strict=False)]
              for name, preds in (("fitted", fitted), ("blend", blended))}
    assert all(f > b + 3.0 for f, b in zip(scores["fitted"], scores["blend"], strict=True))
    assert scores["fitted"][1] > psnr(linear_in_time[0], hidden[1]) + 1.0


def test_fields_hold_the_through_plane_axis_still_and_do_not_depend_on_the_chunking(
        monkeypatch):
    frames = torch.from_numpy(moving_disc([12.0, 15.0, 19.0]) / 100.0)[:, None]
    pairs = [(0, 1), (1, 0), (1, 2)]
    whole = fit_fields(frames, pairs, held_axis=2, steps=15)
    field = whole.field(0, 1)
    assert float(field[:, 2].abs().max()) == 0.0 and float(field[:, 0].abs().max()) > 0.5
    monkeypatch.setattr(fitted_motion, "CHUNK_VOXELS", int(np.prod(SHAPE)))  # one at a time
    chunked = fit_fields(frames, pairs, held_axis=2, steps=15)
    for pair in pairs:
        torch.testing.assert_close(whole.params[pair], chunked.params[pair], atol=1e-5,
                                   rtol=1e-4)


def test_every_workflow_takes_the_method_and_evaluation_gives_it_a_row():
    seq = Sequence4D(moving_disc([10.0 + 2.0 * k for k in range(5)]))
    upsampled = tl.upsample_sequence(seq, 2, method="registration", device="cpu")
    assert upsampled.num_frames == 9 and upsampled.index_values[1] == pytest.approx(0.5)
    between = tl.interpolate(seq.frames[0], seq.frames[2], [0.5], method="registration")
    assert between[0].shape == SHAPE
    case = protocol_case(seq, "x2", name="disc")
    evaluation = evaluate_cases([case], [EvalSetting("linear", "linear"),
                                         EvalSetting("registration", "registration")])
    linear, fitted = evaluation.rows
    assert fitted["filled_by"] == {"registration": 1} and fitted["ttt"] is None
    assert fitted["PSNR_seq"] > linear["PSNR_seq"] + 3.0


def test_evaluate_runs_several_methods_in_one_table_and_evaluate_pairs_refuses_it(tmp_path):
    seq = Sequence4D(moving_disc([10.0 + 2.0 * k for k in range(5)]))
    path = tmp_path / "disc.seq.nrrd"
    tl.write_4d(path, seq)
    run = subprocess.run([sys.executable, "-m", "TTTInterpolationLib", "evaluate", str(path),
                          "--frames", "0", "2", "--method", "linear", "registration",
                          "--progress", "none"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    rows = [line.split()[0] for line in run.stdout.splitlines() if line.strip()]
    assert "registration" in rows and "UVI-Net" not in rows
    refused = subprocess.run([sys.executable, "-m", "TTTInterpolationLib", "evaluate-pairs",
                              str(tmp_path), "--method", "registration"], capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 2 and "invalid choice" in refused.stderr


def test_the_default_method_is_registration_and_asking_for_a_network_setting_picks_uvinet():
    from TTTInterpolationLib.config import DEFAULT_METHOD, resolve_method

    assert DEFAULT_METHOD == "registration" == resolve_method(None) == resolve_method(None, "none")
    assert resolve_method(None, "cycle") == "uvinet"
    assert resolve_method(None, "none", "model.safetensors") == "uvinet"  # weights given
    assert resolve_method(None, None, None, "half") == "uvinet"  # a flow resolution given
    assert resolve_method("linear", "none", "model.safetensors") == "linear"


def test_a_ttt_task_with_a_method_that_adapts_no_network_is_one_line_exit_2(tmp_path):
    seq = Sequence4D(moving_disc([10.0 + 2.0 * k for k in range(3)]))
    path = tmp_path / "disc.seq.nrrd"
    tl.write_4d(path, seq)
    out = tmp_path / "out.seq.nrrd"
    run = subprocess.run([sys.executable, "-m", "TTTInterpolationLib", "interpolate", str(path),
                          "--frames", "0", "2", "--num", "1", "--method", "registration",
                          "--ttt", "cycle", "--progress", "none", "-o", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and not out.exists()
    assert run.stderr.count("\n") == 1 and "--method uvinet" in run.stderr


def test_asking_for_ttt_tuning_picks_uvinet_and_evaluation_refuses_ttt_without_it():
    from TTTInterpolationLib.cli import _method, build_parser
    from TTTInterpolationLib.errors import InputError
    from TTTInterpolationLib.workflows.settings import evaluation_settings

    def method(*options: str) -> str:
        return _method(build_parser().parse_args(["upsample", "in.nii.gz", "--factor", "2",
                                                  "-o", "out.nii.gz", *options]))

    assert method() == "registration"
    for options in (["--steps", "20"], ["--lr", "1e-4"], ["--no-guard"], ["--adapt", "all"],
                    ["--optimizer", "sgd"], ["--flow-resolution", "half"]):
        assert method(*options) == "uvinet", options
    assert method("--seed", "3") == "registration"  # a seed tunes nothing in particular
    with pytest.raises(InputError, match="--method uvinet"):
        evaluation_settings(EvalSetting("linear", "linear"), ["cycle"], method="registration")
