"""The module's logic end to end: a real slicer-core scene, real files, the real engine process.

Linear blending (``method="linear"``) makes the expected voxels computable by hand, so the
whole chain (frames written with their geometry, engine run, results read back, index values
mapped, sequences and browser built) is checked voxel for voxel in seconds.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil
import pytest
import slicer
import vtk

from TTTInterpolationLib.data.phantoms.sequences import end_frames, make_phantom_sequence
from TTTInterpolationLib.fileio.geometry import ras_affine_from_geometry
from TTTInterpolationSlicerLib import logic, panel, sequences
from TTTInterpolationSlicerLib.logic import EvaluationProtocol, Mode
from TTTInterpolationSlicerLib.worker import (
    DEFAULT_MODEL,
    DEFAULTS,
    Device,
    EngineInputError,
    JobState,
    Method,
    Model,
    Scheme,
    TTTTask,
)

from .test_module_ui import parameter_types
from .test_slicer_sequences import oblique_matrix, slice_views

TIMEOUT = 60.0


@pytest.fixture
def temp_parent(tmp_path: Path) -> Path:
    """Where runs make their temporary folders: must be empty again after every run."""
    folder = tmp_path / "slicer-temp"
    folder.mkdir()
    return folder


def node_ids(scene: slicer.vtkMRMLScene) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def same_range_frames(count: int, shape: tuple[int, int, int] = (16, 12, 8),
                      seed: int = 0) -> np.ndarray:
    """int16 frames that all span 0..1000, so the engine's linear blend is (1-t)A + tB exactly."""
    frames = np.random.default_rng(seed).integers(0, 1001, (count, *shape)).astype(np.int16)
    frames[:, 0, 0, 0], frames[:, -1, -1, -1] = 0, 1000
    return frames


def cine(scene: slicer.vtkMRMLScene, frames: np.ndarray, values: list[float],
         matrix: np.ndarray | None = None) -> slicer.vtkMRMLSequenceNode:
    return sequences.sequence_from_arrays(scene, frames, oblique_matrix() if matrix is None
                                          else matrix, values, "cine", "time", "ms")


def test_logic_linear_between_two_frames_end_to_end(
        scene: slicer.vtkMRMLScene, sequences_logic: slicer.vtkSlicerSequencesLogic,
        temp_parent: Path) -> None:
    frames = same_range_frames(4)
    source = cine(scene, frames, [0, 40, 80, 120])
    composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    reports: list[tuple[float, str]] = []

    run = logic.create_run(scene, sequences_logic, source, 0, 1, 3, method="linear",
                           device="cpu", createMerged=True, tempParent=temp_parent,
                           onProgress=lambda f, text: reports.append((f, text)))
    result = logic.run_to_end(run, interval=0.02)

    output = result.outputSequence
    assert output.GetName() == "cine interpolated"
    assert [output.GetNthIndexValue(i) for i in range(3)] == ["10", "20", "30"]
    assert (output.GetIndexName(), output.GetIndexUnit()) == ("time", "ms")
    for item, t in enumerate((0.25, 0.5, 0.75)):
        volume = output.GetNthDataNode(item)
        expected = (1 - t) * frames[0].astype(float) + t * frames[1]
        actual = sequences.array_ijk(volume)
        assert actual.dtype == np.int16
        np.testing.assert_allclose(actual, expected, atol=1.0)
        np.testing.assert_array_equal(sequences.ijk_to_ras(volume), oblique_matrix())

    merged = result.mergedSequence
    assert merged.GetName() == "cine merged"
    assert sequences.index_values(merged) == [0, 10, 20, 30, 40, 80, 120]
    # Computed frames are marked, item by item and on both sequences; measured ones are not.
    marked = [merged.GetNthDataNode(i).GetAttribute(sequences.SYNTHETIC_ATTRIBUTE)
              for i in range(7)]
    assert marked == [None, "1", "1", "1", None, None, None]
    assert merged.GetAttribute(sequences.SYNTHETIC_ATTRIBUTE) == "10 20 30"
    assert output.GetAttribute(sequences.SYNTHETIC_ATTRIBUTE) == "10 20 30"
    assert output.GetNthDataNode(0).GetName().endswith("(synthetic)")
    np.testing.assert_array_equal(sequences.array_ijk(merged.GetNthDataNode(5)), frames[2])
    assert result.browser.GetMasterSequenceNode() is merged
    assert composite.GetBackgroundVolumeID() == result.proxyVolume.GetID()
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
    assert hierarchy.GetItemName(result.folderItem) == "cine TTT interpolation"
    for node in (output, merged, result.proxyVolume):
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == result.folderItem
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(source)) != result.folderItem

    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert run.state is JobState.SUCCEEDED
    assert not run.workFolder.exists() and not any(temp_parent.iterdir())
    assert run.elapsed > 0 and run.remaining == 0.0
    assert run.log.startswith("$ ") and " interpolate " in run.log.splitlines()[0]
    assert "[done 100%]" in run.log and run.log.endswith("(exit code 0)")


