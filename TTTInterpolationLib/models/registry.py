"""Model registry: names of trained weights, resolved to a local file (shipped, cached, fetched).

Why a registry: the weights a user gets by default, and larger ones trained later on a GPU,
must be addable without touching code. Adding a model is a data-only change: put the file in
``TTTInterpolationLib/weights/`` (or upload it somewhere and note its URL), add an entry to
``weights/Models.json`` and a model card under ``Resources/ModelCards/``.

Registry file (``TTTInterpolationLib/weights/Models.json``, or the file named by the
``TTT_MODEL_REGISTRY`` environment variable; JSON Schema in ``weights/Models.schema.json``)::

    {
      "format": "tttinterp-models",        # required, this exact tag
      "version": 1,                        # required
      "default": "acdc-uvinet",            # entry used when no --weights is given, or null
      "models": {
        "acdc-uvinet": {
          "description": "one line for people",                           # required
          "available": true,             # false: registered but no weights yet (placeholder)
          "file": "acdc-uvinet.safetensors",  # relative to the registry file's folder
          "url": "https://.../acdc-uvinet.safetensors",  # http(s) or file://; needs sha256
          "sha256": "64 hex digits",     # checked on every resolve (shipped or downloaded)
          "bytes": 2100000,              # size, for people and the progress bar
          "license": "CC BY-NC-SA 4.0", "data": "ACDC 001-090",
          "model_card": "Resources/ModelCards/acdc-uvinet.md"  # relative to the repository
        }
      }
    }

An available entry needs ``file`` or ``url`` (or both: the shipped file first, the URL when it
is missing). Downloads go to the cache folder ``TTT_CACHE_DIR`` (default
``~/.cache/tttinterpolation``) as ``<name>-<sha256[:12]><suffix>``: written to a temp file,
checked against the sha256, then renamed, so a half-finished or corrupt download is never
used. Offline, a model that is neither shipped nor cached is an :class:`InputError` saying
where to put the file by hand.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..fileio.atomic import atomic_write
from ..fileio.hashing import sha256_file
from ..runtime.progress import NullProgress, Progress

FORMAT = "tttinterp-models"
VERSION = 1
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_REGISTRY = WEIGHTS_DIR / "Models.json"
REGISTRY_ENV = "TTT_MODEL_REGISTRY"
CACHE_ENV = "TTT_CACHE_DIR"
DEFAULT_CACHE = Path("~/.cache/tttinterpolation")
WEIGHT_SUFFIXES = (".safetensors", ".pt")
URL_SCHEMES = ("https", "http", "file")
ENTRY_KEYS = frozenset({"description", "available", "file", "url", "sha256", "bytes", "license",
                        "data", "model_card"})
DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ModelEntry:
    """One registered model; ``folder`` is where its relative ``file`` lives."""

    name: str
    description: str
    folder: Path
    available: bool = True
    file: str | None = None
    url: str | None = None
    sha256: str | None = None
    bytes: int | None = None
    license: str | None = None
    data: str | None = None
    model_card: str | None = None

    @property
    def local_path(self) -> Path | None:
        """The shipped file's path (it may be missing in a broken install)."""
        return self.folder / self.file if self.file else None

    def cache_path(self, cache: Path) -> Path:
        """Where a download of this entry is kept: name and checksum prefix, the URL's suffix."""
        suffix = Path(urllib.parse.urlparse(self.url or "").path).suffix
        return cache / f"{self.name}-{(self.sha256 or '')[:12]}{suffix}"


@dataclass(frozen=True)
class Registry:
    """The parsed registry file."""

    path: Path
    default: str | None
    models: dict[str, ModelEntry]

    def names(self) -> list[str]:
        return sorted(self.models)


def registry_path() -> Path:
    """``$TTT_MODEL_REGISTRY`` if set (a user's own catalogue, a test's), else the shipped one."""
    override = os.environ.get(REGISTRY_ENV)
    return Path(override).expanduser() if override else DEFAULT_REGISTRY


