"""Choosing the torch device: CUDA, then Apple MPS, then CPU, never hard-coded."""

from __future__ import annotations

import torch

from ..config import DEVICES
from ..errors import InputError

__all__ = ["DEVICES", "resolve_device"]


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, else MPS, else CPU; an explicit unavailable device is an input error."""
    if name not in DEVICES:
        raise InputError(f"unknown device {name!r}: choose one of {', '.join(DEVICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but no CUDA GPU is available: use --device cpu")
    if name == "mps" and not _mps_available():
        raise InputError("device 'mps' requested but Apple MPS is not available: use --device cpu")
    return torch.device(name)
