"""Numeric precision: mixed precision on CUDA, bf16 inference on CPUs with bf16 units (training
on request), float32 where it matters.

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

from ..config import PRECISIONS  # the one list of choices (config.py), used here
from ..errors import InputError

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


def _cpuinfo_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has bfloat16 dot-product units (AVX512-BF16 or AMX-BF16).

    Only then do oneDNN's bfloat16 convolutions beat float32 (elsewhere bfloat16 is emulated
    and slower). Asked of PyTorch's own CPU detection, with /proc/cpuinfo as a fallback.
    """
    checks = [getattr(torch.cpu, name, None)
              for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(check is not None for check in checks):
        try:
            return any(bool(check()) for check in checks if check is not None)
        except RuntimeError:
            pass
    return bool({"avx512_bf16", "amx_bf16"} & _cpuinfo_flags())


_AUTO: list[str] = []  # innermost auto_precision() override last


@contextmanager
def auto_precision(name: str) -> Iterator[None]:
    """Inside the block ``auto`` means ``name`` (``fp32`` for a float32 reference run)."""
    if name not in PRECISIONS:
        raise InputError(f"unknown precision {name!r}: choose one of {', '.join(PRECISIONS)}")
    _AUTO.append(name)
    try:
        yield
    finally:
        _AUTO.pop()


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for training (and inference), or None for plain float32.

    ``auto`` (the default): bfloat16 on a CUDA GPU that supports it, else float16 on CUDA;
    float32 on CPU and MPS, so CPU runs stay bit-reproducible by seed. ``bf16`` may be asked
    for on a CPU: on CPUs with bfloat16 units (AVX512-BF16/AMX, see
    :func:`cpu_has_fast_bf16`) a training step runs about 2x faster than float32 and stays
    within the tolerance that ``benchmarks/bench_speed.py`` prints and
    ``Testing/test_precision.py`` checks, but it is not the CPU default: with the
    channels-last layout or batch > 1, oneDNN's bfloat16 backward gave run-to-run different
    gradients on small volumes (32x32x16; equal at 64x64x32), which breaks reproducibility by
    seed. Without bfloat16 units it is slower than float32. ``fp16`` needs CUDA (float16
    convolutions on CPU are very slow). Warps and the NCC's windowed moments stay float32
    under any autocast (:func:`float32_region`).
    """
    if name not in PRECISIONS:
        raise InputError(f"unknown precision {name!r}: choose one of {', '.join(PRECISIONS)}")
    if name == "auto" and _AUTO and _AUTO[-1] != "auto":
        name = _AUTO[-1]
    if name == "fp32" or (name == "auto" and device.type != "cuda"):
        return None
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name == "fp16" and device.type != "cuda":
        raise InputError("--precision fp16 needs a CUDA GPU: use bf16 or fp32 on this device")
    if name == "bf16" and device.type not in ("cuda", "cpu"):
        raise InputError(f"--precision bf16 runs on CUDA or CPU, not {device.type}: use fp32")
    return torch.bfloat16 if name == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to ``dtype`` on ``device`` (a disabled context for None: plain float32)."""
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def inference_precision(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for inference (no backward pass): as :func:`resolve_precision`, but
    ``auto`` is bfloat16 on a CPU with bfloat16 units and float32 everywhere else.

    Why bfloat16 is the CPU default here but not for training: inference of one pair at
    128x128x32 takes about 0.6x the float32 time, the frames stay within the stated tolerance
    (within 5e-3 of float32, PSNR within 0.05 dB; ``benchmarks/bench_speed.py``,
    ``Testing/test_precision.py``), and oneDNN's bfloat16 *forward* pass gives the same frames
    run after run at every size tried (16^3 to 64x64x32); the run-to-run differences that keep
    training in float32 come from its backward pass. On CUDA and MPS inference stays float32
    (not measured there: ask for bf16).
    """
    if name == "auto" and _AUTO and _AUTO[-1] != "auto":
        name = _AUTO[-1]
    if name == "auto":
        return torch.bfloat16 if device.type == "cpu" and cpu_has_fast_bf16() else None
    return resolve_precision(name, device)


def float32_module(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` in float32 whatever the autocast: for the cheap last layers whose output
    (flows in voxels, the residual added to the frame) must not be rounded to 8 bits."""
    with float32_region(x.device):
        return module(at_least_float32(x))


def needs_grad_scaler(dtype: torch.dtype | None, device: torch.device) -> bool:
    """float16 gradients underflow without loss scaling; bfloat16 has float32's range."""
    return dtype == torch.float16 and device.type == "cuda"
