"""Training data: pairs of frames from the ACDC folder layout or from a manifest file.

``--data`` is either
- a folder in the ACDC layout (``<case>_ED.nii[.gz]`` + ``<case>_ES.nii[.gz]``; ``*_gt`` label
  files are ignored), as in ``shared/data/acdc-edes`` and what ``tttinterp phantom --pairs``
  writes; or
- a manifest, so users can train on their own data without renaming files:

  * CSV (``.csv``) with a header row; one pair per row; blank rows and rows whose first cell
    starts with ``#`` are skipped;
  * JSON (``.json``): a list of objects, or ``{"pairs": [...]}``, with the same keys.

  Each row is either ``path_a,path_b`` (two 3D files: frame A and frame B, e.g. ED and ES) or
  ``path,frame_a,frame_b`` (one 4D file and two 0-based frame numbers); an optional ``case``
  names the pair in logs and checkpoints. Relative paths resolve against the manifest's folder.

Preprocessing is :func:`.preprocess.prepare_pair`, the path every command shares (one robust
intensity window per pair, then centre crop or zero-pad to the model grid without resampling),
after optional augmentation (:mod:`.augment`). ``zoom`` != 1 first resizes each volume
trilinearly by that factor (per axis), so a model can train at a lower resolution on a CPU,
e.g. ``size (64, 64, 16)`` with ``zoom 0.5`` covers the published 128x128x32 field of view.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .augment import AugmentOptions, augment_pair
from .model_grid import MIN_SIZE
from .preprocess import prepare_pair

_ACDC_ED = re.compile(r"^(?P<case>.+)_ED\.nii(\.gz)?$")
MANIFEST_SUFFIXES = (".csv", ".json")
MANIFEST_COLUMNS = ("case", "path_a", "path_b", "path", "frame_a", "frame_b")
_FORMS_HINT = "give either path_a and path_b (two 3D files) or path, frame_a and frame_b (4D)"


@dataclass(frozen=True)
class PairSource:
    """Where one training pair comes from: two 3D files, or two frames of one 4D file."""

    case: str
    path_a: Path
    path_b: Path  # the same file as path_a for a 4D source
    frame_a: int | None = None
    frame_b: int | None = None
    labels: tuple[Path, ...] = ()  # label maps of the organ (ACDC *_gt files): crop centre


    @property
    def is_4d(self) -> bool:
        return self.frame_a is not None


def find_pairs(data: str | os.PathLike, limit: int | None = None) -> list[PairSource]:
    """The pairs of an ACDC-layout folder or of a manifest file, first ``limit`` only if given."""
    root = Path(data)
    if root.is_dir():
        pairs = find_acdc_pairs(root)
    elif root.is_file():
        pairs = read_manifest(root)
    else:
        raise InputError(f"training data not found: {root} (give a folder of <case>_ED/_ES "
                         f"files or a {'/'.join(MANIFEST_SUFFIXES)} manifest)")
    if limit is not None:
        if limit < 1:
            raise InputError(f"--limit must be >= 1, got {limit}")
        pairs = pairs[:limit]
    return pairs


def find_acdc_pairs(root: Path) -> list[PairSource]:
    """Every ``<case>_ED.nii[.gz]`` with its ``<case>_ES`` partner, sorted by case name."""
    pairs = []
    for ed in sorted(root.iterdir()):
        match = _ACDC_ED.match(ed.name)
        es = ed.with_name(ed.name.replace("_ED.", "_ES."))
        if match and es.is_file():
            labels = tuple(p for p in (_label_path(ed), _label_path(es)) if p.is_file())
            pairs.append(PairSource(match["case"], ed, es, labels=labels))
    if not pairs:
        raise InputError(f"no <case>_ED.nii.gz / <case>_ES.nii.gz pairs in {root}")
    return pairs


def _label_path(image: Path) -> Path:
    """``patient001_ED.nii.gz`` -> ``patient001_ED_gt.nii.gz`` (ACDC's label file name)."""
    name = image.name
    stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else name[: -len(".nii")]
    return image.with_name(f"{stem}_gt{name[len(stem):]}")


# --------------------------------------------------------------------------- manifests


def read_manifest(path: Path) -> list[PairSource]:
    """Pairs listed in a CSV or JSON manifest (format in the module docstring)."""
    suffix = path.suffix.lower()
    if suffix not in MANIFEST_SUFFIXES:
        raise InputError(f"training data {path} is neither a folder nor a manifest "
                         f"({', '.join(MANIFEST_SUFFIXES)})")
    try:
        rows = _csv_rows(path) if suffix == ".csv" else _json_rows(path)
    except (OSError, UnicodeDecodeError, csv.Error, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read manifest {path}: {exc}") from exc
    if not rows:
        raise InputError(f"manifest {path} lists no pairs")
    return [_pair_from_row(row, where, path.parent) for where, row in rows]


def _csv_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        _check_columns(reader.fieldnames or [], path.name)
        rows = []
        for row in reader:
            cells = [str(v).strip() for v in row.values() if v is not None]
            if not any(cells) or cells[0].startswith("#"):
                continue
            rows.append((f"{path.name} line {reader.line_num}", row))
    return rows


def _json_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    items = data.get("pairs") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise InputError(f"manifest {path.name} must be a list of pairs or {{\"pairs\": [...]}}")
    rows = []
    for i, item in enumerate(items, start=1):
        where = f"{path.name} entry {i}"
        if not isinstance(item, dict):
            raise InputError(f"{where}: each pair must be an object with {_FORMS_HINT}")
        _check_columns(list(item), where)
        rows.append((where, item))
    return rows


def _check_columns(names: Sequence[str | None], where: str) -> None:
    unknown = sorted(str(n).strip() for n in names
                     if n is None or str(n).strip() not in MANIFEST_COLUMNS)
    if unknown:
        raise InputError(f"{where}: unknown column(s) {unknown}; known: "
                         f"{', '.join(MANIFEST_COLUMNS)}")


def _pair_from_row(row: dict[str, Any], where: str, base: Path) -> PairSource:
    """One validated pair; paths resolve against ``base`` (the manifest's folder)."""
    if row.get(None):  # type: ignore[call-overload]
        raise InputError(f"{where}: more cells than header columns")
    values = {str(k).strip(): str(v).strip() for k, v in row.items()
              if k is not None and v is not None and str(v).strip()}
    keys = set(values) - {"case"}
    if keys == {"path_a", "path_b"}:
        a, b = (_existing(values[k], base, where) for k in ("path_a", "path_b"))
        return PairSource(values.get("case") or _stem(a), a, b)
    if keys == {"path", "frame_a", "frame_b"}:
        path = _existing(values["path"], base, where)
        fa, fb = (_frame_number(values[k], k, where) for k in ("frame_a", "frame_b"))
        if fa == fb:
            raise InputError(f"{where}: frame_a and frame_b must differ, got {fa} twice")
        return PairSource(values.get("case") or f"{_stem(path)}[{fa},{fb}]", path, path, fa, fb)
    raise InputError(f"{where}: has {sorted(keys) or 'no values'}; {_FORMS_HINT}")


def _existing(value: str, base: Path, where: str) -> Path:
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise InputError(f"{where}: file not found: {path}")
    return path


def _frame_number(value: str, key: str, where: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InputError(f"{where}: {key} must be a whole frame number, got {value!r}") from None
    if number < 0:
        raise InputError(f"{where}: {key} must be >= 0 (0-based frame number), got {number}")
    return number


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".seq.nrrd", ".nii.gz"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


# --------------------------------------------------------------------------- splitting


def split_validation(pairs: list[PairSource], fraction: float,
                     seed: int = 0) -> tuple[list[PairSource], list[PairSource]]:
    """Hold out ``round(fraction * n)`` (at least 1) pairs, drawn by ``seed``, for validation.

    Drawn at random rather than from the end because ACDC orders patients by diagnosis group
    in blocks of 20; both lists keep the original order.
    """
    if not 0.0 < fraction < 1.0:
        raise InputError(f"--val-fraction must be between 0 and 1, got {fraction}")
    n_val = max(1, round(fraction * len(pairs)))
    if n_val >= len(pairs):
        raise InputError(f"--val-fraction {fraction} leaves no training pair out of {len(pairs)}")
    held = set(np.random.default_rng(seed).permutation(len(pairs))[:n_val].tolist())
    return ([p for i, p in enumerate(pairs) if i not in held],
            [p for i, p in enumerate(pairs) if i in held])


# --------------------------------------------------------------------------- preprocessing


def check_zoom(zoom: Sequence[float]) -> tuple[float, float, float]:
    """One factor for all axes or one per axis, each in (0, 4]."""
    values = tuple(float(z) for z in zoom)
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not all(0.0 < z <= 4.0 for z in values):
        raise InputError(f"--zoom takes 1 or 3 factors in (0, 4], got {list(zoom)}")
    return values  # type: ignore[return-value]


def resize(volume: np.ndarray, zoom: Sequence[float]) -> np.ndarray:
    """Trilinear resize of a 3D volume by ``zoom`` per axis (each size rounded, >= 1).

    An axis left shorter than the network's minimum is zero-padded, centred, to that minimum
    (ACDC stacks of 6 slices at zoom 0.5), which the later centre pad would have added anyway.
    """
    shape = tuple(max(1, round(n * z)) for n, z in zip(volume.shape, zoom, strict=True))
    tensor = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]
    out = F.interpolate(tensor, size=shape, mode="trilinear", align_corners=False)[0, 0].numpy()
    short = [max(MIN_SIZE - n, 0) for n in out.shape]
    return np.pad(out, [(s // 2, s - s // 2) for s in short]) if any(short) else out


class _PairReader:
    """Reads the two volumes of a pair; keeps the last 4D series so its rows read it once."""

    def __init__(self) -> None:
        self._series: tuple[Path, Any] | None = None

    def read(self, source: PairSource) -> tuple[np.ndarray, np.ndarray]:
        from ..fileio.volume_io import read_4d, read_volume

        if not source.is_4d:
            a, b = read_volume(source.path_a)[0], read_volume(source.path_b)[0]
        else:
            if self._series is None or self._series[0] != source.path_a:
                self._series = (source.path_a, read_4d(source.path_a))
            frames = self._series[1].frames
            for f in (source.frame_a, source.frame_b):
                if not 0 <= f < len(frames):  # type: ignore[operator]
                    raise InputError(f"pair {source.case}: frame {f} is out of range, "
                                     f"{source.path_a} has frames 0 to {len(frames) - 1}")
            a, b = frames[source.frame_a], frames[source.frame_b]
        if a.shape != b.shape:
            raise InputError(f"pair {source.case}: frames A {a.shape} and B {b.shape} must "
                             "have the same shape")
        return a, b


def organ_centre(source: PairSource, raw_shape: tuple[int, ...],
                 zoom: Sequence[float]) -> tuple[float, float, float]:
    """Voxel centre (after ``zoom``) of the labelled organ, or of the volume without labels.

    The organ is the union of the pair's label maps (ACDC ``*_gt`` files) of the image's shape.
    """
    from ..fileio.volume_io import read_volume

    masks = [np.asarray(read_volume(path)[0]) > 0 for path in source.labels]
    masks = [m for m in masks if m.shape == tuple(raw_shape) and m.any()]
    if masks:
        coords = np.argwhere(np.logical_or.reduce(masks)).mean(axis=0)
    else:
        coords = (np.asarray(raw_shape, np.float64) - 1.0) / 2.0
    return tuple(float(c * z) for c, z in zip(coords, zoom, strict=True))  # type: ignore


class PairDataset(torch.utils.data.Dataset):
    """Training pairs kept in memory (a few MB each): ``(A, B)`` per item, ``(1, D1, D2, D3)``.

    Everything is read up front so a bad file fails before any training step. Without
    ``augment`` each pair is the centre crop/pad of :func:`.preprocess.prepare_pair`, made
    once. With ``augment`` every epoch draws a new view of each pair (:mod:`.augment`) from
    ``(seed, epoch, index)`` (call :meth:`set_epoch`), so a run replays exactly by seed.
    """

    def __init__(self, pairs: list[PairSource], size: tuple[int, int, int],
                 zoom: Sequence[float] = (1.0, 1.0, 1.0), augment: AugmentOptions | None = None,
                 seed: int = 0) -> None:
        reader = _PairReader()
        self.cases = [p.case for p in pairs]
        self.size, self.augment, self.seed, self.epoch = tuple(size), augment, seed, 0
        self.raw: list[tuple[np.ndarray, np.ndarray]] = []
        self.centres: list[tuple[float, float, float]] = []
        for pair in pairs:
            a, b = (np.asarray(v, np.float32) for v in reader.read(pair))
            raw_shape = a.shape
            if any(z != 1.0 for z in zoom):
                a, b = resize(a, zoom), resize(b, zoom)
            self.raw.append((a, b))
            if augment:
                self.centres.append(organ_centre(pair, raw_shape, zoom))
        self.fixed = None if augment else [self._view(a, b) for a, b in self.raw]

    def _view(self, a: np.ndarray, b: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        pair = prepare_pair(a, b, self.size)
        return pair.i0[0], pair.i1[0]

    def set_epoch(self, epoch: int) -> None:
        """Views of epoch ``epoch`` from now on (no effect without augmentation)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fixed is not None:
            return self.fixed[index]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        a, b = augment_pair(*self.raw[index], self.centres[index], self.size, rng, self.augment)
        return self._view(a, b)


def write_phantom_pairs(folder: str | os.PathLike, count: int, kind: str = "cardiac",
                        size: tuple[int, int, int] = (64, 64, 32), seed: int = 0,
                        shift: object | None = None, n_frames: int = 10) -> list[Path]:
    """Write ``count`` phantom ED/ES pairs (seeds ``seed .. seed+count-1``) in the ACDC layout."""
    from ..fileio.volume_io import write_volume
    from .phantoms.sequences import end_frames, make_phantom_sequence

    if count < 1:
        raise InputError(f"--pairs must be >= 1, got {count}")
    ed_index, es_index = end_frames(kind, n_frames)
    first = make_phantom_sequence(kind, n_frames, size, seed, shift)  # checks every setting
    root = Path(folder)  # made only once the settings are known to be good
    if root.exists() and not root.is_dir():
        raise InputError(f"{root} is a file; give a folder for the phantom pairs")
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for k in range(count):
        seq = first if k == 0 else make_phantom_sequence(kind, n_frames, size, seed + k, shift)
        for tag, index in (("ED", ed_index), ("ES", es_index)):
            path = root / f"phantom{seed + k:03d}_{tag}.nii.gz"
            write_volume(path, seq.frames[index], seq.geometry)
            written.append(path)
    return written
