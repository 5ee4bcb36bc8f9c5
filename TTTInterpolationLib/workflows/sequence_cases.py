"""Real-sequence evaluation cases from a case list (``tttinterp evaluate --cases cases.csv``).

The ACDC 4D set (``shared/data/acdc-4d``) lists one heartbeat per row: ``case, path, ed, es,
frames, group, split``, frame numbers 0-based. Each row becomes one :class:`.protocols.EvalCase`
under a protocol: ``edes`` hides every frame strictly between ``ed`` and ``es``, ``x2`` / ``x4``
keep every 2nd / 4th frame and hide the rest (:mod:`.protocols`). ``--split`` picks rows
(``validation`` to choose settings, ``test`` once for the final model), ``--shift`` applies a
scanner-like distribution shift (gamma, bias field, Rician noise, ...) to every sequence,
seeded per case, so the shifted split is the same on every run.

Any CSV with at least ``path``, ``ed`` and ``es`` columns works (``case`` names a row,
``split`` is needed only for ``--split``); relative paths resolve against the CSV's folder.
"""

from __future__ import annotations

import csv
import os
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..config import SPLITS
from ..data.phantoms.shifts import Shift, apply_shift
from ..errors import InputError
from ..runtime.progress import NullProgress, Progress
from ..volume import Sequence4D
from .protocols import EvalCase, protocol_case

REQUIRED_COLUMNS = ("path", "ed", "es")


def read_case_list(path: str | os.PathLike, split: str = "all") -> list[dict[str, str]]:
    """The rows of a case list, checked, in file order (only ``split``'s unless ``all``)."""
    path = Path(path)
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, skipinitialspace=True)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [{str(k).strip(): str(v or "").strip() for k, v in row.items() if k}
                    for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read case list {path}: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise InputError(f"case list {path} lacks column(s) {', '.join(missing)}; it needs "
                         f"{', '.join(REQUIRED_COLUMNS)} (and split for --split)")
    if split != "all":
        if "split" not in columns:
            raise InputError(f"case list {path} has no split column: use --split all")
        rows = [r for r in rows if r.get("split") == split]
    rows = [r for r in rows if r.get("path")]
    if not rows:
        raise InputError(f"case list {path} has no cases in split {split!r}")
    for i, row in enumerate(rows, start=1):
        for key in ("ed", "es"):
            value = row.get(key, "")
            if not value.isdigit():
                raise InputError(f"case list {path} row {i}: {key} must be a 0-based frame "
                                 f"number, got {value!r}")
        file = Path(row["path"]).expanduser()
        row["path"] = str(file if file.is_absolute() else path.parent / file)
        if not Path(row["path"]).is_file():
            raise InputError(f"case list {path} row {i}: file not found: {row['path']}")
        if not row.get("case"):
            row["case"] = Path(row["path"]).name
    return rows


def shift_sequence(seq: Sequence4D, shift: Shift | None, seed: int) -> Sequence4D:
    """``seq`` with ``shift`` applied on its own [0, 1] scale (its min-max), back in its units;
    ``seq`` itself when there is nothing to apply.

    Rician noise, as in MRI magnitude images; one bias field for all frames of the sequence.
    """
    if shift is None or shift.is_identity():
        return seq
    frames = seq.frames
    low, high = float(frames.min()), float(frames.max())
    scale = high - low if high > low else 1.0
    shifted = apply_shift((frames - low) / scale, shift, seed, rician=True)
    return replace(seq, frames=(low + shifted * scale).astype(np.float32))


def load_cases(path: str | os.PathLike, split: str = "all", shift: Shift | None = None,
               limit: int | None = None, progress: Progress | None = None,
               protocol: str = "edes") -> list[EvalCase]:
    """Read every selected sequence and make its case under ``protocol`` (``shift`` seeded by
    the case name)."""
    from ..fileio.volume_io import read_4d

    progress = progress or NullProgress()
    rows = read_case_list(path, split)
    if limit is not None:
        if limit < 1:
            raise InputError(f"--limit must be >= 1, got {limit}")
        rows = rows[:limit]
    cases = []
    for i, row in enumerate(rows):
        progress.update("read", i / len(rows), f"reading {row['case']}")
        seq = read_4d(row["path"])
        ed, es = int(row["ed"]), int(row["es"])
        seq = shift_sequence(seq, shift, zlib.crc32(row["case"].encode()))
        cases.append(protocol_case(seq, protocol, ed, es, name=row["case"]))
    return cases
