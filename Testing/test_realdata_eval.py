"""Evaluation on real ACDC ED/ES pairs: numbers checked against independent numpy arithmetic.

Uses two test-split patients of ``../shared/data/acdc-edes`` at a reduced grid (64x64x16), so
the whole module runs in seconds; it is skipped where that folder is absent.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from TTTInterpolationLib.data.preprocess import joint_window
from TTTInterpolationLib.errors import InputError
from TTTInterpolationLib.nn.metrics import ncc
from TTTInterpolationLib.workflows.realdata.cases import (
    CLASSES,
    LabelledPair,
    load_labelled_pair,
    parse_cases,
    select_pairs,
)
from TTTInterpolationLib.workflows.realdata.evaluate import evaluate_pairs, pair_settings
from TTTInterpolationLib.workflows.realdata.scores import MotionEstimate, dice_scores, score_case

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "acdc-edes"
SIZE = (64, 64, 16)
CASES = ("patient091", "patient092")

needs_data = pytest.mark.skipif(not (DATA / "patient091_ED_gt.nii.gz").is_file(),
                                reason=f"ACDC pairs not found in {DATA}")


def centre(volume: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Centre crop / zero-pad written out independently of model_grid (the test's oracle)."""
    out = np.zeros(size, dtype=np.float64)
    src, dst = [], []
    for n, m in zip(volume.shape, size, strict=True):
        if m >= n:
            before = (m - n) // 2
            src.append(slice(0, n))
            dst.append(slice(before, before + n))
        else:
            start = (n - m) // 2
            src.append(slice(start, start + m))
            dst.append(slice(0, m))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def by_hand(case: str) -> dict[str, float]:
    """No-motion scores from the raw files with numpy alone (NCC via the published metric)."""
    def load(suffix: str) -> np.ndarray:
        return np.asarray(nib.load(DATA / f"{case}_{suffix}.nii.gz").dataobj, dtype=np.float64)

    raw_ed, raw_es = load("ED"), load("ES")  # one window for both: joint 0.5/99.5 percentiles
    low, high = np.percentile(np.concatenate([raw_ed.ravel(), raw_es.ravel()]), (0.5, 99.5))
    ed, es = (centre((v - low) / (high - low), SIZE) for v in (raw_ed, raw_es))
    ed_labels, es_labels = (centre(load(s), SIZE) for s in ("ED_gt", "ES_gt"))
    out = {"NCC": ncc(ed, es), "PSNR": -10 * math.log10(np.mean((ed - es) ** 2))}
    for value, name in CLASSES.items():
        a, b = ed_labels == value, es_labels == value
        out[f"Dice_{name}"] = 2 * np.sum(a & b) / (np.sum(a) + np.sum(b))
    out["Dice"] = np.mean([out[f"Dice_{n}"] for n in CLASSES.values()])
    rebuilt = np.stack([5 / 6 * ed + 1 / 6 * es, 1 / 6 * ed + 5 / 6 * es])
    out["cycle_PSNR"] = -10 * math.log10(np.mean((rebuilt - np.stack([ed, es])) ** 2))
    return out


@pytest.fixture(scope="module")
def evaluation():
    settings = pair_settings(["rotation"], ["online"], steps=1)
    return evaluate_pairs(DATA, settings, cases="091-092", size=SIZE, device="cpu",
                          weights="untrained")


# ---------------------------------------------------------------------------- scores


def test_dice_of_identical_labels_is_one_and_absent_classes_are_left_out():
    labels = np.zeros((8, 8, 4))
    labels[2:5, 2:5] = 1
    labels[5:7, 5:7] = 3
    scores = dice_scores(labels, labels)
    assert scores["Dice_RV"] == scores["Dice_LV"] == scores["Dice"] == 1.0
    assert math.isnan(scores["Dice_Myo"])  # class 2 in neither volume


def test_dice_counts_overlap():
    a, b = np.zeros((4, 4, 4)), np.zeros((4, 4, 4))
    a[:2] = 1  # 32 voxels
    b[1:3] = 1  # 32 voxels, 16 shared
    assert dice_scores(a, b)["Dice_RV"] == pytest.approx(2 * 16 / 64)


