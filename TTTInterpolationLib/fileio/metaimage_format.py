"""MetaImage (.mha/.mhd) through SimpleITK (LPS, like the engine)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..volume import Geometry, Sequence4D
from .format_base import _as_float32, _Loaded, _reading, _storage_array
from .geometry import _geometry_from_lps, _lps_matrix


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


def _itk_writer(tmp: Path, data: np.ndarray, geometry: Geometry, seq: Sequence4D | None) -> None:
    """MetaImage via SimpleITK (3D only); ITK's direction matrix is ours, both in LPS."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(_storage_array(data).transpose(2, 1, 0)))
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(tuple(geometry.direction_matrix().ravel()))
    sitk.WriteImage(image, str(tmp), useCompression=True)
