"""Model registry: shipped data, name/path resolution, file:// downloads, cache, offline errors.

Only ``file://`` URLs are used: nothing here touches the network.
"""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from TTTInterpolationLib.data.phantoms.sequences import make_phantom_sequence
from TTTInterpolationLib.errors import InputError
from TTTInterpolationLib.fileio.hashing import sha256_file
from TTTInterpolationLib.fileio.volume_io import write_4d
from TTTInterpolationLib.models.checkpoint import load_checkpoint, save_checkpoint
from TTTInterpolationLib.models.loading import default_weights, load_model
from TTTInterpolationLib.models.registry import (
    DEFAULT_REGISTRY,
    ENTRY_KEYS,
    REGISTRY_ENV,
    WEIGHTS_DIR,
    default_model_name,
    load_registry,
    resolve_weights,
)
from TTTInterpolationLib.models.ttt_model import TTTModel

ROOT = Path(__file__).resolve().parents[1]


class Recorder:
    """A real progress sink that keeps what it was told."""

    def __init__(self) -> None:
        self.updates: list[tuple[str, float, str]] = []

    def update(self, stage: str, fraction: float, message: str = "") -> None:
        self.updates.append((stage, fraction, message))

    def close(self) -> None:
        return None


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real (small, untrained but marked trained) checkpoint file."""
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    torch.manual_seed(3)
    save_checkpoint(path, TTTModel(), {"trained": True, "note": "registry test"})
    return path


def write_registry(folder: Path, models: dict, default: str | None = None) -> Path:
    path = folder / "Models.json"
    path.write_text(json.dumps({"format": "tttinterp-models", "version": 1, "default": default,
                                "models": models}))
    return path


def url_entry(source: Path, **extra) -> dict:
    return {"description": "test model", "url": source.as_uri(), "sha256": sha256_file(source),
            **extra}


# ---------------------------------------------------------------------------- shipped data


def test_shipped_default_is_what_runs_without_weights(monkeypatch):
    """Today the default entry is a placeholder (untrained); once it is marked available the
    same test checks that it is loaded instead, so shipping weights needs no code change."""
    monkeypatch.delenv(REGISTRY_ENV, raising=False)
    name = default_model_name(load_registry(DEFAULT_REGISTRY))
    loaded = load_model(None, "cpu")
    if name is None:
        assert default_weights() is None
        assert not loaded.trained and "untrained" in loaded.source
    else:
        assert default_weights() is not None
        assert loaded.trained and loaded.source.startswith(f"{name} (")


def test_shipped_registry_follows_its_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((WEIGHTS_DIR / "Models.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json.loads(DEFAULT_REGISTRY.read_text()), schema)
    assert set(schema["$defs"]["model"]["properties"]) == ENTRY_KEYS


def test_available_models_have_their_file_and_model_card():
    for entry in load_registry(DEFAULT_REGISTRY).models.values():
        if entry.available:
            assert entry.url or entry.local_path.is_file(), entry.name
            assert entry.model_card and (ROOT / entry.model_card).is_file(), entry.name
    assert (ROOT / "Resources" / "ModelCards" / "TEMPLATE.md").is_file()


def test_weights_and_registry_are_packaged_for_pip_and_slicer():
    """pip (package-data) and the Slicer build (CMake globs) both install weights/."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["TTTInterpolationLib"]
    for name in ("weights/Models.json", "weights/Models.schema.json", "weights/m.safetensors"):
        assert any(fnmatch.fnmatch(name, pattern) for pattern in package_data), name
    cmake = (ROOT / "CMakeLists.txt").read_text()
    for pattern in ("TTTInterpolationLib/*.json", "TTTInterpolationLib/*.safetensors"):
        assert pattern in cmake


# ---------------------------------------------------------------------------- resolution


def test_existing_path_is_used_as_is(checkpoint, tmp_path):
    registry = load_registry(write_registry(tmp_path, {}))
    assert resolve_weights(checkpoint, registry=registry) == checkpoint
    assert resolve_weights(str(checkpoint), registry=registry) == checkpoint


def test_shipped_file_resolves_and_is_checked(checkpoint, tmp_path):
    local = tmp_path / "local.safetensors"
    local.write_bytes(checkpoint.read_bytes())
    entry = {"description": "local", "file": local.name, "sha256": sha256_file(checkpoint)}
    registry = load_registry(write_registry(tmp_path, {"local": entry}, default="local"))
    assert default_model_name(registry) == "local"
    assert resolve_weights("local", registry=registry) == local
    local.write_bytes(checkpoint.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(InputError, match="does not match its sha256"):
        resolve_weights("local", registry=registry)


def test_file_url_downloads_once_into_the_cache_with_progress(checkpoint, tmp_path):
    source = tmp_path / "remote" / "model.safetensors"
    source.parent.mkdir()
    source.write_bytes(checkpoint.read_bytes())
    registry = load_registry(write_registry(tmp_path, {"remote": url_entry(source)}))
    cache = tmp_path / "cache"
    progress = Recorder()
    path = resolve_weights("remote", registry=registry, progress=progress, cache=cache)
    assert path.parent == cache and path.name.startswith("remote-")
    assert path.suffix == ".safetensors"
    assert sha256_file(path) == sha256_file(checkpoint)
    assert [p.name for p in cache.iterdir()] == [path.name]  # no temp file left behind
    fractions = [f for stage, f, _ in progress.updates if stage == "download"]
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    source.unlink()  # offline from now on: the cached copy is enough
    assert resolve_weights("remote", registry=registry, cache=cache) == path


def test_offline_and_not_cached_is_a_clear_input_error(checkpoint, tmp_path):
    entry = url_entry(checkpoint)
    entry["url"] = (tmp_path / "gone" / "model.safetensors").as_uri()
    registry = load_registry(write_registry(tmp_path, {"gone": entry}))
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match="not cached and could not be downloaded") as err:
        resolve_weights("gone", registry=registry, cache=cache)
    assert str(cache) in str(err.value) and "\n" not in str(err.value)
    assert list(cache.iterdir()) == []