def test_logic_upsamples_the_whole_sequence(
        scene: slicer.vtkMRMLScene, sequences_logic: slicer.vtkSlicerSequencesLogic,
        temp_parent: Path) -> None:
    frames = same_range_frames(3)
    source = cine(scene, frames, [0.0, 1.0, 2.0])
    texts: list[str] = []

    run = logic.create_run(scene, sequences_logic, source, upsampleFactor=3, method="linear",
                           device="cpu", createMerged=True, tempParent=temp_parent,
                           onProgress=lambda f, text: texts.append(text))
    result = logic.run_to_end(run, interval=0.02)

    assert sequences.index_values(result.outputSequence) == pytest.approx([1 / 3, 2 / 3, 4 / 3,
                                                                          5 / 3], abs=1e-4)
    merged = result.mergedSequence
    assert merged.GetNumberOfDataNodes() == 7
    assert [merged.GetNthIndexValue(i) for i in (0, 3, 6)] == ["0", "1", "2"]
    third = sequences.array_ijk(merged.GetNthDataNode(4))  # 4/3: a third of the way from 1 to 2
    np.testing.assert_allclose(third, (2 * frames[1].astype(float) + frames[2]) / 3, atol=1.0)
    tolerance = merged.GetNumericIndexValueTolerance()
    assert all(merged.GetItemNumberFromIndexValue(merged.GetNthIndexValue(i)) == i
               for i in range(7)), f"tolerance {tolerance} merges neighbours"
    starts = [line for line in run.log.splitlines() if line.startswith("$ ")]
    assert len(starts) == 1 and " upsample " in starts[0]
    assert not any(temp_parent.iterdir())


def test_logic_output_follows_the_input_transform(
        scene: slicer.vtkMRMLScene, sequences_logic: slicer.vtkSlicerSequencesLogic,
        temp_parent: Path) -> None:
    source = cine(scene, same_range_frames(3), [0.0, 1.0, 2.0])
    proxy = sequences.browser_for(scene, sequences_logic, source).GetProxyNode(source)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    proxy.SetAndObserveTransformNodeID(transform.GetID())
    result = logic.run_to_end(logic.create_run(
        scene, sequences_logic, source, 0, 1, 1, method="linear", device="cpu",
        tempParent=temp_parent), interval=0.02)
    assert result.proxyVolume.GetTransformNodeID() == transform.GetID()


def test_logic_upsamples_twenty_frames_by_two_in_one_engine_process(
        scene: slicer.vtkMRMLScene, sequences_logic: slicer.vtkSlicerSequencesLogic,
        temp_parent: Path) -> None:
    frames = same_range_frames(20)
    source = cine(scene, frames, [40.0 * i for i in range(20)])
    run = logic.create_run(scene, sequences_logic, source, upsampleFactor=2, method="linear",
                           device="cpu", tempParent=temp_parent)
    result = logic.run_to_end(run, interval=0.02)
    starts = [line for line in run.log.splitlines() if line.startswith("$ ")]
    assert len(starts) == 1 and " upsample " in starts[0] and "--factor 2" in starts[0]
    assert sequences.index_values(result.outputSequence) == [40.0 * i + 20 for i in range(19)]


def test_logic_uvinet_fills_a_chosen_output_sequence(
        scene: slicer.vtkMRMLScene, sequences_logic: slicer.vtkSlicerSequencesLogic,
        temp_parent: Path) -> None:
    phantom = make_phantom_sequence("cardiac", 6, (32, 32, 16))
    source = cine(scene, phantom.frames, phantom.index_values,
                  ras_affine_from_geometry(phantom.geometry))
    chosen = scene.AddNewNodeByClass(sequences.SEQUENCE_CLASS, "my result")
    chosen.SetDataNodeAtValue(source.GetNthDataNode(0), "7")  # stale content to be replaced
    before = node_ids(scene)

    run = logic.create_run(scene, sequences_logic, source, 1, 3, 1, ttt="none", device="cpu",
                           outputSequence=chosen, weights=Model("acdc-uvinet"),
                           tempParent=temp_parent)
    result = logic.run_to_end(run, interval=0.05)

    assert "--weights acdc-uvinet" in run.log.splitlines()[0]  # the engine takes the name
    assert result.outputSequence is chosen and chosen.GetName() == "my result"
    assert sequences.index_values(chosen) == [2.0]
    assert result.mergedSequence is None
    added = node_ids(scene) - before
    assert {scene.GetNodeByID(i).GetClassName() for i in added} >= {sequences.BROWSER_CLASS}
    assert not any(scene.GetNodeByID(i).IsA(sequences.SEQUENCE_CLASS) for i in added)


