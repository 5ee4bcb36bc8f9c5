"""GPU check: train briefly with mixed precision, then time inference and TTT per case.

One command for a session that has a GPU for a few minutes (issue 4 item 5)::

    python benchmarks/gpu_check.py                      # CUDA: 128x128x32, 300 steps
    python benchmarks/gpu_check.py --device cpu --size 32 32 16 --steps 2 --ttt-steps 1

Data are cardiac phantom pairs (``TTTInterpolationLib.data.phantoms``) with a random but realistic
distribution shift each (Rician noise, gamma, coil bias, intensity scale), so nothing is
downloaded; held-out phantoms have exact intermediate frames, so the table also shows whether
the few hundred steps learnt anything (PSNR against the truth, linear blending for reference).
Training is ``TTTModel.forward`` (cycle loss + rotation + MAE heads) under autocast in the
precision ``precision.resolve_precision`` picks (bf16 on a recent GPU; float32 on CPU), with a
gradient scaler for fp16. Peak memory is ``torch.cuda.max_memory_allocated`` per phase.
``--max-train-seconds`` stops training early so the whole run fits a 10-minute device call.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from TTTInterpolationLib.config import DEFAULT_GRID_SIZE, TTTConfig
from TTTInterpolationLib.data.model_grid import normalize_minmax
from TTTInterpolationLib.data.phantoms.sequences import end_frames, phantom_frames, phase_of_frame
from TTTInterpolationLib.data.phantoms.shifts import Shift, apply_shift
from TTTInterpolationLib.models.ttt import Case, run_ttt
from TTTInterpolationLib.models.ttt_model import TTTModel
from TTTInterpolationLib.nn.metrics import psnr
from TTTInterpolationLib.runtime.device import resolve_device
from TTTInterpolationLib.runtime.precision import needs_grad_scaler, resolve_precision

CUDA_DEFAULTS = {"size": DEFAULT_GRID_SIZE, "steps": 300}  # the published cardiac grid
CPU_DEFAULTS = {"size": (32, 32, 16), "steps": 2}  # a smoke run, not a measurement
FRAMES_PER_CYCLE = 10
TASKS = ("rotation", "mae", "cycle")


@dataclass
class Row:
    """One line of the table."""

    what: str
    seconds: float  # per step (training) or per case
    unit: str
    psnr: float | None = None
    peak_mib: float | None = None
    note: str = ""


def random_shift(seed: int) -> Shift:
    """A plausible scanner/protocol difference, different for every phantom."""
    rng = np.random.default_rng(seed)
    return Shift(noise=float(rng.uniform(0.0, 0.04)), gamma=float(rng.uniform(0.8, 1.5)),
                 scale=float(rng.uniform(0.8, 1.2)), bias=float(rng.uniform(0.0, 0.3)))


def phantom_case(seed: int, size: tuple[int, int, int], device: torch.device,
                 with_truth: bool) -> tuple[Case, list[np.ndarray]]:
    """ED/ES of a shifted cardiac phantom in [0, 1] on ``device``, and the frames in between."""
    ed, es = end_frames("cardiac", FRAMES_PER_CYCLE)
    indices = list(range(ed, es + 1)) if with_truth else [ed, es]
    phases = [phase_of_frame(i, FRAMES_PER_CYCLE) for i in indices]
    frames = apply_shift(phantom_frames("cardiac", phases, size, seed), random_shift(seed), seed,
                         rician=True)
    frames = [normalize_minmax(f)[0] for f in frames]

    def tensor(v: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(v, np.float32))[None, None].to(device)

    times = [(i - ed) / (es - ed) for i in indices[1:-1]]
    return Case(tensor(frames[0]), tensor(frames[-1]), times), frames[1:-1]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured(device: torch.device, fn: Callable[[], object]) -> tuple[object, float, float | None]:
    """``fn()``'s result, its wall time and the peak GPU memory (MiB) it reached."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return result, seconds, peak


def train(model: TTTModel, pairs: list[Case], steps: int, dtype: torch.dtype | None,
          device: torch.device, max_seconds: float) -> tuple[int, list[float]]:
    """Joint training steps under autocast; returns the steps done and the loss per step."""
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, amsgrad=True)
    scaler = torch.amp.GradScaler(device.type, enabled=needs_grad_scaler(dtype, device))
    generator = torch.Generator().manual_seed(0)
    losses: list[float] = []
    start = time.perf_counter()
    model.train()
    for step in range(steps):
        case = pairs[step % len(pairs)]
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(case.i0, case.i1, 1.0, generator)["total"]
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(float(loss.detach()))
        if time.perf_counter() - start > max_seconds:
            break
    model.eval()
    return len(losses), losses


