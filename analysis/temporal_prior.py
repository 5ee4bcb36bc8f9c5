"""Would a temporal motion prior learned from full sequences close the gap to the oracle?
(Issue 9; numbers in docs/acdc4d-headroom.md section 5.)

A probe, not a product: UVI-Net's flows stay frozen; a small time-conditioned U-Net on top
of them predicts, for each time ``t``, corrections ``delta0, delta1`` of the linearly scaled
flows and a blend weight. It is trained *supervised* on the hidden frames of some ACDC 4D
patients (every triplet ``i < j < k`` inside ED..ES, flows of the pair ``(i, k)``) and scored
on ED->ES of the others (two-fold cross-validation inside one split), in the same
sequence-normalised PSNR as ``tttinterp evaluate``. If it does not beat UVI-Net by a clear
margin on unseen patients, a prior learned from this little data is not the way to +2 dB.

    python analysis/temporal_prior.py --weights training/acdc80-noaug/model.safetensors
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the engine beside this script

from acdc4d_headroom import CASES, on_grid  # this folder is on sys.path when run as a script

from TTTInterpolationLib.data.preprocess import PreparedPair, prepare_pair
from TTTInterpolationLib.models.loading import load_model
from TTTInterpolationLib.nn.losses import charbonnier, grad_l2
from TTTInterpolationLib.nn.metrics import psnr
from TTTInterpolationLib.nn.warp import warp
from TTTInterpolationLib.workflows.sequence_cases import load_cases


@dataclass
class Pair:
    """Frames ``a`` < ``b`` of one case, prepared, with the frozen model's flows."""

    case: int
    a: int
    b: int
    prepared: PreparedPair
    phi01: torch.Tensor
    phi10: torch.Tensor


def block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, 3, stride, 1), nn.LeakyReLU(0.2, inplace=True))


class Prior(nn.Module):
    """Inputs: both frames, both warped frames, the scaled flows and ``t`` (11 channels).
    Outputs: flow corrections for each end (voxels) and a blend-weight logit offset."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.e0, self.e1, self.e2 = block(11, w), block(w, 2 * w, 2), block(2 * w, 2 * w, 2)
        self.d1, self.d0 = block(4 * w, 2 * w), block(3 * w, w)
        self.out = nn.Conv3d(w, 7, 3, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.e0(x)
        x1 = self.e1(x0)
        x2 = self.e2(x1)
        y = F.interpolate(x2, size=x1.shape[2:], mode="trilinear", align_corners=False)
        y = self.d1(torch.cat([y, x1], 1))
        y = F.interpolate(y, size=x0.shape[2:], mode="trilinear", align_corners=False)
        return self.out(self.d0(torch.cat([y, x0], 1)))


def predict(prior: Prior | None, pair: Pair, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame at ``t`` and the flow corrections (zero without a prior)."""
    i0, i1 = pair.prepared.i0, pair.prepared.i1
    f0, f1 = t * pair.phi01, (1 - t) * pair.phi10
    m0, m1 = warp(i0, f0), warp(i1, f1)
    logit = torch.full_like(i0, float(np.log(t / (1 - t))))
    delta = torch.zeros(1, 6, *i0.shape[2:])
    if prior is not None:
        x = torch.cat([i0, i1, m0, m1, f0, f1, torch.full_like(i0, t)], 1)
        out = prior(x)
        delta, logit = out[:, :6], logit + out[:, 6:]
        m0, m1 = warp(i0, f0 + delta[:, :3]), warp(i1, f1 + delta[:, 3:])
    w = torch.sigmoid(logit)
    return (1 - w) * m0 + w * m1, delta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="frozen UVI-Net (default: shipped)")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--smooth", type=float, default=0.1, help="Grad_L2 weight on corrections")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    net = load_model(args.weights, device="cpu").model.uvinet
    cases = load_cases(CASES, args.split)
    pairs: dict[tuple[int, int, int], Pair] = {}
    start = time.time()
    for c, case in enumerate(cases):
        frames = case.seq.frames
        span = range(case.a, case.b + 1)
        for a, b in itertools.combinations(span, 2):
            if b - a < 2:
                continue
            prepared = prepare_pair(frames[a], frames[b])
            with torch.no_grad():
                phi01, phi10 = net.flow(prepared.i0, prepared.i1)
            pairs[(c, a, b)] = Pair(c, a, b, prepared, phi01.float(), phi10.float())
    print(f"{len(pairs)} pairs' flows in {time.time() - start:.0f} s", flush=True)

    def score(case_index: int, prior: Prior | None) -> list[tuple[float, float, float]]:
        case = cases[case_index]
        low, high = case.window
        pair = pairs[(case_index, case.a, case.b)]
        rows = []
        for hidden, t in zip(case.hidden, case.times, strict=True):
            truth = case.seq.frames[hidden]
            with torch.no_grad():
                guess = pair.prepared.restore(predict(prior, pair, t)[0])
            linear = (1 - t) * case.seq.frames[case.a] + t * case.seq.frames[case.b]
            rows.append(tuple(psnr((x - low) / (high - low), (truth - low) / (high - low))
                              for x in (linear, guess)))
        return rows

    folds = [list(range(f, len(cases), args.folds)) for f in range(args.folds)]
    results: dict[str, list[float]] = {"linear": [], "UVI-Net fusion": [], "prior": []}
    for f, test in enumerate(folds):
        train = [c for c in range(len(cases)) if c not in test]
        samples = [(key, j) for key in pairs if key[0] in train
                   for j in range(key[1] + 1, key[2])]
        torch.manual_seed(args.seed + f)
        prior = Prior(args.width)
        optimizer = torch.optim.Adam(prior.parameters(), lr=3e-4)
        rng = np.random.default_rng(args.seed + f)
        start = time.time()
        for step in range(args.steps):
            key, j = samples[rng.integers(len(samples))]
            pair = pairs[key]
            t = (j - pair.a) / (pair.b - pair.a)
            target = on_grid(pair.prepared, cases[pair.case].seq.frames[j])
            guess, delta = predict(prior, pair, t)
            loss = charbonnier(guess, target) + args.smooth * grad_l2(delta)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % 250 == 0:
                print(f"fold {f} step {step} loss {loss.item():.4f} "
                      f"({time.time() - start:.0f} s)", flush=True)
        for c in test:
            base = score(c, None)
            learned = score(c, prior)
            results["linear"] += [r[0] for r in base]
            results["UVI-Net fusion"] += [r[1] for r in base]
            results["prior"] += [r[1] for r in learned]
            print(f"{cases[c].name}: linear {np.mean([r[0] for r in base]):.2f} fusion "
                  f"{np.mean([r[1] for r in base]):.2f} prior "
                  f"{np.mean([r[1] for r in learned]):.2f}", flush=True)
    print(f"{len(results['linear'])} frames: " + ", ".join(
        f"{k} {np.mean(v):.3f}" for k, v in results.items()))


if __name__ == "__main__":
    main()
