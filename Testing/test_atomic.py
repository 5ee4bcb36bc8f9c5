"""Atomic writes (the one helper every output goes through), strict JSON, the demo's files."""

from __future__ import annotations

import errno
import json
import math
from pathlib import Path

import pytest

from TTTInterpolationLib.errors import InputError
from TTTInterpolationLib.fileio.atomic import atomic_write, atomic_write_json, strict_json


def _refuse_json_constants(name: str) -> None:
    raise ValueError(f"not JSON: {name}")


def strict_load(text: str):
    """json.loads that refuses NaN/Infinity, as strict parsers (jq, browsers) do."""
    return json.loads(text, parse_constant=_refuse_json_constants)


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "table.txt"
    target.write_text("old")

    def disk_full(tmp: Path) -> None:
        tmp.write_text("half a tab")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    with pytest.raises(InputError, match="No space left on device") as info:
        atomic_write(target, disk_full)
    assert "\n" not in str(info.value) and ".tmp" not in str(info.value)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["table.txt"]


def test_interrupt_removes_the_temp_and_propagates(tmp_path: Path) -> None:
    def interrupted(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "x.nii.gz", interrupted, suffix=".nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_temp_keeps_the_compound_suffix(tmp_path: Path) -> None:
    seen: list[str] = []
    atomic_write(tmp_path / "out.seq.nrrd", lambda tmp: (seen.append(tmp.name),
                                                          tmp.write_text("x")), suffix=".seq.nrrd")
    assert seen[0].startswith(".out.") and seen[0].endswith(".tmp.seq.nrrd")
    assert (tmp_path / "out.seq.nrrd").read_text() == "x"


def test_missing_folder_and_folder_target_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        atomic_write(tmp_path / "nope" / "a.txt", lambda tmp: tmp.write_text("x"))
    (tmp_path / "a.txt").mkdir()
    (tmp_path / "a.txt" / "inside").write_text("keep")
    with pytest.raises(InputError, match="cannot write"):
        atomic_write(tmp_path / "a.txt", lambda tmp: tmp.write_text("x"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_a_bug_in_the_writer_keeps_its_traceback_type(tmp_path: Path) -> None:
    def buggy(tmp: Path) -> None:
        tmp.write_text("x")
        raise ZeroDivisionError("bug")

    with pytest.raises(ZeroDivisionError):
        atomic_write(tmp_path / "a.txt", buggy)
    assert list(tmp_path.iterdir()) == []


def test_strict_json_writes_null_for_non_finite_numbers(tmp_path: Path) -> None:
    value = {"PSNR": math.inf, "NMSE": -math.inf, "Dice": math.nan, "rows": [1.5, (math.inf,)]}
    assert strict_json(value) == {"PSNR": None, "NMSE": None, "Dice": None,
                                  "rows": [1.5, [None]]}
    atomic_write_json(tmp_path / "r.json", value)
    assert strict_load((tmp_path / "r.json").read_text())["PSNR"] is None
