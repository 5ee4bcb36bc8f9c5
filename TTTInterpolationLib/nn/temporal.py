"""UVI-Net with motion learned in time (architecture ``uvinet-temporal``).

Why: UVI-Net moves each end frame by its ED->ES field scaled linearly in ``t``. A heart does
not move that way: most of the systolic motion happens early, and its direction turns
(docs/acdc4d-headroom.md: an oracle that knows the intermediate motion is about +5 dB over
linear blending, linear-in-t motion about +0.4 dB). Trained on every frame of full sequences
(``tttinterp train-sequences``), a small time-conditioned network corrects, per voxel and per
``t``, both scaled flows and the blend weight:

    f0 = t phi01 + e(t) d0,   f1 = (1 - t) phi10 + e(t) d1,   e(t) = 4 t (1 - t)
    w  = clamp(t + e(t) tanh(o) / 2, 0, 1)
    g  = sigmoid(q + GATE_BIAS)
    frame = (1 - g) ((1 - t) I0 + t I1) + g ((1 - w) W(I0, f0) + w W(I1, f1))

``(d0, d1, o, q)`` come from :class:`MotionNet` on both frames, both linearly moved frames, the
scaled flows and ``t``. The gate ``g`` mixes, per voxel, linear blending with the moved
frames: where warping cannot explain the change (through-plane motion across 10 mm slices,
noise at sub-voxel motion) blending is the better guess, and on real cine at small gaps it
wins (docs/acdc4d-headroom.md). The envelope ``e(t)`` keeps the ends exact (``t = 0`` gives I0
and ``t = 1`` gives I1 whatever the network says). The output layer starts at zero, so an
untrained model is mostly linear blending (``g = sigmoid(GATE_BIAS)``) with a share of
UVI-Net's fusion, and a still pair (zero flows) gives linear blending exactly.
The refinement network is left out: it added 0.003 dB on real cine (headroom note §2).

Everything else is UVI-Net's (the flow network, the feature extractor the paper's heads read),
so test-time training, the cycle loss and checkpoints reach it through the same interface.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime.precision import float32_module
from .networks import (
    Pyramid,
    RefineNet,
    UVINet,
    _conv,
    _time_tensor,
    channels_last,
    held_motion,
    scaled_channels,
)
from .warp import warp

#: Input channels of :class:`MotionNet`: I0, I1, W(I0, t phi01), W(I1, (1-t) phi10), the two
#: scaled flows (3 each) and t.
MOTION_INPUTS = 11
#: Output channels: a flow correction for each end (3 each, voxels), a blend-weight offset and
#: the gate between moved frames and linear blending.
MOTION_OUTPUTS = 8
#: The gate's logit before training: sigmoid(-1) = 0.27 of the moved frames at first.
GATE_BIAS = -1.0


def envelope(t: torch.Tensor) -> torch.Tensor:
    """``4 t (1 - t)``, zero at both ends and outside [0, 1], one at ``t = 0.5``."""
    return (4.0 * t * (1.0 - t)).clamp_min(0.0)


class MotionNet(nn.Module):
    """A four-level U-Net from :data:`MOTION_INPUTS` channels to :data:`MOTION_OUTPUTS`.

    Its output layer starts at exactly zero (no correction), so the model it belongs to starts
    as UVI-Net's linear-in-time fusion and training moves it away only where that helps.
    """

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        w, w2 = scaled_channels(16, width), scaled_channels(32, width)
        self.enc0 = _conv(MOTION_INPUTS, w)
        self.enc1 = _conv(w, w2, stride=2)
        self.enc2 = _conv(w2, w2, stride=2)
        self.enc3 = _conv(w2, w2, stride=2)
        self.dec2 = _conv(2 * w2, w2)
        self.dec1 = _conv(2 * w2, w2)
        self.dec0 = _conv(w2 + w, w)
        self.out = nn.Conv3d(w, MOTION_OUTPUTS, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = self.enc0(x)
        s1 = self.enc1(s0)
        s2 = self.enc2(s1)
        y = self.enc3(s2)
        for layer, skip in ((self.dec2, s2), (self.dec1, s1), (self.dec0, s0)):
            y = F.interpolate(y, size=skip.shape[2:], mode="trilinear", align_corners=False)
            y = layer(torch.cat([channels_last(y), skip.to(y.dtype)], dim=1))
        return float32_module(self.out, y)


class TemporalUVINet(UVINet):
    """UVI-Net's flow network and feature extractor, with :class:`MotionNet` in place of the
    refinement network (see the module docstring for the frame it makes)."""

    def __init__(self, config=None) -> None:  # noqa: ANN001 - same signature as UVINet
        super().__init__(config)
        self.motion = MotionNet(self.config.width)

    def _refinement(self, width: float) -> RefineNet | None:
        return None

    def pyramids(self, i0: torch.Tensor, i1: torch.Tensor) -> tuple[Pyramid, Pyramid]:
        """No feature pyramids: nothing here reads them (saves the feature pass)."""
        return [], []

    def motion_terms(self, i0: torch.Tensor, i1: torch.Tensor, t: float | torch.Tensor,
                     flows: tuple[torch.Tensor, torch.Tensor]
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The flows toward ``t`` from each end, the blend weight of I1 and the gate of the
        moved frames against linear blending, after correction."""
        phi01, phi10 = flows
        tt = _time_tensor(t, i0).float()
        f0, f1 = tt * phi01, (1.0 - tt) * phi10
        moved0, moved1 = warp(torch.cat([i0, i1]), torch.cat([f0, f1])).chunk(2)
        x = torch.cat([i0, i1, moved0, moved1, f0, f1, tt.expand_as(i0)], dim=1)
        out = self.motion(channels_last(x)).float()
        e = envelope(tt)
        f0 = f0 + e * held_motion(out[:, 0:3])
        f1 = f1 + e * held_motion(out[:, 3:6])
        weight = (tt + 0.5 * e * torch.tanh(out[:, 6:7])).clamp(0.0, 1.0)
        gate = torch.sigmoid(out[:, 7:8] + GATE_BIAS)
        return f0, f1, weight, gate

    def synthesize(self, i0: torch.Tensor, i1: torch.Tensor, t: float | torch.Tensor,
                   flows: tuple[torch.Tensor, torch.Tensor],
                   pyramids: tuple[Pyramid, Pyramid]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame at ``t`` and a zero residual (no refinement; the cycle loss reads it)."""
        f0, f1, weight, gate = self.motion_terms(i0, i1, t, flows)
        moved0, moved1 = warp(torch.cat([i0, i1]), torch.cat([f0, f1])).chunk(2)
        tt = _time_tensor(t, i0).float()
        blended = (1.0 - tt) * i0 + tt * i1
        frame = blended + gate * ((1.0 - weight) * moved0 + weight * moved1 - blended)
        return frame, torch.zeros_like(frame)
