"""How does the heart's motion spread over the time between end-diastole and end-systole?
(Issue 17; numbers in docs/acdc4d-headroom.md §9; the result is
``fitted_motion.GAP_TIMING_SLOPES``.)

Motion fitted between two frames says where the heart is at the two ends, not when it gets
where in between. For every training sequence (ACDC 001-080, every frame) this fits the
fields between end-diastole and end-systole as ``--method registration`` does
(:mod:`TTTInterpolationLib.models.fitted_motion`), moves both end frames a fraction ``s`` of
the way (``s`` on a grid) for every frame between them, and scores each against the true
frame (PSNR on the sequence's min-max scale, as ``tttinterp evaluate``'s ``PSNR (seq)``).
It prints, per tenth of the time, the fraction ``s`` that scores best, then fits the two end
slopes of a cubic timing curve ``s(t)`` (:func:`gap_timing`) that maximise the mean gain
over blending per case; slopes (1, 1) are motion linear in time.

    python analysis/gap_timing.py --cases ../shared/data/acdc-4d-train/cases.csv
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the engine beside this script

from TTTInterpolationLib.data.slices import through_plane_axis
from TTTInterpolationLib.models.fitted_motion import fit_fields, gap_timing, move_frame
from TTTInterpolationLib.nn.metrics import psnr
from TTTInterpolationLib.workflows.sequence_cases import load_cases

FRACTIONS = np.linspace(0.0, 1.0, 41)
SLOPES = np.round(np.arange(0.0, 1.51, 0.1), 2)


def scores_per_fraction(case) -> tuple[list[float], np.ndarray, np.ndarray]:
    """For the case's one gap: the hidden frames' times, PSNR (seq) of blending at ``t``, and
    PSNR (seq) of the fitted motion at every fraction of :data:`FRACTIONS` (frame x fraction)."""
    frames = case.visible.frames
    (gap,) = case.gaps
    low, high = float(frames.min()), float(frames.max())
    x = torch.from_numpy(((frames.astype(np.float32) - low) / (high - low))[:, None])
    held = through_plane_axis(case.visible.geometry, case.visible.shape3d, "auto")
    fields = fit_fields(x, [(gap.a, gap.b), (gap.b, gap.a)], held)
    w_low, w_high = case.window

    def on_window(frame: torch.Tensor) -> np.ndarray:
        return ((frame[0, 0].double().numpy() * (high - low) + low) - w_low) / (w_high - w_low)

    truths = [(truth - w_low) / (w_high - w_low) for truth in case.truths[0]]
    blended = [psnr(on_window((1 - t) * x[gap.a:gap.a + 1] + t * x[gap.b:gap.b + 1]), truth)
               for t, truth in zip(gap.times, truths, strict=True)]
    grid = np.zeros((len(truths), len(FRACTIONS)))
    with torch.no_grad():
        for j, s in enumerate(FRACTIONS):
            moved = ((1 - s) * move_frame(fields, x, gap.a, gap.b, None, s)
                     + s * move_frame(fields, x, gap.b, gap.a, None, 1 - s))
            frame = on_window(moved)
            grid[:, j] = [psnr(frame, truth) for truth in truths]
    return list(gap.times), np.array(blended), grid


def mean_gain(measured: list, slopes: tuple[float, float]) -> float:
    """Mean over cases of (PSNR at the timing curve's fraction - blending), per-frame means."""
    gains = []
    for times, blended, grid in measured:
        fitted = [np.interp(gap_timing(t, slopes), FRACTIONS, row)
                  for t, row in zip(times, grid, strict=True)]
        gains.append(np.mean(fitted) - np.mean(blended))
    return float(np.mean(gains))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", required=True, help="case list (ACDC 4D layout)")
    parser.add_argument("--split", default="all")
    args = parser.parse_args()
    start = time.time()
    measured = []
    for case in load_cases(args.cases, args.split, protocol="edes"):
        measured.append(scores_per_fraction(case))
        print(f"{case.name}: {len(measured[-1][0])} frames ({time.time() - start:.0f} s)",
              flush=True)
    times = np.concatenate([m[0] for m in measured])
    best = np.concatenate([FRACTIONS[m[2].argmax(axis=1)] for m in measured])
    print("\ntime t    frames  best fraction s (median)")
    for lo in np.arange(0.0, 1.0, 0.1):
        inside = (times >= lo) & (times < lo + 0.1)
        if inside.any():
            print(f"{lo:.1f}-{lo + 0.1:.1f}   {inside.sum():6d}  {np.median(best[inside]):.3f}")
    fit = max(((a, b) for a in SLOPES for b in SLOPES), key=lambda ab: mean_gain(measured, ab))
    print(f"\n{len(measured)} cases; gain over blending per case: motion linear in time "
          f"{mean_gain(measured, (1.0, 1.0)):+.3f} dB, fitted timing (slopes "
          f"{fit[0]:.1f}, {fit[1]:.1f}) {mean_gain(measured, fit):+.3f} dB")


if __name__ == "__main__":
    main()
