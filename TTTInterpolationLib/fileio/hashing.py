"""The sha256 of a file, the one checksum the engine uses (weights, downloads, registry).

Read in blocks so a large checkpoint never sits in memory twice.
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["sha256_file"]

_BLOCK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Lower-case hex sha256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