def test_logic_cancel_mid_run_leaves_nothing_behind(
        scene: slicer.vtkMRMLScene, sequences_logic: slicer.vtkSlicerSequencesLogic,
        temp_parent: Path) -> None:
    phantom = make_phantom_sequence("cardiac", 6, (64, 64, 32))
    source = cine(scene, phantom.frames, phantom.index_values)
    before = node_ids(scene)
    reports: list[float] = []
    run = logic.create_run(scene, sequences_logic, source, 0, 2, 1, ttt="cycle", steps=50,
                           device="cpu", createMerged=False, tempParent=temp_parent,
                           onProgress=lambda f, text: reports.append(f))

    run.start()
    engine = psutil.Process().children(recursive=True)
    deadline = time.monotonic() + TIMEOUT
    while len(reports) < 2 and run.poll() and time.monotonic() < deadline:  # 1st: "starting"
        time.sleep(0.05)
    assert run.running, "the run ended before it could be cancelled"
    run.cancel()

    assert run.state is JobState.CANCELLED and run.result is None
    assert engine and not [p for p in engine if p.is_running()
                           and p.status() != psutil.STATUS_ZOMBIE]
    assert node_ids(scene) == before
    assert not any(temp_parent.iterdir())


def test_logic_engine_failure_surfaces_and_changes_nothing(
        scene: slicer.vtkMRMLScene, sequences_logic: slicer.vtkSlicerSequencesLogic,
        temp_parent: Path) -> None:
    frames = same_range_frames(3).astype(np.float32)
    frames[1, 2, 2, 2] = np.nan
    source = cine(scene, frames, [0, 1, 2])
    chosen = scene.AddNewNodeByClass(sequences.SEQUENCE_CLASS, "keep me")
    chosen.SetDataNodeAtValue(source.GetNthDataNode(0), "5")
    before = node_ids(scene)

    run = logic.create_run(scene, sequences_logic, source, 0, 1, 1, method="linear",
                           device="cpu", outputSequence=chosen, createMerged=True,
                           tempParent=temp_parent)
    with pytest.raises(EngineInputError, match="NaN"):
        logic.run_to_end(run, interval=0.02)

    assert run.state is JobState.FAILED
    assert node_ids(scene) == before
    assert [chosen.GetNthIndexValue(i) for i in range(chosen.GetNumberOfDataNodes())] == ["5"]
    assert not any(temp_parent.iterdir())


@pytest.mark.parametrize(("arguments", "message"), [
    ({"frameA": 2, "frameB": 2}, "must differ"),
    ({"frameA": 0, "frameB": 9}, "frame 9 is out of range"),
    ({"numberOfFrames": 0}, "at least 1"),
    ({"upsampleFactor": 1}, "at least 2"),
    ({"frameA": 0, "frameB": 2, "numberOfFrames": 1, "createMerged": True},
     "existing index value 10"),
    ({"weights": "/nonexistent/weights.safetensors"}, "weights file not found"),
    ({"steps": -1}, "steps"),
    ({"ttt": "jigsaw"}, "jigsaw"),
])
def test_logic_rejects_bad_requests_before_touching_anything(
        scene: slicer.vtkMRMLScene, sequences_logic: slicer.vtkSlicerSequencesLogic,
        temp_parent: Path, arguments: dict, message: str) -> None:
    source = cine(scene, same_range_frames(4, (4, 4, 4)), [0, 10, 20, 30])
    before = node_ids(scene)
    with pytest.raises(ValueError, match=message):
        logic.create_run(scene, sequences_logic, source, tempParent=temp_parent, **arguments)
    assert node_ids(scene) == before and not any(temp_parent.iterdir())


def test_logic_takes_a_pair_in_either_order_as_the_engine_does(
        scene: slicer.vtkMRMLScene, sequences_logic: slicer.vtkSlicerSequencesLogic,
        temp_parent: Path) -> None:
    """One check of a pair (the engine's frame_pairs): B before A is a pair like any other."""
    frames = same_range_frames(4)
    source = cine(scene, frames, [0, 10, 20, 30])
    outputs = []
    for a, b in ((1, 3), (3, 1)):
        result = logic.run_to_end(logic.create_run(
            scene, sequences_logic, source, a, b, 3, method="linear", device="cpu",
            tempParent=temp_parent), interval=0.02)
        out = result.outputSequence
        outputs.append({out.GetNthIndexValue(i): sequences.array_ijk(out.GetNthDataNode(i))
                        for i in range(out.GetNumberOfDataNodes())})
    assert sorted(outputs[0]) == sorted(outputs[1]) == ["15", "20", "25"]
    for value in outputs[0]:
        np.testing.assert_allclose(outputs[0][value], outputs[1][value], atol=1.0)
    scores = []
    for a, b in ((0, 3), (3, 0)):
        result = logic.run_to_end(logic.create_evaluation(
            scene, sequences_logic, source, a, b, device="cpu", tempParent=temp_parent),
            interval=0.02)
        truth = result.truthSequence
        assert [truth.GetNthIndexValue(i) for i in range(2)] == ["10", "20"]
        scores.append(result.settings[0].scores["PSNR"])  # linear blending: symmetric
    assert scores[0] == pytest.approx(scores[1], abs=1e-3)


def test_logic_rejects_unusable_inputs(scene: slicer.vtkMRMLScene,
                                       sequences_logic: slicer.vtkSlicerSequencesLogic) -> None:
    source = cine(scene, same_range_frames(3, (4, 4, 4)), [0, 1, 2])
    with pytest.raises(ValueError, match="must differ from the input"):
        logic.create_run(scene, sequences_logic, source, outputSequence=source)
    with pytest.raises(ValueError, match="select an input sequence"):
        logic.create_run(scene, sequences_logic, None)
    source.SetDataNodeAtValue(sequences.volume_from_array(
        same_range_frames(1, (4, 4, 4))[0], np.eye(4)), "3")
    with pytest.raises(ValueError, match="different voxel grids"):
        logic.create_run(scene, sequences_logic, source, 2, 3)


