"""Would a small network trained on full sequences improve the fitted motion's frames?
(Issue 17; a probe, not a product: numbers in docs/acdc4d-headroom.md §10-11.)

At x4 each end frame moved along its fitted trajectory is 1.6 dB *worse* than linear blending
on its own (through-plane motion and intensity changes that no in-plane warp can make), and
their blend gains +0.5 dB. What is left is appearance, which a network might learn from the
training sequences' hidden frames. This trains a small 2D U-Net (slice by slice, in-plane)
that takes the two moved frames, the two end frames and the blend weight and adds a gated
correction to the fitted motion's frame (the last layer starts at zero, so training starts
from the fitted motion itself; the gate is zero where nothing changes).

For every case of the lists and every ``--protocol`` (keep every 2nd / 4th frame) it runs
``--method registration``'s steps (:func:`~TTTInterpolationLib.models.fitted_motion.moved_pairs`)
up to the two moved frames of every hidden frame, keeps them with the truth (training cases:
ACDC 001-080, every frame), trains on random in-plane crops (random flips), and prints after
every ``--every`` steps, per validation list and protocol, the gain over linear blending
(per-case means of PSNR (seq)) of the fitted motion and of the corrected frames, and the
worst case. ``--save`` writes the network (safetensors, its sizes in the metadata).

    python analysis/refine_fitted_motion.py --train ../shared/data/acdc-4d-train/cases.csv \\
        --stride 2 --validation ../shared/data/acdc-4d/cases.csv ../shared/data/scd-4d/cases.csv

(about 20 minutes of fitting on 2 cores, then about 6 minutes per 1000 steps.)
"""

from __future__ import annotations

import argparse
import json
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


def _block(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inputs, outputs, 3, padding=1), nn.LeakyReLU(0.1),
                         nn.Conv2d(outputs, outputs, 3, padding=1), nn.LeakyReLU(0.1))


