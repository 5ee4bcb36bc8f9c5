"""Backward warping of volumes by displacement fields (docs/method-notes.md §2).

The one warp function of the engine. ``W(I, phi)(x) = I(x + phi(x))``: trilinear (nearest for
label maps), zero padding, ``align_corners=True``. Flows are in voxel units, channel ``c``
displacing spatial dim ``c``. The sampling grid is built from the input's shape and device on
every call, so no grid is ever stored in a checkpoint and any volume size works on any device.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from ..runtime.precision import at_least_float32, float32_region


def _identity_grid(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Voxel coordinates ``(1, len(shape), *shape)`` on ``like``'s device and dtype."""
    axes = [torch.arange(s, device=like.device, dtype=like.dtype) for s in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0).unsqueeze(0)


def _sampling_grid(flow: torch.Tensor) -> torch.Tensor:
    """``grid_sample``'s grid for ``x + flow(x)`` (``flow``: ``(B, n, *shape)``, n = 2 or 3).

    Each axis normalised to [-1, 1] (align_corners=True), channels last and reversed:
    grid_sample expects (x, y, z) = (last dim, ..., first dim).
    """
    shape = tuple(int(s) for s in flow.shape[2:])
    positions = _identity_grid(shape, flow) + flow
    scale = torch.tensor([2.0 / max(s - 1, 1) for s in shape], device=flow.device,
                         dtype=flow.dtype).view(1, len(shape), *([1] * len(shape)))
    order = (0, *range(2, 2 + len(shape)), 1)
    return (positions * scale - 1.0).permute(order).flip(-1)


WARP_MODES = ("bilinear", "nearest", "bicubic")


def warp(image: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear",
         held_axis: int | None = None) -> torch.Tensor:
    """Sample ``image`` at ``x + flow(x)``.

    Args:
        image: ``(B, C, D1, D2, D3)``.
        flow: ``(B, 3, D1, D2, D3)`` displacement in voxels (same spatial size as ``image``).
        mode: ``"bilinear"`` (trilinear on volumes, the default for images), ``"nearest"``
            (each output voxel copies one input voxel, so a label map stays a label map: warping
            segmentations must not blend class numbers) or ``"bicubic"`` (in-plane only, below).
        held_axis: a spatial axis (0-2) the flow does not move along (its component there is
            ignored): each slice across it is sampled in 2D. Needed for ``"bicubic"`` (PyTorch
            samples bicubically in 2D only), whose sharper kernel keeps a frame moved by a
            fraction of a pixel from being smoothed as linear interpolation smooths it.

    Returns:
        ``(B, C, D1, D2, D3)`` warped image; samples outside the volume read zero.
    """
    if mode not in WARP_MODES:
        raise ValueError(f"warp mode must be one of {WARP_MODES}, got {mode!r}")
    if flow.dim() != 5 or flow.shape[1] != 3 or flow.shape[2:] != image.shape[2:]:
        raise ValueError(
            f"flow must have shape (B, 3, {', '.join(map(str, image.shape[2:]))}) to warp an "
            f"image of shape {tuple(image.shape)}, got {tuple(flow.shape)}"
        )
    if held_axis is not None:
        return _warp_slices(image, flow, mode, held_axis)
    if mode == "bicubic":
        raise ValueError("bicubic warping samples slices in 2D: give the held_axis")
    with float32_region(flow.device):  # sub-voxel positions need float32 under autocast
        image, flow = at_least_float32(image), at_least_float32(flow)
        return _grid_sample_all_threads(image, _sampling_grid(flow), mode)


def _warp_slices(image: torch.Tensor, flow: torch.Tensor, mode: str,
                 held_axis: int) -> torch.Tensor:
    """:func:`warp` of every slice across ``held_axis`` in 2D (the slices as a batch)."""
    if held_axis not in (0, 1, 2):
        raise ValueError(f"held_axis must be 0, 1 or 2, got {held_axis}")
    with float32_region(flow.device):
        image, flow = at_least_float32(image), at_least_float32(flow)
        batch, channels = image.shape[:2]
        free = [axis for axis in range(3) if axis != held_axis]
        # (B, C, D1, D2, D3) -> (B * held, C, free0, free1): the held axis joins the batch.
        order = (0, 2 + held_axis, 1, 2 + free[0], 2 + free[1])
        slices = image.permute(order).reshape(-1, channels, *(image.shape[2 + a] for a in free))
        moves = flow[:, free].permute(order).reshape(-1, 2, *slices.shape[2:])
        out = F.grid_sample(slices, _sampling_grid(moves), mode=mode, padding_mode="zeros",
                            align_corners=True)
        held = image.shape[2 + held_axis]
        out = out.reshape(batch, held, channels, *slices.shape[2:])
        return out.permute([order.index(k) for k in range(5)])


_THREADED = {"enabled": True}


@contextmanager
def threaded_warp(enabled: bool) -> Iterator[None]:
    """Switch :func:`warp`'s one-run-per-thread sampling on or off for the block (off is one
    plain ``grid_sample`` call: the benchmark's unoptimised reference)."""
    previous, _THREADED["enabled"] = _THREADED["enabled"], bool(enabled)
    try:
        yield
    finally:
        _THREADED["enabled"] = previous


def _grid_sample_all_threads(image: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    """``F.grid_sample`` (zero padding, ``align_corners=True``) on every CPU thread.

    Why: PyTorch's 3D ``grid_sample`` on the CPU, forward and backward, parallelises over the
    batch only, so a one-volume warp ran on one core however many the machine has. With fewer
    batch items than threads, each item's output voxels are cut into one equal run per thread
    (the grid flattened, padded with the centre position), the runs sampled as one batch that
    reads the item through an expanded view (no copy). Every output voxel is computed exactly
    as before; the input's gradient is summed over the runs, so only its rounding changes.
    """
    threads = torch.get_num_threads()
    if image.device.type != "cpu" or image.shape[0] >= threads or not _THREADED["enabled"]:
        return F.grid_sample(image, grid, mode=mode, padding_mode="zeros", align_corners=True)
    channels, shape = image.shape[1], grid.shape[1:4]
    voxels = shape[0] * shape[1] * shape[2]
    runs = min(threads, voxels)
    per_run = -(-voxels // runs)
    outputs = []
    for item, item_grid in zip(image.split(1), grid.split(1), strict=True):
        flat = F.pad(item_grid.reshape(voxels, 3), (0, 0, 0, per_run * runs - voxels))
        source = item.expand(runs, *item.shape[1:])
        out = F.grid_sample(source, flat.reshape(runs, per_run, 1, 1, 3), mode=mode,
                            padding_mode="zeros", align_corners=True)
        outputs.append(out.reshape(runs, channels, per_run).transpose(0, 1)
                       .reshape(channels, -1)[:, :voxels].reshape(1, channels, *shape))
    return torch.cat(outputs) if len(outputs) > 1 else outputs[0]


def downsample_flow(flow: torch.Tensor, level: int) -> torch.Tensor:
    """Flow for pyramid level ``level`` (size / 2**level): nearest resampling, vectors x 0.5**level.

    Method.md section 4 step 4: features at 1/2**k resolution are warped with the flow
    downsampled (nearest) and scaled by 0.5**k so displacements stay in that level's voxels.
    """
    if level == 0:
        return flow
    factor = 2**level
    size = [s // factor for s in flow.shape[2:]]
    return F.interpolate(flow, size=size, mode="nearest") / factor
