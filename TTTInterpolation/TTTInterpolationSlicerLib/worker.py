"""The engine as a background process: its options, its command line, its progress, its end.

Everything the Slicer module knows about ``python -m TTTInterpolationLib`` lives here, and
nothing here imports Slicer, Qt or VTK, so the whole life of a job (start, JSON-lines
progress, failure, cancel of the whole process tree) is tested with plain Python against the
real engine. The Slicer side only polls :meth:`EngineJob.poll` from a timer.

Why a process and not a thread: torch work in Slicer's own process would freeze the GUI (the
GIL, and PythonQt calls from other threads are unsafe) and could not be stopped mid-way;
a process can be killed at any moment and takes its memory with it.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import importlib.util
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ENGINE_PACKAGE = "TTTInterpolationLib"
INPUT_ERROR_EXIT_CODE = 2  # the engine's "bad input, one line on stderr" exit code
STDERR_TAIL_LINES = 20
TRANSCRIPT_LINES = 5000  # the engine log shown in the panel: everything, up to this many lines
# Seconds a cancel may take in total (terminate, kill, reap, drain), so the GUI never waits
# on several timeouts in a row.
CANCEL_TIMEOUT = 3.0


def add_engine_to_path(source_root: Path) -> None:
    """Make ``TTTInterpolationLib`` importable in a source checkout.

    An installed extension has the package next to the module (on ``sys.path``); a checkout
    added through "Additional module paths" has it one folder above the module folder.
    """
    if importlib.util.find_spec(ENGINE_PACKAGE) is None and (source_root / ENGINE_PACKAGE).is_dir():
        sys.path.append(str(source_root))


def engine_module(name: str) -> Any:
    """One of the engine's pure-Python modules (``contract``, ``frame_pairs``: no torch, no
    numpy), imported from the package next to this module, or one folder above it in a source
    checkout: the module uses the engine's own choices and checks, never copies."""
    add_engine_to_path(Path(__file__).resolve().parents[2])
    return importlib.import_module(f"{ENGINE_PACKAGE}.{name}")


#: The engine's offer (choices with labels, defaults, table columns) as the GUI and the
#: console API use it: read from the engine itself, never copied (``tttinterp describe``).
CONTRACT: dict[str, Any] = engine_module("contract").describe(models=False)


class LabelledEnum(enum.Enum):
    """Choices whose values are the engine's command-line names and whose labels are GUI text,
    both from the engine's contract. The parameter node's combo-box connector shows
    ``label()`` of each member.
    """

    def label(self) -> str:
        return _LABELS[type(self).__name__][self.value]


def _choices(name: str, option: str, doc: str) -> Any:
    """An enum of the engine's choices of ``option`` (members named by their values)."""
    members = [(c["value"].upper(), c["value"]) for c in CONTRACT["choices"][option]]
    made = LabelledEnum(name, members, module=__name__)
    made.__doc__ = doc
    _LABELS[name] = {c["value"]: c["label"] for c in CONTRACT["choices"][option]}
    return made


_LABELS: dict[str, dict[str, str]] = {}
Method = _choices("Method", "method", "Interpolation method (``--method``).")
TTTTask = _choices("TTTTask", "ttt", "Self-supervised task adapted at test time (``--ttt``).")
Scheme = _choices("Scheme", "scheme", "How test-time training visits the data (``--scheme``).")
Device = _choices("Device", "device", "Where the engine computes (``--device``).")
DEFAULTS: dict[str, Any] = CONTRACT["defaults"]


def _registered_models() -> dict[str, Any]:
    """The engine's model registry as ``tttinterp describe`` lists it (``default``,
    ``entries``). A registry the engine cannot read lists nothing here (the panel offers a
    weights file only); the engine names the problem when it runs."""
    try:
        return engine_module("contract").describe()["models"]
    except engine_module("errors").InputError:
        return {"default": None, "entries": []}


