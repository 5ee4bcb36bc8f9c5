"""Seconds per case for inference and for each TTT task, with ratios against baselines
measured in the same process.

Baselines: inference time (for the TTT tasks) and a per-frame-recompute loop on this code,
which recomputes the flows and both feature pyramids for every intermediate frame as the
published inference loop does (ours computes them once per pair). It is NOT the speed of the
published code (measured here that is faster than this loop); for speed-ups against the
unoptimised path of this code and the bfloat16 tolerance see ``bench_speed.py``. Freed memory
is kept in the heap as in ``tttinterp`` (``runtime/memory.py``; ``TTT_KEEP_FREED_MEMORY=0``
measures glibc's defaults).

    python benchmarks/bench_ttt_speed.py --size 64 64 32 --size 128 128 32 --steps 5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the engine beside this script

from TTTInterpolationLib.config import TTTConfig
from TTTInterpolationLib.models.ttt import Case, run_ttt
from TTTInterpolationLib.models.ttt_model import TTTModel
from TTTInterpolationLib.runtime.memory import keep_freed_memory_unless_disabled

TIMES = [k / 8 for k in range(1, 8)]  # 7 intermediate frames, as in docs/method-notes.md §11


def _timed(fn, repeat: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def per_frame_recompute(model: TTTModel, case: Case) -> None:
    """Flows and features recomputed for every frame (the published loop's structure)."""
    with torch.no_grad():
        for t in case.times:
            model.uvinet(case.i0, case.i1, t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, action="append")
    parser.add_argument("--steps", type=int, default=5, help="TTT steps per case")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    kept = keep_freed_memory_unless_disabled()
    sizes = args.size or [[64, 64, 32]]
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, "
          f"{len(TIMES)} frames per case, {args.steps} TTT steps, freed memory kept: {kept}")
    print(f"{'size':<14} {'what':<26} {'s/case':>8} {'ratio':>10}")
    for size in sizes:
        torch.manual_seed(0)
        model = TTTModel().to(device)
        gen = torch.Generator().manual_seed(0)
        i0, i1 = (torch.rand(1, 1, *size, generator=gen).to(device) for _ in range(2))
        case = Case(i0, i1, TIMES)
        label = "x".join(map(str, size))
        base_published = _timed(lambda: per_frame_recompute(model, case), args.repeat)  # noqa: B023
        ours = _timed(lambda: run_ttt(model, [case], TTTConfig()), args.repeat)  # noqa: B023
        print(f"{label:<14} {'inference, per-frame loop':<26} {base_published:8.2f} {'1.00':>10}")
        print(f"{label:<14} {'inference (ours)':<26} {ours:8.2f} "
              f"{ours / base_published:9.2f}x")
        for task in ("rotation", "mae", "cycle"):
            config = TTTConfig(task=task, steps=args.steps)
            seconds = _timed(lambda: run_ttt(model, [case], config), args.repeat)  # noqa: B023
            print(f"{label:<14} {'TTT ' + task:<26} {seconds:8.2f} {seconds / ours:8.2f}x inf")


if __name__ == "__main__":
    main()
