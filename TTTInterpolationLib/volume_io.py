"""Reading and writing 3D volumes and 4D series, with their geometry, in LPS millimetres.

Why this module exists: every file format stores orientation differently (NIfTI in RAS,
NRRD in a declared ``space``, MetaImage in LPS) and Slicer keeps the per-frame time points of a
``.seq.nrrd`` in custom header keys. Everything inside the engine uses :class:`Geometry` (LPS);
the RAS<->LPS flip happens here, through :data:`LPS_FROM_RAS` only.

Libraries: nibabel for NIfTI (its ``.affine`` resolves qform/sform), pynrrd for NRRD (keeps the
custom ``key:=value`` fields Slicer needs), SimpleITK for MetaImage (.mha/.mhd).

Every problem a user can cause (missing, corrupt or wrong-kind file, bad suffix, NaN voxels,
frames that do not match, missing output folder) raises :class:`InputError` with one line that
says what is wrong and what to do. Writes are atomic: a temp file next to the target is
renamed over it, and removed on any failure.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import nibabel as nib
import nrrd
import numpy as np
import SimpleITK as sitk

from .atomic import atomic_write
from .errors import InputError, one_line
from .volume import Geometry, Sequence4D

__all__ = [
    "LPS_FROM_RAS",
    "geometry_from_ras_affine",
    "ras_affine_from_geometry",
    "read_volume",
    "write_volume",
    "read_4d",
    "write_4d",
    "is_4d_path",
]

PathLike = str | os.PathLike

#: The one place for the RAS<->LPS flip (x and y change sign). It is its own inverse, so it
#: maps LPS to RAS too.
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])

# Longest first, so ".seq.nrrd" wins over ".nrrd" and ".nii.gz" over ".gz".
_KNOWN_SUFFIXES = (".seq.nrrd", ".seq.nhdr", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_READ_SUFFIXES = _KNOWN_SUFFIXES
# Detached-header formats (.nhdr, .mhd) are read-only: their data file is named after the
# header, which the atomic temp-file rename would break.
_WRITE_3D_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
_WRITE_4D_SUFFIXES = (".seq.nrrd", ".nrrd", ".nii.gz", ".nii")
_4D_INPUT_HINT = "one 4D file (.seq.nrrd, .nrrd, .nii, .nii.gz, .mha)"

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

_NIFTI_COMMENT_CODE = 6
_NIFTI_META_KEY = "TTTInterpolation"
_NIFTI_TIME_UNITS = {"s": "sec", "sec": "sec", "ms": "msec", "msec": "msec", "us": "usec"}


@dataclass
class _Loaded:
    """What a format reader found: ``data`` is (I, J, K) or (T, I, J, K) float32."""

    data: np.ndarray
    geometry: Geometry
    index_values: list[float] | None = None
    index_name: str | None = None
    index_unit: str | None = None


# --------------------------------------------------------------------------- geometry


def geometry_from_ras_affine(affine: np.ndarray) -> Geometry:
    """LPS :class:`Geometry` from a 4x4 voxel-to-RAS affine (nibabel `.affine`, Slicer IJKToRAS)."""
    return _geometry_from_ras(affine, "the affine")


def ras_affine_from_geometry(geometry: Geometry) -> np.ndarray:
    """4x4 voxel-to-RAS affine of ``geometry`` (what NIfTI and Slicer's IJKToRAS hold)."""
    matrix = geometry.ijk_to_lps()
    matrix[:3, :] = LPS_FROM_RAS @ matrix[:3, :]
    return matrix


def _geometry_from_ras(affine: np.ndarray, source: str) -> Geometry:
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"expected a 4x4 affine, got shape {affine.shape}")
    lps = affine.copy()
    lps[:3, :] = LPS_FROM_RAS @ affine[:3, :]
    return _geometry_from_lps(lps, source)


