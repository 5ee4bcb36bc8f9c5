"""What the module asks Slicer's Python for: requirement checks and device detection."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib
import torch
from packaging.requirements import Requirement

from TTTInterpolationSlicerLib import dependencies
from TTTInterpolationSlicerLib.worker import Device

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_slicer_requirements_are_engine_dependencies_pip_may_install() -> None:
    requirements = dependencies.read_requirements()
    assert requirements
    engine = {Requirement(r).name.lower()
              for r in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]}
    names = {Requirement(r).name.lower() for r in requirements}
    assert names <= engine, f"not engine dependencies: {names - engine}"
    assert not names & dependencies.PROTECTED_PACKAGES
    assert "psutil" in names  # the worker's process-tree cancel needs it in Slicer's Python
    assert dependencies.missing_requirements(requirements) == []  # all installed here


@pytest.mark.parametrize(("requirement", "missing"), [
    ("numpy>=1.0", False),
    ("numpy<1.0", True),
    ("tttinterpolation-no-such-package", True),
    ("psutil", False),
])
def test_slicer_missing_requirements(requirement: str, missing: bool) -> None:
    assert dependencies.missing_requirements([requirement]) == ([requirement] if missing else [])


def test_slicer_refuses_to_pip_install_packages_slicer_ships() -> None:
    with pytest.raises(dependencies.DependencyError, match="torch"):
        dependencies.installable(["nibabel", "torch>=2"])
    assert dependencies.installable(["nibabel"]) == ["nibabel"]


def test_slicer_devices_follow_what_torch_sees() -> None:
    devices = dependencies.available_devices()
    assert devices[:2] == [Device.AUTO, Device.CPU]
    assert (Device.CUDA in devices) == torch.cuda.is_available()
    text = dependencies.describe_devices(devices)
    if torch.cuda.is_available():
        assert torch.cuda.get_device_name(0) in text
    elif Device.MPS not in devices:
        assert text.startswith("No GPU found")
    assert dependencies.torch_installed()
