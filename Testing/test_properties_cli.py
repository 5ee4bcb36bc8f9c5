"""Property-based tests of the command line: bad input is one line, exit 2, nothing written.

Random bad values for every option of every command, and corrupt input files, go through
``main([...])`` in-process (fast; stderr read with capsys) and, for a few, through a real
``python -m TTTInterpolationLib`` subprocess. Each must give exit code 2, exactly one line on
stderr, no traceback, and leave the output folder as it was (no output, no temp file, no
half-made folder). Inputs are tiny (16 x 16 x 8) and methods cheap (linear, no-motion), so a
bad value that slipped through would show as exit 0 in a second, not as a long run.

Deterministic: ``derandomize=True``, bounded ``max_examples``, no deadline.
"""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from TTTInterpolationLib.cli import main
from TTTInterpolationLib.data.phantoms.sequences import make_phantom_sequence
from TTTInterpolationLib.fileio.volume_io import write_4d, write_volume

CLI = settings(max_examples=250, derandomize=True, deadline=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture,
                                      HealthCheck.too_slow])
SIZE = (16, 16, 8)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A small series, ED/ES pairs with labels (ACDC layout), a file per corruption kind."""
    root = tmp_path_factory.mktemp("inputs")
    seq = make_phantom_sequence("cardiac", 6, SIZE, seed=0)
    write_4d(root / "cine.seq.nrrd", seq)
    write_4d(root / "cine.nii.gz", seq)
    pairs = root / "pairs"
    pairs.mkdir()
    labels = np.zeros(SIZE, np.float32)
    labels[4:12, 4:12, 2:6] = 3.0
    for k in (1, 2):
        for phase, frame in (("ED", 0), ("ES", 3)):
            name = f"patient{k:03d}_{phase}"
            write_volume(pairs / f"{name}.nii.gz", seq.frames[frame], seq.geometry)
            write_volume(pairs / f"{name}_gt.nii.gz", labels, seq.geometry)
    return {"cine": root / "cine.seq.nrrd", "nifti": root / "cine.nii.gz", "pairs": pairs}


# ------------------------------------------------------------------------- bad values

def _is_number(text: str, kind: type) -> bool:
    try:
        kind(text)
    except ValueError:
        return False
    return True


words = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1,
                max_size=10) | st.sampled_from(["", " ", "a\nb", "-x", "--", "1e999", "nan"])
not_int = words.filter(lambda s: not _is_int_like(s))
not_float = words.filter(lambda s: not _is_number(s, float))
non_finite = st.sampled_from(["nan", "inf", "-inf", "NaN", "Infinity"])


def _is_int_like(text: str) -> bool:
    return _is_number(text, int)


def ints(low: int | None = None, high: int | None = None) -> st.SearchStrategy[str]:
    return st.integers(low, high).map(str)


def floats(low: float | None = None, high: float | None = None) -> st.SearchStrategy[str]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False).map(repr)


def not_in(*choices: str) -> st.SearchStrategy[str]:
    return words.filter(lambda s: s not in choices)


@dataclass(frozen=True)
class Case:
    """A command with valid arguments, one option to spoil, and how to spoil it."""

    base: Callable[[dict[str, Path], Path], list[str]]
    option: str
    bad: st.SearchStrategy[str]
    count: int = 1  # values the option takes

    def argv(self, paths: dict[str, Path], out: Path, values: list[str]) -> list[str]:
        args = self.base(paths, out)
        if self.option in args:  # replace the option's valid values
            at = args.index(self.option)
            del args[at:at + 1 + self.count]
        return [*args, self.option, *values]


def interpolate(paths: dict[str, Path], out: Path) -> list[str]:
    return ["interpolate", str(paths["cine"]), "--frames", "0", "3", "--num", "1", "--method",
            "linear", "--progress", "none", "-o", str(out / "o.seq.nrrd")]


def interpolate_uvinet(paths: dict[str, Path], out: Path) -> list[str]:
    """With the network (the weights matter); an untrained one on 16 x 16 x 8 is quick."""
    return ["interpolate", str(paths["cine"]), "--frames", "0", "3", "--num", "1", "--weights",
            "untrained", "--device", "cpu", "--progress", "none", "-o", str(out / "o.seq.nrrd")]


def evaluate(paths: dict[str, Path], out: Path) -> list[str]:
    return ["evaluate", str(paths["nifti"]), "--frames", "0", "3", "--method", "linear",
            "--progress", "none", "--json", str(out / "r.json")]


def evaluate_pairs(paths: dict[str, Path], out: Path) -> list[str]:
    return ["evaluate-pairs", "--data", str(paths["pairs"]), "--cases", "all", "--size", "16",
            "16", "16", "--method", "linear", "--progress", "none", "--json",
            str(out / "p.json")]


def phantom(paths: dict[str, Path], out: Path) -> list[str]:
    return ["phantom", "--frames", "4", "--size", "16", "16", "8", "-o",
            str(out / "ph.seq.nrrd")]


def phantom_pairs(paths: dict[str, Path], out: Path) -> list[str]:
    return ["phantom", "--pairs", "2", "--size", "16", "16", "8", "-o", str(out / "pairs")]


def train(paths: dict[str, Path], out: Path) -> list[str]:
    return ["train", "--data", str(paths["pairs"]), "--epochs", "1", "--size", "16", "16",
            "16", "--device", "cpu", "--progress", "none", "--out", str(out / "m.safetensors")]


def demo(paths: dict[str, Path], out: Path) -> list[str]:
    return ["demo", "--out", str(out / "demo"), "--progress", "none", "--device", "cpu"]


CHOICES = {"--method": ("uvinet", "linear", "registration"),
           "--ttt": ("none", "rotation", "mae", "cycle"),
           "--scheme": ("online", "minibatch", "naive"), "--optimizer": ("adam", "adamw", "sgd"),
           "--adapt": ("auto", "features", "all"), "--device": ("auto", "cpu", "cuda", "mps"),
           "--progress": ("bar", "jsonl", "none")}

CASES: list[Case] = [
    Case(interpolate, "--frames", st.tuples(ints(6, 10**6) | ints(None, -1), ints(0, 5)).map(
        list) | st.tuples(ints(0, 5), not_int).map(list) | ints(0, 5).map(lambda v: [v, v]),
         count=2),
    Case(interpolate, "--num", ints(None, 0) | not_int),
    Case(interpolate, "--times", floats(1.0) | floats(None, 0.0) | non_finite | not_float),
    Case(interpolate, "--steps", ints(None, -1) | not_int),
    Case(interpolate, "--lr", floats(None, 0.0) | non_finite | not_float),
    Case(interpolate, "--seed", not_int),
    Case(interpolate_uvinet, "--seed", ints(2**64) | ints(None, -(2**63) - 1)),
    Case(interpolate_uvinet, "--weights", st.text(st.characters(
        codec="ascii", categories=("L", "N")), min_size=1, max_size=10).map(lambda s: f"no-{s}")),
    Case(interpolate, "-o", st.sampled_from(["out.txt", "nofolder/o.seq.nrrd", "o.mha", ".nii",
                                             "o.nhdr"])),
    *[Case(interpolate, option, not_in(*choices)) for option, choices in CHOICES.items()],
    Case(evaluate, "--frames", st.tuples(ints(0, 5), ints(0, 5)).filter(
        lambda p: abs(int(p[0]) - int(p[1])) <= 1).map(list), count=2),
    Case(evaluate, "--json", st.sampled_from(["r.txt", "missing/r.json", "r.json.gz"])),
    Case(evaluate, "--ttt", not_in(*CHOICES["--ttt"])),
    Case(evaluate_pairs, "--cases", st.sampled_from(["", ",", "5-1", "100-200", "nobody"])
         | words.filter(lambda s: s.strip().lower() != "all")),
    Case(evaluate_pairs, "--limit", ints(None, 0) | not_int),
    Case(evaluate_pairs, "--size", st.tuples(ints(None, 15) | ints(17, 31), ints(16, 16),
                                             ints(16, 16)).map(list), count=3),
    Case(evaluate_pairs, "--data", st.sampled_from(["/nonexistent", "."])),
    Case(phantom, "--kind", not_in("cardiac", "lung")),
    Case(phantom, "--frames", ints(None, 1) | not_int),
    Case(phantom, "--size", st.tuples(ints(None, 7), ints(8, 16), ints(8, 16)).map(list),
         count=3),
    Case(phantom, "--shift", words.filter(lambda s: s.strip() not in ("", "none"))
         | st.sampled_from(["noise=-1", "gamma=0", "noise=nan", "blur=inf", "scale=-2"])),
    Case(phantom, "--pairs", ints(None, -1)),  # 0 is the default: one series, no pairs
    Case(phantom_pairs, "--seed", ints(None, -1)),
    Case(phantom_pairs, "--size", st.tuples(ints(None, 7), ints(8, 16), ints(8, 16)).map(list),
         count=3),
    Case(phantom_pairs, "--kind", not_in("cardiac", "lung")),
    Case(train, "--epochs", ints(None, 0) | not_int),
    Case(train, "--lr", floats(None, 0.0) | non_finite),
    Case(train, "--aux-weight", floats(None, -1e-9) | non_finite),
    Case(train, "--width", floats(None, 0.0) | non_finite),
    Case(train, "--zoom", floats(None, 0.0) | floats(4.001) | non_finite),
    Case(train, "--val-fraction", floats(None, -1e-9) | floats(1.0) | non_finite),
    Case(train, "--val-every", ints(None, 0)),
    Case(train, "--limit", ints(None, 0)),
    Case(train, "--seed", ints(None, -1)),
    Case(train, "--precision", not_in("auto", "fp32", "bf16", "fp16")),
    Case(train, "--resume", st.just("missing.safetensors")),
    Case(train, "--out", st.sampled_from(["m.txt", "missing/m.pt"])),
    Case(demo, "--steps", ints(None, -1) | not_int),
    Case(demo, "--weights", st.just("no-such-model")),
]


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``main(argv)`` as the console script runs it: argparse exits are exit codes too."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


def assert_refused(code: int, err: str, folder: Path, before: list[str]) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert sorted(p.name for p in folder.iterdir()) == before, "something was written"


PER_OPTION = settings(CLI, max_examples=30)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.base.__name__}{c.option}" for c in CASES])
@PER_OPTION
@given(data=st.data())
def test_bad_option_values_give_one_line_and_exit_2(inputs, capsys, case: Case, data) -> None:
    value = data.draw(case.bad, label=case.option)
    values = value if isinstance(value, list) else [value]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        argv = case.argv(inputs, out, values)
        code, err = run_main(argv, capsys)
        assert_refused(code, err, out, [])


def test_every_case_is_valid_before_it_is_spoiled(inputs, capsys, tmp_path) -> None:
    """The bases run (exit 0), so an exit 2 above is the spoiled option's doing."""
    seen = set()
    for case in CASES:
        if case.base in seen or case.base in (train, demo):  # train, demo: slow, run elsewhere
            continue
        seen.add(case.base)
        out = tmp_path / case.base.__name__
        out.mkdir()
        code, err = run_main(case.base(inputs, out), capsys)
        assert code == 0, err


