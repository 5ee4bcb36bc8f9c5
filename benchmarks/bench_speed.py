"""Seconds and peak memory of the hot paths, against the unoptimised float32 path of this code.

Rows, per volume size: inference of one pair with 7 intermediate frames, one training step
(joint cycle + rotation + MAE loss, forward, backward and Adam step) and one test-time-training
step of each task (rotation, mae, cycle; adapting the feature extractor as ``tttinterp`` does).
Columns, one per setting, all measured in this process with the repeats interleaved (settings
alternate, the median is reported) so a busy machine slows every setting alike:

- ``reference``: float32, channels-first activations, one plain ``grid_sample`` per warp: the
  unoptimised eager path;
- ``default``: what the engine runs by default (``auto`` precision: bfloat16 inference on a
  CPU with bfloat16 units, float32 otherwise and for every step) with the optimised layout
  (channels-last convolutions) and warps on every thread (``warp.threaded_warp``);
- ``bf16``: bfloat16 autocast (``--precision bf16``; fast on CPUs with bfloat16 units, see
  ``precision.cpu_has_fast_bf16``; on other CPUs emulated and many times slower: leave it out
  there with ``--settings reference,default``), the same layout;
- ``default-1-thread-warp`` (on request): ``default`` with each warp one plain
  ``grid_sample`` call, which PyTorch runs on one thread per batch item: what the threaded
  warp buys;
- ``default-kept-heap``: ``default`` with freed memory kept in the heap
  (``runtime.memory.keep_freed_memory``, what ``tttinterp`` and the Slicer worker run with);
  every other setting runs with glibc's defaults;
- ``kept-heap-half-flow`` (on request): ``default-kept-heap`` with the flow network at half
  resolution (``--flow-resolution half``, a model option: results change, its differences
  column says by how much on the phantom).

Beside each time: its speed-up over ``reference`` and the difference of the results from
``reference``: for inference the largest absolute voxel difference of the frames and the change
of PSNR against the phantom's true intermediate frames; for steps the relative change of the
loss and the cosine between the gradients. Peak memory is the process's largest resident set
during the call (model and Python included), sampled every 2 ms.

The stated bfloat16 tolerance (also checked by ``Testing/test_precision.py``): frames within
5e-3 of float32, PSNR within 0.05 dB, loss within 2 % (relative), gradient cosine >= 0.999.

    python benchmarks/bench_speed.py --size 64 64 32 --size 128 128 32 --repeat 3
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the engine beside this script

from TTTInterpolationLib.config import TTTConfig
from TTTInterpolationLib.data.phantoms.sequences import phantom_frames
from TTTInterpolationLib.models.ttt import trainable_parameters
from TTTInterpolationLib.models.ttt_model import TTTModel
from TTTInterpolationLib.nn.networks import channels_last_layout
from TTTInterpolationLib.nn.warp import threaded_warp
from TTTInterpolationLib.runtime.memory import kept_heap
from TTTInterpolationLib.runtime.precision import (
    auto_precision,
    autocast,
    cpu_has_fast_bf16,
    resolve_precision,
)

TIMES = [k / 8 for k in range(1, 8)]  # 7 intermediate frames, as in docs/method-notes.md §11
WEIGHTS = Path(__file__).resolve().parents[1] / "TTTInterpolationLib" / "weights"
#: setting -> (precision, channels-last layout, warp on every thread, freed memory kept,
#: flow resolution)
SETTINGS = {"reference": ("fp32", False, False, False, "full"),
            "default": ("auto", True, True, False, "full"),
            "bf16": ("bf16", True, True, False, "full"),
            "default-1-thread-warp": ("auto", True, False, False, "full"),
            "default-kept-heap": ("auto", True, True, True, "full"),
            "kept-heap-half-flow": ("auto", True, True, True, "half")}
DEFAULT_SETTINGS = "reference,default,default-kept-heap,bf16"
PHASE = 0.35  # end-diastole to about end-systole of the cardiac phantom


class PeakMemory:
    """Peak resident set of this process during a block, sampled every 2 ms (Linux)."""

    def __init__(self) -> None:
        self.peak = math.nan
        self._stop = threading.Event()

    @staticmethod
    def _rss_mib() -> float:
        try:
            pages = int(Path("/proc/self/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            return math.nan
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _poll(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss_mib())

    def __enter__(self) -> PeakMemory:
        self.peak = self._rss_mib()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss_mib())


def load_model(weights: str | None = None) -> TTTModel:
    """``weights``, else the shipped model when present (realistic flows and residuals), else
    an untrained one. The heads' trunk (``features`` or ``flow``) comes with the checkpoint
    and decides what a rotation/MAE step costs."""
    files = [Path(weights)] if weights else sorted(WEIGHTS.glob("*.safetensors"))
    if files:
        from TTTInterpolationLib.models.checkpoint import load_checkpoint

        return load_checkpoint(files[0])[0]
    torch.manual_seed(0)
    return TTTModel()


class Work:
    """The measured calls on one model and one phantom pair; each returns what is compared."""

    def __init__(self, model: TTTModel, size: tuple[int, int, int]) -> None:
        frames = phantom_frames("cardiac", [0.0, PHASE, *[PHASE * t for t in TIMES]], size)
        tensors = torch.from_numpy(frames)[:, None]
        self.i0, self.i1, self.truth = tensors[0:1], tensors[1:2], tensors[2:]
        self.pretrained = {k: v.clone() for k, v in model.state_dict().items()}
        self.model = model

    def _fresh(self) -> TTTModel:
        self.model.load_state_dict(self.pretrained)
        return self.model

    def inference(self) -> torch.Tensor:
        model = self._fresh().eval()
        return torch.cat(model.uvinet.interpolate(self.i0, self.i1, TIMES))

    def train_step(self) -> tuple[float, torch.Tensor]:
        model = self._fresh().train()
        # Gradients from the previous call would otherwise add up (loading weights keeps
        # ``.grad``), and the compared gradient would be a sum over every earlier call.
        model.zero_grad(set_to_none=True)
        for p in model.parameters():
            p.requires_grad_(True)
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, amsgrad=True)
        with autocast(self.i0.device, resolve_precision("auto", self.i0.device)):
            loss = model(self.i0, self.i1, 1.0, torch.Generator().manual_seed(0))["total"]
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        optimizer.step()
        return float(loss.detach()), grads

    def ttt_step(self, task: str) -> tuple[float, torch.Tensor]:
        """One adaptation step as ``run_ttt`` takes it (the task's default parameters and
        optimiser; a fresh copy of the model, as the online scheme starts every case)."""
        from TTTInterpolationLib.models.ttt import Case, _Adapter

        adapter = _Adapter(self._fresh(), TTTConfig(task=task, steps=1).resolved())
        loss = adapter.step(Case(self.i0, self.i1, TIMES))
        params = trainable_parameters(adapter.model, adapter.config.adapt)
        return loss, torch.cat([p.grad.flatten() for p in params])


def _psnr(frames: torch.Tensor, truth: torch.Tensor) -> float:
    err = float(((frames.double() - truth.double()) ** 2).mean())
    return math.inf if err == 0 else 20 * math.log10(1 / math.sqrt(err))


def compare(kind: str, ref, out, truth: torch.Tensor) -> str:
    if kind == "inference":
        return (f"maxabs {float((out - ref).abs().max()):.1e}, "
                f"dPSNR {_psnr(out, truth) - _psnr(ref, truth):+.3f} dB")
    (loss_ref, g_ref), (loss_out, g_out) = ref, out
    cos = float(torch.nn.functional.cosine_similarity(g_ref.double(), g_out.double(), dim=0))
    return f"dloss {abs(loss_out - loss_ref) / max(abs(loss_ref), 1e-12):.1e}, cos {cos:.5f}"


def measure(call: Callable[[], object], setting: str,
            model: TTTModel) -> tuple[object, float, float]:
    precision, layout, threaded, kept, flow_resolution = SETTINGS[setting]
    model.set_flow_resolution(flow_resolution)
    with (auto_precision(precision), channels_last_layout(layout), threaded_warp(threaded),
          kept_heap(kept), PeakMemory() as memory):
        start = time.perf_counter()
        result = call()
        seconds = time.perf_counter() - start
    return result, seconds, memory.peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, action="append")
    parser.add_argument("--repeat", type=int, default=3, help="timed repeats per setting")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", default="inference,train,rotation,mae,cycle")
    parser.add_argument("--settings", default=DEFAULT_SETTINGS,
                        help=f"comma-separated, of {', '.join(SETTINGS)}")
    parser.add_argument("--weights", help="checkpoint to time (default: the shipped model)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [tuple(s) for s in (args.size or [[64, 64, 32], [128, 128, 32]])]
    settings = args.settings.split(",")
    default = resolve_precision("auto", torch.device("cpu"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU "
          f"{torch.backends.cpu.get_cpu_capability()}, bfloat16 units: {cpu_has_fast_bf16()}, "
          f"default precision: {'bf16' if default else 'fp32'}; {len(TIMES)} frames per pair; "
          f"median of {args.repeat} interleaved repeats (one warm-up)")
    print(f"{'size':<11} {'row':<10} " + " ".join(f"{s:>44}" for s in settings))
    model = load_model(args.weights)
    print(f"heads on the {model.config.heads} trunk")
    for size in sizes:
        work = Work(model, size)
        calls = {"inference": work.inference, "train": work.train_step,
                 "rotation": lambda: work.ttt_step("rotation"),  # noqa: B023
                 "mae": lambda: work.ttt_step("mae"),  # noqa: B023
                 "cycle": lambda: work.ttt_step("cycle")}  # noqa: B023
        for row in args.rows.split(","):
            results, times, peaks = {}, {s: [] for s in settings}, {s: 0.0 for s in settings}
            for repeat in range(args.repeat + 1):
                for s in settings:
                    result, seconds, peak = measure(calls[row], s, model)
                    results.setdefault(s, result)
                    peaks[s] = max(peaks[s], peak)
                    if repeat:  # the first round warms up
                        times[s].append(seconds)
            cells = []
            ref = statistics.median(times[settings[0]])
            for s in settings:
                t = statistics.median(times[s])
                cell = f"{t:6.2f}s {ref / t:4.1f}x {peaks[s]:6.0f}MiB"
                if s != settings[0]:
                    cell += " " + compare(row, results[settings[0]], results[s], work.truth)
                cells.append(f"{cell:>44}" if s == settings[0] else cell)
            print(f"{'x'.join(map(str, size)):<11} {row:<10} " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
