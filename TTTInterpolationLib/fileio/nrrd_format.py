"""NRRD through pynrrd, including Slicer's volume-sequence layout (``.seq.nrrd``: list axis first,
per-frame index values in custom header keys).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import nrrd
import numpy as np

from ..errors import InputError
from ..volume import Geometry, Sequence4D
from .format_base import _as_float32, _Loaded, _reading, _storage_array
from .geometry import _geometry_from_lps, _lps_matrix

# NRRD "space" values and the sign flip that takes their coordinates to LPS.
_NRRD_SPACE_TO_LPS = {
    "left-posterior-superior": (1.0, 1.0, 1.0),
    "lps": (1.0, 1.0, 1.0),
    "right-anterior-superior": (-1.0, -1.0, 1.0),
    "ras": (-1.0, -1.0, 1.0),
    "left-anterior-superior": (1.0, -1.0, 1.0),
    "las": (1.0, -1.0, 1.0),
}
_NRRD_SPATIAL_KINDS = {"domain", "space"}
_NRRD_TIME_KINDS = {"list", "time"}
_NRRD_UNKNOWN_KINDS = {"???", "none", ""}
# zlib level 1: these files are rewritten often by a background process; size matters less.
_NRRD_COMPRESSION_LEVEL = 1

# Slicer's vtkMRMLVolumeSequenceStorageNode keys. It reads "axis 0 ..." or "axis 3 ...";
# we write the list axis first (axis 0), the layout every Slicer version reads.
_SLICER_NODE_CLASS_KEY = "DataNodeClassName"
_SLICER_NODE_CLASS = "vtkMRMLScalarVolumeNode"


def _load_nrrd(path: Path) -> _Loaded:
    with _reading(path, "NRRD"):
        data, header = nrrd.read(str(path), index_order="F")
    _check_nrrd_header(header, data.ndim, path)
    time_axis = _nrrd_time_axis(header, path)
    spatial_axes = [axis for axis in range(data.ndim) if axis != time_axis]
    if len(spatial_axes) != 3:
        raise InputError(
            f"{path} has {len(spatial_axes)} spatial axes (sizes {list(data.shape)}); "
            "expected a 3D volume or a 4D series of 3D volumes"
        )
    geometry = _nrrd_geometry(header, spatial_axes, path)
    if time_axis is None:
        return _Loaded(_as_float32(data), geometry)
    frames = _as_float32(np.moveaxis(data, time_axis, 0))
    labels = header.get("labels") or [""] * data.ndim
    units = header.get("units") or [""] * data.ndim
    return _Loaded(
        frames,
        geometry,
        index_values=_nrrd_index_values(header, time_axis, frames.shape[0]),
        index_name=labels[time_axis] or None,
        index_unit=units[time_axis] or "",
    )


#: Header fields with one entry per array axis (NRRD spec); "space directions" has one row per
#: axis too (``none`` for a non-spatial one).
_NRRD_PER_AXIS_FIELDS = ("sizes", "kinds", "labels", "units", "spacings", "space directions")


def _check_nrrd_header(header: dict, ndim: int, path: Path) -> None:
    """A header whose per-axis fields disagree with its dimension is corrupt, not a volume.

    pynrrd parses each field on its own, so a hand-edited or damaged header can list four
    sizes but one space direction; every later look-up by axis would then fail with an
    IndexError instead of saying what is wrong with the file.
    """
    def corrupt(what: str) -> InputError:
        return InputError(f"cannot read {path}: {what}; check that it is a complete, valid "
                          "NRRD file")

    if header.get("dimension") != ndim:
        raise corrupt(f"its dimension ({header.get('dimension')}) does not match its data")
    for key in _NRRD_PER_AXIS_FIELDS:
        if key in header and len(header[key]) != ndim:
            raise corrupt(f"'{key}' has {len(header[key])} entries for {ndim} axes")
    directions = header.get("space directions")
    if directions is not None and np.asarray(directions).shape != (ndim, 3):
        raise corrupt(f"'space directions' are not {ndim} vectors of 3 components")
    origin = header.get("space origin")
    if origin is not None and np.asarray(origin).shape != (3,):
        raise corrupt("'space origin' is not a vector of 3 components")


def _nrrd_time_axis(header: dict, path: Path) -> int | None:
    """The one non-spatial axis: kind ``list``/``time``, or an unknown kind with no direction."""
    dimension = int(header["dimension"])
    kinds = [str(k).lower() for k in header.get("kinds") or ["???"] * dimension]
    directions = header.get("space directions")
    time_axes = []
    for axis, kind in enumerate(kinds):
        if kind in _NRRD_SPATIAL_KINDS:
            continue
        if kind in _NRRD_UNKNOWN_KINDS:
            if directions is None or not np.all(np.isfinite(directions[axis])):
                time_axes.append(axis)
            continue
        if kind not in _NRRD_TIME_KINDS:
            raise InputError(
                f"{path} has a '{kind}' axis; only scalar (grey-value) volumes are supported"
            )
        time_axes.append(axis)
    if len(time_axes) > 1 or (dimension == 4 and not time_axes):
        raise InputError(
            f"cannot tell which axis of {path} is time (kinds {kinds}); "
            "mark exactly one axis with kind 'list', as Slicer's .seq.nrrd does"
        )
    return time_axes[0] if time_axes else None


def _nrrd_geometry(header: dict, spatial_axes: list[int], path: Path) -> Geometry:
    """LPS geometry from ``space``, ``space directions`` (or ``spacings``) and ``space origin``."""
    space = str(header.get("space", "left-posterior-superior")).lower()
    if space not in _NRRD_SPACE_TO_LPS:
        raise InputError(
            f"{path} uses NRRD space '{space}'; supported spaces: "
            "left-posterior-superior, right-anterior-superior, left-anterior-superior"
        )
    signs = np.asarray(_NRRD_SPACE_TO_LPS[space])
    directions = header.get("space directions")
    if directions is not None:
        rows = np.asarray(directions, dtype=np.float64)[spatial_axes]
        if rows.shape != (3, 3):
            raise InputError(f"{path} has {rows.shape[1]}D space directions; expected 3D")
        linear = rows.T
    else:
        spacings = np.asarray(header.get("spacings", [1.0] * len(header["sizes"])), dtype=float)
        spacing = spacings[spatial_axes]
        linear = np.diag(np.where(np.isfinite(spacing), spacing, 1.0))
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
    return _geometry_from_lps(_lps_matrix(signs[:, None] * linear, signs * origin), str(path))


def _nrrd_index_values(header: dict, time_axis: int, num_frames: int) -> list[float] | None:
    """Slicer's per-frame index values; None (frame numbers) if absent or not numeric."""
    for key in (f"axis {time_axis} index values", "axis 0 index values", "axis 3 index values"):
        if key in header:
            tokens = str(header[key]).split()
            try:
                values = [float(unquote(token)) for token in tokens]
            except ValueError:
                return None
            return values if len(values) == num_frames else None
    return None