# ------------------------------------------------------------------------- corrupt files

@CLI
@given(suffix=st.sampled_from([".seq.nrrd", ".nii.gz", ".nii", ".nrrd"]), data=st.data())
def test_corrupt_input_files_give_one_line_and_exit_2(inputs, capsys, suffix: str,
                                                       data) -> None:
    seq = make_phantom_sequence("cardiac", 4, SIZE, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = folder / f"in{suffix}"
        write_4d(source, seq)
        raw = bytearray(source.read_bytes())
        if data.draw(st.booleans(), label="truncate"):
            raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
        else:
            head = min(len(raw), 600)
            for _ in range(data.draw(st.integers(1, 6), label="flips")):
                raw[data.draw(st.integers(0, head - 1), label="at")] = data.draw(
                    st.integers(0, 255), label="byte")
        source.write_bytes(bytes(raw))
        out = folder / "out"
        out.mkdir()
        code, err = run_main(["interpolate", str(source), "--frames", "0", "2", "--num", "1",
                              "--method", "linear", "--progress", "none", "-o",
                              str(out / "o.seq.nrrd")], capsys)
        if code == 0:  # the damage missed everything a reader checks: a valid output then
            assert [p.name for p in out.iterdir()] == ["o.seq.nrrd"]
            return
        assert_refused(code, err, out, [])


# ------------------------------------------------------------------------- real processes

@pytest.mark.parametrize("argv", [
    ["interpolate", "{cine}", "--frames", "0", "3", "--num", "1", "--lr", "inf", "-o",
     "{out}/o.seq.nrrd"],
    ["interpolate", "{bad}", "--frames", "0", "1", "--num", "1", "-o", "{out}/o.seq.nrrd"],
    ["phantom", "--shift", "a\nb=1", "-o", "{out}/p.seq.nrrd"],
    ["demo", "--weights", "no-such-model", "--out", "{out}/demo"],
], ids=["lr-inf", "corrupt-file", "shift-newline", "demo-weights"])
def test_real_process_bad_input_is_one_line_and_exit_2(inputs, tmp_path, argv) -> None:
    bad = tmp_path / "bad.seq.nrrd"
    bad.write_bytes(inputs["cine"].read_bytes()[:300])
    out = tmp_path / "out"
    out.mkdir()
    args = [a.format(cine=inputs["cine"], bad=bad, out=out) for a in argv]
    res = subprocess.run([sys.executable, "-m", "TTTInterpolationLib", *args],
                         capture_output=True, text=True, timeout=300)
    assert_refused(res.returncode, res.stderr, out, [])


def test_non_finite_settings_are_input_errors_in_the_api_too() -> None:
    from TTTInterpolationLib.config import ModelConfig, TTTConfig
    from TTTInterpolationLib.errors import InputError

    for bad in (math.nan, math.inf):
        with pytest.raises(InputError):
            TTTConfig(lr=bad)
        with pytest.raises(InputError):
            ModelConfig(width=bad)


