"""Every section of docs/method-notes.md that the code cites exists (the notes ship with it)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTES = ROOT / "docs" / "method-notes.md"


def test_cited_method_note_sections_exist() -> None:
    sections = set(re.findall(r"^## (\d+)\.", NOTES.read_text(encoding="utf-8"), re.M))
    cited: dict[str, set[str]] = {}
    for path in [*ROOT.glob("TTTInterpolationLib/**/*.py"), *ROOT.glob("benchmarks/*.py")]:
        text = path.read_text(encoding="utf-8")
        assert "method.md" not in text.replace("method-notes.md", ""), f"{path} cites method.md"
        for number in re.findall(r"method[- ]notes(?:\.md)? §(\d+)(?:, §(\d+))?", text):
            for n in filter(None, number):
                cited.setdefault(n, set()).add(path.name)
    assert cited, "no citations found: the pattern is out of date"
    missing = {n: files for n, files in cited.items() if n not in sections}
    assert not missing, f"cited sections missing from {NOTES.name}: {missing}"
