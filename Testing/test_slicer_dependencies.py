"""What the module asks Slicer's Python for: requirements, torch, devices, the version floor.

Device detection runs for real in a child process, against this venv's torch and against
stand-in ``torch`` packages that fail the way broken installs do; the "no torch" and "old
Python" cases run real interpreters that lack torch (``-I -S``) or are Python 3.9.
"""

from __future__ import annotations

import ast
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomllib
import torch
from packaging.requirements import Requirement

from TTTInterpolationSlicerLib import dependencies
from TTTInterpolationSlicerLib.worker import Device, engine_environment

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
MODULE_DIR = ROOT / "TTTInterpolation"
MODULE_FILES = sorted(MODULE_DIR.rglob("*.py"))


def test_slicer_requirements_are_engine_dependencies_pip_may_install() -> None:
    requirements = dependencies.read_requirements()
    assert requirements
    engine = {Requirement(r).name.lower()
              for r in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]}
    names = {Requirement(r).name.lower() for r in requirements}
    assert names <= engine, f"not engine dependencies: {names - engine}"
    assert not names & dependencies.PROTECTED_PACKAGES
    assert "psutil" not in names  # cancel ends process groups with the standard library
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


def fake_torch(folder: Path, body: str) -> dict[str, str]:
    """An environment whose ``import torch`` runs ``body`` (a stand-in for a broken install)."""
    package = folder / "torch"
    package.mkdir()
    (package / "__init__.py").write_text(body)
    env = engine_environment()
    env["PYTHONPATH"] = os.pathsep.join([str(folder), env["PYTHONPATH"]])
    return env


def test_slicer_device_probe_reports_what_torch_sees() -> None:
    info = dependencies.DeviceProbe(sys.executable).wait()
    assert info.error is None
    assert info.torch_version == torch.__version__
    assert info.devices[:2] == [Device.AUTO, Device.CPU]
    assert (Device.CUDA in info.devices) == torch.cuda.is_available()
    if torch.cuda.is_available():
        assert torch.cuda.get_device_name(0) in info.describe()
    elif Device.MPS not in info.devices:
        assert info.describe().startswith("No GPU found")


@pytest.mark.parametrize("body", [
    "raise RuntimeError('CUDA driver version is insufficient')",  # not an ImportError
    "import os\nos._exit(3)",  # the interpreter dies during the import
    "cuda = None",  # a half-installed package: torch.cuda.is_available() fails
])
def test_slicer_device_probe_survives_a_broken_torch(tmp_path: Path, body: str) -> None:
    info = dependencies.DeviceProbe(sys.executable, env=fake_torch(tmp_path, body)).wait()
    assert info.devices == [Device.AUTO, Device.CPU]
    assert info.error
    assert "could not be loaded" in info.describe()