def test_logic_plans() -> None:
    assert logic.evenly_spaced(3) == (0.25, 0.5, 0.75)
    assert logic.plan_between([0, 1, 2, 3, 4], 1, 4, 2) == [
        logic.PairTask(1, 4, (1 / 3, 2 / 3))]
    assert logic.plan_upsample(3, 2) == [logic.PairTask(0, 1, (0.5,)), logic.PairTask(1, 2, (0.5,))]
    with pytest.raises(ValueError, match="at least 2 frames"):
        logic.plan_upsample(1, 2)


def test_logic_phantom_sample_data(scene: slicer.vtkMRMLScene,
                                   sequences_logic: slicer.vtkSlicerSequencesLogic) -> None:
    node = logic.add_phantom_sequence(scene, sequences_logic, frames=6, size=(32, 32, 16))
    phantom = make_phantom_sequence("cardiac", 6, (32, 32, 16))
    stack = sequences.frames_as_arrays(node)
    np.testing.assert_array_equal(stack.frames, phantom.frames)
    np.testing.assert_allclose(stack.ijk_to_ras, ras_affine_from_geometry(phantom.geometry))
    assert (node.GetName(), node.GetIndexUnit(), stack.index_values) == (
        "TTT phantom", "frame", [0, 1, 2, 3, 4, 5])
    assert sequences_logic.GetFirstBrowserNodeForSequenceNode(node) is not None


@pytest.mark.slow
def test_logic_phantom_evaluation_ttt_beats_linear_blending(
        scene: slicer.vtkMRMLScene, sequences_logic: slicer.vtkSlicerSequencesLogic,
        temp_parent: Path) -> None:
    """The module self-test's check, headless: UVI-Net + cycle TTT against linear blending."""
    frames = 10
    source = logic.add_phantom_sequence(scene, sequences_logic, frames=frames)
    item_a, item_b = end_frames("cardiac", frames)
    result = logic.run_to_end(logic.create_evaluation(
        scene, sequences_logic, source, item_a, item_b, ttt="cycle", steps=30, device="cpu",
        tempParent=temp_parent), interval=0.2)

    linear, cycle = result.settings[0], result.settings[-1]
    assert (linear.label, cycle.setting.ttt) == ("linear blending", TTTTask.CYCLE)
    assert cycle.scores["PSNR"] > linear.scores["PSNR"]