def mean_psnr(predictions: list[list[torch.Tensor]], truths: list[list[np.ndarray]]) -> float:
    return float(np.mean([psnr(p[0, 0].float().cpu(), t) for preds, ts in
                          zip(predictions, truths, strict=True)
                          for p, t in zip(preds, ts, strict=True)]))


def run_check(args: argparse.Namespace) -> tuple[str, list[Row]]:
    """Everything the table shows; returns a header line and the rows."""
    device = resolve_device(args.device)
    defaults = CUDA_DEFAULTS if device.type == "cuda" else CPU_DEFAULTS
    size = tuple(args.size or defaults["size"])
    steps = args.steps if args.steps is not None else defaults["steps"]
    dtype = resolve_precision(args.precision, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    header = (f"device {device} ({name}), torch {torch.__version__}, "
              f"{torch.get_num_threads()} CPU threads, grid {'x'.join(map(str, size))}, "
              f"training precision {dtype or torch.float32}")
    torch.manual_seed(0)
    model = TTTModel().to(device)
    pairs = [phantom_case(100 + k, size, device, False)[0] for k in range(args.train_pairs)]
    tests = [phantom_case(k, size, device, True) for k in range(args.cases)]
    cases, truths = [c for c, _ in tests], [t for _, t in tests]

    (done, losses), seconds, peak = measured(
        device, lambda: train(model, pairs, steps, dtype, device, args.max_train_seconds))
    rows = [Row(f"train ({'mixed ' + str(dtype).split('.')[-1] if dtype else 'fp32'})",
                seconds / max(done, 1), "s/step", None, peak,
                f"{done} steps, loss {losses[0]:.3f} -> {np.mean(losses[-10:]):.3f}")]
    linear = [[(1 - t) * c.i0 + t * c.i1 for t in c.times] for c in cases]
    rows.append(Row("linear blending", 0.0, "s/case", mean_psnr(linear, truths)))
    run_ttt(model, cases[:1], TTTConfig())  # warm-up (cuDNN autotuning, allocator)
    configs = [("inference", TTTConfig())] + [
        (f"TTT {task} ({args.ttt_steps} steps)", TTTConfig(task=task, steps=args.ttt_steps))
        for task in TASKS]
    for label, config in configs:
        predictions, seconds, peak = measured(device, lambda c=config: run_ttt(model, cases, c))
        rows.append(Row(label, seconds / len(cases), "s/case", mean_psnr(predictions, truths),
                        peak))
    return header, rows


def format_rows(rows: list[Row]) -> str:
    lines = [f"{'what':<26} {'seconds':>9} {'unit':<7} {'PSNR':>7} {'peak GPU MiB':>13}  note",
             "-" * 92]
    for r in rows:
        value = f"{r.psnr:7.2f}" if r.psnr is not None else f"{'-':>7}"
        peak = f"{r.peak_mib:13.0f}" if r.peak_mib is not None else f"{'-':>13}"
        lines.append(f"{r.what:<26} {r.seconds:9.3f} {r.unit:<7} {value} {peak}  {r.note}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cuda or cpu")
    p.add_argument("--size", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help=f"grid (default {' '.join(map(str, CUDA_DEFAULTS['size']))} on CUDA, "
                   f"{' '.join(map(str, CPU_DEFAULTS['size']))} on CPU)")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps (default 300 on CUDA, 2 on CPU)")
    p.add_argument("--ttt-steps", type=int, default=10, help="TTT steps per case (default 10)")
    p.add_argument("--cases", type=int, default=3, help="held-out phantom cases (default 3)")
    p.add_argument("--train-pairs", type=int, default=8, help="training phantoms (default 8)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="training autocast precision (auto: bf16 or fp16 on CUDA, fp32 on CPU; "
                   "bf16 also runs on CPU)")
    p.add_argument("--max-train-seconds", type=float, default=300.0,
                   help="stop training after this long (default 300)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = p.parse_args(argv)
    if args.cases < 1 or args.train_pairs < 1 or (args.steps is not None and args.steps < 1):
        p.error("--cases, --train-pairs and --steps must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    header, rows = run_check(args)
    print(header)
    print(format_rows(rows))
    if args.json:
        args.json.write_text(json.dumps({"header": header, "rows": [asdict(r) for r in rows]},
                                        indent=2))


if __name__ == "__main__":
    main()
