"""The whole model: UVI-Net plus the rotation and MAE heads on a shared trunk (the Y-shaped model).

Where the heads attach and why is described in :mod:`TTTInterpolationLib.nn.heads`; this is what
checkpoints hold and what test-time training adapts.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..nn.architectures import build_network
from ..nn.heads import MAEHead, RotationHead, random_patch_mask
from ..nn.losses import charbonnier, cycle_loss, grad_l2
from ..nn.networks import scaled_channels

ROTATION_PLANE = (2, 3)  # array axes 0 and 1 of a volume: the in-plane (short-axis/axial) plane

#: Encoder levels of the flow network that form the heads' trunk (1/4 resolution, like F2).
FLOW_TRUNK_DEPTH = 2


class TTTModel(nn.Module):
    """UVI-Net plus the rotation and MAE heads on a shared trunk (the Y-shaped model)."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        self.uvinet = build_network(self.config)
        if self.config.heads == "flow":
            channels, frames = scaled_channels(32, self.config.width), 2
        else:
            channels, frames = self.uvinet.features.channels[2], 1
        self.rotation_head = RotationHead(channels, self.config.width)
        self.mae_head = MAEHead(channels, self.config.width, out_channels=frames)

    def set_flow_resolution(self, resolution: str) -> None:
        """Run the flow network at ``resolution`` (``ModelConfig.flow_resolution``) from now on.

        The same weights serve both: the network is fully convolutional and its flows are in
        voxels of the frames it is given. The config records the choice, so a checkpoint
        saved afterwards runs the same way when loaded.
        """
        self.config = replace(self.config, flow_resolution=resolution)  # validates the name
        self.uvinet.config = self.config
        self.uvinet.flow.resolution = resolution

    def trunk_parameters(self) -> list[nn.Parameter]:
        """The parameters the heads share with the interpolation (what ``adapt=trunk`` trains)."""
        if self.config.heads == "flow":
            return list(self.uvinet.flow.encoder[:FLOW_TRUNK_DEPTH].parameters())
        return list(self.uvinet.features.parameters())

    def _trunk_input(self, frames: list[torch.Tensor]) -> torch.Tensor:
        """``flow``: the pair as channels ``(B, 2, ...)``; ``features``: frames as a batch."""
        return torch.cat(frames, dim=1 if self.config.heads == "flow" else 0)

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.heads == "flow":
            return self.uvinet.flow.encode(x, FLOW_TRUNK_DEPTH)
        return self.uvinet.features(x)[2]

    def rotation_loss(self, frames: list[torch.Tensor]) -> torch.Tensor:
        """Cross-entropy of predicting the four in-plane rotations of the input.

        Every rotation is used (no sampling), so the loss is deterministic. Rotations of the
        same shape run as one batch (all four when the in-plane sizes are equal; 0/180 and
        90/270 degrees otherwise); the loss is still the mean over the four rotations of each
        one's cross-entropy.
        """
        x = self._trunk_input(frames)
        rotated = [torch.rot90(x, k, dims=ROTATION_PLANE) for k in range(4)]
        groups: dict[tuple[int, ...], list[int]] = {}
        for k, r in enumerate(rotated):
            groups.setdefault(tuple(r.shape), []).append(k)
        logits: dict[int, torch.Tensor] = {}
        for ks in groups.values():
            batch = torch.cat([rotated[k] for k in ks], dim=0)
            out = self.rotation_head(self._trunk(batch))
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
        """MSE of reconstructing randomly masked 3D patches, counted on masked voxels only.

        Every frame gets its own mask (for ``flow`` heads, the other frame shows what is
        hidden, moved).
        """
        x = self._trunk_input(frames)
        b, c = x.shape[:2]
        mask = random_patch_mask((b * c, 1, *x.shape[2:]), self.config.mae_patch,
                                 self.config.mae_mask_ratio, generator)
        mask = mask.view(b, c, *x.shape[2:]).to(x)
        reconstruction = self.mae_head(self._trunk(x * (1.0 - mask)))
        return (((reconstruction - x) ** 2) * mask).sum() / mask.sum().clamp_min(1.0)

    def forward(self, i0: torch.Tensor, i1: torch.Tensor, aux_weight: float = 1.0,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Joint training losses ``L_main + aux_weight * (L_rotation + L_mae)``.

        Training lives in ``forward`` so a ``DistributedDataParallel`` wrapper sees the whole
        step (it synchronises gradients of what its forward computed). Heads and the main task
        train together so the heads stay consistent with the shared features (method notes §9).
        """
        main = cycle_loss(self.uvinet, i0, i1, generator)
        rotation = self.rotation_loss([i0, i1])
        mae = self.mae_loss([i0, i1], generator)
        total = main["total"] + aux_weight * (rotation + mae)
        return {"total": total, "main": main["total"].detach(), "rotation": rotation.detach(),
                "mae": mae.detach()}

    def frame_loss(self, i0: torch.Tensor, i1: torch.Tensor, target: torch.Tensor,
                   t: torch.Tensor, smooth: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """``(total, image)``: Charbonnier of the frame at ``t`` against the true ``target``,
        plus ``smooth`` times ``Grad_L2`` of both flows.

        The supervised loss of training on full sequences and of the ``frames`` TTT task (a
        visible frame of the patient's own sequence predicted from two others).
        """
        net = self.uvinet
        flows = net.flow(i0, i1)
        frame = net.synthesize(i0, i1, t, flows, net.pyramids(i0, i1))[0]
        image = charbonnier(frame.float(), target.float())
        total = image + smooth * (grad_l2(flows[0]) + grad_l2(flows[1])) if smooth else image
        return total, image.detach()

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