def test_logic_evaluation_end_to_end(
        scene: slicer.vtkMRMLScene, sequences_logic: slicer.vtkSlicerSequencesLogic,
        temp_parent: Path) -> None:
    """Hide, predict, score, show: the real engine (one ``evaluate``) on a phantom.

    Uneven index values check that the hidden frames' times travel to the engine: linear
    blending at those times is computable by hand.
    """
    views = slice_views(scene)
    layout = scene.AddNewNodeByClass("vtkMRMLLayoutNode")
    layout.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalView)
    phantom = make_phantom_sequence("cardiac", 5, (32, 32, 16))
    values = [0, 10, 30, 60, 100]
    source = cine(scene, phantom.frames, values, ras_affine_from_geometry(phantom.geometry))
    before = node_ids(scene)
    reports: list[tuple[float, str]] = []

    run = logic.create_evaluation(scene, sequences_logic, source, 0, 3, ttt="rotation",
                                  steps=1, device="cpu", tempParent=temp_parent,
                                  onProgress=lambda f, text: reports.append((f, text)))
    result = logic.run_to_end(run, interval=0.05)

    truth = result.truthSequence
    assert truth.GetName() == "cine truth"
    assert [truth.GetNthIndexValue(i) for i in range(2)] == ["10", "30"]
    for item in range(2):
        np.testing.assert_array_equal(sequences.array_ijk(truth.GetNthDataNode(item)),
                                      phantom.frames[item + 1])
    labels = [s.label for s in result.settings]
    assert labels == ["linear blending", "registration", "UVI-Net",
                      "UVI-Net + TTT rotation prediction"]
    a, b = (phantom.frames[i].astype(np.float64) for i in (0, 3))
    linear = result.settings[0].predictionSequence
    for item, t in enumerate((1 / 6, 1 / 2)):
        np.testing.assert_allclose(sequences.array_ijk(linear.GetNthDataNode(item)),
                                   (1 - t) * a + t * b, atol=1e-3)  # float32 on the way
    for evaluated in result.settings:
        scores = evaluated.scores
        assert scores["n_frames"] == 2 and np.isfinite(scores["PSNR"]) and scores["SSIM"] <= 1
        for item in range(2):
            predicted = sequences.array_ijk(evaluated.predictionSequence.GetNthDataNode(item))
            error = sequences.array_ijk(evaluated.errorSequence.GetNthDataNode(item))
            np.testing.assert_allclose(error, np.abs(predicted - phantom.frames[item + 1]),
                                       atol=1e-4)
            assert sequences.same_grid(evaluated.errorSequence.GetNthDataNode(item),
                                       source.GetNthDataNode(0))
    assert result.settings[1].scores["seconds_per_case"] > 0

    # One browser plays truth, every prediction and every error together.
    browser = result.browser
    assert browser.GetMasterSequenceNode() is truth
    for evaluated in result.settings:
        for sequence in (evaluated.predictionSequence, evaluated.errorSequence):
            assert browser.IsSynchronizedSequenceNode(sequence.GetID())
    browser.SetSelectedItemNumber(1)
    best = result.best()
    np.testing.assert_array_equal(
        sequences.array_ijk(browser.GetProxyNode(best.predictionSequence)),
        sequences.array_ijk(best.predictionSequence.GetNthDataNode(1)))
    shown = [composite.GetBackgroundVolumeID() for _, composite in views.values()]
    assert shown == [browser.GetProxyNode(sequence).GetID() for sequence in
                     (truth, best.predictionSequence, best.errorSequence)]
    result.show(result.settings[0])
    assert views["Yellow"][1].GetBackgroundVolumeID() == browser.GetProxyNode(linear).GetID()
    # Truth, prediction and error in one row of linked views; the old layout comes back.
    assert layout.GetViewArrangement() == sequences.SIDE_BY_SIDE_LAYOUT
    assert all(composite.GetLinkedControl() for _, composite in views.values())
    result.restoreLayout()
    assert layout.GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalView

    table = result.table()
    assert [row[0] for row in table] == labels
    node = result.tableNode  # the same table in the scene, saved with it
    assert node.GetName() == "cine evaluation scores" and node.GetNumberOfRows() == len(labels)
    assert [node.GetColumnName(c) for c in range(node.GetNumberOfColumns())] == list(
        logic.EVALUATION_COLUMNS)
    assert [[node.GetCellText(r, c) for c in range(node.GetNumberOfColumns())]
            for r in range(node.GetNumberOfRows())] == table
    assert all(len(row) == len(logic.EVALUATION_COLUMNS) for row in table)
    assert table[0][1] == (f"{result.settings[0].scores['PSNR']:.3f} \u00b1 "
                           f"{result.settings[0].scores['PSNR_std']:.3f}")
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
    assert hierarchy.GetItemName(result.folderItem) == "cine TTT evaluation"
    children = vtk.vtkIdList()
    hierarchy.GetItemChildren(result.folderItem, children)
    in_folder = {hierarchy.GetItemDataNode(children.GetId(k)).GetID()
                 for k in range(children.GetNumberOfIds())}
    assert {truth.GetID(), node.GetID()} | {
        s.predictionSequence.GetID() for s in result.settings} <= in_folder
    assert source.GetID() not in in_folder
    added = {scene.GetNodeByID(i).GetName() for i in node_ids(scene) - before
             if scene.GetNodeByID(i).IsA(sequences.SEQUENCE_CLASS)}
    assert added == {"cine truth", *(f"cine {label}" for label in labels),
                     *(f"cine {label} error" for label in labels)}

    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("rotation" in text for _, text in reports)
    commands = [line for line in run.log.splitlines() if line.startswith("$ ")]
    assert [c.split()[4] for c in commands] == ["evaluate"]  # one engine process per job
    assert "--predictions" in commands[0]
    assert not any(temp_parent.iterdir())


def test_logic_evaluation_under_the_x2_protocol(
        scene: slicer.vtkMRMLScene, sequences_logic: slicer.vtkSlicerSequencesLogic,
        temp_parent: Path) -> None:
    """Keep every 2nd frame, predict the rest: one engine process (``--protocol x2``) for
    every gap; the truth is the input's hidden frames, each prediction and error sits at its
    frame's index value. Uneven times make linear blending computable by hand; the 6th frame,
    after the last kept one, is neither shown to the engine nor scored."""
    frames = same_range_frames(6)
    values = [0, 10, 30, 60, 100, 150]
    source = cine(scene, frames, values)
    run = logic.create_evaluation(scene, sequences_logic, source, protocol="x2", device="cpu",
                                  tempParent=temp_parent)
    assert (run.pairs, run.hidden) == ([(0, 2), (2, 4)], [1, 3])
    result = logic.run_to_end(run, interval=0.05)

    truth = result.truthSequence
    assert sequences.index_values(truth) == [10.0, 60.0]
    for item, hidden in enumerate((1, 3)):
        np.testing.assert_array_equal(sequences.array_ijk(truth.GetNthDataNode(item)),
                                      frames[hidden])
    linear = result.settings[0]
    assert linear.label == "linear blending" and linear.scores["n_frames"] == 2
    for item, (a, b, t) in enumerate(((0, 2, 1 / 3), (2, 4, 3 / 7))):
        expected = (1 - t) * frames[a].astype(float) + t * frames[b]
        predicted = sequences.array_ijk(linear.predictionSequence.GetNthDataNode(item))
        np.testing.assert_allclose(predicted, expected, atol=1.0)
        error = sequences.array_ijk(linear.errorSequence.GetNthDataNode(item))
        # The error is the engine's float prediction's; the prediction shown is rounded to
        # the input's int16.
        np.testing.assert_allclose(error, np.abs(predicted - frames[(1, 3)[item]]), atol=0.501)
    for evaluated in result.settings:
        assert sequences.index_values(evaluated.predictionSequence) == [10.0, 60.0]
    command = run.log.splitlines()[0]
    assert " --protocol x2 " in command and "--frames" not in command
    assert result.engineReport["protocols"][0]["pairs"] == [[[0, 2], [2, 4]]]
    assert not any(temp_parent.iterdir())