def _geometry_from_lps(matrix: np.ndarray, source: str) -> Geometry:
    """Checked :meth:`Geometry.from_ijk_to_lps`: a zero or NaN axis would poison every voxel."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if not np.all(np.isfinite(matrix)) or np.any(np.linalg.norm(matrix[:3, :3], axis=0) <= 0):
        raise InputError(
            f"{source} has a zero-length or non-finite voxel axis in its geometry; "
            "fix the spacing/direction in the file header"
        )
    return Geometry.from_ijk_to_lps(matrix)


def _lps_matrix(linear: np.ndarray, origin: Sequence[float]) -> np.ndarray:
    """4x4 voxel-to-LPS matrix from a 3x3 (columns = scaled axis vectors) and an origin."""
    matrix = np.eye(4)
    matrix[:3, :3] = linear
    matrix[:3, 3] = origin
    return matrix


# --------------------------------------------------------------------------- public API


def is_4d_path(path: PathLike) -> bool:
    """True if ``path``'s suffix is one :func:`write_4d` can write (.seq.nrrd, .nrrd, .nii[.gz])."""
    return _suffix(Path(path)) in _WRITE_4D_SUFFIXES


def read_volume(path: PathLike) -> tuple[np.ndarray, Geometry]:
    """Read one 3D volume as float32 ``(I, J, K)`` plus its LPS geometry.

    A 4D file with a single frame counts as 3D; any other 4D file is an :class:`InputError`.
    """
    path = Path(path)
    loaded = _load(path)
    data = loaded.data
    if data.ndim == 4:
        if data.shape[0] != 1:
            raise InputError(
                f"{path} is a 4D series of {data.shape[0]} frames, not a 3D volume; "
                "pass it on its own as the 4D input"
            )
        data = data[0]
    _require_finite(data, path)
    return data, loaded.geometry


def read_4d(paths: PathLike | Sequence[PathLike]) -> Sequence4D:
    """Read a 4D series: one 4D file, or several 3D frame files stacked in the given order."""
    path_list = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    if not path_list:
        raise InputError(f"no input files given; pass {_4D_INPUT_HINT} or two or more 3D frames")
    if len(path_list) == 1:
        return _read_4d_file(path_list[0])
    return _stack_frames(path_list)


def write_volume(path: PathLike, volume: np.ndarray, geometry: Geometry) -> None:
    """Write one 3D ``(I, J, K)`` volume; the format follows the suffix (.nii[.gz], .nrrd, .mha)."""
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"write_volume needs a 3D (I, J, K) array, got shape {volume.shape}")
    path = Path(path)
    suffix = _require_suffix(path, _WRITE_3D_SUFFIXES, "3D output")
    writer = _WRITERS[suffix]
    _write_atomically(path, suffix, lambda tmp: writer(tmp, volume, geometry, None))


def write_4d(path: PathLike, seq: Sequence4D) -> None:
    """Write a 4D series: Slicer's volume-sequence NRRD (.seq.nrrd/.nrrd) or 4D NIfTI."""
    path = Path(path)
    suffix = _require_suffix(path, _WRITE_4D_SUFFIXES, "4D output")
    _require_finite_index(seq.index_values, f"the series for {path}")
    writer = _WRITERS[suffix]
    _write_atomically(path, suffix, lambda tmp: writer(tmp, seq.frames, seq.geometry, seq))


def check_output_path(path: PathLike, suffixes: Sequence[str] | None = None) -> None:
    """Fail early, before any long computation, if ``path`` cannot be an output.

    ``suffixes`` defaults to the 4D formats :func:`write_4d` writes; the folder must exist.
    """
    path = Path(path)
    if suffixes is None:
        _require_suffix(path, _WRITE_4D_SUFFIXES, "4D output")
    elif not path.name.lower().endswith(tuple(suffixes)):
        raise InputError(f"unsupported file type for output {path}; use {', '.join(suffixes)}")
    if not path.parent.is_dir():
        raise InputError(
            f"output folder {path.parent} does not exist; create it first or choose another path"
        )


# --------------------------------------------------------------------------- reading


def _read_4d_file(path: Path) -> Sequence4D:
    loaded = _load(path)
    if loaded.data.ndim == 3:
        raise InputError(
            f"{path} is a single 3D volume, not a 4D series; "
            f"pass two or more 3D frame files or {_4D_INPUT_HINT}"
        )
    num_frames = loaded.data.shape[0]
    if num_frames < 2:
        raise InputError(
            f"{path} has only {num_frames} frame; interpolation needs a series of at least 2 frames"
        )
    _require_finite(loaded.data, path)
    if loaded.index_values is not None:
        _require_finite_index(loaded.index_values, str(path))
    extra = {"index_name": loaded.index_name, "index_unit": loaded.index_unit}
    return Sequence4D(
        frames=loaded.data,
        geometry=loaded.geometry,
        index_values=loaded.index_values,
        **{key: value for key, value in extra.items() if value is not None},
    )


