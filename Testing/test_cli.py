"""The ``tttinterp`` command line as a user runs it: a real subprocess, real files.

Bad input must give exit code 2, exactly one line on stderr, no traceback and no file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from TTTInterpolationLib.data.phantoms.sequences import make_phantom_sequence
from TTTInterpolationLib.fileio.volume_io import read_4d, write_4d, write_volume
from TTTInterpolationLib.models.checkpoint import load_checkpoint
from TTTInterpolationLib.volume import Sequence4D

SIZE = (32, 32, 16)


def run_cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "TTTInterpolationLib", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "cardiac.seq.nrrd"
    write_4d(path, make_phantom_sequence("cardiac", 10, SIZE, seed=0))
    return path


def test_phantom_command_writes_a_shifted_series(tmp_path):
    out = tmp_path / "lung.nii.gz"
    res = run_cli("phantom", "--kind", "lung", "--frames", "6", "--size", "32", "32", "32",
                  "--shift", "noise=0.02,gamma=1.2", "-o", out)
    assert res.returncode == 0, res.stderr
    seq = read_4d(out)
    assert seq.frames.shape == (6, 32, 32, 32)


def test_interpolate_with_jsonl_progress(phantom, tmp_path):
    out = tmp_path / "out.seq.nrrd"
    res = run_cli("interpolate", phantom, "--frames", "0", "4", "--num", "3", "--ttt", "mae",
                  "--steps", "2", "--progress", "jsonl", "--device", "cpu", "--weights",
                  "untrained", "-o", out)
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert all(set(r) == {"stage", "fraction", "message"} for r in records)
    fractions = [r["fraction"] for r in records]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert records[-1]["stage"] == "done"
    assert any(r["stage"] == "ttt" for r in records)
    assert "untrained" in res.stderr  # says plainly that no trained weights were used
    seq = read_4d(out)
    assert seq.index_values == pytest.approx([1.0, 2.0, 3.0])
    assert seq.geometry.allclose(read_4d(phantom).geometry)


def test_interpolate_list_of_3d_frames_at_given_times(phantom, tmp_path):
    seq = read_4d(phantom)
    a, b = tmp_path / "a.nrrd", tmp_path / "b.nrrd"
    write_volume(a, seq.frames[0], seq.geometry)
    write_volume(b, seq.frames[4], seq.geometry)
    out = tmp_path / "out.nii.gz"
    res = run_cli("interpolate", a, b, "--frames", "0", "1", "--times", "0.2", "0.7",
                  "--method", "linear", "--progress", "none", "-o", out)
    assert res.returncode == 0, res.stderr
    assert read_4d(out).index_values == pytest.approx([0.2, 0.7])


def _nan_series(tmp_path: Path) -> Path:
    frames = np.zeros((3, 16, 16, 16), np.float32)
    frames[1, 3, 3, 3] = np.nan
    path = tmp_path / "nan.nii.gz"
    import nibabel as nib

    nib.save(nib.Nifti1Image(frames.transpose(1, 2, 3, 0), np.eye(4)), path)
    return path


def _pickle_weights(tmp_path: Path) -> Path:
    class Evil:
        def __reduce__(self):
            return (exec, ("open('pwned', 'w')",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "tttinterp-checkpoint", "x": Evil()}, path)
    return path


BAD = {
    "missing file": (lambda p, t: ["interpolate", t / "none.nii.gz", "--frames", "0", "1",
                                   "--num", "1"], "does not exist"),
    "3D file": (lambda p, t: ["interpolate", _single_3d(p, t), "--frames", "0", "1", "--num", "1"],
                "not a 4D"),
    "frame out of range": (lambda p, t: ["interpolate", p, "--frames", "0", "12", "--num", "1"],
                           "out of range"),
    "equal frames": (lambda p, t: ["interpolate", p, "--frames", "3", "3", "--num", "1"],
                     "must differ"),
    "num 0": (lambda p, t: ["interpolate", p, "--frames", "0", "4", "--num", "0"], ">= 1"),
    "NaN": (lambda p, t: ["interpolate", _nan_series(t), "--frames", "0", "2", "--num", "1"],
            "NaN"),
    "too small": (lambda p, t: ["interpolate", _tiny(t), "--frames", "0", "1", "--num", "1"],
                  "too small"),
    "unsafe weights": (lambda p, t: ["interpolate", p, "--frames", "0", "4", "--num", "1",
                                     "--weights", _pickle_weights(t)], "cannot load weights"),
    "unknown option value": (lambda p, t: ["interpolate", p, "--frames", "0", "4", "--num", "1",
                                           "--scheme", "batch"], "invalid choice"),
    "bad shift": (lambda p, t: ["phantom", "--shift", "noise=x"], "noise"),
    "bad flow resolution": (lambda p, t: ["interpolate", p, "--frames", "0", "4", "--num", "1",
                                          "--flow-resolution", "quarter"], "invalid choice"),
}


def _single_3d(phantom: Path, tmp_path: Path) -> Path:
    seq = read_4d(phantom)
    path = tmp_path / "one.nrrd"
    write_volume(path, seq.frames[0], seq.geometry)
    return path


def _tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.seq.nrrd"
    write_4d(path, Sequence4D(np.random.default_rng(0).random((2, 16, 2, 16), dtype=np.float32)))
    return path


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gives_one_line_exit_2_and_no_output(case, phantom, tmp_path):
    make_args, message = BAD[case]
    work = tmp_path / "work"
    work.mkdir()
    before = set(work.iterdir())
    res = run_cli(*make_args(phantom, tmp_path), "-o", work / "out.seq.nrrd", cwd=work)
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert message in lines[0]
    assert "Traceback" not in res.stderr
    assert set(work.iterdir()) == before  # nothing written, no temp file, no 'pwned'


def test_evaluate_table_and_json(phantom, tmp_path):
    out = tmp_path / "r.json"
    res = run_cli("evaluate", phantom, "--frames", "0", "4", "--frames", "4", "8", "--ttt",
                  "rotation", "--steps", "1", "--device", "cpu", "--progress", "none",
                  "--json", out)
    assert res.returncode == 0, res.stderr
    assert "linear blending" in res.stdout and "UVI-Net + TTT rotation" in res.stdout
    data = json.loads(out.read_text())
    # what was evaluated, then per protocol the rows and each case's means per setting
    assert set(data) == {"input", "split", "shift", "flow_resolution", "motion", "protocols"}
    (data,) = data["protocols"]
    assert data["protocol"] == "pair" and data["pairs"] == [[[0, 4]], [[4, 8]]]
    assert [c["case"] for c in data["per_case"]["UVI-Net"]] == ["0->4", "4->8"]
    assert [row["label"] for row in data["table"]] == [  # by default both methods compared
        "linear blending", "registration", "UVI-Net", "UVI-Net + TTT rotation (online)"]
    row = data["table"][-1]
    for key in ("PSNR", "NCC", "SSIM", "NMSE", "PSNR_std", "SSIM_std", "n_frames",
                "seconds_per_case", "ttt"):
        assert key in row
    assert row["n_frames"] == 6 and row["ttt"]["task"] == "rotation"


def test_evaluate_writes_the_scored_frames_with_predictions(phantom, tmp_path):
    """--predictions: each setting's frames of each case, at the hidden items' index values,
    the very frames that were scored (re-scoring them gives the reported PSNR)."""
    from TTTInterpolationLib.workflows.evaluation import score_frame
    from TTTInterpolationLib.workflows.protocols import sequence_window

    out, folder = tmp_path / "r.json", tmp_path / "frames"
    res = run_cli("evaluate", phantom, "--frames", "0", "4", "--frames", "5", "8",
                  "--device", "cpu", "--progress", "none", "--json", out,
                  "--predictions", folder)
    assert res.returncode == 0, res.stderr
    (report,) = json.loads(out.read_text())["protocols"]
    paths = report["predictions"]
    assert len(paths) == 2 and all(len(p) == 3 for p in paths)  # linear, registration, UVI-Net
    seq = read_4d(phantom)
    window = sequence_window(seq.frames)
    for case, hidden in enumerate(([1, 2, 3], [6, 7])):
        for setting, path in enumerate(paths[case]):
            written = read_4d(path)
            assert written.index_values == pytest.approx([seq.index_values[h] for h in hidden])
            assert written.geometry.spacing == pytest.approx(seq.geometry.spacing)
            scores = [score_frame(f, seq.frames[h], window)["PSNR_seq"]
                      for f, h in zip(written.frames, hidden, strict=True)]
            label = report["table"][setting]["label"]
            assert np.mean(scores) == pytest.approx(
                report["per_case"][label][case]["PSNR_seq"], abs=1e-4)
    linear = read_4d(paths[0][0]).frames[1]
    np.testing.assert_allclose(linear, (seq.frames[0] + seq.frames[4]) / 2, atol=1e-4)
    (tmp_path / "file").write_text("")
    res = run_cli("evaluate", phantom, "--frames", "0", "4", "--method", "linear",
                  "--predictions", tmp_path / "file")
    assert res.returncode == 2 and "is a file" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_evaluate_one_input_under_the_x2_and_x4_protocols(phantom, tmp_path):
    """``evaluate INPUT --protocol x2 x4`` (no --cases): every 2nd / 4th frame kept, the rest
    hidden and predicted, one case of the whole INPUT per protocol; frames after the last
    kept one dropped. Linear blending is checked by hand."""
    out, folder = tmp_path / "r.json", tmp_path / "frames"
    res = run_cli("evaluate", phantom, "--protocol", "x2", "x4", "--method", "linear",
                  "--device", "cpu", "--progress", "none", "--json", out,
                  "--predictions", folder)
    assert res.returncode == 0, res.stderr
    assert "x2: keep every 2nd frame" in res.stdout and "x4: keep every 4th frame" in res.stdout
    reports = {r["protocol"]: r for r in json.loads(out.read_text())["protocols"]}
    assert reports["x2"]["pairs"] == [[[0, 2], [2, 4], [4, 6], [6, 8]]]  # frame 9 dropped
    assert reports["x4"]["pairs"] == [[[0, 4], [4, 8]]]
    assert reports["x2"]["cases"] == ["cardiac.seq.nrrd"]
    seq = read_4d(phantom)
    for protocol, hidden in (("x2", [1, 3, 5, 7]), ("x4", [1, 2, 3, 5, 6, 7])):
        (row,) = reports[protocol]["table"]
        assert row["n_frames"] == len(hidden)
        ((path,),) = reports[protocol]["predictions"]
        written = read_4d(path)
        assert written.index_values == pytest.approx([seq.index_values[h] for h in hidden])
    x2 = read_4d(reports["x2"]["predictions"][0][0]).frames
    np.testing.assert_allclose(x2[1], (seq.frames[2] + seq.frames[4]) / 2, atol=1e-4)


@pytest.mark.parametrize(("extra", "message"), [
    (["--frames", "0", "4", "--protocol", "x2"], "either --frames A B or --protocol, not both"),
    (["--protocol", "edes"], "--protocol edes needs --cases"),
    ([], "give INPUT with --frames A B (repeatable) or --protocol x2/x4"),
])
def test_evaluate_input_protocol_mistakes_are_one_line(phantom, tmp_path, extra, message):
    res = run_cli("evaluate", phantom, *extra, "--method", "linear", "--json",
                  tmp_path / "r.json")
    assert res.returncode == 2 and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "r.json").exists()


def test_evaluate_protocol_needs_enough_frames(tmp_path):
    short = tmp_path / "short.seq.nrrd"
    write_4d(short, make_phantom_sequence("cardiac", 4, SIZE, seed=0))
    res = run_cli("evaluate", short, "--protocol", "x4", "--method", "linear")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "4 frames are too few to keep every 4th frame and fill between them (at least 5)" \
        in res.stderr


def test_train_then_interpolate_with_the_checkpoint(tmp_path):
    data = tmp_path / "pairs"
    res = run_cli("phantom", "--pairs", "2", "--size", *map(str, SIZE), "-o", data)
    assert res.returncode == 0, res.stderr
    ckpt = tmp_path / "model.safetensors"
    res = run_cli("train", "--data", data, "--epochs", "1", "--size", *map(str, SIZE), "--out",
                  ckpt, "--progress", "none", "--device", "cpu", "--flow-resolution", "half")
    assert res.returncode == 0, res.stderr
    assert load_checkpoint(ckpt)[0].config.flow_resolution == "half"
    src = tmp_path / "in.seq.nrrd"
    write_4d(src, make_phantom_sequence("cardiac", 10, SIZE, seed=7))
    frames = {}
    for resolution in ("half", "full"):  # the model's own, then overridden
        out = tmp_path / f"{resolution}.seq.nrrd"
        extra = ["--flow-resolution", "full"] if resolution == "full" else []
        res = run_cli("interpolate", src, "--frames", "0", "4", "--num", "2", "--weights", ckpt,
                      "--progress", "none", *extra, "-o", out)
        assert res.returncode == 0, res.stderr
        assert "untrained" not in res.stderr
        frames[resolution] = read_4d(out).frames
    # The flows differ, so do the frames (a trained refinement net sees other warps).
    assert float(np.abs(frames["half"] - frames["full"]).max()) > 0


def test_evaluate_case_list_split_and_shift(phantom, tmp_path):
    """--cases: one case per row of a CSV (relative paths), --split picks rows, --shift changes
    the images (and so the scores) reproducibly."""
    (tmp_path / "cases.csv").write_text(
        "case,path,ed,es,split\n"
        f"a,{Path(phantom).name},0,4,validation\n"
        f"b,{Path(phantom).name},4,8,test\n")
    shutil.copy(phantom, tmp_path / Path(phantom).name)
    runs = {}
    for name, extra in (("val", ["--split", "validation"]), ("all", []),
                        ("shifted", ["--split", "validation", "--shift", "gamma=1.5,noise=0.03"]),
                        ("again", ["--split", "validation", "--shift", "gamma=1.5,noise=0.03"])):
        out = tmp_path / f"{name}.json"
        res = run_cli("evaluate", "--cases", tmp_path / "cases.csv", *extra, "--method",
                      "linear", "--progress", "none", "--json", out)
        assert res.returncode == 0, res.stderr
        runs[name] = json.loads(out.read_text())["protocols"][0]
    assert runs["val"]["cases"] == ["a"] and runs["all"]["cases"] == ["a", "b"]
    assert runs["val"]["pairs"] == [[[0, 4]]] and runs["val"]["protocol"] == "edes"
    psnr = {k: v["table"][0]["PSNR_seq"] for k, v in runs.items()}
    assert psnr["shifted"] != psnr["val"] and psnr["shifted"] == psnr["again"]
    res = run_cli("evaluate", "--cases", tmp_path / "cases.csv", "--frames", "0", "4",
                  "--method", "linear")
    assert res.returncode == 2 and "not both" in res.stderr
