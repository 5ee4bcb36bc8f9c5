"""Training and test-time losses: UVI-Net's unsupervised cycle loss (docs/method-notes.md §5).

The cycle loss needs no intermediate frame, so it serves three roles: training, the ``cycle``
test-time-training task, and instance optimisation on one pair. Random times come from a
``torch.Generator`` so a seed replays a run exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .metrics import local_squared_correlation
from .networks import UVINet
from .warp import warp


def ncc_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Minus the mean local squared correlation (window 9^3)."""
    return -local_squared_correlation(a, b).mean()


def charbonnier(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``mean(sqrt(d^2 + eps))``: a smooth L1."""
    return torch.sqrt((a - b) ** 2 + eps).mean()


def grad_l2(flow: torch.Tensor) -> torch.Tensor:
    """Mean squared forward differences of ``(B, 3, D1, D2, D3)``, averaged over the three axes."""
    d1 = flow[:, :, 1:] - flow[:, :, :-1]
    d2 = flow[:, :, :, 1:] - flow[:, :, :, :-1]
    d3 = flow[:, :, :, :, 1:] - flow[:, :, :, :, :-1]
    return ((d1**2).mean() + (d2**2).mean() + (d3**2).mean()) / 3.0


def similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``NCC loss + Charbonnier``, the image term used throughout the cycle loss."""
    return ncc_loss(a, b) + charbonnier(a, b)


def _uniform(low: float, high: float, batch: int, generator: torch.Generator | None,
             like: torch.Tensor) -> torch.Tensor:
    u = torch.rand(batch, generator=generator, dtype=torch.float64)
    return (low + (high - low) * u).to(device=like.device, dtype=like.dtype)


def _bt(t: torch.Tensor) -> torch.Tensor:
    return t.view(-1, 1, 1, 1, 1)


def cycle_loss(model: UVINet, i0: torch.Tensor, i1: torch.Tensor,
               generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """UVI-Net's loss on the pair ``(i0, i1)``; returns the terms and their sum under ``"total"``.

    Draws t1 ~ U(-0.5, 0), t2 ~ U(0, 1), t3 ~ U(1, 1.5) per batch item, makes virtual frames
    V1, V2, V3 with the first-pass flows (not detached), re-runs the same network on (V1, V2)
    and (V2, V3) and reconstructs the real ends. All terms have weight 1.
    """
    batch = i0.shape[0]
    t1 = _uniform(-0.5, 0.0, batch, generator, i0)
    t2 = _uniform(0.0, 1.0, batch, generator, i0)
    t3 = _uniform(1.0, 1.5, batch, generator, i0)

    phi01, phi10 = model.flow(i0, i1)
    registration = (similarity(warp(i0, phi01), i1) + grad_l2(phi01)
                    + similarity(warp(i1, phi10), i0) + grad_l2(phi10))

    v1 = warp(i0, _bt(t1) * phi01)
    v3 = warp(i1, _bt(1.0 - t3) * phi10)
    early = t2 < 0.5
    if bool(early.all()):
        v2 = warp(i0, _bt(t2) * phi01)
    elif not bool(early.any()):
        v2 = warp(i1, _bt(1.0 - t2) * phi10)
    else:
        v2 = torch.where(_bt(early), warp(i0, _bt(t2) * phi01), warp(i1, _bt(1.0 - t2) * phi10))

    s0 = (0.0 - t1) / (t2 - t1)
    s1 = (1.0 - t2) / (t3 - t2)
    # The second pass as one batch: features of (V1, V2, V3) in one pass, the pairs (V1, V2)
    # and (V2, V3) as batch slices of it (views, no copies), one flow and one refinement pass
    # for both. The same values as two separate passes up to float rounding, fewer and
    # larger kernels.
    virtual = torch.cat([v1, v2, v3], dim=0)
    pyramid = model.features(virtual)
    starts, ends = virtual[: 2 * batch], virtual[batch:]
    frames, residuals = model.synthesize(
        starts, ends, torch.cat([s0, s1]), model.flow(starts, ends),
        ([f[: 2 * batch] for f in pyramid], [f[batch:] for f in pyramid]))
    i0_hat, i1_hat = frames[:batch], frames[batch:]
    r0, r1 = residuals[:batch], residuals[batch:]
    reconstruction = similarity(i0_hat, i0) + similarity(i1_hat, i1)
    residual = r0.abs().mean() + r1.abs().mean()
    total = registration + reconstruction + residual
    return {"total": total, "registration": registration.detach(),
            "reconstruction": reconstruction.detach(), "residual": residual.detach()}


#: Fixed times of :func:`cycle_reconstruction`: the middles of the training ranges of t1, t2, t3.
CYCLE_TIMES = (-0.25, 0.5, 1.25)
Flows = tuple[torch.Tensor, torch.Tensor]
Interpolator = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


def cycle_reconstruction(i0: torch.Tensor, i1: torch.Tensor, flows: Flows,
                         interpolate: Interpolator,
                         times: tuple[float, float, float] = CYCLE_TIMES
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The two real ends rebuilt from virtual frames at fixed ``times``: :func:`cycle_loss`'s
    reconstruction without its randomness, so it can score a model on a pair repeatably.

    ``V1 = W(I0, t1 phi01)``, ``V3 = W(I1, (1 - t3) phi10)``, ``V2`` = the interpolator's frame
    at ``t2``; I0 is rebuilt between (V1, V2) and I1 between (V2, V3); both are clamped to the
    range the real pair spans.
    """
    t1, t2, t3 = times
    phi01, phi10 = flows
    v1 = warp(i0, t1 * phi01)
    v3 = warp(i1, (1.0 - t3) * phi10)
    v2 = interpolate(i0, i1, t2)
    i0_hat = interpolate(v1, v2, (0.0 - t1) / (t2 - t1))
    i1_hat = interpolate(v2, v3, (1.0 - t2) / (t3 - t2))
    low = float(torch.minimum(i0.min(), i1.min()))
    high = float(torch.maximum(i0.max(), i1.max()))
    return i0_hat.clamp(low, high), i1_hat.clamp(low, high)
