"""What every format reader returns and what readers and writers share: the loaded array with its
geometry, readable errors for corrupt files, and the on-disk dtypes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, one_line
from ..volume import Geometry


@dataclass
class _Loaded:
    """What a format reader found: ``data`` is (I, J, K) or (T, I, J, K) float32."""

    data: np.ndarray
    geometry: Geometry
    index_values: list[float] | None = None
    index_name: str | None = None
    index_unit: str | None = None


@contextmanager
def _reading(path: Path, kind: str) -> Iterator[None]:
    """Turn a library's failure on a bad file into one readable :class:`InputError` line."""
    try:
        yield
    except InputError:
        raise
    except Exception as exc:  # libraries raise anything on a corrupt file
        raise InputError(
            f"cannot read {path}: {one_line(exc)}; check that it is a complete, valid {kind} file"
        ) from exc


def _storage_array(data: np.ndarray) -> np.ndarray:
    """Array as stored on disk: float64 halves to float32, bool becomes uint8."""
    data = np.asarray(data)
    if data.dtype == np.bool_:
        return data.astype(np.uint8)
    if np.issubdtype(data.dtype, np.floating) and data.dtype != np.float32:
        return data.astype(np.float32)
    return data


def _as_float32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)
