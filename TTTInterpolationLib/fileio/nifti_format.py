"""NIfTI through nibabel: 3D volumes and 4D series, with the exact index values in a JSON comment
extension.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import InputError
from ..volume import Geometry, Sequence4D
from .format_base import _as_float32, _Loaded, _reading, _storage_array
from .geometry import _geometry_from_ras, ras_affine_from_geometry

_NIFTI_COMMENT_CODE = 6
_NIFTI_META_KEY = "TTTInterpolation"
_NIFTI_TIME_UNITS = {"s": "sec", "sec": "sec", "ms": "msec", "msec": "msec", "us": "usec"}


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
