"""How much better than linear blending can warp-based interpolation get on ACDC 4D, and why
does a trained UVI-Net get so little of it? (Issue 9; numbers in docs/acdc4d-headroom.md.)

For every hidden frame of the chosen cases (validation split by default) it scores, in
sequence-normalised PSNR (as ``tttinterp evaluate``'s ``PSNR (seq)``, averaged per frame):

- ``linear``: linear blending of the two given frames at the frame's index fraction ``t``;
- ``model``: the checkpoint's interpolation at ``t``; ``model, best t``: at the one ``t`` on a
  0.05 grid that scores best against the truth (an oracle of timing only);
- ``free-form``: a per-case smooth displacement field fitted between the two given frames
  (the cycle loss's image term, ``similarity``, + ``Grad_L2``; Adam on a half-resolution
  field), then UVI-Net's fusion with linearly scaled flows: what a much better registration
  buys without a better motion model;
- ``oracle``: fields fitted from each given frame to the *hidden truth itself*, blended with
  the best weight: an upper bound for any method that warps and blends the two frames (it
  sees the answer; never a result).

It also prints the ratio of the oracle fields' size to the full ED->ES field, against the
index fraction: the linear-motion assumption says they are equal.

    python analysis/acdc4d_headroom.py --weights training/acdc80/model.safetensors --cases 4
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the engine beside this script

from TTTInterpolationLib.data.model_grid import to_model_grid
from TTTInterpolationLib.data.preprocess import PreparedPair, prepare_pair
from TTTInterpolationLib.models.loading import load_model
from TTTInterpolationLib.nn.losses import grad_l2, similarity
from TTTInterpolationLib.nn.metrics import psnr
from TTTInterpolationLib.nn.warp import warp
from TTTInterpolationLib.workflows.sequence_cases import load_cases

CASES = Path(__file__).resolve().parents[2] / "shared" / "data" / "acdc-4d" / "cases.csv"
T_GRID = np.linspace(0.0, 1.0, 21)
BLEND_GRID = np.linspace(0.0, 1.0, 11)


def fit_field(source: torch.Tensor, target: torch.Tensor, steps: int, smooth: float,
              seed: int) -> torch.Tensor:
    """A smooth field ``phi`` with ``warp(source, phi) ~ target`` (half-resolution parameters)."""
    torch.manual_seed(seed)
    shape = source.shape[2:]
    field = torch.zeros(1, 3, *(s // 2 for s in shape), requires_grad=True)
    optimizer = torch.optim.Adam([field], lr=0.05)

    def full() -> torch.Tensor:
        return F.interpolate(field, size=shape, mode="trilinear", align_corners=False) * 2.0

    for _ in range(steps):
        phi = full()
        loss = similarity(warp(source, phi), target) + smooth * grad_l2(phi)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return full()


def on_grid(pair: PreparedPair, frame: np.ndarray) -> torch.Tensor:
    """A frame normalised with the pair's window and placed on its model grid."""
    array = to_model_grid(pair.window.normalize(frame), pair.mapping)
    return torch.from_numpy(np.ascontiguousarray(array))[None, None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="checkpoint (default: shipped model)")
    parser.add_argument("--cases", type=int, default=10, help="first N cases of the split")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--steps", type=int, default=150, help="Adam steps per fitted field")
    parser.add_argument("--smooth", type=float, default=1.0, help="weight of Grad_L2")
    parser.add_argument("--json", type=Path, help="write every frame's scores here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    net = load_model(args.weights, device="cpu").model.uvinet
    rows = []
    for case in load_cases(CASES, args.split, limit=args.cases):
        frames = case.seq.frames
        low, high = case.window

        def score(x: np.ndarray, truth: np.ndarray, low: float = low,
                  high: float = high) -> float:
            return psnr((x - low) / (high - low), (truth - low) / (high - low))

        pair = prepare_pair(frames[case.a], frames[case.b])
        with torch.no_grad():
            grid_preds = [pair.restore(x) for x in
                          net.interpolate(pair.i0, pair.i1, list(T_GRID), bounds=pair.bounds)]
        phi01 = fit_field(pair.i0, pair.i1, args.steps, args.smooth, 0)
        phi10 = fit_field(pair.i1, pair.i0, args.steps, args.smooth, 1)
        for hidden, t in zip(case.hidden, case.times, strict=True):
            truth = frames[hidden]
            target = on_grid(pair, truth)
            with torch.no_grad():
                model = pair.restore(net.interpolate(pair.i0, pair.i1, [t],
                                                     bounds=pair.bounds)[0])
                free = (1 - t) * warp(pair.i0, t * phi01) + t * warp(pair.i1, (1 - t) * phi10)
            psi0 = fit_field(pair.i0, target, args.steps, args.smooth, 2)
            psi1 = fit_field(pair.i1, target, args.steps, args.smooth, 3)
            with torch.no_grad():
                moved0, moved1 = warp(pair.i0, psi0), warp(pair.i1, psi1)
                oracle = max(score(pair.restore((1 - w) * moved0 + w * moved1), truth)
                             for w in BLEND_GRID)
            moving = phi01.norm(dim=1) > 0.5
            rows.append({
                "case": case.name, "t": t,
                "linear": score((1 - t) * frames[case.a] + t * frames[case.b], truth),
                "model": score(model, truth),
                "model, best t": max(score(x, truth) for x in grid_preds),
                "free-form": score(pair.restore(free.clamp(*pair.bounds)), truth),
                "oracle": oracle,
                "oracle size ratio": float(psi0.norm(dim=1)[moving].mean()
                                           / phi01.norm(dim=1)[moving].mean()),
            })
        print(f"{case.name}: {len(case.hidden)} frames", flush=True)
    keys = ["linear", "model", "model, best t", "free-form", "oracle"]
    print(f"{len(rows)} frames: " + ", ".join(
        f"{k} {np.mean([r[k] for r in rows]):.2f}" for k in keys))
    for low, high in ((0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)):
        part = [r for r in rows if low <= r["t"] < high]
        if part:
            print(f"t in [{low:.2f}, {high:.2f}): {len(part)} frames, oracle field / full "
                  f"field {np.mean([r['oracle size ratio'] for r in part]):.2f}, " + ", ".join(
                      f"{k} {np.mean([r[k] for r in part]):.2f}" for k in keys))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
