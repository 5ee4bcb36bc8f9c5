"""CI smoke test of the GPU check script: the real script, as a subprocess, on CPU at 32x32x16.

It trains under bf16 autocast, which CPUs run too, so the mixed-precision path the GPU run
takes is exercised here (only the device differs).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_runs_on_cpu_and_prints_one_table(tmp_path):
    out = tmp_path / "check.json"
    # One thread: CI machines are small and shared; oversubscribed threads only slow it down.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--size", "32", "32",
                          "16", "--steps", "2", "--ttt-steps", "1", "--cases", "1",
                          "--train-pairs", "2", "--precision", "bf16", "--json", str(out)],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    assert "grid 32x32x16" in res.stdout and "peak GPU MiB" in res.stdout
    rows = {r["what"]: r for r in json.loads(out.read_text())["rows"]}
    train = "train (mixed bfloat16)"
    assert set(rows) == {train, "linear blending", "inference", "TTT rotation (1 steps)",
                         "TTT mae (1 steps)", "TTT cycle (1 steps)"}
    assert rows[train]["note"].startswith("2 steps")
    for name, row in rows.items():
        assert row["seconds"] >= 0 and row["peak_mib"] is None, name  # no GPU memory on CPU
        if name != train:
            assert 10 < row["psnr"] < 60, name  # a real comparison against the phantom truth
