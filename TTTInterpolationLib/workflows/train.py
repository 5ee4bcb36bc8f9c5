"""Training UVI-Net jointly with its self-supervised heads, on one process or many.

The loss is UVI-Net's cycle loss (docs/method-notes.md §5) plus ``aux_weight`` times the rotation
and MAE losses, as the TTT recipe asks. Optimiser: Adam (amsgrad), lr 2e-4, batch 1 per
process, no schedule (the published settings). Pairs may be augmented (``augment="full"``,
:mod:`.augment`: crops, time reversal, intensity shifts); it is off by default because on the
ACDC 4D validation split it trained worse models, on unshifted and shifted inputs alike
(docs/acdc4d-headroom.md).

The same :func:`train` runs alone or under ``torchrun`` (detected from its environment
variables): then every process wraps the model in ``DistributedDataParallel`` (the whole step
is ``TTTModel.forward``, which is what DDP wraps), reads its share of the pairs through a
``DistributedSampler`` and averages gradients with the others (gloo on CPU, nccl on CUDA), so
one step trains on ``world_size`` pairs. Only rank 0 writes files and draws progress.

Files written after every epoch (atomically, so an interrupted run leaves usable files):
``--out`` (the checkpoint), ``<out minus suffix>.optim.pt`` (Adam and loss-scaler state, read
back with ``torch.load(weights_only=True)``; kept out of the checkpoint so shipped weights stay
small and optimizer-free) and ``<out minus suffix>.curve.png`` (training curve).

Reproducibility: the initial weights come from ``seed``; the pair order of epoch ``e`` and the
random cycle times and MAE masks of epoch ``e`` on rank ``r`` come from ``(seed, e, r)``.
Nothing depends on what ran before an epoch except the weights and the optimiser state, so
the same seed gives bit-identical weights on CPU, and ``--resume`` continues exactly where an
uninterrupted run would be. (CUDA kernels are not all deterministic.)
"""

from __future__ import annotations

import gc
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from ..config import (
    AUGMENT_CHOICES,
    DEFAULT_GRID_SIZE,
    FLOW_RESOLUTIONS,
    HEAD_TRUNKS,
    SPLITS,
    ModelConfig,
    check_seed,
)
from ..data.augment import AugmentOptions
from ..data.datasets import PairDataset, check_zoom, find_pairs, split_validation
from ..data.model_grid import MULTIPLE
from ..errors import InputError
from ..models.checkpoint import load_checkpoint, save_checkpoint
from ..models.ttt_model import TTTModel
from ..runtime.device import resolve_device
from ..runtime.distributed import DistContext, backend_for, process_group, rank_device, state_digest
from ..runtime.precision import (
    PRECISIONS,
    cpu_has_fast_bf16,
    needs_grad_scaler,
    resolve_precision,
)
from ..runtime.progress import NullProgress, Progress, make_progress
from .protocols import EvalCase
from .sequence_cases import load_cases

OPTIMIZER_FORMAT = "tttinterp-optimizer"
LOSS_KEYS = ("total", "main", "rotation", "mae")


