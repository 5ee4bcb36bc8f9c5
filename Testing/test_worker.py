"""The background engine process, run for real: command line, progress, failure, cancel.

No Slicer here: the worker is plain Python, so it is exercised exactly as Slicer uses it,
against ``python -m TTTInterpolationLib`` in a child process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from TTTInterpolationLib.config import DEVICES, METHODS, SCHEMES, TASKS
from TTTInterpolationLib.data.phantoms.sequences import make_phantom_sequence
from TTTInterpolationLib.fileio.volume_io import read_4d, write_4d
from TTTInterpolationLib.volume import Sequence4D
from TTTInterpolationSlicerLib.worker import (
    CONTRACT,
    CUSTOM_WEIGHTS,
    DEFAULT_MODEL,
    Device,
    EngineError,
    EngineInputError,
    EngineJob,
    EngineOptions,
    JobState,
    Method,
    Model,
    ProgressEvent,
    Scheme,
    TTTTask,
    engine_environment,
    evaluate_arguments,
    find_python,
    sequence_arguments,
)

FIRST_EVENT_TIMEOUT = 60.0


def engine_command(*arguments: str | Path) -> list[str]:
    return [sys.executable, "-m", "TTTInterpolationLib", *map(str, arguments)]


def write_pair(folder: Path, size: tuple[int, int, int] = (32, 32, 16),
               nan: bool = False) -> Path:
    """Two phantom frames (ED and ES) as one ``.seq.nrrd`` at index values 0 and 1, the way
    the module writes a job; ``nan`` spoils the second."""
    phantom = make_phantom_sequence("cardiac", 10, size)
    frames = phantom.frames[[0, 4]].copy()
    if nan:
        frames[1, 0, 0, 0] = np.nan
    path = folder / "pair.seq.nrrd"
    write_4d(path, Sequence4D(frames, phantom.geometry, [0.0, 1.0]))
    return path


def wait_for_first_event(job: EngineJob) -> list[ProgressEvent]:
    deadline = time.monotonic() + FIRST_EVENT_TIMEOUT
    while time.monotonic() < deadline:
        events = job.poll()
        if events:
            return events
        time.sleep(0.05)
    job.cancel()
    raise AssertionError("the engine sent no progress line")


def poll_to_end(job: EngineJob) -> list[ProgressEvent]:
    events: list[ProgressEvent] = []
    while job.state is JobState.RUNNING:
        events += job.poll()
        time.sleep(0.05)
    return events


@pytest.mark.parametrize(("line", "expected"), [
    ('{"stage": "ttt", "fraction": 0.25, "message": "step 1/4"}',
     ProgressEvent("ttt", 0.25, "step 1/4")),
    ('{"stage": "done", "fraction": 1.0, "message": ""}\n', ProgressEvent("done", 1.0, "")),
    ('{"stage": "load", "fraction": 1.7}', ProgressEvent("load", 1.0, "")),  # clamped
    ("Warning: some library banner", None),
    ('{"fraction": 0.5}', None),
    ('{"stage": 3, "fraction": 0.5}', None),
    ("{not json", None),
])
def test_worker_parses_progress_lines(line: str, expected: ProgressEvent | None) -> None:
    assert ProgressEvent.parse(line) == expected


def test_worker_command_line_follows_engine_contract(tmp_path: Path) -> None:
    options = EngineOptions(method=Method.UVINET, ttt=TTTTask.CYCLE, scheme=Scheme.MINIBATCH,
                            steps=7, learning_rate=5e-4, weights=None, device=Device.CPU,
                            seed=3, half_resolution_flow=True)
    args = sequence_arguments(tmp_path / "in.seq.nrrd", tmp_path / "out.seq.nrrd", options,
                              frames=(0, 3), times=[0.25, 0.5])
    assert args == ["interpolate", str(tmp_path / "in.seq.nrrd"), "--frames", "0", "3",
                    "--times", "0.25", "0.5", "--method", "uvinet", "--ttt", "cycle", "--scheme",
                    "minibatch", "--steps", "7", "--device", "cpu", "--seed", "3", "--lr",
                    "0.0005", "--flow-resolution", "half", "--progress", "jsonl", "-o",
                    str(tmp_path / "out.seq.nrrd")]
    # The engine's own parser accepts every option the worker can produce.
    from TTTInterpolationLib.cli import build_parser

    parsed = build_parser().parse_args(args)
    assert (parsed.ttt, parsed.scheme, parsed.steps, parsed.lr) == ("cycle", "minibatch", 7, 5e-4)
    assert parsed.flow_resolution == "half"
    # Off (the default), the model runs as trained: the option is not passed at all.
    plain = sequence_arguments(tmp_path / "in.seq.nrrd", tmp_path / "o.seq.nrrd",
                               EngineOptions(), frames=(0, 1), times=[0.5])
    assert build_parser().parse_args(plain).flow_resolution is None


def test_worker_choices_come_from_the_engine() -> None:
    """No copies: the worker's choices, labels and defaults are the engine's contract, which
    ``tttinterp describe --json`` prints (a real subprocess) and config.py's lists define."""
    assert [m.value for m in Method] == list(METHODS)
    assert [t.value for t in TTTTask] == list(TASKS)
    assert [s.value for s in Scheme] == list(SCHEMES)
    assert [d.value for d in Device] == list(DEVICES)
    for enum_type in (Method, TTTTask, Scheme, Device):
        assert all(member.label() for member in enum_type)
    printed = subprocess.run([sys.executable, "-m", "TTTInterpolationLib", "describe", "--json"],
                             capture_output=True, text=True, timeout=60, check=True)
    described = json.loads(printed.stdout)
    assert {k: v for k, v in described.items() if k != "models"} == CONTRACT
    assert [c["label"] for c in described["choices"]["ttt"]] == [t.label() for t in TTTTask]
    defaults = EngineOptions()
    assert (defaults.steps, defaults.scheme.value, defaults.ttt.value, defaults.seed) == (
        described["defaults"]["steps"], described["defaults"]["scheme"],
        described["defaults"]["task"], described["defaults"]["seed"])
    assert described["models"]["default"] in [e["name"] for e in described["models"]["entries"]]