CUSTOM_WEIGHTS = "custom-file"  # the model choice "a weights file of my own"
_REGISTRY = _registered_models()
#: The registered models with weights (name -> the registry's entry), in registry order.
MODELS: dict[str, dict[str, Any]] = {e["name"]: e for e in _REGISTRY["entries"]
                                     if e["available"] and e["name"] not in (CUSTOM_WEIGHTS,
                                                                             "CUSTOM")}


def _model_choices() -> Any:
    """An enum of the model choices: each registered model (named and valued by its registry
    name, which the engine's ``--weights`` takes as well as a file), then ``CUSTOM``, a
    weights file of one's own. A scene stores the member's name."""
    labels = {name: f"{name} (default)" if name == _REGISTRY["default"] else name
              for name in MODELS}
    labels[CUSTOM_WEIGHTS] = "Custom weights file"
    made = LabelledEnum("Model", [*((name, name) for name in MODELS),
                                  ("CUSTOM", CUSTOM_WEIGHTS)], module=__name__)
    made.__doc__ = "Model weights: a registered model or a file of one's own (``--weights``)."
    _LABELS["Model"] = labels
    return made


Model = _model_choices()
#: The engine's default model when it has weights, else a file of one's own (left empty, the
#: engine runs untrained and says so).
DEFAULT_MODEL = Model(_REGISTRY["default"] if _REGISTRY["default"] in MODELS
                      else CUSTOM_WEIGHTS)