@dataclass(frozen=True)
class TrainOptions:
    """Everything ``tttinterp train`` takes; ``epochs`` is the total, resumed runs included."""

    data: str | os.PathLike
    out: str | os.PathLike
    epochs: int
    size: tuple[int, int, int] = DEFAULT_GRID_SIZE
    zoom: tuple[float, ...] = (1.0,)
    limit: int | None = None
    lr: float = 2e-4
    aux_weight: float = 1.0
    seed: int = 0
    device: str = "auto"
    resume: str | os.PathLike | None = None
    width: float = 1.0
    heads: str = "flow"
    flow_resolution: str = "full"
    val_data: str | os.PathLike | None = None
    val_fraction: float = 0.0
    val_every: int = 1
    val_cases: str | os.PathLike | None = None  # a 4D case list (evaluate --cases)
    val_split: str = "validation"
    precision: str = "auto"
    augment: str = "none"

    def validate(self) -> None:
        """Every check that needs no file read, so bad options fail at once."""
        if self.epochs < 1:
            raise InputError(f"--epochs must be >= 1, got {self.epochs}")
        if len(self.size) != 3 or any(s < MULTIPLE or s % MULTIPLE for s in self.size):
            raise InputError(f"--size must be three multiples of {MULTIPLE}, got {self.size}")
        check_zoom(self.zoom)
        if not (math.isfinite(self.lr) and self.lr > 0):  # inf passes "> 0", NaN fails it
            raise InputError(f"--lr must be > 0 and finite, got {self.lr}")
        check_seed(self.seed, "--seed")
        if not (math.isfinite(self.aux_weight) and self.aux_weight >= 0):
            raise InputError(f"--aux-weight must be >= 0 and finite, got {self.aux_weight}")
        if not (math.isfinite(self.width) and self.width > 0):
            raise InputError(f"--width must be > 0 and finite, got {self.width}")
        if self.val_every < 1:
            raise InputError(f"--val-every must be >= 1, got {self.val_every}")
        if self.val_split not in SPLITS:
            raise InputError(f"--val-split must be one of {', '.join(SPLITS)}")
        if self.val_data is not None and self.val_fraction:
            raise InputError("give either --val-data or --val-fraction, not both")
        if self.heads not in HEAD_TRUNKS:
            raise InputError(f"--heads must be one of {', '.join(HEAD_TRUNKS)}")
        if self.flow_resolution not in FLOW_RESOLUTIONS:
            raise InputError(f"--flow-resolution must be one of {', '.join(FLOW_RESOLUTIONS)}")
        if self.augment not in AUGMENT_CHOICES:
            raise InputError(f"--augment must be one of {', '.join(AUGMENT_CHOICES)}")
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}")
        out = Path(self.out)
        if out.suffix not in (".safetensors", ".pt"):
            raise InputError(f"--out must end in .safetensors or .pt, got {out.name}")
        if not out.parent.is_dir():
            raise InputError(f"output folder does not exist: {out.parent}")


def optimizer_path(checkpoint: str | os.PathLike) -> Path:
    """``model.safetensors`` -> ``model.optim.pt``: the optimiser state saved beside it."""
    return Path(checkpoint).with_suffix(".optim.pt")


def curve_path(checkpoint: str | os.PathLike) -> Path:
    """``model.safetensors`` -> ``model.curve.png``."""
    return Path(checkpoint).with_suffix(".curve.png")


def derived_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from several integers (seed, epoch, rank, ...)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0]
               >> np.uint64(1))


@dataclass
class _Data:
    train: PairDataset
    val: PairDataset | None
    cases: list[EvalCase] = field(default_factory=list)  # 4D cases scored by interpolation


@dataclass
class _Run:
    """The state one process trains with."""

    options: TrainOptions
    ctx: DistContext
    device: torch.device
    backend: str
    model: TTTModel
    engine: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    dtype: torch.dtype | None
    previous: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.dtype or torch.bfloat16,
                              enabled=self.dtype is not None)

    def log(self, message: str) -> None:
        log(self.ctx, message)


def log(ctx: DistContext, message: str) -> None:
    """One line on stderr from rank 0; through tqdm so a progress bar is not torn."""
    if ctx.is_main:
        from tqdm import tqdm

        tqdm.write(f"tttinterp train: {message}", file=sys.stderr)


def train(options: TrainOptions, progress_kind: str | None = "bar") -> dict[str, Any]:
    """Train and write ``options.out`` (plus optimiser state and curve); returns its info.

    Run alone, or as every process of ``torchrun --nproc_per_node N -m TTTInterpolationLib
    train ...``; all inputs are read and checked before the processes first talk to each other.
    """
    options.validate()
    ctx = DistContext.from_env()
    device = rank_device(resolve_device(options.device), ctx)
    backend = backend_for(device) if ctx.enabled else "none"
    dtype = resolve_precision(options.precision, device)
    data = load_data(options)
    model, previous = _load_model(options, device)
    saved = _read_optimizer_state(ctx, options, previous, device) if options.resume else None
    with process_group(ctx, backend):
        run = _start(options, ctx, device, backend, dtype, model, previous, saved)
        info = _fit(run, data, make_progress(progress_kind) if ctx.is_main else NullProgress())
        # The DistributedDataParallel wrapper (its reducer holds gloo work objects) must go
        # while the process group still exists: freed later, at interpreter exit, it aborted
        # a rank now and then (SIGABRT, "terminate called without an active exception").
        del run
        gc.collect()
    return info


