"""What the engine needs in Slicer's Python, how to get it, and which devices it can use.

torch comes from the PyTorch extension (it picks the build that matches the GPU driver), the
other packages from pip, each only after the user agreed. The checks run without importing
the packages, so a missing or broken one is reported instead of crashing the module.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path

from .worker import Device

REQUIREMENTS_FILE = Path(__file__).resolve().parent.parent / "Resources" / "requirements.txt"
TORCH_REQUIREMENT = "torch>=2.1"
# Slicer ships these and pip must never replace them inside Slicer.
PROTECTED_PACKAGES = frozenset({"torch", "simpleitk", "requests", "numpy"})

PYTORCH_EXTENSION_MISSING = (
    "TTT Interpolation needs PyTorch, which is installed through the 'PyTorch' extension. "
    "Install it from the Extensions Manager (View > Extensions Manager > PyTorch), restart "
    "Slicer, and try again.")


class DependencyError(RuntimeError):
    """A package the engine needs is missing and was not installed."""


def read_requirements(path: Path = REQUIREMENTS_FILE) -> list[str]:
    """Requirement lines of ``path`` (comments and blank lines dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in Path(path).read_text().splitlines())
    return [line for line in lines if line]


def _name_and_check(requirement: str) -> tuple[str, Callable[[str], bool]]:
    """Distribution name of ``requirement`` and a test of an installed version against it."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # packaging is everywhere in practice; fall back to presence only
        name = requirement
        for separator in "<>=!~[; ":
            name = name.split(separator, 1)[0]
        return name, lambda version: True
    parsed = Requirement(requirement)
    return parsed.name, lambda version: parsed.specifier.contains(version, prereleases=True)


def missing_requirements(requirements: Sequence[str]) -> list[str]:
    """The requirements that are not installed, or installed in a version that does not fit."""
    missing = []
    for requirement in requirements:
        name, fits = _name_and_check(requirement)
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement)
            continue
        if not fits(version):
            missing.append(requirement)
    return missing


def installable(requirements: Sequence[str]) -> list[str]:
    """``requirements`` with a check that none of them is a package pip must not touch."""
    protected = [r for r in requirements if _name_and_check(r)[0].lower() in PROTECTED_PACKAGES]
    if protected:
        raise DependencyError(f"refusing to pip-install {', '.join(protected)} inside Slicer")
    return list(requirements)


def torch_installed() -> bool:
    """Whether torch can be imported, found without importing it (that takes seconds)."""
    return importlib.util.find_spec("torch") is not None


def available_devices() -> list[Device]:
    """Devices the engine can use here: always auto and CPU, plus the GPUs torch sees."""
    devices = [Device.AUTO, Device.CPU]
    if not torch_installed():
        return devices
    try:
        import torch
    except (ImportError, OSError):  # a broken install is reported when the engine runs
        return devices

    if torch.cuda.is_available():
        devices.append(Device.CUDA)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append(Device.MPS)
    return devices


def describe_devices(devices: Sequence[Device]) -> str:
    """One line for the GUI saying which GPU (if any) ``Device.AUTO`` will pick."""
    if Device.CUDA in devices:
        import torch

        return f"GPU found: {torch.cuda.get_device_name(0)} (CUDA)"
    if Device.MPS in devices:
        return "GPU found: Apple silicon (MPS)"
    if not torch_installed():
        return "PyTorch is not installed yet: it is offered on the first run"
    return "No GPU found: the engine runs on the CPU (slower, but works)"


def ensure_torch() -> None:
    """Make torch importable through the PyTorch extension, asking the user first (Slicer only)."""
    if torch_installed():
        return
    try:
        import PyTorchUtils
    except ImportError as error:
        raise DependencyError(PYTORCH_EXTENSION_MISSING) from error
    version = TORCH_REQUIREMENT.removeprefix("torch")
    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True,
                                                          torchVersionRequirement=version)
    if torch is None:
        raise DependencyError("PyTorch was not installed, so the interpolation cannot run.")


def ensure_packages(requirements: Sequence[str] | None = None) -> None:
    """Install the missing engine packages with pip after the user agreed (Slicer only).

    Slicer 5.12+ has ``slicer.packaging.pip_ensure`` with its own dialog and restart advice;
    older versions get a confirmation box and ``slicer.util.pip_install``.
    """
    requirements = read_requirements() if requirements is None else list(requirements)
    missing = installable(missing_requirements(requirements))
    if not missing:
        return
    import slicer

    try:
        import slicer.packaging as packaging
    except ImportError:
        packaging = None
    if packaging is not None:
        packaging.pip_ensure(missing, requester="TTT Interpolation")
        return
    if not slicer.util.confirmOkCancelDisplay(
            "TTT Interpolation needs these Python packages, which will be downloaded and "
            f"installed now:\n\n{chr(10).join(missing)}", "Install Python packages"):
        raise DependencyError(f"missing Python packages: {', '.join(missing)}")
    slicer.util.pip_install(missing)


def ensure_all() -> None:
    """Everything the first run needs: pip packages (psutil included), then torch."""
    ensure_packages()
    ensure_torch()
