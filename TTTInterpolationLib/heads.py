"""Self-supervised heads on UVI-Net's feature extractor, and the Y-shaped model holding them.

Both heads read F2, the deepest level of the feature extractor that also feeds the refinement
network (method.md section 9), so minimising their losses at test time changes the
interpolation. Differences from the published code, on purpose:
- the rotation head pools globally instead of flattening into a fixed-size Linear layer, so any
  volume size works;
- the MAE head is a light convolutional decoder on F2 of the *shared* extractor (the published
  MAE ran a separate ViT whose updates never reached the interpolation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .losses import cycle_loss
from .networks import ConvBlock, UVINet, scaled_channels

ROTATION_PLANE = (2, 3)  # array axes 0 and 1 of a volume: the in-plane (short-axis/axial) plane


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
    """Light decoder reconstructing the full-resolution volume from F2 (1/4 resolution)."""

    def __init__(self, in_channels: int, width: float = 1.0) -> None:
        super().__init__()
        c1, c2 = scaled_channels(16, width), scaled_channels(8, width)
        self.block2 = ConvBlock(nn.Conv3d(in_channels, c1, 3, padding=1),
                                nn.LeakyReLU(0.2, inplace=True))
        self.block1 = ConvBlock(nn.Conv3d(c1, c2, 3, padding=1), nn.LeakyReLU(0.2, inplace=True))
        self.out = nn.Conv3d(c2, 1, 3, padding=1)

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


class TTTModel(nn.Module):
    """UVI-Net plus the rotation and MAE heads on its feature extractor (the Y-shaped model)."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        self.uvinet = UVINet(self.config)
        c2 = self.uvinet.features.channels[2]
        self.rotation_head = RotationHead(c2, self.config.width)
        self.mae_head = MAEHead(c2, self.config.width)

    def rotation_loss(self, frames: list[torch.Tensor]) -> torch.Tensor:
        """Cross-entropy of predicting each frame's four in-plane rotations.

        Every rotation of every frame is used (no sampling), so the loss is deterministic.
        Rotations of the same shape run as one batch (all four when the in-plane sizes are
        equal; 0/180 and 90/270 degrees otherwise); the loss is still the mean over the four
        rotations of each one's cross-entropy.
        """
        rotated = [torch.cat([torch.rot90(f, k, dims=ROTATION_PLANE) for f in frames], dim=0)
                   for k in range(4)]
        groups: dict[tuple[int, ...], list[int]] = {}
        for k, r in enumerate(rotated):
            groups.setdefault(tuple(r.shape), []).append(k)
        logits: dict[int, torch.Tensor] = {}
        for ks in groups.values():
            batch = torch.cat([rotated[k] for k in ks], dim=0)
            out = self.rotation_head(self.uvinet.features(batch)[2])
            for k, part in zip(ks, out.split(rotated[ks[0]].shape[0]), strict=True):
                logits[k] = part
        losses = []
        for k in range(4):
            target = torch.full((logits[k].shape[0],), k, dtype=torch.long,
                                device=logits[k].device)
            losses.append(F.cross_entropy(logits[k], target))
        return torch.stack(losses).mean()

    def mae_loss(self, frames: list[torch.Tensor],
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """MSE of reconstructing randomly masked 3D patches, counted on masked voxels only."""
        x = torch.cat(frames, dim=0)
        mask = random_patch_mask(tuple(x.shape), self.config.mae_patch,
                                 self.config.mae_mask_ratio, generator).to(x)
        reconstruction = self.mae_head(self.uvinet.features(x * (1.0 - mask))[2])
        return (((reconstruction - x) ** 2) * mask).sum() / mask.sum().clamp_min(1.0)

    def forward(self, i0: torch.Tensor, i1: torch.Tensor, aux_weight: float = 1.0,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Joint training losses ``L_main + aux_weight * (L_rotation + L_mae)``.

        Training lives in ``forward`` so a ``DistributedDataParallel`` wrapper sees the whole
        step (it synchronises gradients of what its forward computed). Heads and the main task
        train together so the heads stay consistent with the shared features (method.md 9).
        """
        main = cycle_loss(self.uvinet, i0, i1, generator)
        rotation = self.rotation_loss([i0, i1])
        mae = self.mae_loss([i0, i1], generator)
        total = main["total"] + aux_weight * (rotation + mae)
        return {"total": total, "main": main["total"].detach(), "rotation": rotation.detach(),
                "mae": mae.detach()}

    def task_loss(self, task: str, i0: torch.Tensor, i1: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """The self-supervised loss of ``task`` on one pair (what test-time training minimises)."""
        if task == "rotation":
            return self.rotation_loss([i0, i1])
        if task == "mae":
            return self.mae_loss([i0, i1], generator)
        if task == "cycle":
            return cycle_loss(self.uvinet, i0, i1, generator)["total"]
        raise ValueError(f"no self-supervised loss for task {task!r}")
