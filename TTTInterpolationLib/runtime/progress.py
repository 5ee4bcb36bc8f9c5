"""Progress reporting for long work: a bar on stderr for people, JSON lines for programs.

The JSON-lines form is the contract with the Slicer module's background process: one object
per line on stdout, ``{"stage": str, "fraction": float in [0, 1], "message": str}``; the last
line of a successful run has ``"stage": "done"``.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Protocol, TextIO


class Progress(Protocol):
    """Anything that accepts progress updates."""

    def update(self, stage: str, fraction: float, message: str = "") -> None: ...

    def close(self) -> None: ...


class NullProgress:
    """Reports nothing (library calls that did not ask for progress)."""

    def update(self, stage: str, fraction: float, message: str = "") -> None:
        return None

    def close(self) -> None:
        return None


class JsonLinesProgress:
    """One JSON object per line, flushed at once so a parent process sees it live."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout

    def update(self, stage: str, fraction: float, message: str = "") -> None:
        record = {"stage": stage, "fraction": round(min(max(float(fraction), 0.0), 1.0), 4),
                  "message": message}
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()

    def close(self) -> None:
        return None


class BarProgress:
    """A tqdm bar on stderr showing overall fraction and the current stage."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self._bar: Any = None

    @property
    def bar(self) -> Any:
        """Created on first use, so a run that fails its input checks draws no bar."""
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=1000, file=self.stream, leave=False,
                             bar_format="{l_bar}{bar}| {elapsed}<{remaining}")
        return self._bar

    def update(self, stage: str, fraction: float, message: str = "") -> None:
        target = int(round(min(max(fraction, 0.0), 1.0) * 1000))
        self.bar.set_description_str(f"{stage}: {message}" if message else stage, refresh=False)
        self.bar.update(max(target - self.bar.n, 0))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def make_progress(kind: str | None) -> Progress:
    """``"jsonl"`` -> JSON lines on stdout, ``"bar"`` -> tqdm bar, ``None``/``"none"`` -> silent."""
    if kind == "jsonl":
        return JsonLinesProgress()
    if kind == "bar":
        return BarProgress()
    return NullProgress()


class SubProgress:
    """Maps a child task's 0..1 onto the slice ``[start, stop]`` of a parent's progress."""

    def __init__(self, parent: Progress, start: float, stop: float) -> None:
        self.parent, self.start, self.stop = parent, start, stop

    def update(self, stage: str, fraction: float, message: str = "") -> None:
        self.parent.update(stage, self.start + (self.stop - self.start) * fraction, message)

    def close(self) -> None:
        return None
