"""What the engine offers its front ends: choices with their labels, defaults, table columns.

Why: the Slicer module, scripts and any other front end must show the engine's own choices,
not copies that drift. ``tttinterp describe --json`` prints :func:`describe` (with the
registered models); the Slicer module imports this module in its own process to build its
choice lists, defaults and evaluation table, which is why it imports nothing heavy (no
torch, no numpy: only :mod:`.config`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from . import __version__
from .config import (
    DEFAULT_METHOD,
    DEVICES,
    METHODS,
    MOTIONS,
    PROTOCOLS,
    SCHEMES,
    TASKS,
    TTTConfig,
)

FORMAT = "tttinterp-description"

#: People's names of each choice (GUI text), per option, in the option's order.
LABELS: dict[str, dict[str, str]] = {
    "method": {"uvinet": "UVI-Net", "linear": "Linear blend (baseline)",
               "registration": "Registration of neighbouring frames (no network)"},
    "ttt": {"none": "None (pretrained model)", "rotation": "Rotation prediction",
            "mae": "Masked autoencoder (MAE)", "cycle": "Cycle consistency",
            "frames": "The sequence's own frames"},
    "scheme": {"online": "Online", "minibatch": "Mini-batch", "naive": "Naive"},
    "device": {"auto": "Automatic (GPU if available)", "cpu": "CPU",
               "cuda": "NVIDIA GPU (CUDA)", "mps": "Apple GPU (MPS)"},
    "protocol": {"edes": "End-diastole -> end-systole", "x2": "Keep every 2nd frame",
                 "x4": "Keep every 4th frame"},
    "motion": {"auto": "Automatic (in-plane for a stack of thick slices)",
               "in-plane": "In-plane only", "3d": "Free 3D motion"},
}

#: Choices of each option (the command line's ``--method``, ``--ttt``, ...).
CHOICES: dict[str, tuple[str, ...]] = {"method": METHODS, "ttt": TASKS, "scheme": SCHEMES,
                                       "device": DEVICES, "protocol": PROTOCOLS,
                                       "motion": MOTIONS}

#: Metric columns of an evaluation table: (row key, heading, decimals). Each row also holds
#: ``<key>_std``; ``PSNR_seq`` is the PSNR on the case's sequence-wide intensity window.
EVALUATION_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("PSNR", "PSNR (dB)", 3), ("NCC", "NCC", 3), ("SSIM", "SSIM", 3),
    ("NMSE", "NMSE (x100)", 3), ("PSNR_seq", "PSNR (seq)", 3))


def describe(models: bool = True) -> dict[str, Any]:
    """The engine's offer as plain JSON data.

    ``models`` adds the model registry's entries (reads ``Models.json``; leave it out where
    only the choices are needed).
    """
    description: dict[str, Any] = {
        "format": FORMAT,
        "version": __version__,
        "choices": {name: [{"value": value, "label": LABELS[name][value]} for value in values]
                    for name, values in CHOICES.items()},
        "defaults": {"method": DEFAULT_METHOD,
                     **{key: value for key, value in asdict(TTTConfig()).items()
                        if key in ("task", "scheme", "steps", "seed", "guard")}},
        "task_defaults": {task: {"lr": TTTConfig(task=task).resolved().lr}
                          for task in TASKS},
        "evaluation_columns": [{"key": key, "heading": heading, "decimals": decimals}
                               for key, heading, decimals in EVALUATION_COLUMNS],
    }
    if models:
        from .models.registry import load_registry

        registry = load_registry()
        description["models"] = {
            "default": registry.default,
            "entries": [{"name": e.name, "description": e.description,
                         "available": e.available, "license": e.license}
                        for e in registry.models.values()]}
    return description
