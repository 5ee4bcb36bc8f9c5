"""Extension packaging: CMake lists, metadata, catalog entry, icon, module description.

A file missing from the module's CMake lists is silently not installed, and the three
metadata places (CMake, .s4ext, catalog JSON) drift apart unless something compares them.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import re
import struct
from pathlib import Path

import pytest

from TTTInterpolationSlicerLib import dependencies

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "TTTInterpolation"
# Properties of Slicer's catalog entry schema v1.0.2 ("additionalProperties": false).
CATALOG_REQUIRED = {"$schema", "category", "scm_url"}
CATALOG_ALLOWED = CATALOG_REQUIRED | {"scm_revision", "scm_type", "build_dependencies",
                                      "dicom_support_rule", "build_subdirectory", "enabled",
                                      "tier"}


def cmake_sets(path: Path) -> dict[str, list[str]]:
    """``set(NAME values...)`` of a CMakeLists (quoted values kept whole)."""
    text = re.sub(r"#[^\n]*", "", path.read_text())
    sets = {}
    for name, body in re.findall(r'set\((\w+)((?:\s+(?:"[^"]*"|[^\s")]+))*)\s*\)', text):
        sets[name] = [q or w for q, w in re.findall(r'"([^"]*)"|(\S+)', body)]
    return sets


def extension_metadata() -> dict[str, str]:
    return {k: v[0] for k, v in cmake_sets(ROOT / "CMakeLists.txt").items()
            if k.startswith("EXTENSION_")}


def s4ext() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "TTTInterpolation.s4ext").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            entries[key] = value.strip()
    return entries


def test_slicer_module_cmake_lists_every_file() -> None:
    sets = cmake_sets(MODULE_DIR / "CMakeLists.txt")
    module = sets["MODULE_NAME"][0]
    listed = {item.replace("${MODULE_NAME}", module)
              for item in sets["MODULE_PYTHON_SCRIPTS"] + sets["MODULE_PYTHON_RESOURCES"]}
    on_disk = {p.relative_to(MODULE_DIR).as_posix() for p in MODULE_DIR.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.name != "CMakeLists.txt"}
    assert listed == on_disk


def test_slicer_module_cmake_builds_scripted_module_with_tests() -> None:
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    assert re.search(r"slicerMacroBuildScriptedModule\(.*WITH_GENERIC_TESTS", text, re.S)
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text


def test_slicer_extension_cmake_metadata_and_structure() -> None:
    metadata = extension_metadata()
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL",
                "SCREENSHOTURLS", "DEPENDS"):
        assert metadata.get(f"EXTENSION_{key}"), f"EXTENSION_{key} is empty"
    assert metadata["EXTENSION_DEPENDS"] == "PyTorch"
    text = (ROOT / "CMakeLists.txt").read_text()
    for needed in ("project(TTTInterpolation)", "find_package(Slicer REQUIRED)",
                   "include(${Slicer_USE_FILE})", "add_subdirectory(TTTInterpolation)",
                   "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
                   "include(${Slicer_EXTENSION_CPACK})"):
        assert needed in text
    # The engine package is installed next to the module, not in a subfolder of its own.
    rule = re.search(r"ctkMacroCompilePythonScript\((.*?)\)\n", text, re.S).group(1)
    assert "TTTInterpolationLib/*.py" in text and "NO_INSTALL_SUBDIR" in rule
    assert "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}" in rule
    assert list((ROOT / "TTTInterpolationLib").glob("*.py")), "engine package not found"


def test_slicer_s4ext_matches_cmake() -> None:
    metadata, entries = extension_metadata(), s4ext()
    assert entries["depends"] == metadata["EXTENSION_DEPENDS"]
    assert entries["category"] == metadata["EXTENSION_CATEGORY"]
    assert entries["homepage"] == metadata["EXTENSION_HOMEPAGE"]
    assert entries["iconurl"] == metadata["EXTENSION_ICONURL"]
    assert entries["description"] == metadata["EXTENSION_DESCRIPTION"]
    assert entries["contributors"] == metadata["EXTENSION_CONTRIBUTORS"]
    assert entries["screenshoturls"] == metadata["EXTENSION_SCREENSHOTURLS"]
    assert entries["scmurl"].removesuffix(".git") == metadata["EXTENSION_HOMEPAGE"]


def test_slicer_catalog_entry_follows_schema_and_cmake() -> None:
    entry = json.loads((ROOT / "TTTInterpolation.json").read_text())
    assert CATALOG_REQUIRED <= set(entry) <= CATALOG_ALLOWED
    assert re.fullmatch(r"https://raw\.githubusercontent\.com/Slicer/Slicer/main/Schemas/"
                        r"slicer-extension-catalog-entry-schema-v1\.0\.\d\.json#", entry["$schema"])
    metadata = extension_metadata()
    assert entry["category"] == metadata["EXTENSION_CATEGORY"]
    assert entry["scm_url"] == metadata["EXTENSION_HOMEPAGE"]
    assert entry["build_dependencies"] == metadata["EXTENSION_DEPENDS"].split(";")
    assert entry["scm_type"] in ("git", "local") and 1 <= entry["tier"] <= 5
    assert isinstance(entry["enabled"], bool)


@pytest.mark.parametrize("path", ["Resources/TTTInterpolation.png",
                                  "TTTInterpolation/Resources/Icons/TTTInterpolation.png"])
def test_slicer_icons_are_128_pixel_pngs(path: str) -> None:
    data = (ROOT / path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (128, 128)


RAW_URL = "https://raw.githubusercontent.com/TTTInterpolation/SlicerTTTInterpolation/main/"


def test_slicer_icon_and_screenshot_urls_point_to_files_in_the_repository() -> None:
    """The Extensions Manager downloads these: each must name a PNG that exists here."""
    metadata = extension_metadata()
    urls = [metadata["EXTENSION_ICONURL"], *metadata["EXTENSION_SCREENSHOTURLS"].split()]
    assert len(urls) >= 2
    for url in urls:
        assert url.startswith(RAW_URL), url
        path = ROOT / url.removeprefix(RAW_URL)
        assert path.is_file(), f"{url} points to a file that does not exist"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for url in urls[1:]:
        assert "/main/Resources/Screenshots/" in url


def test_slicer_minimum_version_is_stated_consistently() -> None:
    """One floor everywhere: CMake stops older builds, the module checks it at load."""
    floor = "{}.{}".format(*dependencies.MINIMUM_SLICER_VERSION)
    sets = cmake_sets(ROOT / "CMakeLists.txt")
    assert sets["TTTInterpolation_MINIMUM_SLICER_VERSION"] == [floor]
    text = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r'if\("\$\{Slicer_VERSION_MAJOR\}\.\$\{Slicer_VERSION_MINOR\}" VERSION_LESS '
                     r'"\$\{TTTInterpolation_MINIMUM_SLICER_VERSION\}"\)\s*\n\s*message\(FATAL_ERROR',
                     text)
    assert text.index("include(${Slicer_USE_FILE})") < text.index("VERSION_LESS")
    sentence = f"Requires 3D Slicer {floor} or newer."
    assert extension_metadata()["EXTENSION_DESCRIPTION"].endswith(sentence)
    assert s4ext()["description"].endswith(sentence)
    for guide in ("docs/slicer-module.md", "README.md"):  # line breaks do not matter there
        assert f"Slicer {floor} or newer" in " ".join((ROOT / guide).read_text().split())
    assert dependencies.MINIMUM_PYTHON_VERSION == (3, 10)  # Slicer 5.10 ships Python 3.12


def module_calls(name: str) -> list[ast.Call]:
    """Calls of ``name`` in the module file and the Slicer-only modules it imports."""
    paths = [MODULE_DIR / "TTTInterpolation.py",
             *(MODULE_DIR / "TTTInterpolationSlicerLib").glob("*.py")]
    return [node for path in paths for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call) and ast.unparse(node.func).split(".")[-1] == name]


def test_slicer_sample_data_source_is_registered_with_lists() -> None:
    """SampleDataSource runs len(uris) and len(fileNames): None there fails at every start."""
    calls = module_calls("registerCustomSampleDataSource")
    assert len(calls) == 1
    keywords = {k.arg: k.value for k in calls[0].keywords}
    lengths = []
    for name in ("uris", "fileNames"):
        assert name in keywords, f"registerCustomSampleDataSource without {name}"
        value = ast.literal_eval(keywords[name])
        assert isinstance(value, (list, tuple)), f"{name} must be a list"
        lengths.append(len(value))
    assert len(set(lengths)) == 1
    downloader = keywords["customDownloader"]
    assert isinstance(downloader, ast.Name)  # a named module function SampleData can call
    source = MODULE_DIR / "TTTInterpolationSlicerLib" / "module_logic.py"
    tree = ast.parse(source.read_text())
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert {downloader.id, "registerSampleData"} <= functions
    module = ast.unparse(ast.parse((MODULE_DIR / "TTTInterpolation.py").read_text()))
    assert 'slicer.app.connect(\'startupCompleted()\', module_logic.registerSampleData)' in module


def might_be_none(value: ast.expr) -> bool:
    """Whether an expression can evaluate to None by construction (``x or None`` and alike)."""
    return any(isinstance(node, ast.Constant) and node.value is None for node in ast.walk(value))


def test_slicer_message_boxes_never_get_none_details() -> None:
    """ctkMessageBox's detailedText takes text; None (``log or None``) is not text."""
    calls = [c for name in ("errorDisplay", "warningDisplay", "infoDisplay", "messageBox")
             for c in module_calls(name)]
    assert calls
    for call in calls:
        for keyword in call.keywords:
            if keyword.arg == "detailedText":
                assert not might_be_none(keyword.value), ast.unparse(call)


