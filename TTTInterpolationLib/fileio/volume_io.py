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

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..volume import Geometry, Sequence4D
from .atomic import atomic_write
from .format_base import _Loaded
from .metaimage_format import _itk_writer, _load_itk
from .nifti_format import _load_nifti, _nifti_writer
from .nrrd_format import _load_nrrd, _nrrd_writer

__all__ = ["read_volume", "write_volume", "read_4d", "write_4d", "is_4d_path"]

PathLike = str | os.PathLike

# Longest first, so ".seq.nrrd" wins over ".nrrd" and ".nii.gz" over ".gz".
_KNOWN_SUFFIXES = (".seq.nrrd", ".seq.nhdr", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_READ_SUFFIXES = _KNOWN_SUFFIXES
# Detached-header formats (.nhdr, .mhd) are read-only: their data file is named after the
# header, which the atomic temp-file rename would break.
_WRITE_3D_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
_WRITE_4D_SUFFIXES = (".seq.nrrd", ".nrrd", ".nii.gz", ".nii")
_4D_INPUT_HINT = "one 4D file (.seq.nrrd, .nrrd, .nii, .nii.gz, .mha)"


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


def _write_atomically(path: Path, suffix: str, write: Callable[[Path], None]) -> None:
    """:func:`~.atomic.atomic_write` keeping the compound suffix (writers read it); SimpleITK
    reports its write failures as RuntimeError."""
    atomic_write(path, write, suffix=suffix, failures=(OSError, RuntimeError))


# Format by suffix; all writers take (temp path, data, geometry, sequence or None).
_WRITERS = {
    ".nii": _nifti_writer,
    ".nii.gz": _nifti_writer,
    ".nrrd": _nrrd_writer,
    ".seq.nrrd": _nrrd_writer,
    ".mha": _itk_writer,
}


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
