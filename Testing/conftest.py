"""Shared fixtures: small deterministic volumes and an untrained model.

Slow tests (``@pytest.mark.slow``) run only when ``TTT_RUN_SLOW=1``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("TTT_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow test: set TTT_RUN_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _deterministic_torch() -> None:
    torch.manual_seed(0)


def blob_pair(shape: tuple[int, int, int] = (32, 32, 16), shift: float = 2.0,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two smooth volumes in [0, 1]: a textured ellipsoid moved by ``shift`` voxels along axis 0."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    centre = np.array(shape, dtype=np.float32) / 2
    radii = np.array(shape, dtype=np.float32) / 4
    phase = rng.uniform(0, 2 * np.pi, 3)

    def render(offset: float) -> np.ndarray:
        x = [g - c for g, c in zip(grids, centre, strict=True)]
        x[0] = x[0] - offset
        r = np.sqrt(sum((xi / ri) ** 2 for xi, ri in zip(x, radii, strict=True)))
        body = 1.0 / (1.0 + np.exp((r - 1.0) * 8.0))
        texture = 0.5 + 0.25 * np.sin(x[0] * 0.7 + phase[0]) * np.cos(x[1] * 0.5 + phase[1])
        return (body * texture).astype(np.float32)

    return render(-shift / 2), render(shift / 2)


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    return blob_pair()


@pytest.fixture
def pair_tensors(pair: tuple[np.ndarray, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(torch.from_numpy(v)[None, None] for v in pair)  # type: ignore[return-value]


@pytest.fixture
def scene():
    """A fresh MRML scene of the real Slicer core (slicer-core)."""
    slicer = pytest.importorskip("slicer")
    return slicer.vtkMRMLScene()


@pytest.fixture
def sequences_logic(scene):
    """The sequences logic registered on ``scene``, as Slicer does; browsers need it."""
    slicer = pytest.importorskip("slicer")
    logic = slicer.vtkSlicerSequencesLogic()
    logic.SetMRMLScene(scene)
    return logic