@pytest.mark.parametrize(("protocol", "count", "message"), [
    ("x4", 4, "too few to keep every 4th frame"),
    ("x2", 2, "too few to keep every 2nd frame"),
    ("x3", 9, "x3"),
])
def test_logic_evaluation_protocol_rejects_short_sequences(
        scene: slicer.vtkMRMLScene, sequences_logic: slicer.vtkSlicerSequencesLogic,
        temp_parent: Path, protocol: str, count: int, message: str) -> None:
    source = cine(scene, same_range_frames(count, (4, 4, 4)), list(range(count)))
    before = node_ids(scene)
    with pytest.raises(ValueError, match=message):
        logic.create_evaluation(scene, sequences_logic, source, protocol=protocol,
                                tempParent=temp_parent)
    assert node_ids(scene) == before and not any(temp_parent.iterdir())


def test_logic_evaluation_engine_failure_changes_nothing(
        scene: slicer.vtkMRMLScene, sequences_logic: slicer.vtkSlicerSequencesLogic,
        temp_parent: Path) -> None:
    frames = same_range_frames(4).astype(np.float32)
    frames[1, 3, 3, 3] = np.nan  # a hidden frame the engine refuses to score against
    source = cine(scene, frames, [0, 1, 2, 3])
    before = node_ids(scene)

    run = logic.create_evaluation(scene, sequences_logic, source, 0, 3, device="cpu",
                                  tempParent=temp_parent)
    with pytest.raises(EngineInputError, match="NaN"):
        logic.run_to_end(run, interval=0.02)

    assert run.state is JobState.FAILED and "evaluate" in run.log
    assert node_ids(scene) == before and not any(temp_parent.iterdir())


@pytest.mark.parametrize(("arguments", "message"), [
    ({"frameA": 1, "frameB": 2}, "neighbours"),
    ({"frameA": 0, "frameB": 7}, "frame 7 is out of range"),
    ({"frameA": 0, "frameB": 3, "ttt": "jigsaw"}, "jigsaw"),
    ({"frameA": 0, "frameB": 3, "steps": -2}, "steps"),
])
def test_logic_evaluation_rejects_bad_requests(
        scene: slicer.vtkMRMLScene, sequences_logic: slicer.vtkSlicerSequencesLogic,
        temp_parent: Path, arguments: dict, message: str) -> None:
    source = cine(scene, same_range_frames(4, (4, 4, 4)), [0, 10, 20, 30])
    before = node_ids(scene)
    with pytest.raises(ValueError, match=message):
        logic.create_evaluation(scene, sequences_logic, source, tempParent=temp_parent,
                                **arguments)
    assert node_ids(scene) == before and not any(temp_parent.iterdir())


def test_logic_evaluation_settings() -> None:
    settings = logic.evaluation_settings([TTTTask.CYCLE, TTTTask.NONE, TTTTask.CYCLE,
                                          TTTTask.MAE])
    assert [(s.method.value, s.ttt.value) for s in settings] == [
        ("linear", "none"), ("registration", "none"), ("uvinet", "none"), ("uvinet", "cycle"),
        ("uvinet", "mae")]


@pytest.mark.parametrize(("seconds", "text"), [
    (0.4, "0 s"), (44.6, "45 s"), (185, "3 min 05 s"), (3725, "1 h 02 min")])
def test_logic_format_duration(seconds: float, text: str) -> None:
    assert logic.format_duration(seconds) == text


def test_logic_remaining_time() -> None:
    assert logic.remaining_seconds(30.0, 0.25) == pytest.approx(90.0)
    assert logic.remaining_seconds(30.0, 0.0) is None  # nothing done: no guess
    assert logic.remaining_seconds(30.0, 1.0) == 0.0
    assert logic.describe_timing(30.0, 90.0) == "30 s elapsed, about 1 min 30 s left"
    assert logic.describe_timing(3.0, None) == "3 s elapsed, estimating"


def test_logic_model_note_follows_the_chosen_model(tmp_path: Path) -> None:
    """The panel names the chosen model's weights licence (from the engine's registry)."""
    note = logic.model_note(Model("acdc-uvinet"))
    assert note.startswith("acdc-uvinet (default): weights CC BY-NC-SA 4.0 (trained on ACDC "
                           "images). UVI-Net + rotation/MAE heads trained on ACDC")
    assert logic.model_note(Model.CUSTOM, "") == (
        "Choose a .safetensors or .pt checkpoint; until then the default model (acdc-uvinet) "
        "is used.")
    own = tmp_path / "mine.safetensors"
    assert "yours to check" in logic.model_note(Model.CUSTOM, str(own))
    assert logic.model_note("acdc-uvinet") == note  # by name too


