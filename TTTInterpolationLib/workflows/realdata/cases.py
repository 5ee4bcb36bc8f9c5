"""The real ED/ES pairs of an evaluation: case selection (the ACDC test split by default), label
files, and each case read and cropped onto the model grid with its labels.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...config import DEFAULT_GRID_SIZE
from ...data.datasets import PairSource, find_pairs
from ...data.model_grid import plan_mapping, to_model_grid
from ...data.preprocess import prepare_pair
from ...errors import InputError

TEST_SPLIT = "091-100"
DEFAULT_SIZE = DEFAULT_GRID_SIZE
CLASSES = {1: "RV", 2: "Myo", 3: "LV"}


@dataclass
class LabelledPair:
    """One case on the model grid: ED/ES ``(1, 1, D1, D2, D3)`` in [0, 1] and their labels."""

    case: str
    ed: torch.Tensor
    es: torch.Tensor
    ed_labels: torch.Tensor
    es_labels: torch.Tensor

    def to(self, device: torch.device) -> LabelledPair:
        return LabelledPair(self.case, *(t.to(device) for t in (self.ed, self.es, self.ed_labels,
                                                                self.es_labels)))


def parse_cases(spec: str) -> list[tuple[int, int] | str] | None:
    """``"091-100"``, ``"1,5,91-93"``, ``"patient091"`` or ``"all"`` (None: every case).

    Numbers and ranges match a case name's trailing number; other words match names exactly.
    """
    if spec.strip().lower() == "all":
        return None
    wanted: list[tuple[int, int] | str] = []
    for token in filter(None, (t.strip() for t in spec.split(","))):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", token)
        if match is None:
            wanted.append(token)
            continue
        low = int(match[1])
        high = int(match[2]) if match[2] else low
        if high < low:
            raise InputError(f"--cases range {token!r} runs backwards")
        wanted.append((low, high))
    if not wanted:
        raise InputError("--cases is empty: give numbers, ranges like 091-100, names or 'all'")
    return wanted


def _case_number(name: str) -> int | None:
    match = re.search(r"(\d+)$", name)
    return int(match[1]) if match else None


def _selected(name: str, wanted: list[tuple[int, int] | str]) -> bool:
    number = _case_number(name)
    return any(w == name if isinstance(w, str)
               else number is not None and w[0] <= number <= w[1] for w in wanted)


def select_pairs(data: str | os.PathLike, cases: str | None = TEST_SPLIT,
                 limit: int | None = None) -> list[PairSource]:
    """The ED/ES pairs of ``data`` named by ``cases`` (default the ACDC test split), at most
    ``limit`` of them, in name order."""
    pairs = find_pairs(data)
    wanted = parse_cases(cases) if cases is not None else None
    if wanted is not None:
        pairs = [p for p in pairs if _selected(p.case, wanted)]
    if not pairs:
        raise InputError(f"no case in {data} matches --cases {cases} (the default is the ACDC "
                         "test split 091-100); use --cases all for every pair")
    if limit is not None:
        if limit < 1:
            raise InputError(f"--limit must be >= 1, got {limit}")
        pairs = pairs[:limit]
    return pairs


def label_paths(pair: PairSource) -> tuple[Path, Path]:
    """``<case>_ED_gt.nii.gz`` and ``<case>_ES_gt.nii.gz`` next to the images (ACDC layout)."""
    if pair.is_4d:
        raise InputError(f"pair {pair.case} is two frames of a 4D file; evaluate-pairs needs "
                         "ED/ES files with their labels (the ACDC layout)")

    def label(image: Path) -> Path:
        for ext in (".nii.gz", ".nii"):
            if image.name.endswith(ext):
                return image.with_name(image.name[: -len(ext)] + "_gt" + ext)
        raise InputError(f"{image} is not a NIfTI file: labels are looked for as <name>_gt.nii.gz")

    found = label(pair.path_a), label(pair.path_b)
    for path in found:
        if not path.is_file():
            raise InputError(f"{pair.case} has no label file {path.name}: evaluate-pairs needs "
                             "the ED and ES labels (0 background, 1 RV, 2 myocardium, 3 LV)")
    return found


def _read_labels(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    from ...fileio.volume_io import read_volume

    labels = read_volume(path)[0]
    if labels.shape != shape:
        raise InputError(f"labels {path.name} have shape {labels.shape}, the image {shape}")
    rounded = np.rint(labels)
    if not np.array_equal(rounded, labels) or rounded.min() < 0 or rounded.max() > max(CLASSES):
        raise InputError(f"{path.name} is not a label map with classes 0..{max(CLASSES)}")
    return rounded.astype(np.float32)


def crop_labels(labels: np.ndarray, size: Sequence[int]) -> torch.Tensor:
    """Labels on the model grid exactly as the images (centre crop/zero-pad, no resampling)."""
    grid = to_model_grid(labels, plan_mapping(labels.shape, size))
    return torch.from_numpy(np.ascontiguousarray(grid, dtype=np.float32))[None, None]


def load_labelled_pair(pair: PairSource, size: Sequence[int] = DEFAULT_SIZE) -> LabelledPair:
    """Read and preprocess one case (:func:`.preprocess.prepare_pair`), labels cropped alike."""
    from ...fileio.volume_io import read_volume

    ed, es = read_volume(pair.path_a)[0], read_volume(pair.path_b)[0]
    if ed.shape != es.shape:
        raise InputError(f"{pair.case}: ED {ed.shape} and ES {es.shape} differ in shape")
    ed_labels, es_labels = (_read_labels(p, ed.shape) for p in label_paths(pair))
    grid = tuple(size)
    prepared = prepare_pair(ed, es, grid)
    return LabelledPair(pair.case, prepared.i0, prepared.i1,
                        crop_labels(ed_labels, grid), crop_labels(es_labels, grid))