def _stack_frames(paths: list[Path]) -> Sequence4D:
    """Stack 3D files into one series; they must lie on one voxel grid to be frames of it."""
    first, geometry = read_volume(paths[0])
    frames = [first]
    for path in paths[1:]:
        volume, other = read_volume(path)
        if volume.shape != first.shape:
            raise InputError(
                f"frame {path} has shape {volume.shape} but {paths[0]} has {first.shape}; "
                "all frames must share one voxel grid (resample them first)"
            )
        if not other.allclose(geometry):
            raise InputError(
                f"frame {path} has a different origin, spacing or direction than {paths[0]}; "
                "all frames must share one voxel grid (resample them first)"
            )
        frames.append(volume)
    return Sequence4D(frames=np.stack(frames), geometry=geometry)


def _load(path: Path) -> _Loaded:
    """Dispatch on suffix after checking the file exists."""
    if not path.exists():
        raise InputError(f"input file {path} does not exist; check the path")
    if not path.is_file():
        raise InputError(f"{path} is not a file; pass a volume file ({', '.join(_READ_SUFFIXES)})")
    suffix = _require_suffix(path, _READ_SUFFIXES, "input")
    return _LOADERS[suffix](path)


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


def _load_nifti(path: Path) -> _Loaded:
    with _reading(path, "NIfTI"):
        image = nib.load(str(path))
        data = image.get_fdata(dtype=np.float32)
        affine = image.affine
    while data.ndim > 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim not in (3, 4):
        raise InputError(
            f"{path} has {data.ndim} dimensions {data.shape}; expected a 3D volume or 4D series"
        )
    geometry = _geometry_from_ras(affine, str(path))
    if data.ndim == 3:
        return _Loaded(_as_float32(data), geometry)
    meta = _nifti_index_metadata(image.header, data.shape[-1])
    return _Loaded(_as_float32(np.moveaxis(data, -1, 0)), geometry, **meta)


def _nifti_index_metadata(header: nib.Nifti1Header, num_frames: int) -> dict:
    """Index values/name/unit from our JSON comment extension, if present and consistent."""
    for extension in getattr(header, "extensions", []):
        if extension.get_code() != _NIFTI_COMMENT_CODE:
            continue
        try:
            payload = json.loads(extension.get_content())
        except (ValueError, UnicodeDecodeError):
            continue
        meta = payload.get(_NIFTI_META_KEY) if isinstance(payload, dict) else None
        values = meta.get("index_values") if isinstance(meta, dict) else None
        if (
            isinstance(values, list)
            and len(values) == num_frames
            and all(isinstance(v, (int, float)) for v in values)
        ):
            return {
                "index_values": [float(v) for v in values],
                "index_name": str(meta.get("index_name", "time")),
                "index_unit": str(meta.get("index_unit", "")),
            }
    return {}


def _load_itk(path: Path) -> _Loaded:
    with _reading(path, "MetaImage"):
        image = sitk.ReadImage(str(path))
        array = sitk.GetArrayFromImage(image)
    dimension = image.GetDimension()
    if image.GetNumberOfComponentsPerPixel() != 1 or dimension not in (3, 4):
        raise InputError(
            f"{path} is a {dimension}D image with {image.GetNumberOfComponentsPerPixel()} "
            "components per voxel; expected a scalar 3D volume or 4D series"
        )
    # SimpleITK's array is in reversed index order: (K, J, I) or (T, K, J, I).
    array = array.transpose(tuple(reversed(range(dimension))))
    if dimension == 4:
        array = np.moveaxis(array, -1, 0)
    direction = np.asarray(image.GetDirection()).reshape(dimension, dimension)[:3, :3]
    linear = direction * np.asarray(image.GetSpacing()[:3])[None, :]
    geometry = _geometry_from_lps(_lps_matrix(linear, image.GetOrigin()[:3]), str(path))
    return _Loaded(_as_float32(array), geometry)


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


_LOADERS: dict[str, Callable[[Path], _Loaded]] = {
    ".nii": _load_nifti,
    ".nii.gz": _load_nifti,
    ".nrrd": _load_nrrd,
    ".nhdr": _load_nrrd,
    ".seq.nrrd": _load_nrrd,
    ".seq.nhdr": _load_nrrd,
    ".mha": _load_itk,
    ".mhd": _load_itk,
}