def test_logic_engine_command_line_carries_the_chosen_model(tmp_path: Path) -> None:
    """A registered model goes to the engine by its name (``--weights`` takes names), a
    custom file by its path, an empty custom file not at all."""
    own = tmp_path / "mine.safetensors"
    own.write_bytes(b"")

    def weights_option(model: Model, path: str = "") -> list[str]:
        args = logic.engine_options(weights=logic.chosen_weights(model, path)).arguments()
        return args[args.index("--weights"):][:2] if "--weights" in args else []

    assert weights_option(Model("acdc-uvinet")) == ["--weights", "acdc-uvinet"]
    assert weights_option(Model("acdc-uvinet"), str(own)) == ["--weights", "acdc-uvinet"]
    assert weights_option(Model.CUSTOM, str(own)) == ["--weights", str(own)]
    assert weights_option(Model.CUSTOM, "") == []
    # The console API takes a choice, a registered name or a path alike.
    assert logic.engine_options(weights=Model("acdc-uvinet")).weights == "acdc-uvinet"
    assert logic.engine_options(weights="acdc-uvinet").weights == "acdc-uvinet"
    with pytest.raises(ValueError, match="nor a registered model: acdc-uvinet"):
        logic.engine_options(weights="acdc-uvnet").validate()


def test_logic_repairs_what_older_scenes_saved() -> None:
    """A model gone from the registry, or the "." of an unset Path, is forgotten before the
    parameter node wrapper reads the node (it would refuse the unknown choice)."""
    node = slicer.vtkMRMLScriptedModuleNode()
    node.SetParameter("model", "acdc-uvinet")
    node.SetParameter("weightsFile", "/data/mine.pt")
    logic.repair_saved_parameters(node)
    assert (node.GetParameter("model"), node.GetParameter("weightsFile")) == (
        "acdc-uvinet", "/data/mine.pt")
    node.SetParameter("model", "a-model-since-removed")
    node.SetParameter("weightsFile", ".")
    logic.repair_saved_parameters(node)
    assert node.GetParameterNames() == ()
    # Before the model choice a switch said "my own file": its file is kept as the custom one.
    for switch, model in (("True", "CUSTOM"), ("false", "")):
        node.SetParameter("customWeights", switch)
        node.SetParameter("weightsFile", "/data/mine.pt")
        logic.repair_saved_parameters(node)
        assert (node.GetParameter("model"), node.GetParameter("weightsFile")) == (
            model, "/data/mine.pt")
        assert not node.GetParameter("customWeights")
        node.UnsetParameter("model")


@pytest.mark.parametrize("unset", [None, "", ".", " "])
def test_logic_unset_weights_file_passes_no_weights_option(unset: str | None) -> None:
    """No file chosen: no --weights at all, so the engine uses its default model (an empty
    field once read back as pathlib.Path() == "." and went to the engine as "--weights .")."""
    options = logic.engine_options(weights=unset)
    assert options.weights is None and "--weights" not in options.shared_arguments()
    assert options.method is Method.REGISTRATION  # an empty field asks for no network
    chosen = logic.engine_options(weights=__file__).shared_arguments()
    assert chosen[chosen.index("--weights") + 1] == __file__


def panel_settings(**changes) -> SimpleNamespace:
    """The panel's parameter node as it starts (its defaults), with ``changes``: a headless
    stand-in with exactly the parameter node's fields."""
    fields = dict(inputSequence=None, mode=Mode.BETWEEN, frameA=1, frameB=2, numberOfFrames=3,
                  upsampleFactor=2, ttt=TTTTask.NONE, scheme=Scheme.ONLINE, steps=10,
                  method=Method(DEFAULTS["method"]), learningRate=0.0, model=DEFAULT_MODEL,
                  weightsFile="",
                  device=Device.AUTO, seed=0, halfResolutionFlow=False, outputSequence=None,
                  createMerged=False, evaluationProtocol=EvaluationProtocol.BETWEEN,
                  compareAllTasks=False)
    assert set(fields) == set(parameter_types())  # the stand-in has the node's fields
    return SimpleNamespace(**{**fields, **changes})