class MotionCorrection(nn.Module):
    """(moved a, moved b, end a, end b, blend weight) ``(B, 5, H, W)`` -> correction
    ``(B, 1, H, W)``, times ``min(1, d / gate)``, ``d`` the 5x5 mean of ``|moved a - moved b| +
    |end a - end b|`` (zero where nothing changes: still frames stay blending). ``H`` and ``W``
    multiples of :attr:`multiple` (:func:`corrected_blend` pads).

    ``scale`` 2: the network runs on the inputs averaged over 2 x 2 pixels and its correction
    is upsampled (bilinear), so it cannot add pixel-scale texture. Why tried: at full
    resolution the correction is a fine texture that helps on ACDC and, at x2, is
    anti-correlated with the error on Sunnybrook (docs/acdc4d-headroom.md §11).
    """

    def __init__(self, width: int = 24, gate: float = 0.02, scale: int = 1) -> None:
        super().__init__()
        self.width, self.gate, self.scale = width, gate, scale
        self.multiple = 4 * scale
        self.e1, self.e2 = _block(5, width), _block(width, 2 * width)
        self.e3 = _block(2 * width, 4 * width)
        self.d2, self.d1 = _block(6 * width, 2 * width), _block(3 * width, width)
        self.out = nn.Conv2d(width, 1, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # training starts from the fitted motion itself
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1:
            return self._gated(x)
        small = self._gated(F.avg_pool2d(x, self.scale))
        return F.interpolate(small, scale_factor=self.scale, mode="bilinear")

    def _gated(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.e1(x)
        e2 = self.e2(F.avg_pool2d(e1, 2))
        e3 = self.e3(F.avg_pool2d(e2, 2))
        d2 = self.d2(torch.cat([F.interpolate(e3, scale_factor=2, mode="bilinear"), e2], 1))
        d1 = self.d1(torch.cat([F.interpolate(d2, scale_factor=2, mode="bilinear"), e1], 1))
        change = (x[:, 0:1] - x[:, 1:2]).abs() + (x[:, 2:3] - x[:, 3:4]).abs()
        change = F.avg_pool2d(change, 5, stride=1, padding=2)
        return self.out(d1) * (change / self.gate).clamp(max=1.0)

    def config(self) -> dict[str, float]:
        return {"width": self.width, "gate": self.gate, "scale": self.scale}


def net_inputs(moved_a: torch.Tensor, moved_b: torch.Tensor, end_a: torch.Tensor,
               end_b: torch.Tensor, weight: float) -> torch.Tensor:
    """``(..., 5, H, W)`` from four ``(..., H, W)`` images and the blend weight of ``b``."""
    return torch.stack([moved_a, moved_b, end_a, end_b, torch.full_like(moved_a, weight)], -3)


def corrected_blend(net: MotionCorrection, moved_a: torch.Tensor, moved_b: torch.Tensor,
                    end_a: torch.Tensor, end_b: torch.Tensor, weight: float,
                    held_axis: int) -> torch.Tensor:
    """The blend ``(1 - w) moved_a + w moved_b`` plus the network's correction, slice by slice
    along ``held_axis``; all ``(1, 1, D1, D2, D3)``."""
    blend = (1.0 - weight) * moved_a + weight * moved_b
    slices = [image[0, 0].movedim(held_axis, 0) for image in (moved_a, moved_b, end_a, end_b)]
    x = net_inputs(*slices, weight)  # (S, 5, H, W)
    h, w = x.shape[-2:]
    x = F.pad(x, (0, (-w) % net.multiple, 0, (-h) % net.multiple), mode="replicate")
    with torch.no_grad():
        correction = net(x)[:, 0, :h, :w].movedim(0, held_axis)
    return blend + correction[None, None]


@dataclass
class Frames:
    """One case's hidden frames on the visible frames' 0..1 scale, ``(K, D1, D2, D3)`` each."""

    moved_a: np.ndarray
    moved_b: np.ndarray
    end_a: np.ndarray
    end_b: np.ndarray
    truth: np.ndarray
    weights: np.ndarray  # the blend weight of each frame (``t`` at single steps)
    held_axis: int  # the stack's through-plane axis: the network runs within its slices
    window: tuple[float, float]  # the sequence's min-max on this scale (PSNR (seq))


def moved_frames(case) -> Frames:
    """The fitted motion's two moved frames for every hidden frame (:func:`moved_pairs`)."""
    frames, values = case.visible.frames, case.visible.index_values
    low, high = float(frames.min()), float(frames.max())
    x = torch.from_numpy(((frames.astype(np.float32) - low) / (high - low))[:, None])
    held = through_plane_axis(case.visible.geometry, case.visible.shape3d, "auto")
    if held is None:
        raise SystemExit(f"{case.name}: not a stack of slices (no through-plane axis)")
    gaps = [(g.a, g.b, g.times) for g in case.gaps]
    rows: list[tuple] = []
    for gap, moved, truths in zip(case.gaps, fm.moved_pairs(x, gaps, values, held, True),
                                  case.truths, strict=True):
        for (from_a, from_b, s), truth in zip(moved, truths, strict=True):
            rows.append((from_a[0, 0].numpy(), from_b[0, 0].numpy(), x[gap.a, 0].numpy(),
                         x[gap.b, 0].numpy(), (truth - low) / (high - low), s))
    stack = [np.stack([r[i] for r in rows]).astype(np.float32) for i in range(5)]
    w_low, w_high = case.window
    return Frames(*stack, np.array([r[5] for r in rows], np.float32), held,
                  ((w_low - low) / (high - low), (w_high - low) / (high - low)))


def _psnr(image: torch.Tensor, truth: torch.Tensor, window: tuple[float, float]) -> float:
    return -10 * float(np.log10(float((((image - truth) / (window[1] - window[0])) ** 2).mean())))


def gains(net: MotionCorrection, cases: list[Frames]) -> tuple[float, float, float]:
    """Per-case mean gain over linear blending of the fitted motion and of the corrected
    frames, and the worst case of the latter."""
    out = []
    for f in cases:
        scores = []
        for k in range(len(f.weights)):
            s = float(f.weights[k])
            a, b, end_a, end_b = (torch.from_numpy(v[k])[None, None]
                                  for v in (f.moved_a, f.moved_b, f.end_a, f.end_b))
            truth = torch.from_numpy(f.truth[k])[None, None]
            corrected = corrected_blend(net, a, b, end_a, end_b, s, f.held_axis)
            scores.append([_psnr(p, truth, f.window) for p in
                           ((1 - s) * end_a + s * end_b, (1 - s) * a + s * b, corrected)])
        mean = np.mean(scores, axis=0)
        out.append((mean[1] - mean[0], mean[2] - mean[0]))
    g = np.array(out)
    return float(g[:, 0].mean()), float(g[:, 1].mean()), float(g[:, 1].min())


def crops(cases: list[Frames], rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    """A batch of random in-plane crops (random flips): inputs, blend and truth."""
    xs, blends, truths = [], [], []
    while len(xs) < BATCH:
        f = cases[rng.integers(len(cases))]
        k = int(rng.integers(len(f.weights)))
        plane = [size for axis, size in enumerate(f.truth.shape[1:]) if axis != f.held_axis]
        if min(plane) < CROP:
            continue
        i, j = rng.integers(plane[0] - CROP + 1), rng.integers(plane[1] - CROP + 1)
        z = rng.integers(f.truth.shape[1 + f.held_axis])
        sliced = [np.moveaxis(v[k], f.held_axis, 0)[z, i:i + CROP, j:j + CROP]
                  for v in (f.moved_a, f.moved_b, f.end_a, f.end_b, f.truth)]
        a, b, end_a, end_b, truth = (torch.from_numpy(np.ascontiguousarray(v)) for v in sliced)
        s = float(f.weights[k])
        x, blend = net_inputs(a, b, end_a, end_b, s), ((1 - s) * a + s * b)[None]
        truth = truth[None]
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
    parser.add_argument("--validation", nargs="+", required=True,
                        help="validation case lists (their 'validation' split)")
    parser.add_argument("--protocol", nargs="+", default=["x2", "x4"], choices=["x2", "x4"])
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=24)
    parser.add_argument("--gate", type=float, default=0.02)
    parser.add_argument("--scale", type=int, default=1, choices=[1, 2],
                        help="2: the network runs on 2x2-averaged inputs (docs §11)")
    parser.add_argument("--save", type=Path, help="write the trained network here")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    start = time.time()
    train = [moved_frames(c) for p in args.protocol
             for c in load_cases(args.train, "all", protocol=p)[::args.stride]]
    groups = {f"{Path(v).parent.name} {p}": [moved_frames(c) for c in
                                             load_cases(v, "validation", protocol=p)]
              for v in args.validation for p in args.protocol}
    print(f"{len(train)} training cases x protocols ({sum(len(f.weights) for f in train)} "
          f"frames); {time.time() - start:.0f} s", flush=True)
    net = MotionCorrection(args.width, args.gate, args.scale)
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.steps)
    scores: dict[str, tuple[float, float, float]] = {}
    for step in range(1, args.steps + 1):
        x, blend, truth = crops(train, rng)
        loss = F.mse_loss(blend + net(x), truth)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % args.every == 0 or step == args.steps:
            net.eval()
            scores = {name: gains(net, cases) for name, cases in groups.items()}
            net.train()
            line = "; ".join(f"{name} {fitted:+.3f} -> {corrected:+.3f} (worst {worst:+.3f})"
                             for name, (fitted, corrected, worst) in scores.items())
            print(f"step {step} ({time.time() - start:.0f} s), gain over blending, fitted "
                  f"motion -> corrected: {line}", flush=True)
    if args.save:
        from safetensors.torch import save_file

        info = {"data": f"{args.train} (every {args.stride}. case), {args.protocol}",
                "steps": args.steps, "seed": args.seed,
                "validation_gain_db": {k: [round(v, 3) for v in s] for k, s in scores.items()}}
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, args.save,
                  metadata={"config": json.dumps(net.config()), "info": json.dumps(info)})
        print(f"saved {args.save}")


if __name__ == "__main__":
    main()
