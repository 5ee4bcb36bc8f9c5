"""TTTInterpolationLib: UVI-Net 4D interpolation with test-time training.

Pure Python + PyTorch; imports no Slicer, Qt or VTK so it runs in any background process.
Heavy submodules load lazily so ``import TTTInterpolationLib`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "interpolate": "workflows.inference",
    "interpolate_file": "workflows.inference",
    "upsample_sequence": "workflows.inference",
    "upsample_file": "workflows.inference",
    "evaluate_file": "workflows.evaluation",
    "load_model": "models.loading",
    "read_4d": "fileio.volume_io",
    "write_4d": "fileio.volume_io",
    "make_phantom_sequence": "data.phantoms.sequences",
    "Shift": "data.phantoms.shifts",
    "Geometry": "volume",
    "Sequence4D": "volume",
    "InputError": "errors",
    "TTTConfig": "config",
    "ModelConfig": "config",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'TTTInterpolationLib' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