def test_slicer_device_probe_gives_up_on_a_hanging_torch(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psutil", None)  # Slicer does not ship it
    env = fake_torch(tmp_path, "import time\ntime.sleep(60)")
    probe = dependencies.DeviceProbe(sys.executable, timeout=1.0, env=env)
    started = time.monotonic()
    probe.start()
    child = probe._process
    info = probe.wait()
    assert time.monotonic() - started < 10
    assert "took over" in info.error and info.devices == [Device.AUTO, Device.CPU]
    assert child.wait(5) is not None  # the hanging child was killed


def test_slicer_device_probe_without_an_interpreter() -> None:
    info = dependencies.DeviceProbe("/nonexistent/PythonSlicer").wait()
    assert info.error and info.devices == [Device.AUTO, Device.CPU]


def test_slicer_device_probe_parses_only_its_report_line() -> None:
    info = dependencies.parse_device_probe(
        'banner\nTTT-DEVICES {"torch": "2.5", "cuda": ["A100"], "mps": false, "error": null}\n',
        "", 0)
    assert info.devices == [Device.AUTO, Device.CPU, Device.CUDA]
    assert info.describe() == "GPU found: A100 (CUDA)"
    silent = dependencies.parse_device_probe("", "Segmentation fault\n", -11)
    assert "-11" in silent.error and "Segmentation fault" in silent.error


def imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", MODULE_FILES, ids=lambda p: p.name)
def test_slicer_module_code_never_imports_torch(path: Path) -> None:
    """torch (and with it CUDA) belongs to the engine process, not to Slicer's GUI process."""
    assert "torch" not in imported_names(path)


def test_slicer_gui_process_stays_free_of_torch_and_engine_readers(tmp_path: Path) -> None:
    """What the panel does at start (device probe, phantom) loads neither torch nor nibabel.

    Run in a fresh interpreter where nibabel and pynrrd cannot be imported at all, as in a
    Slicer that has not installed them yet: the phantom still loads. torch is installed there
    (the probe finds it, in its child process) but never imported by the parent.
    """
    code = f"""
import sys
for name in ("nibabel", "nrrd"):
    sys.modules[name] = None  # import fails, like a package that is not installed
sys.path[:0] = [{str(MODULE_DIR)!r}, {str(ROOT)!r}]
import slicer
from TTTInterpolationSlicerLib import dependencies, logic, worker
scene = slicer.vtkMRMLScene()
sequences_logic = slicer.vtkSlicerSequencesLogic()
sequences_logic.SetMRMLScene(scene)
node = logic.add_phantom_sequence(scene, sequences_logic, frames=4, size=(16, 16, 8))
info = dependencies.DeviceProbe(worker.find_python(), env=worker.engine_environment()).wait()
loaded = sorted(name for name in ("torch", "nibabel", "nrrd") if sys.modules.get(name))
print(node.GetNumberOfDataNodes(), info.torch_version is not None, loaded)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == "4 True []"


def test_slicer_torch_version_is_checked_against_the_requirement() -> None:
    assert dependencies.torch_problem() is None  # torch>=2.1 is installed here
    problem = dependencies.torch_problem("torch>=99")
    assert problem and torch.__version__.split("+")[0] in problem and "torch>=99" in problem


def test_slicer_self_test_skip_reason() -> None:
    assert dependencies.self_test_skip_reason() is None  # everything is installed here
    reason = dependencies.self_test_skip_reason(["tttinterpolation-no-such-package"])
    assert "tttinterpolation-no-such-package" in reason


def test_slicer_self_test_skips_without_torch() -> None:
    """A real interpreter without site-packages (no torch, no numpy): skip, with the reason."""
    code = (f"import sys; sys.path.insert(0, {str(MODULE_DIR)!r}); "
            "from TTTInterpolationSlicerLib import dependencies; "
            "print(dependencies.self_test_skip_reason())")
    result = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "PyTorch (torch) is not installed" in result.stdout
    assert "nibabel" in result.stdout  # the engine's packages are missing there too


def self_test_class() -> ast.ClassDef:
    tree = ast.parse((MODULE_DIR / "TTTInterpolationSlicerLib" / "self_test.py").read_text())
    return next(n for n in tree.body if isinstance(n, ast.ClassDef)
                and n.name == "TTTInterpolationTest")


def test_slicer_self_test_never_installs() -> None:
    """Under --testing confirmations say yes by themselves: no install call in the self-test."""
    called = {ast.unparse(node.func).split(".")[-1] for node in ast.walk(self_test_class())
              if isinstance(node, ast.Call)}
    assert not [name for name in called if "ensure" in name.lower() or "install" in name.lower()]
    setup = next(n for n in self_test_class().body
                 if isinstance(n, ast.FunctionDef) and n.name == "setUp")
    source = ast.unparse(setup)
    assert "self_test_skip_reason" in source and "SkipTest" in source


@pytest.mark.parametrize(("python", "slicer_version", "expected"), [
    ((3, 12), (5, 10), None),
    ((3, 12), None, None),
    ((3, 9), (5, 8), "needs 3D Slicer 5.10 or newer; this is Slicer 5.8"),
    ((3, 9), None, "needs Python 3.10 or newer (3D Slicer 5.10 or newer); this Slicer runs "
                   "Python 3.9"),
    ((3, 12), (5, 6), "this is Slicer 5.6"),
])
def test_slicer_version_problem(python: tuple[int, int], slicer_version: tuple[int, int] | None,
                                expected: str | None) -> None:
    problem = dependencies.version_problem(python, slicer_version)
    if expected is None:
        assert problem is None
    else:
        assert expected in problem


def python39() -> str | None:
    """A Python 3.9 interpreter (the Python of Slicer 5.8), if this machine has one."""
    candidates = [shutil.which("python3.9"),
                  *glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9"))]
    for candidate in filter(None, candidates):
        try:
            result = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"],
                                    capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if result.returncode == 0 and result.stdout.strip() == "(3, 9)":
            return candidate
    return None


def test_slicer_module_loads_on_python39_far_enough_to_explain() -> None:
    """Slicer 5.8's Python 3.9 compiles every module file and gets the version message.

    The check must be reachable there: a syntax error or a 3.10-only construct at import
    would turn the clear message into a traceback.
    """
    python = python39()
    if python is None:
        pytest.skip("no Python 3.9 interpreter on this machine (needed to mimic Slicer 5.8)")
    files = [str(p) for p in MODULE_FILES]
    code = (f"import sys\nfor f in {files!r}: compile(open(f, encoding='utf-8').read(), f, "
            "'exec')\n"
            f"sys.path.insert(0, {str(MODULE_DIR)!r})\n"
            "from TTTInterpolationSlicerLib import dependencies, worker\n"
            "print(dependencies.version_problem(tuple(sys.version_info[:2]), (5, 8)))")
    result = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "needs 3D Slicer 5.10 or newer; this is Slicer 5.8" in result.stdout


STAND_IN_SLICER = '''
import json, os
def _log(*call):
    with open(os.environ["CALLS"], "a") as f:
        f.write(json.dumps(call) + "\\n")
class util:
    @staticmethod
    def confirmOkCancelDisplay(text, title):
        _log("confirm", text)
        return os.environ["ANSWER"] == "yes"
    @staticmethod
    def pip_install(packages):
        _log("pip_install", packages)
    @staticmethod
    def showStatusMessage(text):
        _log("status", text)
class app:
    @staticmethod
    def processEvents():
        pass
'''

STAND_IN_PYTORCH_UTILS = '''
import json, os
class PyTorchUtilsLogic:
    def installTorch(self, askConfirmation, torchVersionRequirement):
        with open(os.environ["CALLS"], "a") as f:
            f.write(json.dumps(["installTorch", askConfirmation, torchVersionRequirement]) + "\\n")
        return object()
'''


def run_ensure_all(tmp_path: Path, requirements: list[str], torch_requirement: str,
                   answer: str = "yes", extension: bool = True) -> tuple[str, list[list]]:
    """``ensure_all`` in a real interpreter whose ``slicer`` and ``PyTorchUtils`` are
    stand-ins that record each call (Slicer itself cannot run here)."""
    stubs = tmp_path / "stubs"
    (stubs / "slicer").mkdir(parents=True)
    (stubs / "slicer" / "__init__.py").write_text(STAND_IN_SLICER)
    if extension:
        (stubs / "PyTorchUtils.py").write_text(STAND_IN_PYTORCH_UTILS)
    calls = tmp_path / "calls.jsonl"
    code = (f"import sys; sys.path[:0] = [{str(stubs)!r}, {str(MODULE_DIR)!r}]\n"
            "from TTTInterpolationSlicerLib import dependencies\n"
            "try:\n"
            f"    dependencies.ensure_all({requirements!r}, {torch_requirement!r})\n"
            "    print('ok')\n"
            "except dependencies.DependencyError as error:\n"
            "    print('refused:', error)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "CALLS": str(calls),
                                             "ANSWER": answer})
    assert result.returncode == 0, result.stderr
    lines = calls.read_text().splitlines() if calls.exists() else []
    return result.stdout.strip(), [json.loads(line) for line in lines]


def test_slicer_install_asks_once_for_everything_then_installs(tmp_path: Path) -> None:
    out, calls = run_ensure_all(tmp_path, ["tttinterpolation-no-such-package"], "torch>=99")
    assert out == "ok"
    kinds = [c[0] for c in calls if c[0] != "status"]
    assert kinds == ["confirm", "pip_install", "installTorch"]
    question = calls[0][1]
    assert "tttinterpolation-no-such-package" in question and "PyTorch" in question
    assert ["pip_install", ["tttinterpolation-no-such-package"]] in calls
    assert ["installTorch", False, ">=99"] in calls  # no second question from the extension
    assert any(c[0] == "status" and "PyTorch" in c[1] for c in calls)


def test_slicer_install_checks_the_pytorch_extension_before_anything(tmp_path: Path) -> None:
    out, calls = run_ensure_all(tmp_path, ["tttinterpolation-no-such-package"], "torch>=99",
                                extension=False)
    assert out.startswith("refused:") and "Extensions Manager" in out
    assert calls == []  # nothing asked, nothing installed


def test_slicer_install_declined_installs_nothing(tmp_path: Path) -> None:
    out, calls = run_ensure_all(tmp_path, ["tttinterpolation-no-such-package"], "torch>=2.1",
                                answer="no")
    assert out.startswith("refused:") and "tttinterpolation-no-such-package" in out
    assert [c[0] for c in calls] == ["confirm"]


def test_slicer_install_with_everything_there_asks_nothing(tmp_path: Path) -> None:
    out, calls = run_ensure_all(tmp_path, ["numpy"], "torch>=2.1")
    assert (out, calls) == ("ok", [])
