"""Training for real: manifests, zoom, determinism, resume, validation and curve, torchrun.

Real models, real files, real subprocesses (``torchrun`` with 2 CPU ranks on gloo); sizes are
tiny (32x32x16) so the whole file takes well under two minutes on two cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from TTTInterpolationLib.data.augment import AugmentOptions
from TTTInterpolationLib.data.datasets import PairDataset, find_pairs, resize, write_phantom_pairs
from TTTInterpolationLib.data.phantoms.sequences import make_phantom_sequence
from TTTInterpolationLib.data.preprocess import joint_window, prepare_pair
from TTTInterpolationLib.errors import InputError
from TTTInterpolationLib.fileio.volume_io import read_4d, write_4d, write_volume
from TTTInterpolationLib.models.checkpoint import load_checkpoint, save_checkpoint
from TTTInterpolationLib.models.ttt_model import TTTModel
from TTTInterpolationLib.runtime.distributed import state_digest
from TTTInterpolationLib.workflows.train import TrainOptions, curve_path, optimizer_path, train

SIZE = (32, 32, 16)
SIZE_ARGS = [str(s) for s in SIZE]


def run(*args: str | Path, torchrun: int = 0, cwd: Path | None = None
        ) -> subprocess.CompletedProcess:
    """``python -m TTTInterpolationLib ...``, or the same under ``torchrun`` with N CPU ranks."""
    launcher = [sys.executable, "-m", "TTTInterpolationLib"]
    if torchrun:  # python -m torch.distributed.run is the torchrun executable's own entry point
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node", str(torchrun), "-m", "TTTInterpolationLib"]
    return subprocess.run([*launcher, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pairs")
    write_phantom_pairs(folder, 3, size=SIZE)
    return folder


@pytest.fixture(scope="module")
def cine(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cine") / "cine.seq.nrrd"
    write_4d(path, make_phantom_sequence("cardiac", 10, SIZE, seed=5))
    return path


# --------------------------------------------------------------------------- data


def _manifest_inputs(folder: Path) -> None:
    seq = make_phantom_sequence("cardiac", 10, SIZE, seed=3)
    (folder / "sub").mkdir()
    write_volume(folder / "sub" / "a.nii.gz", seq.frames[0], seq.geometry)
    write_volume(folder / "sub" / "b.nii.gz", seq.frames[4], seq.geometry)
    write_4d(folder / "cine.seq.nrrd", seq)


def test_csv_and_json_manifests_list_3d_pairs_and_4d_frames(tmp_path, monkeypatch):
    _manifest_inputs(tmp_path)
    (tmp_path / "m.csv").write_text("case,path_a,path_b,path,frame_a,frame_b\n"
                                    "p1, sub/a.nii.gz, sub/b.nii.gz,,,\n"
                                    "# a comment row\n\n"
                                    ",,,cine.seq.nrrd,0,4\n")
    (tmp_path / "m.json").write_text(json.dumps({"pairs": [
        {"case": "p1", "path_a": "sub/a.nii.gz", "path_b": str(tmp_path / "sub/b.nii.gz")},
        {"path": "cine.seq.nrrd", "frame_a": 0, "frame_b": 4}]}))
    monkeypatch.chdir(tmp_path / "sub")  # relative paths follow the manifest, not the cwd
    for name in ("m.csv", "m.json"):
        pairs = find_pairs(tmp_path / name)
        assert [p.case for p in pairs] == ["p1", "cine[0,4]"]
        assert not pairs[0].is_4d and pairs[1].is_4d
        data = PairDataset(pairs, SIZE)
        frames = read_4d(tmp_path / "cine.seq.nrrd").frames
        expected = prepare_pair(frames[0], frames[4], SIZE)
        for a, b in data:  # both rows name the same two frames
            assert torch.equal(a, expected.i0[0])
            assert torch.equal(b, expected.i1[0])
    assert len(find_pairs(tmp_path / "m.csv", limit=1)) == 1


BAD_MANIFESTS = {
    "unknown column": ("m.csv", "path_a,path_B\nsub/a.nii.gz,sub/b.nii.gz\n", "unknown column"),
    "both forms": ("m.csv", "path_a,path_b,path,frame_a,frame_b\n"
                   "sub/a.nii.gz,sub/b.nii.gz,cine.seq.nrrd,0,1\n", "give either"),
    "missing file": ("m.csv", "path_a,path_b\nsub/a.nii.gz,sub/zz.nii.gz\n", "not found"),
    "frame not a number": ("m.json", '[{"path": "cine.seq.nrrd", "frame_a": "x", "frame_b": 1}]',
                           "whole frame number"),
    "equal frames": ("m.json", '[{"path": "cine.seq.nrrd", "frame_a": 2, "frame_b": 2}]',
                     "must differ"),
    "frame out of range": ("m.csv", "path,frame_a,frame_b\ncine.seq.nrrd,0,10\n",
                           "out of range"),
    "3D file as 4D": ("m.csv", "path,frame_a,frame_b\nsub/a.nii.gz,0,1\n", "not a 4D"),
    "empty": ("m.csv", "path_a,path_b\n", "no pairs"),
    "not a list": ("m.json", '{"path_a": "sub/a.nii.gz"}', "list of pairs"),
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_bad_manifests_are_one_line_input_errors(case, tmp_path):
    _manifest_inputs(tmp_path)
    name, text, message = BAD_MANIFESTS[case]
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError) as err:
        PairDataset(find_pairs(tmp_path / name), SIZE)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_zoom_resizes_before_the_crop_and_default_does_not_resample():
    volume = np.random.default_rng(0).random((64, 64, 8), dtype=np.float32)
    # zoom 1: normalise on the input grid (joint window of the pair), then a centre crop
    # (64 -> 32) and a zero pad (8 -> 16), no blur
    plain = prepare_pair(volume, volume, SIZE).i0[0, 0].numpy()
    window = joint_window(volume, volume)
    assert np.allclose(plain[..., 4:12], window.normalize(volume[16:48, 16:48]))
    assert not plain[..., :4].any() and not plain[..., 12:].any()
    # zoom 0.5: trilinear at exactly half size averages 2x2x2 blocks; 8 slices -> 4, padded
    half = resize(volume, (0.5, 0.5, 0.5))
    blocks = volume.reshape(32, 2, 32, 2, 4, 2).mean(axis=(1, 3, 5))
    assert np.allclose(half, blocks, atol=1e-6)
    zoomed = PairDataset._view(PairDataset([], SIZE), half, half)[0][0].numpy()
    assert np.allclose(zoomed[..., 6:10], joint_window(half, half).normalize(blocks), atol=1e-5)
    assert not zoomed[..., :6].any() and not zoomed[..., 10:].any()
    # a stack left shorter than the network's minimum (6 slices -> 3) still fits the grid
    short = resize(volume[..., :6], (0.5,) * 3)
    assert prepare_pair(short, short, SIZE).i0.shape == (1, 1, *SIZE)


def test_augmented_views_replay_by_seed_and_differ_by_epoch(tmp_path):
    seq = make_phantom_sequence("cardiac", 10, (48, 48, 12), seed=3)
    write_volume(tmp_path / "p1_ED.nii.gz", seq.frames[0], seq.geometry)
    write_volume(tmp_path / "p1_ES.nii.gz", seq.frames[4], seq.geometry)
    pairs = find_pairs(tmp_path)

    def view(epoch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        data = PairDataset(pairs, SIZE, augment=AugmentOptions(), seed=seed)
        data.set_epoch(epoch)
        return data[0]

    first, again, later = view(0), view(0), view(1)
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    assert not torch.equal(first[0], later[0])
    assert first[0].shape == (1, *SIZE) and torch.isfinite(first[0]).all()


# --------------------------------------------------------------------------- training


def _state(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights_and_resume_equals_an_uninterrupted_run(pairs_dir, tmp_path):
    def options(name: str, epochs: int, **extra) -> TrainOptions:
        return TrainOptions(data=pairs_dir, out=tmp_path / name, epochs=epochs, size=SIZE,
                            device="cpu", val_fraction=1 / 3, seed=3, width=0.5, **extra)

    info_a = train(options("a.safetensors", 1), progress_kind=None)
    train(options("b.safetensors", 1), progress_kind=None)
    assert _same(_state(tmp_path / "a.safetensors"), _state(tmp_path / "b.safetensors"))

    train(options("b2.safetensors", 2, resume=tmp_path / "b.safetensors"), progress_kind=None)
    info_c = train(options("c.safetensors", 2), progress_kind=None)
    resumed, straight = _state(tmp_path / "b2.safetensors"), _state(tmp_path / "c.safetensors")
    assert _same(resumed, straight)  # weights AND Adam moments came back exactly
    assert not _same(straight, _state(tmp_path / "a.safetensors"))  # epoch 2 did train

    optim = torch.load(optimizer_path(tmp_path / "a.safetensors"), weights_only=True)
    assert optim["epoch"] == 1 and optim["optimizer"]["state"]
    assert len(info_a["cases"]) == 2 and len(info_a["val_cases"]) == 1
    assert [h["epoch"] for h in info_c["history"]] == [1, 2]
    for record in info_c["history"]:  # validated every epoch: cycle loss and NCC of warped A
        assert record["val_cycle"] < 0 and 0 < record["val_ncc"] <= 1
    assert curve_path(tmp_path / "c.safetensors").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _, info = load_checkpoint(tmp_path / "b2.safetensors")
    assert info["epochs"] == 2 and info["steps"] == 4 and info["world_size"] == 1


def test_val_cases_score_interpolation_as_evaluate_does(pairs_dir, cine, tmp_path):
    """``--val-cases``: each validated epoch records the PSNR (seq) that ``evaluate`` gives the
    saved model on the same hidden frames, and linear blending's."""
    from TTTInterpolationLib.models.loading import load_model
    from TTTInterpolationLib.workflows.evaluation import evaluate_cases
    from TTTInterpolationLib.workflows.sequence_cases import load_cases
    from TTTInterpolationLib.workflows.settings import EvalSetting

    cases = tmp_path / "cases.csv"
    cases.write_text(f"case,path,ed,es,split\nc1,{cine},0,4,validation\nc2,{cine},1,5,test\n")
    out = tmp_path / "v.safetensors"
    res = run("train", "--data", pairs_dir, "--size", *SIZE_ARGS, "--epochs", "1", "--width",
              "0.5", "--out", out, "--device", "cpu", "--progress", "none", "--val-cases", cases)
    assert res.returncode == 0, res.stderr
    assert "val PSNR (seq)" in res.stderr
    _, info = load_checkpoint(out)
    record = info["history"][-1]
    assert info["val_sequences"] == str(cases) and info["val_split"] == "validation"
    rows = evaluate_cases(load_cases(cases, "validation"),
                          [EvalSetting("linear blending", "linear"),
                           EvalSetting("UVI-Net", "uvinet")],
                          model=load_model(out, device="cpu")).rows
    assert record["val_psnr_seq_linear"] == pytest.approx(rows[0]["PSNR_seq"], abs=1e-9)
    assert record["val_psnr_seq"] == pytest.approx(rows[1]["PSNR_seq"], abs=1e-6)
    assert record["val_psnr_seq"] != pytest.approx(record["val_psnr_seq_linear"], abs=1e-6)


