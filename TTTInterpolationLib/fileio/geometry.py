"""The one place for the RAS<->LPS flip: :class:`~.volume.Geometry` from
and to voxel-to-RAS affines (NIfTI, Slicer's IJKToRAS), and checked voxel-to-LPS matrices for
the format readers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from ..volume import Geometry

#: The one place for the RAS<->LPS flip (x and y change sign). It is its own inverse, so it
#: maps LPS to RAS too.
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


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