def test_slicer_module_description_satisfies_generic_tests() -> None:
    """Slicer's generic module tests need categories, contributors and acknowledgement text."""
    tree = ast.parse((MODULE_DIR / "TTTInterpolation.py").read_text())
    assigned = {node.targets[0].attr: node.value for node in ast.walk(tree)
                if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute)
                and ast.unparse(node.targets[0].value) == "self.parent"}
    for attribute in ("title", "categories", "contributors", "helpText", "acknowledgementText"):
        assert attribute in assigned, f"self.parent.{attribute} is not set"
    assert ast.literal_eval(assigned["categories"]) == [extension_metadata()["EXTENSION_CATEGORY"]]
    module = ast.unparse(tree)
    assert "self.parent.helpText = panel.HELP_TEXT" in module
    assert "self.parent.acknowledgementText = panel.ACKNOWLEDGEMENT_TEXT" in module
    texts = ast.parse((MODULE_DIR / "TTTInterpolationSlicerLib" / "panel.py").read_text())
    constants = {n.targets[0].id: ast.literal_eval(n.value) for n in texts.body
                 if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)
                 and isinstance(n.value, ast.Constant)}
    assert "UVI-Net" in constants["ACKNOWLEDGEMENT_TEXT"]
    assert "Test Time Training" in constants["ACKNOWLEDGEMENT_TEXT"]
    assert "logic.interpolate(" in constants["HELP_TEXT"]


