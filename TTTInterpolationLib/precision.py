"""Numeric precision: mixed precision for training on CUDA, float32 where it matters.

Why: autocast runs convolutions in bfloat16/float16, which is what makes large GPU training
fast, but three parts of the cycle loss break in 8 to 11 mantissa bits: sampling positions of
the warp (voxel coordinates up to 128 lose their sub-voxel part), and the windowed variances of
the NCC (differences of large sums). :func:`float32_region` keeps those in float32 whatever the
caller's autocast says; it changes nothing for float32/float64 inputs outside autocast.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .config import PRECISIONS  # the one list of choices (config.py), used here
from .errors import InputError

_HALF = (torch.float16, torch.bfloat16)


@contextmanager
def float32_region(device: torch.device) -> Iterator[None]:
    """Switch autocast off on ``device`` for the block (nothing to do when it is off)."""
    if torch.is_autocast_enabled(device.type):
        with torch.autocast(device.type, enabled=False):
            yield
    else:
        yield


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors become float32; float32/float64 pass unchanged."""
    return tensor.float() if tensor.dtype in _HALF else tensor


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for training, or None for plain float32.

    ``auto`` (the default): bfloat16 on a CUDA GPU that supports it, else float16 on CUDA;
    float32 on CPU and MPS, so CPU runs stay bit-reproducible by seed. ``bf16`` may be asked
    for on a CPU too: on CPUs with bfloat16 units (AVX512-BF16/AMX) a training step ran about
    3x faster than float32 in our measurement, but elsewhere it is slower. ``fp16`` needs CUDA
    (float16 convolutions on CPU are very slow).
    """
    if name not in PRECISIONS:
        raise InputError(f"unknown precision {name!r}: choose one of {', '.join(PRECISIONS)}")
    if name == "fp32" or (name == "auto" and device.type != "cuda"):
        return None
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name == "fp16" and device.type != "cuda":
        raise InputError("--precision fp16 needs a CUDA GPU: use bf16 or fp32 on this device")
    if name == "bf16" and device.type not in ("cuda", "cpu"):
        raise InputError(f"--precision bf16 runs on CUDA or CPU, not {device.type}: use fp32")
    return torch.bfloat16 if name == "bf16" else torch.float16


def needs_grad_scaler(dtype: torch.dtype | None, device: torch.device) -> bool:
    """float16 gradients underflow without loss scaling; bfloat16 has float32's range."""
    return dtype == torch.float16 and device.type == "cuda"