def test_scores_warp_ed_toward_es():
    """ES is ED moved +2 voxels along axis 0, so phi01 = -2 maps ED exactly onto ES."""
    rng = np.random.default_rng(0)
    ed = np.zeros((16, 16, 16), np.float32)
    ed[3:12, 4:12, 4:12] = rng.uniform(0.2, 1.0, (9, 8, 8))
    labels = np.zeros_like(ed)
    labels[4:8, 5:10, 5:10], labels[8:11, 5:10, 5:10] = 1, 3
    es, es_labels = np.zeros_like(ed), np.zeros_like(ed)
    es[2:], es_labels[2:] = ed[:-2], labels[:-2]

    def t(v: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(v)[None, None]

    pair = LabelledPair("shift", t(ed), t(es), t(labels), t(es_labels))
    flow = torch.zeros(1, 3, 16, 16, 16)
    flow[:, 0] = -2.0
    right = score_case(pair, MotionEstimate((flow, -flow), (pair.ed, pair.es)))
    wrong = score_case(pair, MotionEstimate((-flow, flow), (pair.ed, pair.es)))
    assert right["Dice"] == right["Dice_RV"] == right["Dice_LV"] == 1.0
    assert right["PSNR"] > 100 and right["cycle_PSNR"] == math.inf  # exact up to float rounding
    assert wrong["Dice"] < 0.5 and wrong["NCC"] < right["NCC"]


def test_case_selection():
    assert parse_cases("all") is None
    assert parse_cases("1,091-093,patient100") == [(1, 1), (91, 93), "patient100"]
    with pytest.raises(InputError, match="backwards"):
        parse_cases("100-091")


@needs_data
def test_selecting_cases_of_the_test_split():
    assert [p.case for p in select_pairs(DATA)] == [f"patient{k:03d}" for k in range(91, 101)]
    assert [p.case for p in select_pairs(DATA, "099-100,patient001")] == [
        "patient001", "patient099", "patient100"]
    assert [p.case for p in select_pairs(DATA, "all", limit=2)] == ["patient001", "patient002"]
    with pytest.raises(InputError, match="no case"):
        select_pairs(DATA, "500-600")


@needs_data
def test_missing_or_bad_labels_are_input_errors(tmp_path):
    for suffix in ("ED", "ES"):
        shutil.copy(DATA / f"patient091_{suffix}.nii.gz", tmp_path)
    (pair,) = select_pairs(tmp_path, "all")
    with pytest.raises(InputError, match="no label file patient091_ED_gt.nii.gz"):
        load_labelled_pair(pair, SIZE)
    for suffix in ("ED", "ES"):  # images as labels: values up to 255
        shutil.copy(DATA / f"patient091_{suffix}.nii.gz",
                    tmp_path / f"patient091_{suffix}_gt.nii.gz")
    with pytest.raises(InputError, match="not a label map"):
        load_labelled_pair(pair, SIZE)


# ---------------------------------------------------------------------------- real pairs


@needs_data
def test_labels_are_cropped_like_the_images():
    pair = load_labelled_pair(select_pairs(DATA, "091")[0], SIZE)
    assert pair.ed.shape == pair.ed_labels.shape == (1, 1, *SIZE)
    raw = np.asarray(nib.load(DATA / "patient091_ED_gt.nii.gz").dataobj)
    np.testing.assert_array_equal(pair.ed_labels[0, 0].numpy(), centre(raw, SIZE))
    # the joint window of ED and ES (prepare_pair) puts the background near 0 and the bulk of
    # the intensities below 1; a few bright voxels may lie above it
    image = np.asarray(nib.load(DATA / "patient091_ED.nii.gz").dataobj, np.float32)
    window = joint_window(image, np.asarray(nib.load(DATA / "patient091_ES.nii.gz").dataobj,
                                            np.float32))
    np.testing.assert_allclose(pair.ed[0, 0].numpy(), centre(window.normalize(image), SIZE),
                               atol=1e-6)


@needs_data
def test_no_motion_row_equals_numpy_by_hand(evaluation):
    rows = evaluation.per_case["no motion (ED as is)"]
    assert [r["case"] for r in rows] == list(CASES)
    for row in rows:
        expected = by_hand(row["case"])
        for name, value in expected.items():
            assert row[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    summary = evaluation.rows[0]
    assert summary["Dice"] == pytest.approx(np.mean([r["Dice"] for r in rows]))
    assert summary["n_cases"] == 2


@needs_data
def test_untrained_uvinet_finds_no_motion_and_feature_ttt_keeps_the_flow(evaluation):
    """Untrained flows are ~1e-4 voxels: Dice as without motion. Rotation TTT adapts only the
    feature extractor, so the flow and with it every registration score stay as they were."""
    labels = ("no motion (ED as is)", "UVI-Net", "UVI-Net + TTT rotation (online)")
    none, uvinet, rotation = (evaluation.per_case[label] for label in labels)
    for a, b, c in zip(none, uvinet, rotation, strict=True):
        assert a["Dice"] == b["Dice"] == c["Dice"]
        assert b["NCC"] == pytest.approx(a["NCC"], abs=1e-3)
        assert c["NCC"] == b["NCC"] and c["PSNR"] == b["PSNR"]
    assert all(r["seconds_per_case"] >= 0 for r in evaluation.rows)
    assert evaluation.rows[1]["trained"] is False


@needs_data
def test_cli_table_and_strict_json(tmp_path):
    out = tmp_path / "pairs.json"
    res = subprocess.run(
        [sys.executable, "-m", "TTTInterpolationLib", "evaluate-pairs", "--data", str(DATA),
         "--cases", "091", "--size", *map(str, SIZE), "--ttt", "cycle", "--steps", "1",
         "--device", "cpu", "--progress", "none", "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "UVI-Net + TTT cycle (online)" in res.stdout and "Dice" in res.stdout
    data = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert data["cases"] == ["patient091"] and data["size"] == list(SIZE)
    assert [r["label"] for r in data["rows"]] == [
        "no motion (ED as is)", "UVI-Net", "UVI-Net + TTT cycle (online)"]
    assert data["rows"][2]["ttt"]["adapt"] == "all"
    assert set(data["per_case"]["UVI-Net"][0]) >= {"case", "NCC", "PSNR", "Dice", "cycle_PSNR"}


@needs_data
@pytest.mark.parametrize("args, message", [
    (["--cases", "500-600"], "no case"),
    (["--size", "60", "64", "16"], "model grid size"),
    (["--json", "out.txt"], "unsupported file type"),
])
def test_cli_bad_input_is_one_line_exit_2(args, message, tmp_path):
    res = subprocess.run([sys.executable, "-m", "TTTInterpolationLib", "evaluate-pairs", "--data",
                          str(DATA), *args], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert list(tmp_path.iterdir()) == []
