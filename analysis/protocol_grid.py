"""Settings grid for choosing defaults (issue 17): PSNR (seq) of linear blending, the model
without and with the linear guard, and own-frame TTT at a few step counts and learning rates,
under each protocol, on one case list and split. Also per-case deltas against linear (the
"no case below linear by more than 0.1 dB" rule) and seconds per case.

    python analysis/protocol_grid.py --weights CKPT --cases ../shared/data/acdc-4d/cases.csv \
        --split validation --protocol edes x2 x4 --steps 0 10 --lr 1e-4 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the engine beside this script

from TTTInterpolationLib.config import TTTConfig
from TTTInterpolationLib.models.loading import load_model
from TTTInterpolationLib.workflows.evaluation import evaluate_cases
from TTTInterpolationLib.workflows.sequence_cases import load_cases
from TTTInterpolationLib.workflows.settings import EvalSetting


def settings(steps: list[int], lrs: list[float], extra: list[str],
             unguarded: bool = True) -> list[EvalSetting]:
    out = [EvalSetting("linear", "linear"),
           EvalSetting("model", "uvinet", TTTConfig(guard=False)),
           EvalSetting("model + guard", "uvinet", TTTConfig())]
    for s in steps:
        for lr in lrs:
            if s > 0:
                out.append(EvalSetting(f"frames {s} lr {lr:g} + guard", "uvinet",
                                       TTTConfig("frames", steps=s, lr=lr)))
                if unguarded:
                    out.append(EvalSetting(f"frames {s} lr {lr:g}", "uvinet",
                                           TTTConfig("frames", steps=s, lr=lr, guard=False)))
    for task in extra:
        out.append(EvalSetting(f"{task} TTT", "uvinet", TTTConfig(task, guard=False)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None)
    parser.add_argument("--cases", required=True)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--protocol", nargs="+", default=["edes", "x2", "x4"])
    parser.add_argument("--steps", nargs="+", type=int, default=[0])
    parser.add_argument("--lr", nargs="+", type=float, default=[1e-4])
    parser.add_argument("--paper-tasks", nargs="*", default=[],
                        help="also rows for these paper TTT tasks (rotation, mae, cycle)")
    parser.add_argument("--guarded-only", action="store_true",
                        help="own-frame TTT rows with the guard only")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    loaded = load_model(args.weights, "cpu")
    grid = settings(args.steps, args.lr, args.paper_tasks, not args.guarded_only)
    report = {}
    for protocol in args.protocol:
        cases = load_cases(args.cases, args.split, limit=args.limit, protocol=protocol)
        start = time.time()
        evaluation = evaluate_cases(cases, grid, model=loaded)
        linear = [c["PSNR_seq"] for c in evaluation.per_case["linear"]]
        print(f"\n{protocol}: {len(cases)} cases, {sum(c.num_hidden for c in cases)} frames "
              f"({time.time() - start:.0f} s)")
        rows = {}
        for row in evaluation.rows:
            per_case = [c["PSNR_seq"] for c in evaluation.per_case[row["label"]]]
            deltas = np.array(per_case) - np.array(linear)
            rows[row["label"]] = {"PSNR_seq": row["PSNR_seq"], "seconds": row["seconds_per_case"],
                                  "worst_case_delta": float(deltas.min()),
                                  "filled_by": row.get("filled_by", {}),
                                  "per_case": per_case,
                                  "held_in": [{k: v for k, v in c.items()
                                               if k.startswith("held_in_")}
                                              for c in evaluation.per_case[row["label"]]]}
            print(f"  {row['label']:<34} {row['PSNR_seq']:7.3f}  "
                  f"{row['PSNR_seq'] - evaluation.rows[0]['PSNR_seq']:+.3f}  worst case "
                  f"{deltas.min():+.3f}  {row['seconds_per_case']:6.1f} s/case  "
                  f"{row.get('filled_by', {})}", flush=True)
        report[protocol] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