def test_worker_model_choices_are_the_registry_models_and_a_file() -> None:
    """The model combo box lists the registry's models with weights (``describe --json``),
    labelled by name (the default marked), then a custom file; the engine parses the name."""
    printed = subprocess.run([sys.executable, "-m", "TTTInterpolationLib", "describe", "--json"],
                             capture_output=True, text=True, timeout=60, check=True)
    models = json.loads(printed.stdout)["models"]
    names = [e["name"] for e in models["entries"] if e["available"]]
    assert [m.value for m in Model] == [*names, CUSTOM_WEIGHTS]
    assert DEFAULT_MODEL.value == models["default"] == "acdc-uvinet"
    assert DEFAULT_MODEL.label() == "acdc-uvinet (default)"
    assert Model.CUSTOM.label() == "Custom weights file"
    options = EngineOptions(weights=DEFAULT_MODEL.value)
    options.validate()  # a name, not a file: accepted
    from TTTInterpolationLib.cli import build_parser

    args = sequence_arguments(Path("in.seq.nrrd"), Path("out.seq.nrrd"), options,
                              frames=(0, 2), times=[0.5])
    assert build_parser().parse_args(args).weights == "acdc-uvinet"


@pytest.mark.parametrize(("times", "message"), [
    ([], "at least one"),
    ([0.0, 0.5], "strictly between 0 and 1"),
    ([1.0], "strictly between 0 and 1"),
])
def test_worker_rejects_bad_times(tmp_path: Path, times: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sequence_arguments(tmp_path / "a", tmp_path / "o", EngineOptions(), frames=(0, 1),
                           times=times)


@pytest.mark.parametrize(("options", "message"), [
    (EngineOptions(steps=-1), "steps"),
    (EngineOptions(learning_rate=0.0), "learning rate"),
    (EngineOptions(weights=Path("/nonexistent/model.safetensors")), "weights file not found"),
])
def test_worker_options_are_checked_before_anything_runs(options: EngineOptions,
                                                        message: str) -> None:
    with pytest.raises(ValueError, match=message):
        options.validate()


def test_worker_runs_engine_and_reports_progress(tmp_path: Path) -> None:
    pair = write_pair(tmp_path)
    output = tmp_path / "out.seq.nrrd"
    options = EngineOptions(method=Method.LINEAR, device=Device.CPU)
    args = sequence_arguments(pair, output, options, frames=(0, 1), times=[0.25, 0.5, 0.75])
    job = EngineJob(engine_command(*args), env=engine_environment())
    job.start()
    events = poll_to_end(job)

    assert job.state is JobState.SUCCEEDED, job.stderr
    assert job.returncode == 0
    assert events and events[-1].is_done
    assert job.transcript.splitlines()[-1].startswith("[done 100%] wrote 3 frames")
    assert all(0.0 <= e.fraction <= 1.0 for e in events)
    written = read_4d(output)
    assert written.index_values == pytest.approx([0.25, 0.5, 0.75])
    assert written.geometry.allclose(make_phantom_sequence("cardiac", 10, (32, 32, 16)).geometry)


def test_worker_engine_input_error_is_one_line_for_the_user(tmp_path: Path) -> None:
    pair = write_pair(tmp_path, nan=True)
    output = tmp_path / "out.seq.nrrd"
    options = EngineOptions(method=Method.LINEAR, device=Device.CPU)
    args = sequence_arguments(pair, output, options, frames=(0, 1), times=[0.5])
    job = EngineJob(engine_command(*args), env=engine_environment())
    job.start()
    assert job.wait(FIRST_EVENT_TIMEOUT) is JobState.FAILED
    assert job.returncode == 2
    error = job.error()
    assert isinstance(error, EngineInputError)
    assert "NaN" in str(error) and "\n" not in str(error)
    assert not output.exists()


def test_worker_reports_a_killed_engine_as_failure(tmp_path: Path) -> None:
    """An engine that dies (e.g. out of memory) is a failure with its exit status, not a hang."""
    pair = write_pair(tmp_path, size=(64, 64, 32))
    options = EngineOptions(method=Method.UVINET, ttt=TTTTask.CYCLE, steps=50,
                            device=Device.CPU)
    args = sequence_arguments(pair, tmp_path / "out.seq.nrrd", options, frames=(0, 1), times=[0.5])
    job = EngineJob(engine_command(*args), env=engine_environment())
    job.start()
    wait_for_first_event(job)
    os.kill(job.pid, signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
    poll_to_end(job)
    assert job.state is JobState.FAILED
    error = job.error()
    assert type(error) is EngineError
    assert str(job.returncode) in str(error)


@pytest.mark.skipif(os.name != "posix", reason="the launcher stand-in is a POSIX shell script")
def test_worker_cancel_kills_the_whole_process_tree(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Like PythonSlicer, a launcher starts the interpreter as its child: both must go,
    without psutil (Slicer does not ship it; the tests use it only to look)."""
    launcher = tmp_path / "launcher.sh"
    launcher.write_text(f'#!/bin/sh\n"{sys.executable}" "$@"\nexit $?\n')
    launcher.chmod(0o755)
    pair = write_pair(tmp_path, size=(64, 64, 32))
    output = tmp_path / "out.seq.nrrd"
    options = EngineOptions(method=Method.UVINET, ttt=TTTTask.CYCLE, steps=50,
                            device=Device.CPU)
    args = sequence_arguments(pair, output, options, frames=(0, 1), times=[0.5])
    job = EngineJob([str(launcher), "-m", "TTTInterpolationLib", *args], env=engine_environment())
    job.start()
    wait_for_first_event(job)
    tree = [psutil.Process(job.pid), *psutil.Process(job.pid).children(recursive=True)]
    assert len(tree) >= 2, "the launcher should run the engine as a child process"

    with monkeypatch.context() as without_psutil:
        without_psutil.setitem(sys.modules, "psutil", None)
        job.cancel()

    assert job.state is JobState.CANCELLED
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not output.exists()


def test_worker_evaluate_command_line_follows_engine_contract(tmp_path: Path) -> None:
    options = EngineOptions(method=Method.LINEAR, ttt=TTTTask.MAE, steps=4, device=Device.CPU,
                            seed=5, learning_rate=1e-4)
    args = evaluate_arguments(tmp_path / "frames.seq.nrrd", (0, 3),
                              [TTTTask.ROTATION, TTTTask.CYCLE, TTTTask.ROTATION],
                              tmp_path / "scores.json", options)
    from TTTInterpolationLib.cli import build_parser

    parsed = build_parser().parse_args(args)
    assert parsed.func.__name__ == "cmd_evaluate"
    # Every method is compared: method and task of the options do not leak in.
    assert (parsed.method, parsed.ttt) == (["registration", "uvinet"], ["rotation", "cycle"])
    assert (parsed.frames, parsed.steps, parsed.seed, parsed.lr) == ([[0, 3]], 4, 5, 1e-4)
    assert (parsed.progress, parsed.json) == ("jsonl", str(tmp_path / "scores.json"))


def test_worker_evaluate_command_line_under_a_protocol(tmp_path: Path) -> None:
    """x2 / x4: the engine's --protocol instead of --frames (never both, never neither)."""
    from TTTInterpolationLib.cli import build_parser

    args = evaluate_arguments(tmp_path / "frames.seq.nrrd", None, [], tmp_path / "s.json",
                              EngineOptions(), protocol="x4")
    parsed = build_parser().parse_args(args)
    assert (parsed.protocol, parsed.frames, parsed.ttt) == (["x4"], None, ["none"])
    for frames, protocol in (((0, 3), "x2"), (None, None)):
        with pytest.raises(ValueError, match="pair of frames or the protocol"):
            evaluate_arguments(tmp_path / "f.seq.nrrd", frames, [], tmp_path / "s.json",
                               EngineOptions(), protocol=protocol)


def test_worker_find_python_is_the_running_interpreter() -> None:
    """Outside Slicer sys.executable; inside, Slicer sets sys.executable to PythonSlicer."""
    assert find_python() == sys.executable


def test_worker_child_writes_utf8_whatever_the_parent_locale(tmp_path: Path) -> None:
    """Non-ASCII engine messages arrive intact even where the console encoding is not UTF-8."""
    base = dict(os.environ, PYTHONIOENCODING="ascii")  # a Windows console code page, say
    env = engine_environment(base)
    assert env["PYTHONIOENCODING"] == "utf-8"
    message = "Fichier illisible: /données/cœur_µs.nrrd (€)"
    job = EngineJob([sys.executable, "-c", f"import sys; sys.stderr.write({message!r}); "
                     "sys.exit(2)"], env=env)
    job.start()
    assert job.wait(FIRST_EVENT_TIMEOUT) is JobState.FAILED
    assert str(job.error()) == message


@pytest.mark.skipif(os.name != "posix", reason="fork and setsid are POSIX")
def test_worker_cancel_takes_one_timeout_even_when_pipes_stay_open(tmp_path: Path) -> None:
    """An engine that ignores SIGTERM and left a detached process holding its pipes.

    Such a process is outside the tree (it was re-parented), so the pipes never close; the
    GUI thread must still get control back after one timeout, not one per wait.
    """
    pid_file = tmp_path / "escaped.pid"
    script = tmp_path / "stubborn.py"
    script.write_text(textwrap.dedent(f"""
        import os, signal, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                with open({str(pid_file)!r}, "w") as f:
                    f.write(str(os.getpid()))
                time.sleep(120)
            os._exit(0)
        print('{{"stage": "load", "fraction": 0.1}}', flush=True)
        time.sleep(120)
    """))
    job = EngineJob([sys.executable, str(script)])
    job.start()
    try:
        wait_for_first_event(job)
        deadline = time.monotonic() + FIRST_EVENT_TIMEOUT
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the detached process did not start"
            time.sleep(0.05)
        started = time.monotonic()
        job.cancel(timeout=1.0)
        took = time.monotonic() - started
        assert job.state is JobState.CANCELLED
        assert not psutil.pid_exists(job.pid) or psutil.Process(job.pid).status() == \
            psutil.STATUS_ZOMBIE
        assert took < 2.0, f"cancel blocked the caller for {took:.1f} s"
    finally:
        if pid_file.exists() and pid_file.read_text():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
