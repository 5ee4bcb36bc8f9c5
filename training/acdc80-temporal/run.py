"""Launch (or resume) the acdc80-temporal run: UVI-Net's flows from acdc80-noaug, corrected in
time by the motion network, trained on every frame of ACDC 001-080; validation on 081-090
(no TTT) after every epoch under the three protocols.

    OMP_WAIT_POLICY=PASSIVE nohup python training/acdc80-temporal/run.py [--resume] > log &
"""
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from TTTInterpolationLib.data.preprocess import prepare_pair  # noqa: E402
from TTTInterpolationLib.nn.metrics import psnr  # noqa: E402
from TTTInterpolationLib.workflows.protocols import protocol_case  # noqa: E402
from TTTInterpolationLib.workflows.sequence_cases import read_case_list  # noqa: E402
from TTTInterpolationLib.workflows.train_sequences import (  # noqa: E402
    SequenceTrainOptions,
    train_sequences,
)
from TTTInterpolationLib.fileio.volume_io import read_4d  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
rows = read_case_list(DATA / "acdc-4d" / "cases.csv", "validation")
seqs = [(r["case"], read_4d(r["path"]), int(r["ed"]), int(r["es"])) for r in rows]
CASES = {p: [protocol_case(s, p, ed, es, n) for n, s, ed, es in seqs] for p in ("edes", "x2", "x4")}


def validate(model) -> dict:
    out = {}
    for protocol, cases in CASES.items():
        model_scores, linear_scores = [], []
        for case in cases:
            low, high = case.window
            for gap, truths in zip(case.gaps, case.truths):
                f0, f1 = case.visible.frames[gap.a], case.visible.frames[gap.b]
                pair = prepare_pair(f0, f1)
                with torch.no_grad():
                    frames = model.uvinet.interpolate(pair.i0, pair.i1, gap.times, pair.bounds)
                for t, frame, truth in zip(gap.times, frames, truths):
                    pred = pair.restore(frame)
                    lin = (1 - t) * f0 + t * f1
                    model_scores.append(psnr((pred - low) / (high - low), (truth - low) / (high - low)))
                    linear_scores.append(psnr((lin - low) / (high - low), (truth - low) / (high - low)))
        out[f"val_{protocol}"] = float(np.mean(model_scores))
        out[f"val_{protocol}_linear"] = float(np.mean(linear_scores))
    return out


if __name__ == "__main__":
    torch.set_num_threads(2)
    options = SequenceTrainOptions(
        cases=str(DATA / "acdc-4d-train" / "cases.csv"),
        out=str(ROOT / "training" / "acdc80-temporal" / "model.safetensors"),
        epochs=100, steps_per_epoch=500, batch=2, lr=2e-4, smooth=0.01,
        init=str(ROOT / "training" / "acdc80-noaug" / "model.safetensors"),
        resume="--resume" in sys.argv, seed=0, precision="bf16")
    if "--validate-init" in sys.argv:
        from TTTInterpolationLib.models.checkpoint import load_checkpoint
        print(validate(load_checkpoint(options.init)[0].eval()), flush=True)
    train_sequences(options, validate=validate, log=lambda m: print(m, flush=True))
