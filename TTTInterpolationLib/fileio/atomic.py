"""The one way the engine writes a file: a temp file beside the target, renamed over it.

Why: a crash, a full disk or Ctrl-C in the middle of a write must never leave a half-written
output (a truncated ``.seq.nrrd`` that Slicer would load, a checkpoint a resume would trust,
invalid JSON). :func:`atomic_write` writes through a temp file in the target's own folder
(``os.replace`` is atomic only within one file system), renames it over the target when the
writer returned, and removes it on any failure, ``KeyboardInterrupt`` included.

The temp file keeps the target's suffix because some writers pick the format from it
(nibabel: ``.nii`` vs ``.nii.gz``; SimpleITK; matplotlib). A write failure the user can fix
(missing folder, no permission, full disk, the target is a folder) is an :class:`InputError`
of one line; the temp file is gone either way.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputError, one_line

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_json", "strict_json"]

#: The failures :func:`atomic_write` reports as bad output paths by default.
WRITE_FAILURES: tuple[type[BaseException], ...] = (OSError,)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *,
                 suffix: str | None = None,
                 failures: tuple[type[BaseException], ...] = WRITE_FAILURES) -> None:
    """Call ``write(tmp)`` for a temp path next to ``path``, then rename it to ``path``.

    ``suffix`` (default: the last suffix of ``path``) ends the temp file's name; give the
    whole compound suffix (``.nii.gz``, ``.seq.nrrd``) when a writer looks at it. An exception
    of a type in ``failures`` becomes an :class:`InputError`; an :class:`InputError` raised by
    ``write`` (e.g. a checksum that does not match) passes through; anything else keeps its
    traceback (a bug). In every failing case the temp file is removed.
    """
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise InputError(f"output folder {folder} does not exist; create it first or choose "
                         "another output path")
    suffix = path.suffix if suffix is None else suffix
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    tmp = folder / f".{stem}.{secrets.token_hex(4)}.tmp{suffix}"
    try:
        try:
            write(tmp)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except InputError:
        raise
    except failures as exc:
        raise InputError(f"cannot write {path}: {one_line(exc)}; choose a writable output path "
                         "with free space") from exc


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """A text file (table, JSON), written atomically in UTF-8."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def strict_json(value: Any) -> Any:
    """``value`` with every NaN and infinity replaced by ``None``.

    Why: ``json.dumps`` writes ``NaN``/``Infinity`` by default, which is not JSON (strict
    parsers, ``jq`` and browsers refuse the file). An exact prediction has an infinite PSNR
    and a class absent from both label maps has no Dice; ``null`` says "no finite value".
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def atomic_write_json(path: str | os.PathLike, value: Any) -> None:
    """``value`` as strict JSON (non-finite numbers as ``null``, see :func:`strict_json`)."""
    atomic_write_text(path, json.dumps(strict_json(value), indent=2, allow_nan=False) + "\n")

