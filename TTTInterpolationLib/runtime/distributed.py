"""Running one command as several processes under ``torchrun`` (PyTorch's own launcher).

Why a small layer of our own: ``tttinterp train`` and ``tttinterp evaluate`` are the same
commands with or without ``torchrun``; whether they run distributed is read from the variables
torchrun sets (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, plus the rendezvous address), so there
is no extra option to get wrong. With one process every collective below is the identity, so
the single-process code path is the distributed one with ``world_size == 1``.

Backends: ``nccl`` for CUDA tensors, ``gloo`` on CPU (and for Python objects). Each process
uses the GPU ``LOCAL_RANK`` of its machine, so one process per GPU.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..errors import InputError


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a (possibly single-process) run."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when there are other processes to talk to."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes files, draws progress and prints results."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> DistContext:
        """Read torchrun's variables; absent variables mean a plain single process."""
        try:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            local = int(os.environ.get("LOCAL_RANK", str(rank)))
        except ValueError as exc:
            raise InputError(f"bad torchrun variables WORLD_SIZE/RANK/LOCAL_RANK: {exc}") from exc
        if world < 1 or not 0 <= rank < world or local < 0:
            raise InputError(f"bad torchrun environment: WORLD_SIZE={world}, RANK={rank}, "
                             f"LOCAL_RANK={local}")
        return cls(world, rank, local)

    def describe(self, backend: str | None = None) -> str:
        """``"world size 2 (DistributedDataParallel, gloo)"`` or ``"world size 1"``, for logs."""
        if not self.enabled:
            return "world size 1 (single process)"
        return f"world size {self.world_size} (DistributedDataParallel, {backend or '?'})"

    def shard(self, items: Sequence[Any]) -> list[Any]:
        """This rank's share of ``items``: every ``world_size``-th item from ``rank`` on."""
        return list(items[self.rank::self.world_size])

    # ------------------------------------------------------------- collectives (no-ops alone)

    def all_reduce_sum(self, values: Sequence[float], device: torch.device) -> list[float]:
        """Element-wise sum of ``values`` over all ranks (float64, on ``device``)."""
        tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return [float(v) for v in tensor.cpu()]

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (picklable objects; results of our own code)."""
        if not self.enabled:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def backend_for(device: torch.device) -> str:
    """``nccl`` for CUDA, ``gloo`` otherwise; MPS has no distributed backend."""
    if device.type == "cuda":
        return "nccl"
    if device.type == "mps":
        raise InputError("distributed runs are not supported on Apple MPS: use --device cpu")
    return "gloo"


def rank_device(device: torch.device, ctx: DistContext) -> torch.device:
    """CUDA: this process's own GPU (``LOCAL_RANK``), made current; other devices unchanged."""
    if device.type != "cuda" or not ctx.enabled:
        return device
    count = torch.cuda.device_count()
    if ctx.local_rank >= count:
        raise InputError(f"LOCAL_RANK {ctx.local_rank} but only {count} CUDA GPU(s): start at "
                         "most one process per GPU (--nproc_per_node)")
    torch.cuda.set_device(ctx.local_rank)
    return torch.device("cuda", ctx.local_rank)


@contextmanager
def process_group(ctx: DistContext, backend: str) -> Iterator[None]:
    """Join the torchrun job for the duration of the block (nothing to do for one process)."""
    if not ctx.enabled or dist.is_initialized():
        yield
        return
    try:
        dist.init_process_group(backend=backend)
    except (ValueError, RuntimeError) as exc:  # e.g. WORLD_SIZE set by hand, no MASTER_ADDR
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"cannot join the distributed job ({backend}): {first}; start the "
                         "processes with torchrun") from exc
    try:
        yield
    except BaseException:
        dist.destroy_process_group()  # no barrier: the other ranks may never reach one
        raise
    # Every rank finishes its work (rank 0 writes files after the last collective) before
    # any rank tears down its connections: a rank that destroyed its gloo group and exited
    # while another still held it aborted once in CI (SIGABRT, "terminate called without an
    # active exception", test_train's two-rank run).
    dist.barrier()
    dist.destroy_process_group()


def state_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's state (names, dtypes, shapes and bytes), to compare replicas."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
