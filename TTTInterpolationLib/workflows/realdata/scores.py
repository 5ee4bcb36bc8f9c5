"""Evaluation on real ED/ES pairs, where no intermediate frame exists (ACDC test split).

Without the frames in between, interpolation cannot be scored directly; what the two ends and
their manual labels can score is the motion the model finds between them. Per setting (no
motion, UVI-Net, UVI-Net after each TTT task and scheme) and per case, on the model grid
(docs/method-notes.md §6: in-plane centre crop, slices cropped or zero-padded, min-max per volume;
labels cropped the same way):

- **registration NCC** and **registration PSNR**: ED warped by the flow toward ES,
  ``W(ED, phi01)``, against ES, with the published metrics (local NCC 9^3, PSNR at range 1).
  phi01 is UVI-Net's first flow output: ``W(I0, phi01)`` is its estimate of ``I1``.
- **Dice**: the ED labels warped the same way (nearest neighbour, so classes are never blended)
  against the ES labels; per class (1 RV, 2 myocardium, 3 LV cavity) and their mean. A class
  absent from both volumes has no Dice (NaN), and is left out of means.
- **cycle PSNR**: how well the interpolator reconstructs the real ends from virtual frames,
  UVI-Net's own training signal (docs/method-notes.md §5) with fixed instead of random times
  ``t1, t2, t3 = -0.25, 0.5, 1.25`` (the middles of the training ranges):
  ``V1 = W(ED, t1 phi01)``, ``V3 = W(ES, (1 - t3) phi10)`` and ``V2`` = the interpolator's own
  frame at ``t2``; ED is rebuilt between ``(V1, V2)`` at ``s0 = -t1 / (t2 - t1) = 1/3`` and ES
  between ``(V2, V3)`` at ``s1 = (1 - t2) / (t3 - t2) = 2/3``, both clamped to the range the
  real pair spans; PSNR of
  the two rebuilt ends against the real ones, one MSE over both volumes. It is a consistency
  score, not an accuracy score: TTT with the cycle task minimises a random-time version of it
  on the very same pair, so its cycle PSNR is optimistic by construction.
- **seconds per case**: TTT (if any) plus the flow pass; scoring time is not counted.

The no-motion baseline is the same computation with zero flows and linear blending as the
interpolator: registration scores compare ED with ES as they are (the ED labels unchanged), and
its cycle rebuilds ED as ``5/6 ED + 1/6 ES`` (and ES symmetrically).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from ...models.ttt_model import TTTModel
from ...nn.losses import Flows, Interpolator, cycle_reconstruction
from ...nn.metrics import ncc, psnr
from ...nn.warp import warp
from .cases import CLASSES, LabelledPair

METRICS = ("NCC", "PSNR", "Dice", *(f"Dice_{n}" for n in CLASSES.values()), "cycle_PSNR")


def dice_scores(predicted: np.ndarray | torch.Tensor,
                truth: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Dice per class (``Dice_RV``, ``Dice_Myo``, ``Dice_LV``) and their mean (``Dice``).

    ``2 |P & T| / (|P| + |T|)``; NaN for a class absent from both, left out of the mean.
    """
    p, t = np.asarray(_numpy(predicted)).round(), np.asarray(_numpy(truth)).round()
    scores = {}
    for value, name in CLASSES.items():
        in_p, in_t = p == value, t == value
        total = int(in_p.sum() + in_t.sum())
        scores[f"Dice_{name}"] = 2.0 * int((in_p & in_t).sum()) / total if total else math.nan
    present = [v for v in scores.values() if not math.isnan(v)]
    return {"Dice": float(np.mean(present)) if present else math.nan, **scores}


def _numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def linear_blend(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """The no-motion interpolator (also an extrapolator for t outside [0, 1])."""
    return (1.0 - t) * a + t * b


def uvinet_interpolator(model: TTTModel) -> Interpolator:
    """UVI-Net's frame at ``t`` between two volumes (flows computed for that pair), unclamped
    (:func:`.losses.cycle_reconstruction` clamps what it returns)."""
    return lambda a, b, t: model.uvinet(a, b, t)


@dataclass
class MotionEstimate:
    """What a setting produced for one case: its flows and its cycle reconstruction."""

    flows: Flows
    cycle: tuple[torch.Tensor, torch.Tensor]
    scoring_seconds: float = 0.0


def estimate(i0: torch.Tensor, i1: torch.Tensor, flows: Flows,
             interpolate: Interpolator) -> MotionEstimate:
    """Flows plus the cycle reconstruction, timing the reconstruction (it is scoring work)."""
    _synchronize(i0.device)
    start = time.perf_counter()
    with torch.no_grad():
        cycle = cycle_reconstruction(i0, i1, flows, interpolate)
    _synchronize(i0.device)
    return MotionEstimate(flows, cycle, time.perf_counter() - start)


def score_case(pair: LabelledPair, result: MotionEstimate) -> dict[str, float]:
    """Every metric of one case and setting (definitions in the module docstring)."""
    phi01 = result.flows[0]
    with torch.no_grad():
        warped = warp(pair.ed, phi01)
        warped_labels = warp(pair.ed_labels, phi01, mode="nearest")
    ends = torch.cat([pair.ed, pair.es]).cpu()
    rebuilt = torch.cat(result.cycle).cpu()
    return {"NCC": ncc(warped.cpu(), pair.es.cpu()), "PSNR": psnr(warped.cpu(), pair.es.cpu()),
            **dice_scores(warped_labels, pair.es_labels), "cycle_PSNR": psnr(rebuilt, ends)}


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock times measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