def cache_dir() -> Path:
    """``$TTT_CACHE_DIR`` or ``~/.cache/tttinterpolation`` (created on first download)."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def load_registry(path: str | os.PathLike | None = None) -> Registry:
    """Read and check a registry file; any mistake in it is one :class:`InputError` line."""
    path = Path(path) if path is not None else registry_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"model registry not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"model registry {path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{path} is not a model registry (no \"format\": \"{FORMAT}\")")
    if data.get("version") != VERSION:
        raise InputError(f"model registry {path} has version {data.get('version')!r}; "
                         f"this engine reads version {VERSION}")
    models = data.get("models")
    if not isinstance(models, dict):
        raise InputError(f"model registry {path}: \"models\" must be an object of name: entry")
    entries = {name: _entry(name, raw, path) for name, raw in models.items()}
    default = data.get("default")
    if default is not None and default not in entries:
        raise InputError(f"model registry {path}: default {default!r} is not one of its models")
    return Registry(path, default, entries)


def _entry(name: str, raw: Any, path: Path) -> ModelEntry:
    """One entry, validated: what the schema says, plus the rules JSON Schema cannot express."""
    where = f"model registry {path}, model {name!r}"
    if not isinstance(raw, dict):
        raise InputError(f"{where}: the entry must be an object")
    unknown = set(raw) - ENTRY_KEYS
    if unknown:
        raise InputError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(ENTRY_KEYS)}")
    for key in ("description", "file", "url", "sha256", "license", "data", "model_card"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise InputError(f"{where}: {key} must be a string")
    if not isinstance(raw.get("description"), str):
        raise InputError(f"{where}: a description is required")
    available = raw.get("available", True)
    if not isinstance(available, bool):
        raise InputError(f"{where}: available must be true or false")
    sha = raw.get("sha256")
    if sha is not None and not _SHA256.match(sha):
        raise InputError(f"{where}: sha256 must be 64 lower-case hex digits")
    if available:
        _check_source(where, raw.get("file"), raw.get("url"), sha)
    size = raw.get("bytes")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise InputError(f"{where}: bytes must be a non-negative integer")
    return ModelEntry(name=name, folder=path.resolve().parent, available=available,
                      **{k: raw.get(k) for k in ENTRY_KEYS - {"available"}})


def _check_source(where: str, file: str | None, url: str | None, sha: str | None) -> None:
    """An available model needs somewhere to come from, and downloads need a checksum."""
    if not file and not url:
        raise InputError(f"{where}: an available model needs a file or a url")
    for value in filter(None, (file, urllib.parse.urlparse(url or "").path)):
        if Path(value).suffix not in WEIGHT_SUFFIXES:
            raise InputError(f"{where}: {value} must end in {' or '.join(WEIGHT_SUFFIXES)}")
    if url:
        if urllib.parse.urlparse(url).scheme not in URL_SCHEMES:
            raise InputError(f"{where}: url must start with {', '.join(URL_SCHEMES)}")
        if sha is None:
            raise InputError(f"{where}: a model with a url needs its sha256")


def default_model_name(registry: Registry | None = None) -> str | None:
    """The registry's default model, or ``None`` while it has none with weights (untrained)."""
    registry = registry or load_registry()
    entry = registry.models.get(registry.default) if registry.default else None
    return entry.name if entry is not None and entry.available else None


def resolve_weights(name_or_path: str | os.PathLike, *, registry: Registry | None = None,
                    progress: Progress | None = None, cache: Path | None = None) -> Path:
    """A local checkpoint file for a path or a registered model name.

    An existing file is used as is (a path always wins over a name). A name resolves to its
    shipped file, else to its cached download, else it is downloaded now (``progress`` sees
    the fraction). Every file of a registered model is checked against its sha256.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    registry = registry or load_registry()
    entry = registry.models.get(str(name_or_path))
    if entry is None:
        raise InputError(_not_found(str(name_or_path), registry.names()))
    if not entry.available:
        raise InputError(f"model {entry.name!r} is registered but its weights are not "
                         f"available in this version ({entry.description}); pass --weights FILE")
    local = entry.local_path
    if local is not None and local.is_file():
        _verify(local, entry, "shipped file")
        return local
    if entry.url is None:
        raise InputError(f"the file of model {entry.name!r} is missing ({local}): reinstall "
                         "the package or the extension, or pass --weights FILE")
    return _cached_or_download(entry, cache or cache_dir(), progress or NullProgress())


def _not_found(text: str, names: Iterable[str]) -> str:
    """Say whether this looked like a missing file or an unknown model name."""
    looks_like_path = Path(text).suffix in WEIGHT_SUFFIXES or "/" in text or os.sep in text
    if looks_like_path:
        return f"weights file not found: {text}"
    known = ", ".join(names) or "none"
    return (f"unknown model {text!r}: not a file and not a registered model name "
            f"(registered: {known})")


def _verify(path: Path, entry: ModelEntry, what: str) -> None:
    if entry.sha256 is not None and sha256_file(path) != entry.sha256:
        raise InputError(f"{what} {path} of model {entry.name!r} does not match its sha256: "
                         "delete it and try again, or reinstall")


def _cached_or_download(entry: ModelEntry, cache: Path, progress: Progress) -> Path:
    """The cached copy if its checksum is right, else a fresh download into the cache."""
    target = entry.cache_path(cache)
    if target.is_file() and sha256_file(target) == entry.sha256:
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the model cache folder {cache} ({exc.strerror}): "
                         f"set {CACHE_ENV} to a writable folder") from None
    download(entry, target, progress)
    return target


def download(entry: ModelEntry, target: Path, progress: Progress | None = None) -> None:
    """Fetch ``entry.url`` to ``target`` atomically, checking its sha256 before the rename."""
    progress = progress or NullProgress()

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as out:
            digest = _fetch(entry, out, progress, target)
        if digest != entry.sha256:
            raise InputError(f"the download of model {entry.name!r} from {entry.url} does not "
                             f"match its sha256 (got {digest[:12]}..., expected "
                             f"{(entry.sha256 or '')[:12]}...): not used")

    atomic_write(target, write)
    progress.update("download", 1.0, f"model {entry.name} ready")


def _fetch(entry: ModelEntry, out: Any, progress: Progress, target: Path) -> str:
    """Stream the URL into ``out``; returns the sha256. Network failures become InputError."""
    digest = hashlib.sha256()
    try:
        # The scheme was checked when the registry was read: http(s) or file only.
        with urllib.request.urlopen(entry.url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or entry.bytes or 0)
            done = 0
            for block in iter(lambda: response.read(_CHUNK), b""):
                out.write(block)
                digest.update(block)
                done += len(block)
                progress.update("download", done / total if total else 0.0,
                                f"model {entry.name}: {done / 1e6:.1f} MB"
                                + (f" of {total / 1e6:.1f} MB" if total else ""))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise InputError(f"model {entry.name!r} is not cached and could not be downloaded from "
                         f"{entry.url} ({reason}); connect once, or save the file by hand as "
                         f"{target}, or pass --weights FILE") from None
    return digest.hexdigest()
