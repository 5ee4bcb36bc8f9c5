"""Would a small network trained on full sequences improve the fitted motion's frames?
(Issue 17; a probe, not a product: numbers in docs/acdc4d-headroom.md §10.)

At x4 each end frame moved along its fitted trajectory is 1.6 dB *worse* than linear blending
on its own (through-plane motion and intensity changes that no in-plane warp can make), and
their blend gains +0.5 dB; per-frame oracle timing or blend weights would add only about 0.2
each. What is left is appearance, which a network can learn from the training sequences'
hidden frames. This trains a small 2D U-Net (slice by slice, in-plane) that takes the two
moved frames, the two end frames and ``t`` and predicts a correction of the fitted motion's
frame (the last layer starts at zero, so training starts from the fitted motion itself).

For every case of the lists it runs ``--method registration``'s steps
(:mod:`TTTInterpolationLib.models.fitted_motion`) up to the two moved frames, keeps them with
the truth (training cases: ACDC 001-080, every frame), trains on random crops, and prints
after every ``--every`` steps the validation gain over linear blending (per-case means of
PSNR (seq)) of the fitted motion and of the corrected frames.

    python analysis/refine_fitted_motion.py --train ../shared/data/acdc-4d-train/cases.csv \\
        --stride 2 --validation ../shared/data/acdc-4d/cases.csv --protocol x4 --steps 3000
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the engine beside this script

from TTTInterpolationLib.data.slices import through_plane_axis
from TTTInterpolationLib.models import fitted_motion as fm
from TTTInterpolationLib.workflows.sequence_cases import load_cases

CROP, BATCH = 64, 16


@dataclass
class Frames:
    """One case's hidden frames on the visible frames' 0..1 scale, ``(K, H, W, S)`` each."""

    moved_a: np.ndarray
    moved_b: np.ndarray
    end_a: np.ndarray
    end_b: np.ndarray
    truth: np.ndarray
    weights: np.ndarray  # the blend weight of each frame (``t``, or the timing curve's)
    times: np.ndarray  # each frame's ``t`` (linear blending's weight)
    window: tuple[float, float]  # the sequence's min-max on this scale (PSNR (seq))


def moved_frames(case) -> Frames:
    """The fitted motion's two moved frames for every hidden frame (:func:`moved_pairs`)."""
    frames, values = case.visible.frames, case.visible.index_values
    low, high = float(frames.min()), float(frames.max())
    x = torch.from_numpy(((frames.astype(np.float32) - low) / (high - low))[:, None])
    held = through_plane_axis(case.visible.geometry, case.visible.shape3d, "auto")
    gaps = [(g.a, g.b, g.times) for g in case.gaps]
    rows: list[tuple[np.ndarray, ...]] = []
    for gap, moved, truths in zip(case.gaps, fm.moved_pairs(x, gaps, values, held,
                                                             case.protocol != "edes"),
                                  case.truths, strict=True):
        for (from_a, from_b, s), t, truth in zip(moved, gap.times, truths, strict=True):
            rows.append((from_a[0, 0].numpy(), from_b[0, 0].numpy(), x[gap.a, 0].numpy(),
                         x[gap.b, 0].numpy(), (truth - low) / (high - low), s, t))
    stack = [np.stack([r[i] for r in rows]).astype(np.float32) for i in range(5)]
    w_low, w_high = case.window
    return Frames(*stack, np.array([r[5] for r in rows], np.float32),
                  np.array([r[6] for r in rows], np.float32),
                  ((w_low - low) / (high - low), (w_high - low) / (high - low)))


def _block(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inputs, outputs, 3, padding=1), nn.LeakyReLU(0.1),
                         nn.Conv2d(outputs, outputs, 3, padding=1), nn.LeakyReLU(0.1))


