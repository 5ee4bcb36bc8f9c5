"""UVI-Net (Kim et al., CVPR 2024) as described in docs/method-notes.md §3, §4.

Three parts: a VoxelMorph-style flow U-Net giving both directions in one pass, a small feature
extractor (shared with the test-time-training heads, see ``heads.py``) and a refinement network
that corrects the flow-fused frame with warped feature pyramids. All tensors are
``(B, C, D1, D2, D3)`` with every spatial size divisible by 16; nothing here is tied to a device
or a volume size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..runtime.precision import at_least_float32, autocast, float32_module, inference_precision
from .warp import downsample_flow, warp

Pyramid = list[torch.Tensor]

#: The axis along which every flow estimated in this context is held at zero (``None``: free
#: 3D motion). Set per case through :func:`motion_held_along` (:mod:`.data.slices` decides it).
_HELD_AXIS: ContextVar[int | None] = ContextVar("held_axis", default=None)


@contextmanager
def motion_held_along(axis: int | None) -> Iterator[None]:
    """Within the block, :class:`FlowNet` returns flows whose component along spatial
    ``axis`` (0-2) is zero (``None``: no constraint). A context, not a model setting, because
    it belongs to the case at hand: one model serves stacks of slices and 3D volumes alike."""
    token = _HELD_AXIS.set(axis)
    try:
        yield
    finally:
        _HELD_AXIS.reset(token)


def scaled_channels(channels: int, width: float) -> int:
    """Published channel count scaled by ``width`` (at least 1)."""
    return max(1, int(round(channels * width)))


_LAYOUT = {"channels_last": True}


@contextmanager
def channels_last_layout(enabled: bool) -> Iterator[None]:
    """Switch the channels-last layout of :func:`channels_last` on or off for the block
    (off reproduces the plain channels-first path: the benchmark's unoptimised reference)."""
    previous, _LAYOUT["channels_last"] = _LAYOUT["channels_last"], bool(enabled)
    try:
        yield
    finally:
        _LAYOUT["channels_last"] = previous


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the channels-last layout on CPU (oneDNN's fast 3D convolutions), else as is.

    Layout only: values are unchanged. On CPU a 3x3x3 convolution runs 1.5-2x faster on
    channels-last activations (forward and backward, float32 and bfloat16). One-channel
    tensors (the frames) are contiguous in both layouts.
    """
    if x.device.type != "cpu" or x.dim() != 5 or not _LAYOUT["channels_last"]:
        return x
    if x.shape[1] == 1 and x.stride(1) != 1:
        # Contiguous in both layouts, but torch.cat would read it as channels-first and make
        # its output channels-first (a slow strided copy, then another to convert it back).
        return torch.empty_like(x, memory_format=torch.channels_last_3d).copy_(x)
    return x.contiguous(memory_format=torch.channels_last_3d)


class ConvBlock(nn.Sequential):
    """3x3x3 convolution and its activation (in place: the convolution does not need its
    output for its backward), run on channels-last input (see :func:`channels_last`).

    A ``Sequential`` so checkpoint keys stay ``<name>.0.weight``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The output too: PyTorch's own kernel (taken for small float32 inputs) returns
        # channels-first, which would make the next concatenation slow.
        return channels_last(super().forward(channels_last(x)))


def _conv(c_in: int, c_out: int, stride: int = 1, act: str | None = "leaky") -> ConvBlock:
    layers: list[nn.Module] = [nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1)]
    if act == "leaky":
        layers.append(nn.LeakyReLU(0.2, inplace=True))
    elif act == "relu":
        layers.append(nn.ReLU(inplace=True))
    return ConvBlock(*layers)


def _small_init(conv: nn.Conv3d) -> nn.Conv3d:
    """N(0, 1e-5) weights, zero bias: the network starts as 'no flow' / 'no correction'."""
    nn.init.normal_(conv.weight, mean=0.0, std=1e-5)
    nn.init.zeros_(conv.bias)
    return conv


def held_motion(flow: torch.Tensor) -> torch.Tensor:
    """``flow`` (``(B, 3, ...)``) with its component along the held axis set to zero (as it
    is outside :func:`motion_held_along`)."""
    axis = _HELD_AXIS.get()
    if axis is None:
        return flow
    keep = torch.ones(1, 3, 1, 1, 1, device=flow.device, dtype=flow.dtype)
    keep[:, axis] = 0.0
    return flow * keep


class FlowNet(nn.Module):
    """U-Net mapping ``cat(I0, I1)`` to ``cat(phi01, phi10)`` (6 channels, voxel units).

    ``resolution="half"`` (``ModelConfig.flow_resolution``) runs it on the frames averaged
    down 2x per axis and returns the flows upsampled back to full resolution (trilinear, in
    full-resolution voxels): the same weights at about 1/8 of the cost.
    """

    def __init__(self, width: float = 1.0, resolution: str = "full") -> None:
        super().__init__()
        self.resolution = resolution
        enc = [scaled_channels(c, width) for c in (16, 32, 32, 32)]
        dec = scaled_channels(32, width)
        self.encoder = nn.ModuleList()
        c_prev = 2
        for c in enc:
            self.encoder.append(_conv(c_prev, c, stride=2))
            c_prev = c
        # Skips, deepest first after the bottleneck: enc[2], enc[1], enc[0], the input.
        skips = [enc[2], enc[1], enc[0], 2]
        self.decoder = nn.ModuleList()
        for skip in skips:
            self.decoder.append(_conv(c_prev, dec))
            c_prev = dec + skip
        full = [scaled_channels(32, width), scaled_channels(16, width), scaled_channels(16, width)]
        self.remaining = nn.Sequential(
            _conv(c_prev, full[0]), _conv(full[0], full[1]), _conv(full[1], full[2])
        )
        self.head = _small_init(nn.Conv3d(full[2], 6, 3, padding=1))

    def encode(self, pair: torch.Tensor, depth: int) -> torch.Tensor:
        """The first ``depth`` encoder levels on ``cat(I0, I1)`` (``(B, 2, ...)``).

        This is the trunk the self-supervised heads share with the motion estimate when a
        model's heads sit on the flow network (``ModelConfig.heads == "flow"``).
        """
        x = pair
        for layer in self.encoder[:depth]:
            x = layer(x)
        return x

    def forward(self, i0: torch.Tensor, i1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(phi01, phi10)``, each ``(B, 3, D1, D2, D3)``: phi01 samples I0 toward I1.

        Inside :func:`motion_held_along` the held axis's component is zero.
        """
        if self.resolution == "half":
            flows = self._at_half_resolution(i0, i1)
        else:
            flows = self._estimate(i0, i1)
        return held_motion(flows[0]), held_motion(flows[1])

    def _at_half_resolution(self, i0: torch.Tensor,
                            i1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The flows estimated on 2x-averaged frames, upsampled and rescaled to full voxels.

        A halved size need not be a multiple of 16 (16 slices give 8), so the small frames are
        padded by edge replication up to one and the flows cropped back before upsampling.
        """
        small = [F.avg_pool3d(at_least_float32(x), 2) for x in (i0, i1)]
        size = small[0].shape[2:]
        pad: list[int] = []
        for n in reversed(size):  # F.pad lists the last axis first
            pad += [0, -n % 16]
        if any(pad):
            small = [F.pad(x, pad, mode="replicate") for x in small]
        flows = self._estimate(*small)
        return tuple(  # type: ignore[return-value]
            2.0 * F.interpolate(f[:, :, :size[0], :size[1], :size[2]].float(), scale_factor=2,
                                mode="trilinear", align_corners=False)
            for f in flows)

    def _estimate(self, i0: torch.Tensor, i1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = channels_last(torch.cat([i0, i1], dim=1))
        skips = [x]
        for layer in self.encoder:
            x = layer(x)
            skips.append(x)
        skips = skips[:-1][::-1]  # enc[2], enc[1], enc[0], input
        for layer, skip in zip(self.decoder, skips, strict=True):
            x = F.interpolate(layer(x), scale_factor=2, mode="nearest")
            x = torch.cat([x, skip.to(x.dtype)], dim=1)  # one dtype under autocast
        flow = float32_module(self.head, self.remaining(x)).contiguous()
        return flow[:, :3], flow[:, 3:]


class FeatureExtractor(nn.Module):
    """Three-level pyramid F0 (full), F1 (1/2), F2 (1/4); the part TTT adapts (about 13.6 k)."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        c0, c1, c2 = (scaled_channels(c, width) for c in (4, 8, 16))
        self.channels = (c0, c1, c2)
        self.level0 = nn.Sequential(_conv(1, c0, act="relu"), _conv(c0, c0, act="relu"))
        self.level1 = nn.Sequential(_conv(c0, c1, 2, "relu"), _conv(c1, c1, act="relu"))
        self.level2 = nn.Sequential(_conv(c1, c2, 2, "relu"), _conv(c2, c2, act="relu"))

    def forward(self, x: torch.Tensor) -> Pyramid:
        f0 = self.level0(x)
        f1 = self.level1(f0)
        return [f0, f1, self.level2(f1)]


class RefineNet(nn.Module):
    """Predicts a residual for the fused frame from it and both ends' warped feature pyramids."""

    def __init__(self, feature_channels: tuple[int, int, int], width: float = 1.0) -> None:
        super().__init__()
        c0, c1, c2 = feature_channels
        e0, e1, e2 = (scaled_channels(c, width) for c in (8, 16, 32))
        d = scaled_channels(32, width)
        self.enc0 = _conv(1, e0)
        self.enc1 = _conv(e0 + 2 * c0, e1, stride=2)
        self.enc2 = _conv(e1 + 2 * c1, e2, stride=2)
        skip0, skip1, skip2 = e0 + 2 * c0, e1 + 2 * c1, e2 + 2 * c2
        self.dec2 = _conv(skip2, d)
        self.dec1 = _conv(d + skip1, d)
        self.dec0 = _conv(d + skip0, d)
        t1, t2 = scaled_channels(8, width), scaled_channels(8, width)
        self.tail = nn.Sequential(_conv(d + 1, t1), _conv(t1, t2), _conv(t2, 3))
        self.out = _small_init(nn.Conv3d(3, 1, 3, padding=1))

    def forward(self, fused: torch.Tensor, warped0: Pyramid, warped1: Pyramid) -> torch.Tensor:
        # One layout and one dtype (the convolutions', under autocast) for every part of a
        # concatenation: mixed layouts make a slow copy, mixed dtypes a float32 copy.
        e0 = self.enc0(fused)
        w0 = [channels_last(f.to(e0.dtype)) for f in warped0]
        w1 = [channels_last(f.to(e0.dtype)) for f in warped1]
        s0 = torch.cat([e0, w0[0], w1[0]], dim=1)
        s1 = torch.cat([self.enc1(s0), w0[1], w1[1]], dim=1)
        s2 = torch.cat([self.enc2(s1), w0[2], w1[2]], dim=1)
        x = F.interpolate(self.dec2(s2), scale_factor=2, mode="trilinear", align_corners=False)
        x = F.interpolate(self.dec1(torch.cat([x, s1], 1)), scale_factor=2, mode="trilinear",
                          align_corners=False)
        x = self.dec0(torch.cat([x, s0], dim=1))
        x = self.tail(torch.cat([x, channels_last(fused.to(x.dtype))], dim=1))
        return float32_module(self.out, x)


#: Intermediate frames that go through the refinement network as one batch in
#: :meth:`UVINet.interpolate`. Measured at 128x128x32 on 2 CPU cores (7 frames, bf16): one at a
#: time 2.35 s, 2 per batch 2.13 s, 4 per batch 2.24 s, all 7 2.52 s (float32 likewise:
#: 4.40 / 3.73 / 3.84 / 4.15 s); the frames agree to float rounding (there: bit for bit).
FRAMES_PER_BATCH = 2


def _warp_side(image: torch.Tensor, pyramid: Pyramid,
               flow: torch.Tensor) -> tuple[torch.Tensor, Pyramid]:
    """One end's frame and feature pyramid warped toward time t by ``flow`` (full resolution).

    The frame and the full-resolution features share the flow, so they go through one warp as
    one tensor (one sampling grid instead of two; the same values: ``warp`` samples each
    channel alike and works in float32 anyway).
    """
    first = warp(torch.cat([at_least_float32(image), at_least_float32(pyramid[0])], dim=1), flow)
    rest = [warp(f, downsample_flow(flow, k)) for k, f in enumerate(pyramid[1:], start=1)]
    channels = image.shape[1]
    return first[:, :channels], [first[:, channels:], *rest]


def _time_tensor(t: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` as ``(B, 1, 1, 1, 1)`` so it broadcasts per batch item."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return t.reshape(-1, 1, 1, 1, 1)


class UVINet(nn.Module):
    """Flow network + feature extractor + refinement network (about 0.51 M parameters)."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        width = self.config.width
        self.flow = FlowNet(width, self.config.flow_resolution)
        self.features = FeatureExtractor(width)
        self.refine: RefineNet | None = self._refinement(width)

    def _refinement(self, width: float) -> RefineNet | None:
        """The refinement network (``None`` in an architecture that does not refine)."""
        return RefineNet(self.features.channels, width)

    def pyramids(self, i0: torch.Tensor, i1: torch.Tensor) -> tuple[Pyramid, Pyramid]:
        """Both ends' feature pyramids from one pass over the two as one batch.

        The same values as two passes up to float rounding (each item is convolved alone), and
        faster: for a batch of one single-channel 128x128 volume, PyTorch's CPU convolution
        falls back from oneDNN to its slow reference kernel; a batch of two takes oneDNN.
        """
        pyramid = self.features(torch.cat([i0, i1], dim=0))
        b = i0.shape[0]
        return [f[:b] for f in pyramid], [f[b:] for f in pyramid]

    def synthesize(
        self,
        i0: torch.Tensor,
        i1: torch.Tensor,
        t: float | torch.Tensor,
        flows: tuple[torch.Tensor, torch.Tensor],
        pyramids: tuple[Pyramid, Pyramid],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame at time ``t`` from precomputed flows and feature pyramids (section 4 steps 2-5).

        Returns ``(frame, residual)``; ``frame = fused + residual``, unclamped (training needs
        the raw value; :meth:`interpolate` clamps).
        """
        phi01, phi10 = flows
        tt = _time_tensor(t, i0)
        phi0t, phi1t = tt * phi01, (1.0 - tt) * phi10
        moved0, warped0 = _warp_side(i0, pyramids[0], phi0t)
        moved1, warped1 = _warp_side(i1, pyramids[1], phi1t)
        fused = (1.0 - tt) * moved0 + tt * moved1
        assert self.refine is not None  # UVI-Net always refines; subclasses override this
        residual = self.refine(fused, warped0, warped1)
        return fused + residual, residual

    def forward(self, i0: torch.Tensor, i1: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """One frame at time ``t`` (float or per-batch tensor), unclamped."""
        return self.synthesize(i0, i1, t, self.flow(i0, i1), self.pyramids(i0, i1))[0]

    @torch.no_grad()
    def interpolate(self, i0: torch.Tensor, i1: torch.Tensor, times: Sequence[float],
                    bounds: tuple[float, float] = (0.0, 1.0),
                    precision: str = "auto") -> list[torch.Tensor]:
        """Frames at every ``t`` in ``times``, clamped to ``bounds`` (the inputs' range), float32.

        The flows and both feature pyramids are computed once for all ``t`` (the published
        loop recomputes them per frame), and the frames go through the refinement network
        :data:`FRAMES_PER_BATCH` at a time. ``precision`` as in
        :func:`~.precision.inference_precision`: ``bf16`` runs the convolutions in bfloat16
        (flows, warps and the residual stay float32; about 1.6x faster on CPUs with bfloat16
        units, frames within 5e-3 of float32, see ``benchmarks/bench_speed.py``), which
        ``auto`` picks on such CPUs; ``fp32`` and ``auto`` elsewhere run float32.
        """
        frames: list[torch.Tensor] = []
        with autocast(i0.device, inference_precision(precision, i0.device)):
            flows = self.flow(i0, i1)
            pyramids = self.pyramids(i0, i1)
            for start in range(0, len(times), FRAMES_PER_BATCH):
                chunk = [float(t) for t in times[start:start + FRAMES_PER_BATCH]]
                n = len(chunk)

                def repeat(x: torch.Tensor, n: int = n) -> torch.Tensor:
                    return x if n == 1 else x.repeat(n, *([1] * (x.dim() - 1)))

                t = torch.tensor(chunk, device=i0.device).repeat_interleave(i0.shape[0])
                out = self.synthesize(repeat(i0), repeat(i1), t,
                                      (repeat(flows[0]), repeat(flows[1])),
                                      ([repeat(f) for f in pyramids[0]],
                                       [repeat(f) for f in pyramids[1]]))[0]
                frames.extend(out.float().clamp(*bounds).split(i0.shape[0]))
        return frames


def check_spatial_size(shape: Sequence[int], multiple: int = 16) -> None:
    """Raise ``ValueError`` unless every spatial size is a positive multiple of ``multiple``."""
    bad = [s for s in shape if s <= 0 or s % multiple]
    if bad:
        raise ValueError(f"every spatial size must be a multiple of {multiple}, got {tuple(shape)}")