# --------------------------------------------------------------------------- writing


def _write_atomically(path: Path, suffix: str, write: Callable[[Path], None]) -> None:
    """:func:`~.atomic.atomic_write` keeping the compound suffix (writers read it); SimpleITK
    reports its write failures as RuntimeError."""
    atomic_write(path, write, suffix=suffix, failures=(OSError, RuntimeError))


def _storage_array(data: np.ndarray) -> np.ndarray:
    """Array as stored on disk: float64 halves to float32, bool becomes uint8."""
    data = np.asarray(data)
    if data.dtype == np.bool_:
        return data.astype(np.uint8)
    if np.issubdtype(data.dtype, np.floating) and data.dtype != np.float32:
        return data.astype(np.float32)
    return data


def _nifti_writer(tmp: Path, data: np.ndarray, geometry: Geometry, seq: Sequence4D | None) -> None:
    """NIfTI-1 with identical qform and sform (code 1, scanner) so every reader agrees."""
    affine = ras_affine_from_geometry(geometry)
    array = _storage_array(data if seq is None else np.moveaxis(data, 0, -1))
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units(xyz="mm")
    if seq is not None:
        _set_nifti_time(image.header, seq)
    nib.save(image, str(tmp))


def _set_nifti_time(header: nib.Nifti1Header, seq: Sequence4D) -> None:
    """pixdim[4] = frame step (when uniform), toffset = first index, exact values as JSON.

    NIfTI has no per-frame time points, so the exact (possibly fractional) index values ride
    along in a comment extension that :func:`read_4d` reads back; other tools ignore it.
    """
    values = np.asarray(seq.index_values, dtype=np.float64)
    steps = np.diff(values)
    uniform = steps.size > 0 and steps[0] > 0 and np.allclose(steps, steps[0])
    header.set_xyzt_units(
        xyz="mm", t=_NIFTI_TIME_UNITS.get(seq.index_unit.strip().lower(), "unknown")
    )
    header.set_zooms(tuple(header.get_zooms()[:3]) + (float(steps[0]) if uniform else 1.0,))
    header["toffset"] = float(values[0])
    meta = {
        "index_values": [float(v) for v in values],
        "index_name": seq.index_name,
        "index_unit": seq.index_unit,
    }
    content = json.dumps({_NIFTI_META_KEY: meta}).encode("utf-8")
    header.extensions.append(nib.nifti1.Nifti1Extension(_NIFTI_COMMENT_CODE, content))


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


def _itk_writer(tmp: Path, data: np.ndarray, geometry: Geometry, seq: Sequence4D | None) -> None:
    """MetaImage via SimpleITK (3D only); ITK's direction matrix is ours, both in LPS."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(_storage_array(data).transpose(2, 1, 0)))
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(tuple(geometry.direction_matrix().ravel()))
    sitk.WriteImage(image, str(tmp), useCompression=True)


# Format by suffix; all writers take (temp path, data, geometry, sequence or None).
_WRITERS = {
    ".nii": _nifti_writer,
    ".nii.gz": _nifti_writer,
    ".nrrd": _nrrd_writer,
    ".seq.nrrd": _nrrd_writer,
    ".mha": _itk_writer,
}


# --------------------------------------------------------------------------- helpers


def _suffix(path: Path) -> str:
    """The known (possibly double) suffix of ``path`` in lower case, or ``""``."""
    name = path.name.lower()
    return next((s for s in _KNOWN_SUFFIXES if name.endswith(s) and len(name) > len(s)), "")


def _require_suffix(path: Path, allowed: Sequence[str], role: str) -> str:
    suffix = _suffix(path)
    if suffix not in allowed:
        raise InputError(
            f"unsupported file type for {role} {path}; use one of: {', '.join(allowed)}"
        )
    return suffix


def _require_finite(data: np.ndarray, path: Path) -> None:
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise InputError(
            f"{path} contains {bad} NaN or infinite voxel values; "
            "replace them (e.g. with 0) and try again"
        )


def _require_finite_index(values: Sequence[float], source: str) -> None:
    """Index values place frames in time: a NaN or infinite one places nothing."""
    bad = [k for k, v in enumerate(values) if not np.isfinite(v)]
    if bad:
        raise InputError(
            f"{source} has a non-finite index value ({values[bad[0]]}) at frame {bad[0]}; "
            "give every frame a finite index value (time point)"
        )


def _as_float32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)
