"""Self-supervised heads on a trunk shared with UVI-Net; :class:`~.ttt_model.TTTModel`
(models/ttt_model.py) holds them.

Where the heads attach (``ModelConfig.heads``):
- ``flow`` (what ``tttinterp train`` makes): the first two levels of the flow network's
  encoder, which read the *pair* ``cat(I0, I1)``. Rotation: the pair is rotated as one and the
  head names the angle. MAE: each frame is masked with its own random patches and both are
  rebuilt, so the trunk learns to fill one frame's holes from the other frame: correspondence,
  which is what the motion estimate needs. Test-time training on either task then changes the
  flow itself.
- ``features`` (the TTT4MII paper's Y-model, kept to reproduce it): F2 of the feature
  extractor, one frame at a time. That extractor only feeds the refinement residual, so
  adapting it barely moves the interpolation (measured: about 1e-5).
Differences from the published code, on purpose (docs/method-notes.md §9):
- the rotation head pools globally instead of flattening into a fixed-size Linear layer, so any
  volume size works;
- the MAE head is a light convolutional decoder on F2 of the *shared* extractor (the published
  MAE ran a separate ViT whose updates never reached the interpolation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .networks import ConvBlock, scaled_channels


class RotationHead(nn.Module):
    """Four-way classifier of the in-plane rotation (0, 90, 180, 270 degrees) from F2."""

    def __init__(self, in_channels: int, width: float = 1.0) -> None:
        super().__init__()
        hidden = scaled_channels(32, width)
        self.conv = ConvBlock(nn.Conv3d(in_channels, hidden, 3, stride=2, padding=1),
                              nn.LeakyReLU(0.2, inplace=True))
        self.fc = nn.Linear(hidden, 4)

    def forward(self, f2: torch.Tensor) -> torch.Tensor:
        """``(B, C, ...)`` -> logits ``(B, 4)``; global average pooling makes it size-free."""
        return self.fc(self.conv(f2).mean(dim=(2, 3, 4)))


class MAEHead(nn.Module):
    """Light decoder reconstructing the full-resolution volume(s) from 1/4 resolution."""

    def __init__(self, in_channels: int, width: float = 1.0, out_channels: int = 1) -> None:
        super().__init__()
        c1, c2 = scaled_channels(16, width), scaled_channels(8, width)
        self.block2 = ConvBlock(nn.Conv3d(in_channels, c1, 3, padding=1),
                                nn.LeakyReLU(0.2, inplace=True))
        self.block1 = ConvBlock(nn.Conv3d(c1, c2, 3, padding=1), nn.LeakyReLU(0.2, inplace=True))
        self.out = nn.Conv3d(c2, out_channels, 3, padding=1)

    def forward(self, f2: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.block2(f2), scale_factor=2, mode="trilinear", align_corners=False)
        x = F.interpolate(self.block1(x), scale_factor=2, mode="trilinear", align_corners=False)
        return self.out(x)


def random_patch_mask(shape: tuple[int, ...], patch: tuple[int, int, int], ratio: float,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Mask ``(B, 1, D1, D2, D3)`` with 1 on ``round(ratio * n)`` random 3D patches per item.

    Patches tile the volume from the origin (the last ones may be cut by the border). Drawn on
    the CPU from ``generator`` so the same seed gives the same mask on every device.
    """
    batch, spatial = shape[0], shape[2:]
    grid = [-(-s // p) for s, p in zip(spatial, patch, strict=True)]
    n = grid[0] * grid[1] * grid[2]
    n_masked = min(max(int(round(ratio * n)), 1), n)
    masks = []
    for _ in range(batch):
        flat = torch.zeros(n)
        flat[torch.randperm(n, generator=generator)[:n_masked]] = 1.0
        coarse = flat.view(1, 1, *grid)
        for axis, p in enumerate(patch):
            coarse = coarse.repeat_interleave(p, dim=2 + axis)
        masks.append(coarse[..., : spatial[0], : spatial[1], : spatial[2]])
    return torch.cat(masks, dim=0)
