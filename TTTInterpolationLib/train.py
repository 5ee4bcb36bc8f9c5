"""Training UVI-Net jointly with its self-supervised heads on ED/ES pairs (single process).

The loss is UVI-Net's cycle loss (method.md section 5) plus ``aux_weight`` times the rotation
and MAE losses, as the TTT recipe asks. Optimiser: Adam (amsgrad), lr 2e-4, batch 1, no
augmentation, no schedule (the published settings). A checkpoint is written atomically after
every epoch, so an interrupted run leaves a usable file.

Designed for ``DistributedDataParallel``: the whole step is ``TTTModel.forward`` (what DDP
wraps), data come from a ``Dataset`` through a ``DataLoader`` whose sampler a distributed run
swaps for a ``DistributedSampler``, and only rank 0 writes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .datasets import PairDataset, find_pairs
from .device import resolve_device
from .errors import InputError
from .heads import TTTModel
from .model_grid import MULTIPLE
from .progress import make_progress


@dataclass(frozen=True)
class TrainOptions:
    data: str | os.PathLike
    out: str | os.PathLike
    epochs: int
    size: tuple[int, int, int] = (128, 128, 32)
    limit: int | None = None
    lr: float = 2e-4
    aux_weight: float = 1.0
    seed: int = 0
    device: str = "auto"
    resume: str | os.PathLike | None = None

    def validate(self) -> None:
        if self.epochs < 1:
            raise InputError(f"--epochs must be >= 1, got {self.epochs}")
        if len(self.size) != 3 or any(s < MULTIPLE or s % MULTIPLE for s in self.size):
            raise InputError(f"--size must be three multiples of {MULTIPLE}, got {self.size}")
        if not self.lr > 0:
            raise InputError(f"--lr must be > 0, got {self.lr}")
        if self.aux_weight < 0:
            raise InputError(f"--aux-weight must be >= 0, got {self.aux_weight}")
        out = Path(self.out)
        if out.suffix not in (".safetensors", ".pt"):
            raise InputError(f"--out must end in .safetensors or .pt, got {out.name}")
        if not out.parent.is_dir():
            raise InputError(f"output folder does not exist: {out.parent}")


def train(options: TrainOptions, progress_kind: str | None = "bar") -> dict[str, Any]:
    """Train and write ``options.out``; returns the info stored in the checkpoint."""
    options.validate()
    device = resolve_device(options.device)
    pairs = find_pairs(options.data, options.limit)
    dataset = PairDataset(pairs, options.size)
    torch.manual_seed(options.seed)
    if options.resume:
        model, previous = load_checkpoint(options.resume, device=device)
    else:
        model, previous = TTTModel().to(device), {}
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr, amsgrad=True)
    generator = torch.Generator().manual_seed(options.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=True,
                                         generator=torch.Generator().manual_seed(options.seed))
    progress = make_progress(progress_kind)
    history: list[dict[str, float]] = list(previous.get("history", []))
    start_epoch = len(history)
    started = time.perf_counter()
    total_steps = options.epochs * len(loader)
    step = 0
    for epoch in range(options.epochs):
        sums: dict[str, float] = {}
        model.train()
        for i0, i1 in loader:
            optimizer.zero_grad(set_to_none=True)
            losses = model(i0.to(device), i1.to(device), options.aux_weight, generator)
            losses["total"].backward()
            optimizer.step()
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            step += 1
            loss = float(losses["total"].detach())
            progress.update("train", step / total_steps,
                            f"epoch {start_epoch + epoch + 1} loss {loss:.4f}")
        history.append({k: v / len(loader) for k, v in sums.items()})
        info = {
            "trained": True, "data": str(options.data), "cases": dataset.cases,
            "size": list(options.size), "epochs": start_epoch + epoch + 1,
            "steps": (start_epoch + epoch + 1) * len(loader), "lr": options.lr,
            "aux_weight": options.aux_weight, "seed": options.seed,
            "wall_seconds": previous.get("wall_seconds", 0.0) + time.perf_counter() - started,
            "device": str(device), "history": history,
        }
        save_checkpoint(options.out, model, info)
    progress.update("done", 1.0, f"wrote {options.out}")
    progress.close()
    return info
