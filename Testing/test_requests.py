"""Requests are checked once, at the API's edge: index values, TTT keywords, the grid plan.

Each test here names a defect it was written against (it failed on the code before the fix).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from TTTInterpolationLib.cli import main
from TTTInterpolationLib.config import TTTConfig
from TTTInterpolationLib.data.phantoms.sequences import make_phantom_sequence
from TTTInterpolationLib.errors import InputError
from TTTInterpolationLib.fileio.volume_io import write_4d
from TTTInterpolationLib.volume import Sequence4D
from TTTInterpolationLib.workflows import inference, validation
from TTTInterpolationLib.workflows.evaluation import evaluate_sequence
from TTTInterpolationLib.workflows.inference import interpolate
from TTTInterpolationLib.workflows.settings import EvalSetting

from .conftest import blob_pair

LINEAR = [EvalSetting("linear", "linear")]


def _series(values: list[float], shape: tuple[int, int, int] = (16, 16, 8)) -> Sequence4D:
    seq = make_phantom_sequence("cardiac", len(values), shape, seed=0)
    return Sequence4D(seq.frames, seq.geometry, values)


def _strict(text: str) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_repeated_index_values_are_refused_not_divided_by():
    """Was: ZeroDivisionError traceback in evaluate_sequence (v_B - v_A = 0)."""
    seq = _series([0.0, 1.0, 2.0, 0.0])
    with pytest.raises(InputError, match="same index value"):
        evaluate_sequence(seq, [(0, 3)], LINEAR)
    with pytest.raises(InputError, match="same index value"):
        inference.interpolate_sequence(seq, (0, 3), [0.5], method="linear")
    with pytest.raises(InputError, match="not strictly monotonic"):  # a hidden frame repeats B
        evaluate_sequence(_series([0.0, 1.0, 2.0, 2.0]), [(1, 3)], LINEAR)


def test_unsorted_index_values_are_refused_not_extrapolated():
    """Was: times 1.5 and -0.5 for the hidden frames, scored silently as 'interpolation'."""
    seq = _series([0.0, 3.0, 1.0, 2.0])
    with pytest.raises(InputError, match="not strictly monotonic"):
        evaluate_sequence(seq, [(0, 3)], LINEAR)
    # descending is fine when the pair runs backwards: frames 3 -> 0 over values 2 -> 0
    rows = evaluate_sequence(_series([0.0, 1.0, 2.0]), [(2, 0)], LINEAR).rows
    assert rows[0]["n_frames"] == 1


def test_bad_index_values_through_the_cli_give_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "dup.seq.nrrd"
    write_4d(path, _series([0.0, 1.0, 1.0]))
    out = tmp_path / "r.json"
    code = main(["evaluate", str(path), "--frames", "0", "2", "--method", "linear",
                 "--progress", "none", "--json", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "index value" in err
    assert not out.exists()


def test_ttt_config_with_keywords_applies_the_keywords():
    """Was: ``ttt=TTTConfig(...)`` silently dropped ``steps``, ``scheme``, ``lr``, ``seed``."""
    a, b = blob_pair((16, 16, 16))
    common = {"device": "cpu", "weights": "untrained"}
    none = interpolate(a, b, [0.5], ttt=TTTConfig(task="cycle", steps=0), **common)[0]
    two = interpolate(a, b, [0.5], ttt=TTTConfig(task="cycle", steps=2), **common)[0]
    overridden = interpolate(a, b, [0.5], ttt=TTTConfig(task="cycle", steps=0), steps=2,
                             **common)[0]
    assert not np.array_equal(none, two)  # two cycle steps change the prediction
    np.testing.assert_array_equal(overridden, two)
    config = inference.ttt_config(TTTConfig(task="mae"), scheme="naive", steps=5, lr=1e-3, seed=3)
    assert (config.task, config.scheme, config.steps, config.lr, config.seed) == (
        "mae", "naive", 5, 1e-3, 3)
    assert inference.ttt_config(TTTConfig(task="mae", steps=7)).steps == 7  # nothing given: kept


def test_grid_is_planned_once_per_interpolate_command(tmp_path, monkeypatch, capsys):
    """Was: plan_mapping ran three times per interpolate (CLI check, sequence check, prepare)."""
    calls: list[tuple[int, ...]] = []
    real = validation.plan_mapping

    def counting(shape, size=None):
        calls.append(tuple(shape))
        return real(shape, size)

    monkeypatch.setattr(validation, "plan_mapping", counting)
    monkeypatch.setattr(inference, "plan_mapping", counting)
    src = tmp_path / "in.seq.nrrd"
    write_4d(src, _series([0.0, 1.0, 2.0]))
    code = main(["interpolate", str(src), "--frames", "0", "2", "--num", "2", "--method",
                 "linear", "--progress", "none", "-o", str(tmp_path / "o.seq.nrrd")])
    assert code == 0, capsys.readouterr().err
    assert calls == [(16, 16, 8)]


def test_constant_hidden_frame_scores_without_a_division_error():
    """Was: ZeroDivisionError in nmse (a constant frame normalises to all zeros)."""
    seq = _series([0.0, 1.0, 2.0])
    seq.frames[1] = 7.0
    row = evaluate_sequence(seq, [(0, 2)], LINEAR).rows[0]
    assert math.isinf(row["NMSE"])


def test_evaluate_json_is_strict_and_its_top_level_is_not_a_row(tmp_path, capsys):
    """Was: ``Infinity`` written for an exact prediction, and the last row copied to the top."""
    a, _ = blob_pair((16, 16, 16))
    src = tmp_path / "exact.nii.gz"  # a still series: linear blending predicts it exactly
    write_4d(src, Sequence4D(np.stack([a, a, a])))
    out = tmp_path / "r.json"
    code = main(["evaluate", str(src), "--frames", "0", "2", "--method", "linear",
                 "--progress", "none", "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    data = _strict(out.read_text())
    assert isinstance(data, dict) and set(data) == {"input", "split", "shift", "flow_resolution",
                                                    "motion", "protocols"}
    (report,) = data["protocols"]
    assert set(report) == {"protocol", "cases", "pairs", "table", "per_case"}
    assert report["pairs"] == [[[0, 2]]] and data["input"] == [str(src)]
    (row,) = report["table"]
    assert row["label"] == "linear blending" and row["PSNR"] is None  # infinite: null
    assert row["NMSE"] == pytest.approx(0.0, abs=1e-9)


def test_api_edge_refuses_a_bad_method_before_any_work(tmp_path: Path):
    a, b = blob_pair((16, 16, 16))
    with pytest.raises(InputError, match="unknown method"):
        interpolate(a, b, [0.5], method="cubic")
    with pytest.raises(InputError, match="unknown method"):
        evaluate_sequence(_series([0.0, 1.0, 2.0]), [(0, 2)], [EvalSetting("x", "cubic")])
