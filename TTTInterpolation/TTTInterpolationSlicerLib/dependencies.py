"""What the engine needs in Slicer's Python, how to get it, and which devices it can use.

torch comes from the PyTorch extension (it picks the build that matches the GPU driver), the
other packages from pip, each only after the user agreed. The checks run without importing
the packages, so a missing or broken one is reported instead of crashing the module. torch
is never imported in Slicer's own process: the GPUs are found by a short child process
(:class:`DeviceProbe`), so CUDA is initialised only where the engine runs.

This file and ``worker`` import only the standard library and must stay importable under
Python 3.9 (Slicer 5.8), so that :func:`version_problem` can explain why the module does not
run there instead of the import failing.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .worker import Device, engine_environment, kill_process_tree, own_process_group

REQUIREMENTS_FILE = Path(__file__).resolve().parent.parent / "Resources" / "requirements.txt"
TORCH_REQUIREMENT = "torch>=2.1"
# Slicer ships these and pip must never replace them inside Slicer.
PROTECTED_PACKAGES = frozenset({"torch", "simpleitk", "requests", "numpy"})

PYTORCH_EXTENSION_MISSING = (
    "TTT Interpolation needs PyTorch, which is installed through the 'PyTorch' extension. "
    "Install it from the Extensions Manager (View > Extensions Manager > PyTorch), restart "
    "Slicer, and try again.")


# The engine needs Python 3.10+ (zip(strict=True), X | Y unions at run time); Slicer 5.8 has
# Python 3.9, Slicer 5.10 has 3.12. Keep in sync with CMakeLists.txt, the .s4ext and the
# user guide (Testing/test_slicer_packaging.py checks it).
MINIMUM_SLICER_VERSION = (5, 10)
MINIMUM_PYTHON_VERSION = (3, 10)


class DependencyError(RuntimeError):
    """A package the engine needs is missing and was not installed."""


def version_problem(python_version: Sequence[int] = tuple(sys.version_info[:2]),
                    slicer_version: Sequence[int] | None = None) -> str | None:
    """Why this Slicer cannot run the module, or ``None`` when it can.

    Checked when the module loads, so an old Slicer shows this sentence instead of a
    traceback from deep inside the engine on the first Apply.
    """
    slicer_text = "{}.{}".format(*MINIMUM_SLICER_VERSION)
    if slicer_version is not None and tuple(slicer_version[:2]) < MINIMUM_SLICER_VERSION:
        found = ".".join(str(v) for v in slicer_version)
        return (f"TTT Interpolation needs 3D Slicer {slicer_text} or newer; this is Slicer "
                f"{found}. Please install a recent Slicer from https://download.slicer.org.")
    if tuple(python_version[:2]) < MINIMUM_PYTHON_VERSION:
        found = ".".join(str(v) for v in python_version[:2])
        needed = ".".join(str(v) for v in MINIMUM_PYTHON_VERSION)
        return (f"TTT Interpolation needs Python {needed} or newer (3D Slicer {slicer_text} or "
                f"newer); this Slicer runs Python {found}. Please install a recent Slicer "
                "from https://download.slicer.org.")
    return None


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


def torch_problem(requirement: str = TORCH_REQUIREMENT) -> str | None:
    """Why the installed torch does not do (missing, or a version outside ``requirement``)."""
    if not torch_installed():
        return "PyTorch (torch) is not installed"
    if missing_requirements([requirement]):
        try:
            version = importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:  # importable but without metadata
            return None
        return f"PyTorch {version} is installed, but the engine needs {requirement}"
    return None


def self_test_skip_reason(requirements: Sequence[str] | None = None) -> str | None:
    """Why the module's self-test cannot run here, or ``None``; it never installs anything.

    Under ``Slicer --testing`` (the Extensions Index factory, ctest) confirmation boxes
    answer yes by themselves and other extensions (PyTorch) are not loaded, so installing
    from a test would download gigabytes or fail; a clear skip is the honest outcome.
    """
    problems = [problem for problem in [torch_problem()] if problem]
    missing = missing_requirements(read_requirements() if requirements is None
                                   else list(requirements))
    if missing:
        problems.append(f"missing Python packages: {', '.join(missing)}")
    if not problems:
        return None
    return ("; ".join(problems) + ". Run the module once in a normal Slicer session (Apply "
            "offers to install what is missing), then run the self-test again.")


# Run by a short child process: imports torch there, never in Slicer's own process, and
# reports whatever goes wrong (a broken CUDA install raises all sorts of errors) as text.
DEVICE_PROBE_CODE = r"""
import json, sys
info = {"torch": None, "cuda": [], "mps": False, "error": None}
try:
    import torch
    info["torch"] = torch.__version__
    if torch.cuda.is_available():
        info["cuda"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    info["mps"] = bool(mps is not None and mps.is_available())
except BaseException as error:
    info["error"] = f"{type(error).__name__}: {error}"
sys.stdout.write("TTT-DEVICES " + json.dumps(info) + "\n")
"""
DEVICE_PROBE_TIMEOUT = 120.0  # the first import of a CUDA torch can take a while
DEVICE_PROBE_PREFIX = "TTT-DEVICES "


@dataclass
class DeviceInfo:
    """What the probe found: torch's version, the CUDA GPUs, Apple MPS, or why it failed."""

    torch_version: str | None = None
    cuda_names: list[str] = field(default_factory=list)
    mps: bool = False
    error: str | None = None

    @property
    def devices(self) -> list[Device]:
        """Devices the engine can use: always auto and CPU, plus the GPUs torch sees."""
        devices = [Device.AUTO, Device.CPU]
        if self.cuda_names:
            devices.append(Device.CUDA)
        if self.mps:
            devices.append(Device.MPS)
        return devices

    def describe(self) -> str:
        """One line for the GUI saying which GPU (if any) ``Device.AUTO`` will pick."""
        if self.cuda_names:
            return f"GPU found: {self.cuda_names[0]} (CUDA)"
        if self.mps:
            return "GPU found: Apple silicon (MPS)"
        if self.error is not None:
            return f"PyTorch could not be loaded ({self.error}); the engine will report why"
        if self.torch_version is None:
            return "PyTorch is not installed yet: it is offered on the first run"
        return "No GPU found: the engine runs on the CPU (slower, but works)"


class DeviceProbe:
    """Finds the devices in a child process, polled without blocking (a Qt timer in Slicer).

    ``python`` is the engine's interpreter (PythonSlicer in Slicer). Any failure (no torch,
    a broken one, a crash, a hang past ``timeout``) ends in a :class:`DeviceInfo` that says
    so; nothing is raised to the GUI.
    """

    def __init__(self, python: str, timeout: float = DEVICE_PROBE_TIMEOUT,
                 env: dict[str, str] | None = None) -> None:
        self.python = python
        self.timeout = timeout
        self.env = env
        self.result: DeviceInfo | None = None
        self._process: subprocess.Popen[str] | None = None
        self._started = 0.0

    def start(self) -> None:
        if not torch_installed():  # nothing to probe: say so at once, without a process
            self.result = DeviceInfo()
            return
        try:
            self._process = subprocess.Popen(
                [self.python, "-c", DEVICE_PROBE_CODE], stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                errors="replace", env=self.env if self.env is not None else engine_environment(),
                **own_process_group())
        except Exception as error:  # no interpreter, no permission, ...
            self.result = DeviceInfo(error=f"{type(error).__name__}: {error}")
        self._started = time.monotonic()

    def poll(self) -> DeviceInfo | None:
        """The result once the probe ended (``None`` while it runs). Never raises: the GUI
        polls it from a timer, which must stop at the first result whatever happened."""
        if self.result is not None or self._process is None:
            return self.result
        try:
            if self._process.poll() is None:
                if time.monotonic() - self._started < self.timeout:
                    return None
                self.result = DeviceInfo(error=f"the device check took over {self.timeout:g} s")
                kill_process_tree(self._process)
                return self.result
            stdout, stderr = self._process.communicate(timeout=5)
            self.result = parse_device_probe(stdout, stderr, self._process.returncode)
        except Exception as error:
            self.result = self.result or DeviceInfo(error=f"{type(error).__name__}: {error}")
        return self.result

    @property
    def started(self) -> bool:
        return self._process is not None or self.result is not None

    def wait(self) -> DeviceInfo:
        """Start the probe if needed and block until its result is there (console, tests)."""
        if not self.started:
            self.start()
        while self.poll() is None:
            time.sleep(0.05)
        return self.result

    def cancel(self) -> None:
        if self.result is None and self._process is not None:
            with contextlib.suppress(Exception):
                kill_process_tree(self._process)
            self.result = DeviceInfo(error="the device check was stopped")


def parse_device_probe(stdout: str, stderr: str, returncode: int | None) -> DeviceInfo:
    """The probe's report line, or a :class:`DeviceInfo` that says why there was none."""
    for line in stdout.splitlines():
        if line.startswith(DEVICE_PROBE_PREFIX):
            try:
                record = json.loads(line[len(DEVICE_PROBE_PREFIX):])
                return DeviceInfo(record.get("torch"), [str(n) for n in record.get("cuda") or []],
                                  bool(record.get("mps")), record.get("error"))
            except (ValueError, TypeError, AttributeError) as error:
                return DeviceInfo(error=f"unreadable device report: {error}")
    detail = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
    return DeviceInfo(error=f"the device check exited with code {returncode}: {detail}")


@dataclass(frozen=True)
class InstallPlan:
    """What the first run still needs: pip packages, and torch (its problem, or ``None``)."""

    packages: list[str]
    torch: str | None = None

    @property
    def empty(self) -> bool:
        return not self.packages and self.torch is None

    def question(self) -> str:
        """The one confirmation asked before anything is installed."""
        lines = [*self.packages]
        if self.torch is not None:
            lines.append(f"PyTorch ({TORCH_REQUIREMENT}), through the PyTorch extension")
        return ("TTT Interpolation needs these Python packages, which will be downloaded and "
                "installed now (this may take several minutes; Slicer stays busy meanwhile):"
                "\n\n" + "\n".join(lines))


def install_plan(requirements: Sequence[str] | None = None,
                 torch_requirement: str = TORCH_REQUIREMENT) -> InstallPlan:
    """The missing pip packages and the torch problem, checked without importing either."""
    requirements = read_requirements() if requirements is None else list(requirements)
    return InstallPlan(installable(missing_requirements(requirements)),
                       torch_problem(torch_requirement))


def ensure_all(requirements: Sequence[str] | None = None,
               torch_requirement: str = TORCH_REQUIREMENT) -> None:
    """Everything a run needs, asked for once (Slicer only; the GUI's Apply and the console
    API both call it before an engine process starts).

    The PyTorch extension is checked first, so nothing is installed when torch could not
    follow; then one confirmation lists everything; then pip installs the packages and the
    PyTorch extension installs torch (pip never does: it would pick the wrong build), with
    the status bar saying what is happening. ``DependencyError`` when the user declines or
    something cannot be installed.
    """
    plan = install_plan(requirements, torch_requirement)
    if plan.empty:
        return
    torch_installer = None
    if plan.torch is not None:
        try:
            import PyTorchUtils
        except ImportError as error:
            raise DependencyError(f"{plan.torch}. {PYTORCH_EXTENSION_MISSING}") from error
        torch_installer = PyTorchUtils.PyTorchUtilsLogic()
    import slicer

    if not slicer.util.confirmOkCancelDisplay(plan.question(), "Install Python packages"):
        missing = [*plan.packages, *(["torch"] if plan.torch else [])]
        raise DependencyError(f"not installed: {', '.join(missing)}; the engine cannot run "
                              "without them")
    if plan.packages:
        _status(slicer, f"Installing {', '.join(plan.packages)}...")
        slicer.util.pip_install(plan.packages)
    if torch_installer is not None:
        _status(slicer, "Installing PyTorch (a large download)...")
        version = torch_requirement[len("torch"):]
        torch = torch_installer.installTorch(askConfirmation=False,
                                             torchVersionRequirement=version)
        if torch is None:
            raise DependencyError(f"{plan.torch}, and PyTorch was not installed, so the "
                                  "interpolation cannot run.")
    _status(slicer, "Python packages installed")


def _status(slicer: Any, text: str) -> None:
    """Show ``text`` in Slicer's status bar now (the installs block the event loop)."""
    slicer.util.showStatusMessage(text)
    slicer.app.processEvents()