class Correction(nn.Module):
    """A three-level 2D U-Net: (moved a, moved b, end a, end b, t) -> correction.

    With a ``gate``, the correction is multiplied by ``min(1, d / gate)``, ``d`` the 5x5 mean
    of ``|moved a - moved b| + |end a - end b|``: zero where nothing changes, so still frames
    stay blending.
    """

    def __init__(self, width: int = 24, gate: float | None = None) -> None:
        super().__init__()
        self.gate = gate
        self.e1, self.e2 = _block(5, width), _block(width, 2 * width)
        self.e3 = _block(2 * width, 4 * width)
        self.d2, self.d1 = _block(6 * width, 2 * width), _block(3 * width, width)
        self.out = nn.Conv2d(width, 1, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.e1(x)
        e2 = self.e2(F.avg_pool2d(e1, 2))
        e3 = self.e3(F.avg_pool2d(e2, 2))
        d2 = self.d2(torch.cat([F.interpolate(e3, scale_factor=2, mode="bilinear"), e2], 1))
        d1 = self.d1(torch.cat([F.interpolate(d2, scale_factor=2, mode="bilinear"), e1], 1))
        if self.gate is None:
            return self.out(d1)
        change = (x[:, 0:1] - x[:, 1:2]).abs() + (x[:, 2:3] - x[:, 3:4]).abs()
        change = F.avg_pool2d(change, 5, stride=1, padding=2)
        return self.out(d1) * (change / self.gate).clamp(max=1.0)


def inputs(f: Frames, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(S, 5, H, W)`` network inputs (slices as the batch) and the fitted motion's frame."""
    s = float(f.weights[k])
    parts = [torch.from_numpy(a[k]) for a in (f.moved_a, f.moved_b, f.end_a, f.end_b)]
    parts.append(torch.full_like(parts[0], s))
    blend = (1 - s) * parts[0] + s * parts[1]
    return torch.stack(parts).permute(3, 0, 1, 2), blend.permute(2, 0, 1)[:, None]


def gains(net: Correction, cases: list[Frames]) -> tuple[float, float, float]:
    """Per-case mean gain over blending of the fitted motion and of the corrected frames,
    and the worst case of the latter."""
    out = []
    with torch.no_grad():
        for f in cases:
            low, high = f.window
            scores = []
            for k in range(len(f.weights)):
                x, blend = inputs(f, k)
                h, w = blend.shape[2:]
                padded = F.pad(x, (0, (-w) % 4, 0, (-h) % 4), mode="replicate")
                corrected = blend + net(padded)[:, :, :h, :w]
                truth = torch.from_numpy(f.truth[k]).permute(2, 0, 1)[:, None]
                t = float(f.times[k])  # over a long gap the blend weight follows the curve
                linear = ((1 - t) * torch.from_numpy(f.end_a[k])
                          + t * torch.from_numpy(f.end_b[k])).permute(2, 0, 1)[:, None]
                scores.append([-10 * np.log10(float((((p - truth) / (high - low)) ** 2).mean()))
                               for p in (linear, blend, corrected)])
            mean = np.mean(scores, axis=0)
            out.append((mean[1] - mean[0], mean[2] - mean[0]))
    g = np.array(out)
    return float(g[:, 0].mean()), float(g[:, 1].mean()), float(g[:, 1].min())


def crops(cases: list[Frames], rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    """A batch of random in-plane crops (random flips), with their blend and truth."""
    xs, blends, truths = [], [], []
    while len(xs) < BATCH:
        f = cases[rng.integers(len(cases))]
        k = int(rng.integers(len(f.weights)))
        h, w, depth = f.truth.shape[1:]
        if h < CROP or w < CROP:
            continue
        i, j, z = rng.integers(h - CROP + 1), rng.integers(w - CROP + 1), rng.integers(depth)
        x, blend = inputs(f, k)
        window = (z, slice(None), slice(i, i + CROP), slice(j, j + CROP))
        truth = torch.from_numpy(f.truth[k][i:i + CROP, j:j + CROP, z])[None]
        x, blend = x[window], blend[window]
        for axis in (1, 2):
            if rng.random() < 0.5:
                x, blend, truth = x.flip(axis), blend.flip(axis), truth.flip(axis)
        xs.append(x)
        blends.append(blend)
        truths.append(truth)
    return torch.stack(xs), torch.stack(blends), torch.stack(truths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True, help="training case list (ACDC 4D layout)")
    parser.add_argument("--stride", type=int, default=1, help="every n-th training case")
    parser.add_argument("--validation", required=True, help="validation case list")
    parser.add_argument("--split", default="validation", help="split of the validation list")
    parser.add_argument("--protocol", default="x4", choices=["edes", "x2", "x4"])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gate", type=float, help="gate the correction (0.02: docs §10)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    start = time.time()
    train = [moved_frames(c) for c in
             load_cases(args.train, "all", protocol=args.protocol)[::args.stride]]
    validation = [moved_frames(c) for c in
                  load_cases(args.validation, args.split, protocol=args.protocol)]
    print(f"{len(train)} training cases ({sum(len(f.weights) for f in train)} frames), "
          f"{len(validation)} validation cases; {time.time() - start:.0f} s", flush=True)
    net = Correction(gate=args.gate)
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.steps)
    for step in range(1, args.steps + 1):
        x, blend, truth = crops(train, rng)
        loss = F.mse_loss(blend + net(x), truth)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % args.every == 0 or step == args.steps:
            fitted, corrected, worst = gains(net, validation)
            print(f"step {step}: validation gain over blending: fitted motion {fitted:+.3f}, "
                  f"corrected {corrected:+.3f} (worst case {worst:+.3f}) dB; "
                  f"{time.time() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
