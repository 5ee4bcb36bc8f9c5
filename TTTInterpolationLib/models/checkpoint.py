"""Checkpoint files: model config and weights together, loaded without executing code.

Format (``.safetensors``, the default): the tensors of ``TTTModel.state_dict()`` plus string
metadata ``format = "tttinterp-checkpoint"``, ``version = "1"``, ``model_config`` (JSON of
``ModelConfig``) and ``info`` (JSON: training data, epochs, losses, ...). A ``.pt`` file holding
``{"format", "version", "model_config", "info", "state_dict"}`` is also accepted; it is read with
``torch.load(weights_only=True)``, which refuses pickled code. No sampling grid or device is
stored, so a checkpoint loads at any volume size on any device.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..config import ModelConfig
from ..errors import InputError
from ..fileio.atomic import atomic_write
from ..fileio.hashing import sha256_file
from .ttt_model import TTTModel

FORMAT = "tttinterp-checkpoint"
VERSION = "1"


def save_checkpoint(path: str | os.PathLike, model: TTTModel, info: dict[str, Any]) -> None:
    """Write ``model`` and ``info`` atomically (temp file in the same folder, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": FORMAT, "version": VERSION,
                "model_config": json.dumps(model.config.to_dict()), "info": json.dumps(info)}

    def write(tmp: Path) -> None:
        if path.suffix == ".pt":
            torch.save({**metadata, "info": info, "model_config": model.config.to_dict(),
                        "state_dict": state}, tmp)
        else:
            save_file(state, tmp, metadata=metadata)

    atomic_write(path, write, failures=(OSError, RuntimeError))  # torch: RuntimeError on I/O


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(state_dict, model_config dict, info dict) from either supported format."""
    if path.suffix == ".pt":
        data = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputError(f"{path} is not a TTTInterpolation checkpoint")
        return data["state_dict"], data["model_config"], data.get("info", {})
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        metadata = f.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise InputError(f"{path} is not a TTTInterpolation checkpoint (no '{FORMAT}' tag)")
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iter
    return state, json.loads(metadata["model_config"]), json.loads(metadata.get("info", "{}"))


def load_checkpoint(path: str | os.PathLike, sha256: str | None = None,
                    device: torch.device | str = "cpu") -> tuple[TTTModel, dict[str, Any]]:
    """Rebuild the model from ``path``; every failure is an :class:`InputError` with one line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"weights file not found: {path}")
    if sha256 is not None and sha256_file(path).lower() != sha256.lower():
        raise InputError(f"weights file {path} does not match its expected sha256: re-download it")
    try:
        state, config, info = _read(path)
        model = TTTModel(ModelConfig.from_dict(config))
        model.load_state_dict(state)
    except InputError:
        raise
    except Exception as exc:  # corrupt, truncated, pickled code, wrong tensors...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load weights {path}: {first[:200]}") from exc
    return model.to(device), info