def test_every_engine_subpackage_is_installed_by_pip_and_slicer() -> None:
    """A subpackage missing from pyproject's packages installs nothing; a folder without
    __init__.py is no package at all; the Slicer build globs the scripts recursively."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]
    engine = ROOT / "TTTInterpolationLib"
    for script in engine.rglob("*.py"):
        folder = script.parent
        assert (folder / "__init__.py").is_file(), f"{folder} has no __init__.py"
        name = ".".join(folder.relative_to(ROOT).parts)
        assert any(fnmatch.fnmatch(name, p) for p in find["include"]), name
    text = (ROOT / "CMakeLists.txt").read_text()
    assert "GLOB_RECURSE TTTInterpolationLib_SCRIPTS" in text


def test_slicer_extension_installs_the_licence_and_every_registered_model_card() -> None:
    """A clinician who has only the installed extension can read what the weights are and
    under which licence (the registry names each model's card)."""
    cmake = (ROOT / "CMakeLists.txt").read_text()
    block = cmake[cmake.index("set(TTTInterpolation_MODEL_CARDS"):]
    installed = block[:block.index(")")].split()[1:]
    assert "install(FILES LICENSE ${TTTInterpolation_MODEL_CARDS}" in cmake
    registry = json.loads((ROOT / "TTTInterpolationLib" / "weights" / "Models.json").read_text())
    for entry in registry["models"].values():
        if entry.get("model_card"):
            assert entry["model_card"] in installed
    for path in installed:
        assert (ROOT / path).is_file(), path