def test_val_cases_errors_are_one_line(pairs_dir, tmp_path):
    missing = run("train", "--data", pairs_dir, "--epochs", "1", "--out", tmp_path / "m.pt",
                  "--val-cases", tmp_path / "none.csv", "--size", *SIZE_ARGS)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "none.csv" in missing.stderr and not (tmp_path / "m.pt").exists()


def test_train_command_on_a_zoomed_4d_manifest(tmp_path):
    big = make_phantom_sequence("cardiac", 10, (64, 64, 32), seed=1)
    write_4d(tmp_path / "cine.nii.gz", big)
    (tmp_path / "m.csv").write_text("path,frame_a,frame_b\ncine.nii.gz,0,4\n")
    out = tmp_path / "z.safetensors"
    res = run("train", "--data", tmp_path / "m.csv", "--zoom", "0.5", "--size", *SIZE_ARGS,
              "--epochs", "1", "--width", "0.5", "--out", out, "--device", "cpu",
              "--progress", "jsonl")
    assert res.returncode == 0, res.stderr
    assert "world size 1" in res.stderr and "zoom 0.5" in res.stderr
    assert json.loads(res.stdout.splitlines()[-1])["stage"] == "done"
    _, info = load_checkpoint(out)
    assert info["zoom"] == [0.5, 0.5, 0.5] and info["cases"] == ["cine[0,4]"]