def load_data(options: TrainOptions) -> _Data:
    """Training and validation pairs, preprocessed (``--limit`` applies before the split)."""
    zoom = check_zoom(options.zoom)
    pairs = find_pairs(options.data, options.limit)
    val_pairs = []
    if options.val_data is not None:
        val_pairs = find_pairs(options.val_data)
    elif options.val_fraction:
        pairs, val_pairs = split_validation(pairs, options.val_fraction, options.seed)
    augment = AugmentOptions() if options.augment == "full" else None
    cases = (load_cases(options.val_cases, options.val_split)
             if options.val_cases is not None else [])
    return _Data(PairDataset(pairs, options.size, zoom, augment, options.seed),
                 PairDataset(val_pairs, options.size, zoom) if val_pairs else None, cases)


def _load_model(options: TrainOptions, device: torch.device) -> tuple[TTTModel, dict[str, Any]]:
    """The checkpoint to resume (with its info), or a new model initialised from the seed."""
    if not options.resume:
        with torch.random.fork_rng(devices=[]):  # seed the weights, not the caller's stream
            torch.manual_seed(options.seed)
            config = ModelConfig(width=options.width, heads=options.heads,
                                 flow_resolution=options.flow_resolution)
            return TTTModel(config).to(device), {}
    model, previous = load_checkpoint(options.resume, device=device)
    done = len(previous.get("history", []))
    if done >= options.epochs:
        raise InputError(f"{options.resume} already has {done} epochs; --epochs is the "
                         f"total, ask for more than {done}")
    return model, previous


def _read_optimizer_state(ctx: DistContext, options: TrainOptions, previous: dict[str, Any],
                          device: torch.device) -> dict[str, Any] | None:
    """The Adam (and loss-scaler) state saved with the checkpoint, if it belongs to it."""
    path = optimizer_path(options.resume or "")
    epochs = len(previous.get("history", []))
    if not path.is_file():
        log(ctx, f"note: no optimizer state {path.name} beside the checkpoint: Adam restarts")
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # truncated, or pickled code that weights_only refuses
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"cannot load optimizer state {path}: {first}") from exc
    if not isinstance(state, dict) or state.get("format") != OPTIMIZER_FORMAT:
        raise InputError(f"{path} is not a TTTInterpolation optimizer state")
    if state.get("epoch") != epochs:
        log(ctx, f"note: {path.name} is from epoch {state.get('epoch')}, the checkpoint from "
                 f"epoch {epochs}: Adam restarts")
        return None
    return state


def _start(options: TrainOptions, ctx: DistContext, device: torch.device, backend: str,
           dtype: torch.dtype | None, model: TTTModel, previous: dict[str, Any],
           saved: dict[str, Any] | None) -> _Run:
    """DDP wrapper (when distributed), optimiser and loss scaler, restored from ``saved``."""
    engine: torch.nn.Module = model
    if ctx.enabled:
        engine = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(model.parameters(), lr=options.lr, amsgrad=True)
    scaler = torch.amp.GradScaler(device.type, enabled=needs_grad_scaler(dtype, device))
    if saved is not None:
        try:
            optimizer.load_state_dict(saved["optimizer"])
        except (KeyError, ValueError) as exc:
            raise InputError(f"the optimizer state of {options.resume} does not fit its "
                             f"model: {exc}") from exc
        if saved.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(saved["scaler"])
        for group in optimizer.param_groups:  # a new --lr wins over the saved one
            group["lr"] = options.lr
    return _Run(options, ctx, device, backend, model, engine, optimizer, scaler, dtype, previous,
                list(previous.get("history", [])))


def _fit(run: _Run, data: _Data, progress: Progress) -> dict[str, Any]:
    """The epoch loop: train, average over ranks, validate, save; returns the last info."""
    options, ctx = run.options, run.ctx
    start = len(run.history)
    sampler = DistributedSampler(data.train, num_replicas=ctx.world_size, rank=ctx.rank,
                                 shuffle=True, seed=options.seed)
    loader = DataLoader(data.train, batch_size=1, sampler=sampler)
    run.log(_describe(run, data, len(loader), start))
    warning = precision_warning(run.device, run.dtype)
    if warning:
        run.log(warning)
    started, info = time.perf_counter(), dict(run.previous)
    steps = _StepCounter(progress, (options.epochs - start) * len(loader))
    for epoch in range(start, options.epochs):
        sampler.set_epoch(epoch)
        data.train.set_epoch(epoch)
        record = {"epoch": epoch + 1, **_train_epoch(run, loader, epoch, steps)}
        if (epoch + 1) % options.val_every == 0 or epoch + 1 == options.epochs:
            if data.val is not None:
                record.update(validate(run, data.val))
            if data.cases and ctx.is_main:
                record.update(validate_interpolation(run, data.cases))
        run.history.append(record)
        info = _info(run, data, epoch + 1, len(loader), time.perf_counter() - started)
        _save(run, info)
        run.log(_epoch_summary(record, options.epochs))
    progress.update("done", 1.0, f"wrote {options.out}")
    progress.close()
    return info


