"""In-memory 4D data: frames on one voxel grid plus that grid's physical geometry.

Convention (one place for it): arrays are indexed ``[i, j, k]`` (first axis = file's first
axis, as nibabel and ITK's index order), geometry is in LPS millimetres as in ITK/DICOM, so a
voxel ``ijk`` lies at ``origin + direction @ (spacing * ijk)``. Slicer works in RAS inside;
the conversion lives in ``volume_io`` and the Slicer module, nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Geometry:
    """Physical placement of a 3D voxel grid (LPS, millimetres)."""

    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[tuple[float, float, float], ...] = (
        (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))

    def direction_matrix(self) -> np.ndarray:
        """3x3 matrix whose column ``c`` is the LPS unit vector of array axis ``c``."""
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    def ijk_to_lps(self) -> np.ndarray:
        """4x4 homogeneous matrix mapping voxel indices to LPS millimetres."""
        m = np.eye(4)
        m[:3, :3] = self.direction_matrix() * np.asarray(self.spacing, dtype=np.float64)[None, :]
        m[:3, 3] = self.origin
        return m

    @classmethod
    def from_ijk_to_lps(cls, matrix: np.ndarray) -> Geometry:
        """Inverse of :meth:`ijk_to_lps` (spacing = column norms)."""
        matrix = np.asarray(matrix, dtype=np.float64)
        linear = matrix[:3, :3]
        spacing = np.linalg.norm(linear, axis=0)
        direction = linear / spacing[None, :]
        return cls(
            spacing=tuple(float(s) for s in spacing),
            origin=tuple(float(o) for o in matrix[:3, 3]),
            direction=tuple(tuple(float(v) for v in row) for row in direction),
        )

    def allclose(self, other: Geometry, atol: float = 1e-4) -> bool:
        """Same grid placement up to ``atol`` (file formats round to float32 or text)."""
        return bool(np.allclose(self.ijk_to_lps(), other.ijk_to_lps(), atol=atol))


@dataclass
class Sequence4D:
    """A 4D series: ``frames[t]`` is the 3D volume at index value ``index_values[t]``.

    ``frames`` has shape ``(T, I, J, K)``; ``index_values`` are the time points (frame numbers,
    or fractional positions for interpolated frames) in the same order.
    """

    frames: np.ndarray
    geometry: Geometry = field(default_factory=Geometry)
    index_values: list[float] | None = None
    index_name: str = "time"
    index_unit: str = ""

    def __post_init__(self) -> None:
        self.frames = np.asarray(self.frames)
        if self.frames.ndim != 4:
            raise ValueError(f"frames must be 4D (T, I, J, K), got shape {self.frames.shape}")
        if self.index_values is None:
            self.index_values = [float(i) for i in range(self.frames.shape[0])]
        self.index_values = [float(v) for v in self.index_values]
        if len(self.index_values) != self.frames.shape[0]:
            raise ValueError(
                f"{len(self.index_values)} index values for {self.frames.shape[0]} frames"
            )

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def shape3d(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.frames.shape[1:])  # type: ignore[return-value]