def test_download_with_wrong_checksum_is_not_kept(checkpoint, tmp_path):
    entry = url_entry(checkpoint)
    entry["sha256"] = "0" * 64
    registry = load_registry(write_registry(tmp_path, {"bad": entry}))
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match="does not match its sha256"):
        resolve_weights("bad", registry=registry, cache=cache)
    assert list(cache.iterdir()) == []


def test_unknown_unavailable_and_missing(tmp_path):
    models = {"later": {"description": "coming soon", "available": False},
              "broken": {"description": "file lost", "file": "lost.safetensors"}}
    registry = load_registry(write_registry(tmp_path, models, default="later"))
    assert default_model_name(registry) is None
    with pytest.raises(InputError, match="not available in this version"):
        resolve_weights("later", registry=registry)
    with pytest.raises(InputError, match="missing"):
        resolve_weights("broken", registry=registry)
    with pytest.raises(InputError, match=r"unknown model 'nope'.*registered: broken, later"):
        resolve_weights("nope", registry=registry)
    with pytest.raises(InputError, match="weights file not found"):
        resolve_weights(tmp_path / "absent.safetensors", registry=registry)


BAD_REGISTRIES = {
    "not json": ("{", "not readable JSON"),
    "wrong tag": ('{"format": "x", "version": 1, "models": {}}', "not a model registry"),
    "future version": ('{"format": "tttinterp-models", "version": 2, "models": {}}', "version"),
    "unknown key": ({"m": {"description": "d", "file": "m.pt", "colour": "red"}}, "unknown keys"),
    "no source": ({"m": {"description": "d"}}, "needs a file or a url"),
    "url without sha": ({"m": {"description": "d", "url": "https://x/m.pt"}}, "needs its sha256"),
    "ftp url": ({"m": {"description": "d", "url": "ftp://x/m.pt", "sha256": "a" * 64}},
                "url must start with"),
    "bad suffix": ({"m": {"description": "d", "file": "m.bin"}}, "must end in"),
    "bad sha": ({"m": {"description": "d", "file": "m.pt", "sha256": "xyz"}}, "64 lower-case"),
}


@pytest.mark.parametrize("case", sorted(BAD_REGISTRIES))
def test_bad_registry_is_one_input_error(case, tmp_path):
    content, message = BAD_REGISTRIES[case]
    path = tmp_path / "Models.json"
    if isinstance(content, str):
        path.write_text(content)
    else:
        write_registry(tmp_path, content)
    with pytest.raises(InputError, match=message):
        load_registry(path)


def test_default_model_added_as_data_only_is_used_by_the_cli(checkpoint, tmp_path):
    """A Models.json entry is all it takes: no --weights, downloaded, cached, not 'untrained'."""
    source = tmp_path / "published" / "acdc.safetensors"
    source.parent.mkdir()
    source.write_bytes(checkpoint.read_bytes())
    registry = write_registry(tmp_path, {"acdc": url_entry(source)}, default="acdc")
    cine = tmp_path / "cine.seq.nrrd"
    write_4d(cine, make_phantom_sequence("cardiac", 6, (32, 32, 16), seed=1))
    env = {**os.environ, REGISTRY_ENV: str(registry), "TTT_CACHE_DIR": str(tmp_path / "cache")}
    res = subprocess.run([sys.executable, "-m", "TTTInterpolationLib", "interpolate", str(cine),
                          "--frames", "0", "2", "--num", "1", "--method", "uvinet", "--device",
                          "cpu", "--progress", "none", "-o", str(tmp_path / "out.seq.nrrd")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "untrained" not in res.stderr
    assert len(list((tmp_path / "cache").glob("acdc-*.safetensors"))) == 1


def test_load_model_by_registered_name(checkpoint, tmp_path, monkeypatch):
    registry = write_registry(tmp_path, {"tiny": url_entry(checkpoint)})
    monkeypatch.setenv(REGISTRY_ENV, str(registry))
    monkeypatch.setenv("TTT_CACHE_DIR", str(tmp_path / "cache"))
    loaded = load_model("tiny", "cpu")
    assert loaded.trained and loaded.source.startswith("tiny (")
    assert loaded.info["note"] == "registry test"
    expected, _ = load_checkpoint(checkpoint)
    for key, value in expected.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
