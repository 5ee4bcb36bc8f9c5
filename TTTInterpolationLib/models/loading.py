"""Loading a model for the API and the CLI: a checkpoint path, a registered name
(:mod:`.registry`), the registry's default, or an untrained (random) initialisation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..runtime.device import resolve_device
from ..runtime.progress import Progress
from .ttt_model import TTTModel

UNTRAINED = "untrained"  # ``weights=UNTRAINED`` (``--weights untrained``): random initialisation
UNTRAINED_NOTE = ("no trained weights: UVI-Net runs with untrained (random) weights and behaves "
                  "like linear blending; pass --weights FILE or a registered model name for a "
                  "trained model")


@dataclass
class LoadedModel:
    """A model with where it came from; ``trained`` is False for a random initialisation."""

    model: TTTModel
    device: torch.device
    trained: bool
    source: str
    info: dict[str, Any] = field(default_factory=dict)


def default_weights(progress: Progress | None = None) -> Path | None:
    """The weights used when none are given: the registry's default model, or ``None``.

    ``None`` (UVI-Net runs untrained, and every command says so) while the registry has no
    default with weights. Resolving may download the default once into the cache (see
    :mod:`.registry`), which is why ``progress`` is accepted.
    """
    from .registry import default_model_name, resolve_weights

    name = default_model_name()
    return None if name is None else resolve_weights(name, progress=progress)


def load_model(weights: str | os.PathLike | None = None, device: str = "auto",
               sha256: str | None = None, seed: int = 0,
               progress: Progress | None = None,
               flow_resolution: str | None = None) -> LoadedModel:
    """Load ``weights`` (a checkpoint path or a registered model name) or the default model.

    ``weights="untrained"``, or neither given nor a default registered, builds an untrained
    model seeded by ``seed`` (a baseline, and the start of pure instance optimisation).
    ``sha256`` checks a file given by path; registered models carry their own checksum.
    ``flow_resolution`` (``full``/``half``) overrides where the model's flow network runs
    (:meth:`TTTModel.set_flow_resolution`); ``None`` keeps the checkpoint's own.
    """
    loaded = _load(weights, device, sha256, seed, progress)
    if flow_resolution is not None:
        loaded.model.set_flow_resolution(flow_resolution)
    return loaded


def _load(weights: str | os.PathLike | None, device: str, sha256: str | None, seed: int,
          progress: Progress | None) -> LoadedModel:
    from .registry import default_model_name, resolve_weights

    dev = resolve_device(device)
    name = str(weights) if weights is not None else default_model_name()
    if name is None or name == UNTRAINED:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = TTTModel()
        return LoadedModel(model.to(dev).eval(), dev, False, "untrained (random initialisation)")
    from .checkpoint import load_checkpoint

    path = resolve_weights(name, progress=progress)
    model, info = load_checkpoint(path, sha256=sha256, device=dev)
    source = str(path) if Path(name).expanduser() == path else f"{name} ({path})"
    return LoadedModel(model.eval(), dev, bool(info.get("trained", True)), source, info)