def test_panel_apply_asks_the_logic_what_the_settings_say(
        scene: slicer.vtkMRMLScene, sequences_logic: slicer.vtkSlicerSequencesLogic,
        temp_parent: Path, tmp_path: Path) -> None:
    """Apply's request, fed to the console API as the panel does: frame numbers from 1
    become items from 0, the model choice becomes --weights, every name is one the logic
    takes (runs are built, not started)."""
    source = cine(scene, same_range_frames(5, (4, 4, 4)), [0, 10, 20, 30, 40])

    def build(settings: SimpleNamespace) -> logic.EngineRun:
        kind, args, options = panel.run_request(settings)
        create = logic.create_evaluation if kind == "evaluate" else logic.create_run
        return create(scene, sequences_logic, source, *args, tempParent=temp_parent, **options)

    run = build(panel_settings(frameA=2, frameB=5, numberOfFrames=2, learningRate=2e-4))
    assert run.tasks == [logic.PairTask(1, 4, (1 / 3, 2 / 3))] and run.factor is None
    assert (run.options.weights, run.options.learning_rate) == ("acdc-uvinet", 2e-4)
    run = build(panel_settings(mode=Mode.UPSAMPLE, upsampleFactor=3, model=Model.CUSTOM))
    assert run.factor == 3 and run.options.weights is None  # no file chosen: no --weights
    own = tmp_path / "mine.pt"
    own.write_bytes(b"")
    run = build(panel_settings(mode=Mode.EVALUATE, frameA=1, frameB=4, compareAllTasks=True,
                               model=Model.CUSTOM, weightsFile=str(own)))
    assert run.hidden == [1, 2] and run.options.weights == own
    assert [s.ttt for s in run.settings][3:] == [t for t in TTTTask if t is not TTTTask.NONE]
    run = build(panel_settings(mode=Mode.EVALUATE, evaluationProtocol=EvaluationProtocol.X2))
    assert (run.protocol, run.pairs, run.hidden) == (EvaluationProtocol.X2, [(0, 2), (2, 4)],
                                                    [1, 3])
    # TTT adapts UVI-Net: with another method a task left chosen in the panel is not sent
    # (the engine refuses a task with them); with UVI-Net it is.
    run = build(panel_settings(method=Method.REGISTRATION, ttt=TTTTask.CYCLE))
    assert (run.options.method, run.options.ttt) == (Method.REGISTRATION, TTTTask.NONE)
    run = build(panel_settings(method=Method.UVINET, ttt=TTTTask.CYCLE))
    assert (run.options.method, run.options.ttt) == (Method.UVINET, TTTTask.CYCLE)
    assert not any(temp_parent.iterdir())


def test_console_api_resolves_the_method_as_the_command_line_does() -> None:
    assert logic.engine_options().method is Method(DEFAULTS["method"]) is Method.REGISTRATION
    assert logic.engine_options(ttt="cycle").method is Method.UVINET
    assert logic.engine_options(weights="acdc-uvinet").method is Method.UVINET
    assert logic.engine_options(halfResolutionFlow=True).method is Method.UVINET
    assert logic.engine_options(method="linear").method is Method.LINEAR


def test_panel_input_line_and_readiness(scene: slicer.vtkMRMLScene) -> None:
    source = cine(scene, same_range_frames(4, (4, 4, 4)), [0, 10, 20, 30])
    assert panel.input_info(None, Mode.BETWEEN, 0, 1) == ("Select a sequence of volumes.", False)
    assert panel.input_info(source, Mode.BETWEEN, 0, 3) == (
        "4 frames, time from 0 to 30 ms. A at 0 ms, B at 30 ms.", True)
    assert panel.input_info(source, Mode.UPSAMPLE, 0, 3) == (
        "4 frames, time from 0 to 30 ms.", True)
    assert panel.input_info(source, Mode.EVALUATE, 0, 3) == (
        "4 frames, time from 0 to 30 ms. A at 0 ms, B at 30 ms. 2 frames between A and B are "
        "hidden and predicted.", True)
    text, ready = panel.input_info(source, Mode.EVALUATE, 1, 2)
    assert text.endswith("Frame B must be at least two frames after A.") and not ready
    # Under a protocol frames A and B do not count: the kept frames, as the browser counts.
    assert panel.input_info(source, Mode.EVALUATE, 1, 2, EvaluationProtocol.X2) == (
        "4 frames, time from 0 to 30 ms. 2 frames kept (1, 3), the 1 between them "
        "hidden and predicted; the last 1 not used.", True)
    assert panel.input_info(source, Mode.EVALUATE, 1, 2, EvaluationProtocol.X4) == (
        "4 frames, time from 0 to 30 ms. The sequence: 4 frames are too few to keep every 4th "
        "frame and fill between them (at least 5).", False)


def test_panel_status_and_captions(scene: slicer.vtkMRMLScene) -> None:
    output = scene.AddNewNodeByClass(sequences.SEQUENCE_CLASS, "cine interpolated")
    done = SimpleNamespace(state=JobState.SUCCEEDED, elapsed=65.0, newValues=[1.0, 2.0],
                           result=SimpleNamespace(outputSequence=output))
    assert panel.finished_status(done) == "Created 2 frames in 'cine interpolated' in 1 min 05 s."
    cancelled = SimpleNamespace(state=JobState.CANCELLED, elapsed=3.0)
    assert panel.finished_status(cancelled) == "Cancelled; nothing was changed."
    failed = SimpleNamespace(state=JobState.FAILED, elapsed=3.0, error=ValueError("no frames"))
    assert panel.finished_status(failed) == "Failed after 3 s: no frames"
    assert "of 'UVI-Net'. Click a row" in panel.evaluation_caption("UVI-Net")
    assert panel.evaluation_caption("UVI-Net", True).startswith("Showing 'UVI-Net': truth")
    assert panel.help_text().startswith("\nCreates new time frames")
    assert panel.help_text("Too old.").startswith("<b>Too old.</b><br><br>")