class _StepCounter:
    """Overall progress over the steps of this run (rank 0 only draws it)."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress, self.total, self.done = progress, max(total, 1), 0

    def step(self, message: str) -> None:
        self.done += 1
        self.progress.update("train", self.done / self.total, message)


def _train_epoch(run: _Run, loader: DataLoader, epoch: int,
                 steps: _StepCounter) -> dict[str, float]:
    """One pass over this rank's pairs; the losses averaged over all steps of all ranks."""
    generator = torch.Generator().manual_seed(derived_seed(run.options.seed, epoch,
                                                          run.ctx.rank))
    sums = dict.fromkeys(LOSS_KEYS, 0.0)
    run.model.train()
    for i0, i1 in loader:
        losses = _step(run, i0.to(run.device), i1.to(run.device), generator)
        for key in LOSS_KEYS:
            sums[key] += losses[key]
        steps.step(f"epoch {epoch + 1}/{run.options.epochs} loss {losses['total']:.4f}")
    totals = run.ctx.all_reduce_sum([*sums.values(), float(len(loader))], run.device)
    return {key: value / totals[-1] for key, value in zip(LOSS_KEYS, totals, strict=False)}


def _step(run: _Run, i0: torch.Tensor, i1: torch.Tensor,
          generator: torch.Generator) -> dict[str, float]:
    """One optimiser step of the joint loss (through DDP when distributed)."""
    run.optimizer.zero_grad(set_to_none=True)
    with run.autocast():
        losses = run.engine(i0, i1, run.options.aux_weight, generator)
    run.scaler.scale(losses["total"]).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return {key: float(losses[key].detach()) for key in LOSS_KEYS}


@torch.no_grad()
def validate(run: _Run, dataset: PairDataset) -> dict[str, float]:
    """Held-out cycle loss and registration NCC of warped A vs B, averaged over pairs.

    The cycle loss draws its random times from a seed fixed per pair, so values of different
    epochs are comparable. Ranks share the pairs and add up their sums.
    """
    from ..nn.losses import cycle_loss
    from ..nn.metrics import ncc
    from ..nn.warp import warp

    run.model.eval()
    sums = [0.0, 0.0, 0.0]
    for index in run.ctx.shard(range(len(dataset))):
        a, b = (t[None].to(run.device) for t in dataset[index])
        generator = torch.Generator().manual_seed(derived_seed(run.options.seed, 1 << 20, index))
        with run.autocast():
            loss = cycle_loss(run.model.uvinet, a, b, generator)["total"]
            flow_ab, _ = run.model.uvinet.flow(a, b)
        sums[0] += float(loss)
        sums[1] += ncc(warp(a, flow_ab.float()), b)
        sums[2] += 1.0
    run.model.train()
    total_cycle, total_ncc, count = run.ctx.all_reduce_sum(sums, run.device)
    return {"val_cycle": total_cycle / count, "val_ncc": total_ncc / count}


def validate_interpolation(run: _Run, cases: list[EvalCase]) -> dict[str, float]:
    """PSNR (seq) of the hidden frames of 4D ``cases`` predicted without TTT, and of linear
    blending: what ``tttinterp evaluate`` reports, so a recipe is judged on interpolation
    itself while it trains (the held-out cycle loss kept falling while this stayed flat).

    Rank 0 only: the other ranks go on to the next epoch and wait for it at the next
    gradient all-reduce.
    """
    from ..models.loading import LoadedModel
    from .evaluation import evaluate_cases
    from .settings import EvalSetting

    run.model.eval()
    loaded = LoadedModel(run.model, run.device, True, "the model in training")
    rows = evaluate_cases(cases, [EvalSetting("linear blending", "linear"),
                                  EvalSetting("UVI-Net", "uvinet")], model=loaded).rows
    run.model.train()
    return {"val_psnr_seq_linear": rows[0]["PSNR_seq"], "val_psnr_seq": rows[1]["PSNR_seq"]}