BAD_OPTIONS = {"zoom 0": ["--zoom", "0"], "four zooms": ["--zoom", "1", "1", "1", "1"],
               "two validations": ["--val-data", "m.csv", "--val-fraction", "0.5"],
               "no training pair left": ["--val-fraction", "0.9"],
               "fp16 on CPU": ["--precision", "fp16"], "missing data": ["--data", "none.csv"],
               "already trained": ["--resume", "done.safetensors"]}


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_bad_train_options_exit_2_with_one_line(case, pairs_dir, tmp_path, monkeypatch, capsys):
    from TTTInterpolationLib.cli import main

    monkeypatch.chdir(tmp_path)
    Path("m.csv").write_text(f"path_a,path_b\n{pairs_dir / 'phantom000_ED.nii.gz'},"
                             f"{pairs_dir / 'phantom000_ES.nii.gz'}\n")
    save_checkpoint("done.safetensors", TTTModel(), {"history": [{"total": 0.0}]})
    args = ["train", "--data", "m.csv", "--size", *SIZE_ARGS, "--epochs", "1", "--device", "cpu",
            "--out", "bad.safetensors", *BAD_OPTIONS[case]]
    assert main(args) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tttinterp"), lines
    assert not Path("bad.safetensors").exists()


# --------------------------------------------------------------------------- torchrun


