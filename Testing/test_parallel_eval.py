"""Evaluation under torchrun with a caller's model: every rank computes on its own device."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from TTTInterpolationLib.models.loading import load_model
from TTTInterpolationLib.workflows.parallel_eval import model_on

ROOT = Path(__file__).resolve().parents[1]


def test_model_on_moves_a_copy_and_leaves_the_callers_model_alone():
    loaded = load_model("untrained", "cpu")
    assert model_on(loaded, torch.device("cpu")) is loaded
    moved = model_on(loaded, torch.device("meta"))  # a second device that every machine has
    assert moved.device == torch.device("meta")
    assert all(p.device.type == "meta" for p in moved.model.parameters())
    assert all(p.device.type == "cpu" for p in loaded.model.parameters())
    assert (moved.trained, moved.source) == (loaded.trained, loaded.source)


_RANK_SCRIPT = textwrap.dedent("""
    import sys, torch
    from TTTInterpolationLib.workflows.settings import EvalSetting
    from TTTInterpolationLib.models.loading import load_model
    from TTTInterpolationLib.workflows.protocols import pair_case
    from TTTInterpolationLib.runtime.distributed import DistContext
    from TTTInterpolationLib.workflows.parallel_eval import evaluate_rows
    from TTTInterpolationLib.data.phantoms.sequences import make_phantom_sequence

    ctx = DistContext.from_env()
    seq = make_phantom_sequence("cardiac", 10, (32, 32, 16), seed=0)
    loaded = load_model("untrained", "cuda")  # the caller's model, on the current GPU (0)
    torch.cuda.reset_peak_memory_stats(ctx.local_rank)
    cases = [pair_case(seq, 0, 4), pair_case(seq, 4, 8)]
    evaluate_rows(cases, [EvalSetting("UVI-Net", "uvinet")], ctx, model=loaded)
    used = torch.cuda.max_memory_allocated(ctx.local_rank)
    print(f"rank {ctx.rank} used {used} bytes on cuda:{ctx.local_rank}", file=sys.stderr)
    sys.exit(0 if used > 0 else 3)
""")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_torchrun_ranks_with_a_callers_model_each_compute_on_their_own_gpu(tmp_path):
    """Was: every rank ran on the caller's model's GPU (rank 1 never touched cuda:1)."""
    script = tmp_path / "rank.py"
    script.write_text(_RANK_SCRIPT)
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node", "2", str(script)], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
