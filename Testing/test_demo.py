"""The demo's files: written atomically, figure drawn without touching the host's backend."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest

from TTTInterpolationLib.data.phantoms.sequences import make_phantom_sequence
from TTTInterpolationLib.errors import InputError
from TTTInterpolationLib.workflows.demo import _slug, save_figure
from TTTInterpolationLib.workflows.evaluation import evaluate_sequence
from TTTInterpolationLib.workflows.settings import EvalSetting


@pytest.fixture(scope="module")
def small_evaluation():
    seq = make_phantom_sequence("cardiac", 6, (16, 16, 8), seed=0)
    return seq, evaluate_sequence(seq, [(0, 3)], [EvalSetting("linear", "linear")])


def test_demo_figure_failure_leaves_no_temp_file(tmp_path: Path, small_evaluation) -> None:
    """The figure's target is a folder, so the final rename fails: the temp file must go."""
    seq, evaluation = small_evaluation
    (tmp_path / "figure.png").mkdir()
    (tmp_path / "figure.png" / "keep").write_text("x")
    with pytest.raises(InputError, match="cannot write"):
        save_figure(tmp_path / "figure.png", seq, evaluation)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.png"]


def test_demo_figure_does_not_switch_the_hosts_matplotlib_backend(tmp_path: Path,
                                                                  small_evaluation) -> None:
    seq, evaluation = small_evaluation
    before = matplotlib.get_backend()
    matplotlib.use("pdf")
    try:
        save_figure(tmp_path / "figure.png", seq, evaluation)
        assert matplotlib.get_backend() == "pdf"
    finally:
        matplotlib.use(before)
    assert (tmp_path / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_prediction_file_names_have_single_dashes() -> None:
    """Was: uvi-net--ttt-cycle-online.seq.nrrd (one pass of replace('--', '-'))."""
    assert _slug("UVI-Net + TTT cycle (online)") == "uvi-net-ttt-cycle-online"
    assert _slug("linear blending") == "linear-blending"