@dataclass(frozen=True)
class EngineOptions:
    """Engine settings shared by every pair of a run.

    ``learning_rate=None`` leaves the rate to the engine, whose default depends on the TTT
    task; ``weights=None`` uses the engine's default model, a registered model's name or a
    checkpoint file chooses the weights (``--weights``). ``half_resolution_flow`` runs the
    motion estimate on frames averaged down 2x (``--flow-resolution half``: cycle TTT about
    2x faster); off, the model runs as it was trained.
    """

    method: Method = Method(DEFAULTS["method"])
    ttt: TTTTask = TTTTask(DEFAULTS["task"])
    scheme: Scheme = Scheme(DEFAULTS["scheme"])
    steps: int = DEFAULTS["steps"]
    learning_rate: float | None = None
    weights: str | Path | None = None
    device: Device = Device.AUTO
    seed: int = DEFAULTS["seed"]
    half_resolution_flow: bool = False

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad setting, before any file is written."""
        if self.steps < 0:
            raise ValueError(f"TTT steps must be 0 or more, got {self.steps}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"learning rate must be positive, got {self.learning_rate}")
        if (self.weights is not None and str(self.weights) not in MODELS
                and not Path(self.weights).is_file()):
            raise ValueError(f"model weights file not found: {self.weights} (nor a registered "
                             f"model: {', '.join(MODELS) or 'none'})")

    def arguments(self) -> list[str]:
        """The option part of an ``interpolate`` command line."""
        return ["--method", self.method.value, "--ttt", self.ttt.value,
                *self.shared_arguments()]

    def shared_arguments(self) -> list[str]:
        """Options that ``interpolate`` and ``evaluate`` take alike (all but method and task)."""
        args = ["--scheme", self.scheme.value, "--steps", str(self.steps),
                "--device", self.device.value, "--seed", str(self.seed)]
        if self.learning_rate is not None:
            args += ["--lr", repr(float(self.learning_rate))]
        if self.weights is not None:
            args += ["--weights", str(self.weights)]
        if self.half_resolution_flow:
            args += ["--flow-resolution", "half"]
        return args


def sequence_arguments(sequence_file: Path, output: Path, options: EngineOptions, *,
                       factor: int | None = None, frames: tuple[int, int] | None = None,
                       times: Sequence[float] = ()) -> list[str]:
    """Arguments of the engine for a whole sequence file in one process: ``upsample`` by
    ``factor``, or ``interpolate`` at ``times`` between items ``frames``.

    The engine sees every frame of the sequence (the ``frames`` TTT task and the guard learn
    from the frames outside the gap) and loads the model once for all pairs.
    """
    tail = [*options.arguments(), "--progress", "jsonl", "-o", str(output)]
    if factor is not None:
        if factor < 2:
            raise ValueError(f"upsampling factor must be at least 2, got {factor}")
        return ["upsample", str(sequence_file), "--factor", str(int(factor)), *tail]
    if frames is None or not times:
        raise ValueError("give an upsampling factor, or two frames and at least one time")
    bad = [t for t in times if not 0.0 < t < 1.0]
    if bad:
        raise ValueError(f"time points must lie strictly between 0 and 1, got {bad}")
    return ["interpolate", str(sequence_file), "--frames", str(frames[0]), str(frames[1]),
            "--times", *(repr(float(t)) for t in times), *tail]


def evaluate_arguments(sequence_file: Path, frames: tuple[int, int] | None,
                       tasks: Sequence[TTTTask], output_json: Path,
                       options: EngineOptions, predictions: Path | None = None,
                       protocol: str | None = None) -> list[str]:
    """Arguments of the engine's ``evaluate`` for one sequence file.

    The engine hides the frames between ``frames`` (``--frames A B``), or with ``protocol``
    (``x2`` / ``x4``, ``frames`` then ``None``) all but every 2nd / 4th frame; predicts them
    with linear blending, registration, UVI-Net and UVI-Net + each of ``tasks`` (in that
    order, one table row each) and writes the rows to ``output_json``; with ``predictions``
    (a folder) also each setting's frames, listed in the report. ``options.method`` and
    ``options.ttt`` are not used: an evaluation always compares all of these.
    """
    if (frames is None) == (protocol is None):
        raise ValueError("give the pair of frames or the protocol of an evaluation")
    # A pair is checked by the caller (frame_pairs.frames_between), as the engine does.
    hide = ["--protocol", protocol] if protocol else ["--frames", *map(str, frames)]
    return ["evaluate", str(sequence_file), *hide,
            "--method", "registration", "uvinet",
            "--ttt", *dict.fromkeys(t.value for t in tasks or [TTTTask.NONE]),
            *options.shared_arguments(), "--progress", "jsonl", "--json", str(output_json),
            *(["--predictions", str(predictions)] if predictions is not None else [])]


def find_python() -> str:
    """Python to run the engine with: ``sys.executable``, which is PythonSlicer inside Slicer.

    Slicer sets ``sys.executable`` to its ``PythonSlicer`` launcher at start-up (it is found
    on the ``PATH`` Slicer sets up, and then the engine sees Slicer's own site-packages);
    outside Slicer (tests, scripts) it is the running interpreter, which has the engine's
    dependencies. ``shutil.which("PythonSlicer")`` is the fallback should it be empty.
    """
    python = sys.executable or shutil.which("PythonSlicer")
    if not python:
        raise RuntimeError("no Python interpreter found to run the engine with (PythonSlicer)")
    return python


def engine_root() -> Path:
    """Folder that holds the ``TTTInterpolationLib`` package (goes on the child's PYTHONPATH).

    PythonSlicer does not see the folders an extension adds to Slicer's ``sys.path`` at run
    time, so the child gets this folder explicitly.
    """
    spec = importlib.util.find_spec(ENGINE_PACKAGE)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"the {ENGINE_PACKAGE} package cannot be found on sys.path")
    return Path(spec.origin).resolve().parent.parent


def engine_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for the child: ``base`` (default: this process's) with the engine importable."""
    env = dict(os.environ if base is None else base)
    paths = [str(engine_root())] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    # The pipes are read as UTF-8; without this a Windows child writes its messages in the
    # console code page and non-ASCII text (paths, units, errors) arrives garbled.
    env["PYTHONIOENCODING"] = "utf-8"
    return env


@dataclass(frozen=True)
class ProgressEvent:
    """One progress line of the engine: ``{"stage", "fraction", "message"}``."""

    stage: str
    fraction: float
    message: str = ""

    @classmethod
    def parse(cls, line: str) -> ProgressEvent | None:
        """The event on ``line``, or ``None`` for anything that is not a progress record.

        Libraries may print to stdout too (warnings, banners); such lines are kept as log
        text rather than treated as a broken contract.
        """
        line = line.strip()
        if not line.startswith("{"):
            return None
        try:
            record = json.loads(line)
            stage = record["stage"]
            fraction = float(record["fraction"])
        except (ValueError, KeyError, TypeError):
            return None
        if not isinstance(stage, str):
            return None
        return cls(stage, min(max(fraction, 0.0), 1.0), str(record.get("message", "")))

    @property
    def is_done(self) -> bool:
        return self.stage == "done"

    def describe(self) -> str:
        """The event as one line of the engine log."""
        text = f"[{self.stage} {100 * self.fraction:3.0f}%]"
        return f"{text} {self.message}" if self.message else text


class EngineError(RuntimeError):
    """The engine failed; ``log`` holds the end of its stderr for the details box."""

    def __init__(self, message: str, returncode: int | None = None, log: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.log = log


class EngineInputError(EngineError):
    """The engine rejected its input (exit code 2): the message is meant for the user."""


class JobState(enum.Enum):
    NOT_STARTED = "not started"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class EngineJob:
    """One engine process, watched without blocking and cancelled as a whole process tree.

    Two reader threads drain stdout and stderr (a full pipe would stall the engine); the
    owner calls :meth:`poll` from its own thread (a Qt timer in Slicer) to get the progress
    events that arrived since the last call.
    """

    def __init__(self, command: Sequence[str], env: Mapping[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.command = [str(c) for c in command]
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.state = JobState.NOT_STARTED
        self.returncode: int | None = None
        self.last_event: ProgressEvent | None = None
        self.log_lines: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        # Everything the engine said, in arrival order, for the log view of the panel.
        self._transcript: collections.deque[str] = collections.deque(maxlen=TRANSCRIPT_LINES)
        self._process: subprocess.Popen[str] | None = None
        self._events: queue.Queue[ProgressEvent] = queue.Queue()
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._readers: list[threading.Thread] = []

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        if self.state is not JobState.NOT_STARTED:
            raise RuntimeError(f"job already {self.state.value}")
        self._process = subprocess.Popen(
            self.command, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
            errors="replace", bufsize=1, **own_process_group(),
        )
        self.state = JobState.RUNNING
        self._readers = [
            threading.Thread(target=self._read_stdout, args=(self._process.stdout,), daemon=True),
            threading.Thread(target=self._read_stderr, args=(self._process.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self, stream: IO[str]) -> None:
        for line in stream:
            event = ProgressEvent.parse(line)
            if event is not None:
                self._events.put(event)
                self._transcript.append(event.describe())
            elif line.strip():
                self.log_lines.append(line.rstrip())
                self._transcript.append(line.rstrip())
        stream.close()

    def _read_stderr(self, stream: IO[str]) -> None:
        for line in stream:
            if line.strip():
                self._stderr_tail.append(line.rstrip())
                self._transcript.append(line.rstrip())
        stream.close()

    def poll(self) -> list[ProgressEvent]:
        """Progress events since the last call; updates :attr:`state` once the process ended.

        The state turns final only after both pipes are drained, so no event is lost.
        """
        events = self._drain()
        if self.state is JobState.RUNNING and self._process is not None:
            code = self._process.poll()
            if code is not None and not any(r.is_alive() for r in self._readers):
                events += self._drain()
                self.returncode = code
                self.state = self._final_state(code)
        return events

    def _drain(self) -> list[ProgressEvent]:
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                break
        if events:
            self.last_event = events[-1]
        return events

    def _final_state(self, code: int) -> JobState:
        finished = self.last_event is not None and self.last_event.is_done
        return JobState.SUCCEEDED if code == 0 and finished else JobState.FAILED

    def wait(self, timeout: float | None = None) -> JobState:
        """Block until the process ends (tests, console use); returns the final state."""
        if self._process is None:
            raise RuntimeError("job not started")
        self._process.wait(timeout)
        for reader in self._readers:
            reader.join(timeout)
        self.poll()
        return self.state

    @property
    def stderr(self) -> str:
        return "\n".join(self._stderr_tail)

    @property
    def transcript(self) -> str:
        """Progress records, stdout and stderr lines in the order they arrived."""
        return "\n".join(list(self._transcript))

    def error(self) -> EngineError:
        """The exception that describes a failed job, for the user and the log."""
        tail = self.stderr
        if self.returncode == INPUT_ERROR_EXIT_CODE and tail:
            return EngineInputError(tail.splitlines()[-1], self.returncode, tail)
        if self.returncode == 0:
            message = "the engine exited without reporting that it finished"
        else:
            message = f"the engine failed with exit code {self.returncode}"
        detail = tail.splitlines()[-1] if tail else ""
        return EngineError(f"{message}: {detail}" if detail else message, self.returncode,
                           tail or "\n".join(self.log_lines))

    def raise_for_state(self) -> None:
        if self.state is JobState.FAILED:
            raise self.error()

    def cancel(self, timeout: float = CANCEL_TIMEOUT) -> None:
        """Stop the engine and every process it started, within ``timeout`` seconds in all.

        ``PythonSlicer`` is a launcher that starts the real interpreter as its child, so
        killing the direct child alone would leave the engine running. Every wait shares one
        deadline: the GUI thread calls this, and a process that escaped the tree but still
        holds the pipes must not make it wait once per pipe. The reader threads are daemons;
        one still blocked on such a pipe is left behind, not waited for.
        """
        if self.state is not JobState.RUNNING or self._process is None:
            return
        deadline = time.monotonic() + timeout
        kill_process_tree(self._process, timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(max(0.0, deadline - time.monotonic()))
        for reader in self._readers:
            reader.join(max(0.0, deadline - time.monotonic()))
        self._drain()
        self.returncode = self._process.returncode
        self.state = JobState.CANCELLED


def own_process_group() -> dict[str, Any]:
    """``Popen`` options that start a child in a process group of its own, window-less.

    :func:`kill_process_tree` then ends the child and everything it started by signalling
    the group, with the standard library alone (Slicer does not ship psutil).
    """
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NO_WINDOW
                | subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def kill_process_tree(process: subprocess.Popen, timeout: float = CANCEL_TIMEOUT) -> None:
    """End ``process`` (started with :func:`own_process_group`) and all its descendants.

    POSIX: SIGTERM to the group, half of ``timeout`` for a polite exit, then SIGKILL to
    whatever is left of the group, and the rest of ``timeout`` for it to disappear. Windows:
    ``taskkill /T /F`` ends the tree. A process that left the group on purpose (``setsid``)
    is out of reach, as it is for any tree walk once it is re-parented.
    """
    deadline = time.monotonic() + timeout
    if os.name == "nt":
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)],
                           capture_output=True, timeout=timeout,
                           creationflags=subprocess.CREATE_NO_WINDOW)
        return
    import signal

    group = process.pid  # the leader's pid; it is not reused while we have not reaped it
    _signal_group(group, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout / 2)
    _signal_group(group, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(max(0.0, deadline - time.monotonic()))
    while time.monotonic() < deadline and _signal_group(group, 0):
        time.sleep(0.01)  # members not ours to reap: init collects them within moments


def _signal_group(group: int, sig: int) -> bool:
    """Send ``sig`` to process group ``group``; whether any member was there to receive it."""
    try:
        os.killpg(group, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True