def _nrrd_writer(tmp: Path, data: np.ndarray, geometry: Geometry, seq: Sequence4D | None) -> None:
    """NRRD in LPS; with ``seq``, Slicer's volume-sequence layout (list axis first)."""
    nrrd.write(
        str(tmp),
        _storage_array(data),
        _nrrd_header(geometry, seq),
        index_order="F",
        compression_level=_NRRD_COMPRESSION_LEVEL,
    )


def _nrrd_header(geometry: Geometry, seq: Sequence4D | None) -> dict:
    linear = geometry.ijk_to_lps()[:3, :3]
    directions = list(linear.T)  # one row per array axis: that axis' step in LPS mm
    kinds = ["domain"] * 3
    header: dict = {
        "space": "left-posterior-superior",
        "space origin": np.asarray(geometry.origin, dtype=np.float64),
        "encoding": "gzip",
    }
    if seq is not None:
        directions.insert(0, np.full(3, np.nan))  # pynrrd writes a NaN row as "none"
        kinds.insert(0, "list")
        header["labels"] = [seq.index_name, "", "", ""]
        if seq.index_unit:
            header["units"] = [seq.index_unit, "", "", ""]
        header.update(_slicer_sequence_fields(seq))
    header["kinds"] = kinds
    header["space directions"] = np.asarray(directions, dtype=np.float64)
    return header


def _slicer_sequence_fields(seq: Sequence4D) -> dict[str, str]:
    """The custom keys vtkMRMLVolumeSequenceStorageNode reads (index values at full precision)."""
    return {
        _SLICER_NODE_CLASS_KEY: _SLICER_NODE_CLASS,
        "axis 0 index type": "numeric",
        "axis 0 index values": " ".join(_format_index(v) for v in seq.index_values),
    }


def _format_index(value: float) -> str:
    """Whole frame numbers as ``3`` (as Slicer shows them), fractions with ``repr`` precision."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)