def test_torchrun_two_cpu_ranks_train_identical_replicas_and_the_loss_falls(tmp_path):
    data = tmp_path / "pairs"
    res = run("phantom", "--pairs", "4", "--size", *SIZE_ARGS, "-o", data)
    assert res.returncode == 0, res.stderr
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "ddp.safetensors"
    res = run("train", "--data", data, "--epochs", "2", "--size", *SIZE_ARGS, "--lr", "1e-3",
              "--width", "0.5", "--out", out, "--device", "cpu", "--progress", "jsonl", torchrun=2)
    assert res.returncode == 0, res.stderr
    assert "world size 2 (DistributedDataParallel, gloo)" in res.stderr
    model, info = load_checkpoint(out)
    digests = info["replica_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1] == state_digest(model)
    history = [h["total"] for h in info["history"]]
    assert history[-1] < history[0], history
    assert info["world_size"] == 2 and info["steps"] == 4  # 4 pairs / 2 ranks x 2 epochs
    # rank 0 alone reports and writes: one progress line per step, one set of files
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert sum(r["stage"] == "train" for r in records) == 4
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "ddp.curve.png", "ddp.optim.pt", "ddp.safetensors"]


def test_torchrun_evaluate_splits_cases_and_merges_the_single_process_table(cine, tmp_path):
    args = ["evaluate", cine, "--frames", "0", "4", "--frames", "4", "8", "--frames", "1", "5",
            "--device", "cpu", "--progress", "none"]
    alone = run(*args, "--json", tmp_path / "alone.json")
    assert alone.returncode == 0, alone.stderr
    split = run(*args, "--json", tmp_path / "split.json", torchrun=2)
    assert split.returncode == 0, split.stderr
    assert split.stdout.count("linear blending") == 1  # one table, printed by rank 0
    rows_alone = json.loads((tmp_path / "alone.json").read_text())["protocols"][0]["table"]
    rows_split = json.loads((tmp_path / "split.json").read_text())["protocols"][0]["table"]
    assert [r["label"] for r in rows_split] == [r["label"] for r in rows_alone]
    for a, s in zip(rows_alone, rows_split, strict=True):
        assert (s["n_cases"], s["n_frames"]) == (a["n_cases"], a["n_frames"]) == (3, 9)
        for key in ("PSNR", "PSNR_std", "NCC", "NCC_std", "SSIM", "SSIM_std", "NMSE"):
            assert s[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key



@pytest.mark.parametrize("fast", [False, True])
def test_forced_bf16_warns_only_on_a_cpu_without_bf16_units(monkeypatch, fast):
    """Without AVX512-BF16/AMX, oneDNN emulates bfloat16 (a 3D convolution measured 85x slower
    than float32): ``--precision bf16`` there still runs, but the log says so in one line."""
    import TTTInterpolationLib.workflows.train as train_module

    monkeypatch.setattr(train_module, "cpu_has_fast_bf16", lambda: fast)
    cpu = torch.device("cpu")
    warning = train_module.precision_warning(cpu, torch.bfloat16)
    assert (warning is None) == fast
    if warning:
        assert "\n" not in warning and "--precision fp32" in warning
    assert train_module.precision_warning(cpu, None) is None
    assert train_module.precision_warning(torch.device("cuda"), torch.bfloat16) is None