def _info(run: _Run, data: _Data, epochs: int, steps_per_epoch: int,
          seconds: float) -> dict[str, Any]:
    """What the checkpoint records about its training (the model card reads this)."""
    options, previous = run.options, run.previous
    resumed_steps = previous.get("steps", 0)
    new_epochs = epochs - len(previous.get("history", []))
    info: dict[str, Any] = {
        "trained": True, "data": str(options.data), "cases": data.train.cases,
        "val_data": str(options.val_data) if options.val_data is not None else None,
        "val_fraction": options.val_fraction, "val_cases": data.val.cases if data.val else [],
        "val_sequences": str(options.val_cases) if options.val_cases is not None else None,
        "val_split": options.val_split if options.val_cases is not None else None,
        "size": list(options.size), "zoom": list(check_zoom(options.zoom)),
        "epochs": epochs, "steps": resumed_steps + new_epochs * steps_per_epoch,
        "world_size": run.ctx.world_size, "pairs_per_step": run.ctx.world_size,
        "lr": options.lr, "aux_weight": options.aux_weight, "seed": options.seed,
        "augment": options.augment,
        "precision": run.precision, "device": run.device.type,
        "wall_seconds": previous.get("wall_seconds", 0.0) + seconds,
        "resumed_from": str(options.resume) if options.resume else previous.get("resumed_from"),
        "history": run.history,
    }
    if run.ctx.enabled:  # every replica's weights, to show they stayed identical
        info["replica_sha256"] = run.ctx.all_gather_object(state_digest(run.model))
    return info


def _save(run: _Run, info: dict[str, Any]) -> None:
    """Rank 0 writes optimiser state, then checkpoint (the one a resume trusts), then curve."""
    if not run.ctx.is_main:
        return
    from ..fileio.atomic import atomic_write
    from .curves import write_training_curve

    out = Path(run.options.out)
    state = {"format": OPTIMIZER_FORMAT, "epoch": info["epochs"],
             "optimizer": run.optimizer.state_dict(), "scaler": run.scaler.state_dict()}
    atomic_write(optimizer_path(out), lambda tmp: torch.save(state, tmp))
    save_checkpoint(out, run.model, info)
    write_training_curve(curve_path(out), run.history)


def precision_warning(device: torch.device, dtype: torch.dtype | None) -> str | None:
    """A line for the log when bfloat16 is forced on a CPU without bfloat16 units: oneDNN then
    emulates it (a 3D convolution forward measured 85x slower than float32 on an AVX2 EPYC),
    and a run meant to take hours would take weeks without saying why."""
    if device.type == "cpu" and dtype == torch.bfloat16 and not cpu_has_fast_bf16():
        return ("warning: this CPU has no bfloat16 units (AVX512-BF16 or AMX), so bf16 runs "
                "emulated, many times slower than fp32: use --precision fp32")
    return None


def _describe(run: _Run, data: _Data, steps_per_epoch: int, start: int) -> str:
    options = run.options
    val = f", {len(data.val)} validation pairs" if data.val else ", no validation pairs"
    if data.cases:
        val += f", {len(data.cases)} validation sequences"
    resumed = f", resuming after epoch {start}" if start else ""
    return (f"{run.ctx.describe(run.backend)}; {len(data.train)} training pairs{val}; grid "
            f"{'x'.join(map(str, options.size))}, zoom {'/'.join(f'{z:g}' for z in options.zoom)}"
            f"; {steps_per_epoch} steps per epoch per process; device {run.device}, precision "
            f"{run.precision}; epochs {start + 1}-{options.epochs}{resumed}")


def _epoch_summary(record: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}"]
    parts += [f"{key} {record[key]:.4f}" for key in LOSS_KEYS]
    if "val_cycle" in record:
        parts += [f"val cycle {record['val_cycle']:.4f}", f"val NCC {record['val_ncc']:.4f}"]
    if "val_psnr_seq" in record:
        parts += [f"val PSNR (seq) {record['val_psnr_seq']:.3f} "
                  f"(linear {record['val_psnr_seq_linear']:.3f})"]
    return ", ".join(parts)
