"""Do the visible frames of the same heartbeat look like the hidden ones? (Issue 9; numbers in
docs/acdc4d-headroom.md section 5.)

When ED..ES is hidden, the rest of the beat (ES back to the next ED, diastole) is still in the
file. If the heart passed through the same shapes on the way back, those frames would be a
patient-specific source of intermediate frames for test-time training. For every hidden frame
this prints, in sequence-normalised PSNR: linear blending of ED and ES, the *best-matching*
diastolic frame (an oracle choice), and the diastolic frame at the mirrored phase (ED..ES at
fraction ``t`` matched to ES..ED at ``1 - t``, interpolated linearly between frames).

    python analysis/diastole_frames.py --split validation
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the engine beside this script

from acdc4d_headroom import CASES  # this folder is on sys.path when run as a script

from TTTInterpolationLib.nn.metrics import psnr
from TTTInterpolationLib.workflows.sequence_cases import load_cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="validation")
    args = parser.parse_args()
    scores: dict[str, list[float]] = {"linear": [], "best diastolic frame": [],
                                      "mirrored phase": []}
    for case in load_cases(CASES, args.split):
        frames = case.seq.frames
        low, high = case.window
        count = len(frames)
        # ES, ES+1, ..., last frame, then around the beat to ED.
        diastole = [(case.b + k) % count for k in range(count - (case.b - case.a) + 1)]

        def score(x: np.ndarray, truth: np.ndarray, low: float = low,
                  high: float = high) -> float:
            return psnr((x - low) / (high - low), (truth - low) / (high - low))

        first = len(scores["linear"])
        for hidden, t in zip(case.hidden, case.times, strict=True):
            truth = frames[hidden]
            scores["linear"].append(score((1 - t) * frames[case.a] + t * frames[case.b], truth))
            scores["best diastolic frame"].append(max(score(frames[j], truth) for j in diastole))
            position = (1 - t) * (len(diastole) - 1)
            j = int(np.floor(position))
            w = position - j
            mirrored = (1 - w) * frames[diastole[j]] + w * frames[diastole[min(j + 1,
                                                                                len(diastole) - 1)]]
            scores["mirrored phase"].append(score(mirrored, truth))
        print(f"{case.name}: " + ", ".join(
            f"{k} {np.mean(v[first:]):.2f}" for k, v in scores.items()), flush=True)
    print(f"{len(scores['linear'])} frames: " + ", ".join(
        f"{k} {np.mean(v):.3f}" for k, v in scores.items()))


if __name__ == "__main__":
    main()
