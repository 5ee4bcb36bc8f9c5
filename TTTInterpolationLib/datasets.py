"""Training data: end-diastole/end-systole pairs in the ACDC folder layout.

The layout (``patientNNN_ED.nii.gz`` + ``patientNNN_ES.nii.gz``; ``*_gt`` label files are
ignored) is that of ``shared/data/acdc-edes``. Preprocessing follows method.md section 6: centre
crop or zero-pad to the model grid without resampling, then min-max to [0, 1] per volume.
Phantom pairs can be written in the same layout so training runs without any real data.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import InputError
from .model_grid import normalize_minmax, plan_mapping, to_model_grid

_PAIR = re.compile(r"^(?P<case>.+)_ED\.nii(\.gz)?$")


@dataclass(frozen=True)
class PairFiles:
    case: str
    ed: Path
    es: Path


def find_pairs(folder: str | os.PathLike, limit: int | None = None) -> list[PairFiles]:
    """Every ``<case>_ED.nii[.gz]`` with its ``<case>_ES`` partner, sorted by case name."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"training data folder not found: {root}")
    pairs = []
    for ed in sorted(root.iterdir()):
        match = _PAIR.match(ed.name)
        if not match:
            continue
        es = ed.with_name(ed.name.replace("_ED.", "_ES."))
        if es.is_file():
            pairs.append(PairFiles(match["case"], ed, es))
    if not pairs:
        raise InputError(f"no <case>_ED.nii.gz / <case>_ES.nii.gz pairs in {root}")
    if limit is not None:
        if limit < 1:
            raise InputError(f"--limit must be >= 1, got {limit}")
        pairs = pairs[:limit]
    return pairs


def preprocess(volume: np.ndarray, size: tuple[int, int, int]) -> torch.Tensor:
    """Centre crop/pad to ``size`` and min-max to [0, 1]: ``(1, D1, D2, D3)`` float32."""
    mapping = plan_mapping(volume.shape, size)
    normalized, _ = normalize_minmax(to_model_grid(np.asarray(volume, np.float32), mapping))
    return torch.from_numpy(np.ascontiguousarray(normalized, dtype=np.float32))[None]


class PairDataset(torch.utils.data.Dataset):
    """ED/ES pairs, preprocessed once and kept in memory (a few MB per pair)."""

    def __init__(self, pairs: list[PairFiles], size: tuple[int, int, int]) -> None:
        from .volume_io import read_volume

        self.cases = [p.case for p in pairs]
        self.items = [(preprocess(read_volume(p.ed)[0], size), preprocess(read_volume(p.es)[0],
                                                                           size)) for p in pairs]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.items[index]


def write_phantom_pairs(folder: str | os.PathLike, count: int, kind: str = "cardiac",
                        size: tuple[int, int, int] = (64, 64, 32), seed: int = 0,
                        shift: object | None = None, n_frames: int = 10) -> list[Path]:
    """Write ``count`` phantom ED/ES pairs (seeds ``seed .. seed+count-1``) in the ACDC layout."""
    from .phantoms import end_frames, make_phantom_sequence
    from .volume_io import write_volume

    if count < 1:
        raise InputError(f"--pairs must be >= 1, got {count}")
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    ed_index, es_index = end_frames(kind, n_frames)
    written = []
    for k in range(count):
        seq = make_phantom_sequence(kind, n_frames, size, seed + k, shift)
        for tag, index in (("ED", ed_index), ("ES", es_index)):
            path = root / f"phantom{seed + k:03d}_{tag}.nii.gz"
            write_volume(path, seq.frames[index], seq.geometry)
            written.append(path)
    return written
