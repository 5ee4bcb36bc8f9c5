"""MRML helpers against the real Slicer core (slicer-core): arrays, geometry, files, browsers.

The geometry cases use an oblique direction, anisotropic spacing and a non-zero origin, and
cross the Slicer/engine boundary both ways (Slicer writes, engine reads; engine writes,
Slicer reads), which is exactly what the module relies on.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import slicer

from TTTInterpolationLib.fileio.geometry import geometry_from_ras_affine, ras_affine_from_geometry
from TTTInterpolationLib.fileio.volume_io import read_4d, read_volume, write_4d
from TTTInterpolationLib.volume import Sequence4D
from TTTInterpolationSlicerLib import sequences as seq


def oblique_matrix() -> np.ndarray:
    """IJK-to-RAS: rotation of 30 degrees about (1, 1, 1), spacing (0.8, 1.2, 3), origin set."""
    axis = np.ones(3) / math.sqrt(3)
    angle = math.radians(30)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ np.diag([0.8, 1.2, 3.0])
    matrix[:3, 3] = [12.5, -30.0, 7.25]
    return matrix


def coded_frames(count: int = 3, shape: tuple[int, int, int] = (6, 5, 4)) -> np.ndarray:
    """``(T, I, J, K)`` frames whose voxel value encodes (t, i, j, k): any axis mix-up shows."""
    t, i, j, k = np.indices((count, *shape))
    return (1000 * t + 100 * i + 10 * j + k).astype(np.float32)


def test_sequence_frames_round_trip_with_oblique_geometry(scene: slicer.vtkMRMLScene) -> None:
    frames, matrix = coded_frames(), oblique_matrix()
    node = seq.sequence_from_arrays(scene, frames, matrix, [0.0, 0.5, 1.0], "cine", "time", "s")

    stack = seq.frames_as_arrays(node)

    np.testing.assert_array_equal(stack.frames, frames)
    np.testing.assert_allclose(stack.ijk_to_ras, matrix, atol=1e-12)
    assert stack.index_values == [0.0, 0.5, 1.0]
    assert (node.GetIndexName(), node.GetIndexUnit()) == ("time", "s")
    # Slicer's own array view is [k, j, i]; the helpers hand out [i, j, k].
    volume = node.GetNthDataNode(1)
    assert slicer.util.arrayFromVolume(volume)[3, 2, 1] == frames[1, 1, 2, 3]
    sub = seq.frames_as_arrays(node, [2, 0])
    np.testing.assert_array_equal(sub.frames, frames[[2, 0]])
    assert sub.index_values == [1.0, 0.0]


def test_sequence_frame_written_by_slicer_is_read_by_engine(scene: slicer.vtkMRMLScene,
                                                           tmp_path: Path) -> None:
    """What the logic hands to the engine: voxels in [i, j, k] and the LPS geometry intact."""
    frames, matrix = coded_frames(), oblique_matrix()
    node = seq.sequence_from_arrays(scene, frames, matrix, [0, 1, 2], "cine")

    seq.write_volume(node.GetNthDataNode(2), tmp_path / "frame.nrrd")
    array, geometry = read_volume(tmp_path / "frame.nrrd")

    np.testing.assert_array_equal(array, frames[2])
    assert geometry.allclose(geometry_from_ras_affine(matrix), atol=1e-6)


def test_sequence_file_written_by_engine_is_read_by_slicer(tmp_path: Path) -> None:
    """What the logic reads back: index values, voxels and geometry of the engine's output."""
    frames, matrix = coded_frames(), oblique_matrix()
    path = tmp_path / "engine.seq.nrrd"
    write_4d(path, Sequence4D(frames, geometry_from_ras_affine(matrix), [0.25, 0.5, 0.75]))

    read = seq.read_sequence_file(path)

    assert [value for value, _ in read] == pytest.approx([0.25, 0.5, 0.75])
    for t, (_, volume) in enumerate(read):
        assert volume.GetScene() is None  # standalone: nothing refers to a scratch scene
        np.testing.assert_array_equal(seq.array_ijk(volume), frames[t])
        np.testing.assert_allclose(seq.ijk_to_ras(volume), matrix, atol=1e-5)


def test_sequence_seq_nrrd_round_trip_through_storage_nodes(scene: slicer.vtkMRMLScene,
                                                           tmp_path: Path) -> None:
    frames, matrix = coded_frames(), oblique_matrix()
    node = seq.sequence_from_arrays(scene, frames, matrix, [1.0, 1.125, 1.5], "cine", "time", "s")
    storage = slicer.vtkMRMLVolumeSequenceStorageNode()
    storage.SetFileName(str(tmp_path / "cine.seq.nrrd"))
    assert storage.WriteData(node)

    read = seq.read_sequence_file(tmp_path / "cine.seq.nrrd")

    assert [value for value, _ in read] == [1.0, 1.125, 1.5]
    for t, (_, volume) in enumerate(read):
        np.testing.assert_array_equal(seq.array_ijk(volume), frames[t])
        np.testing.assert_allclose(seq.ijk_to_ras(volume), matrix, atol=1e-5)


def test_sequence_read_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="could not read"):
        seq.read_sequence_file(tmp_path / "missing.seq.nrrd")


@pytest.mark.parametrize(("values", "current", "expected"), [
    ([0, 1, 2], 0.001, 0.001),  # wide gaps keep the node's tolerance
    ([0, 0.5, 1], 0.001, 0.001),
    ([0, 0.002, 1], 0.001, 0.0005),  # a gap of 0.002 needs a tolerance below 0.001
    ([5.0], 0.01, 0.01),
])
def test_sequence_tolerance_keeps_values_distinct(values: list[float], current: float,
                                                 expected: float) -> None:
    assert seq.tolerance_for(values, current) == pytest.approx(expected)


@pytest.mark.parametrize(("value", "tolerance", "text"), [
    (2.0, 0.001, "2"),
    (0.25, 0.001, "0.25"),
    (1 / 3, 0.001, "0.33333"),
    (-0.000001, 0.001, "0"),
    (12.5, 0.1, "12.5"),
    (0.0005, 0.0001, "0.0005"),
])
def test_sequence_index_value_text(value: float, tolerance: float, text: str) -> None:
    assert seq.format_index_value(value, tolerance) == text


def test_sequence_fill_copies_index_and_sorts(scene: slicer.vtkMRMLScene) -> None:
    like = slicer.vtkMRMLSequenceNode()
    like.SetIndexName("cardiac phase")
    like.SetIndexUnit("ms")
    volumes = [seq.volume_from_array(np.full((3, 3, 2), v, np.float32), np.eye(4))
               for v in (2.0, 0.0, 1.0)]
    target = scene.AddNewNodeByClass(seq.SEQUENCE_CLASS)
    target.SetDataNodeAtValue(volumes[0], "99")  # old content is replaced

    seq.fill_sequence(target, [(0.2, volumes[0]), ("0", volumes[1]), (0.1001, volumes[2])], like)

    assert (target.GetIndexName(), target.GetIndexUnit()) == ("cardiac phase", "ms")
    assert target.GetIndexType() == slicer.vtkMRMLSequenceNode.NumericIndex
    assert [target.GetNthIndexValue(i) for i in range(3)] == ["0", "0.1001", "0.2"]
    assert seq.index_values(target) == pytest.approx([0.0, 0.1001, 0.2])
    assert [seq.array_ijk(target.GetNthDataNode(i))[0, 0, 0] for i in range(3)] == [0, 1, 2]
    assert target.GetNumericIndexValueTolerance() <= 0.1001 / 4
    with pytest.raises(ValueError, match="collide"):
        seq.fill_sequence(target, [(0.5, volumes[0]), ("0.5", volumes[1])], like)


def test_sequence_frame_checks(scene: slicer.vtkMRMLScene) -> None:
    node = seq.sequence_from_arrays(scene, coded_frames(2), np.eye(4), [0, 1], "cine")
    with pytest.raises(ValueError, match="frames 0 to 1"):
        seq.frame_volume(node, 2)

    labels = scene.AddNewNodeByClass(seq.SEQUENCE_CLASS, "labels")
    labelmap = slicer.vtkMRMLLabelMapVolumeNode()
    slicer.util.updateVolumeFromArray(labelmap, np.zeros((2, 2, 2), np.uint8))
    labels.SetDataNodeAtValue(labelmap, "0")
    with pytest.raises(ValueError, match="scalar"):
        seq.frame_volume(labels, 0)

    text = scene.AddNewNodeByClass(seq.SEQUENCE_CLASS, "named")
    text.SetIndexType(slicer.vtkMRMLSequenceNode.TextIndex)
    text.SetDataNodeAtValue(seq.volume_from_array(coded_frames(1)[0], np.eye(4)), "rest")
    with pytest.raises(ValueError, match="numeric index"):
        seq.index_values(text)

    other_grid = oblique_matrix()
    node.SetDataNodeAtValue(seq.volume_from_array(coded_frames(1)[0], other_grid), "2")
    assert not seq.same_grid(seq.frame_volume(node, 0), seq.frame_volume(node, 2))
    with pytest.raises(ValueError, match="different voxel grids"):
        seq.frames_as_arrays(node)


def test_sequence_browser_proxy_and_slice_views(
        scene: slicer.vtkMRMLScene, sequences_logic: slicer.vtkSlicerSequencesLogic) -> None:
    node = seq.sequence_from_arrays(scene, coded_frames(3), oblique_matrix(), [0, 1, 2], "cine")
    composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")

    browser = seq.browser_for(scene, sequences_logic, node)
    proxy = browser.GetProxyNode(node)
    seq.show_in_slice_views(scene, proxy)

    assert browser.GetMasterSequenceNode() is node
    assert proxy is not None and proxy.IsA("vtkMRMLScalarVolumeNode")
    np.testing.assert_allclose(seq.ijk_to_ras(proxy), oblique_matrix(), atol=1e-12)
    assert composite.GetBackgroundVolumeID() == proxy.GetID()
    assert seq.browser_for(scene, sequences_logic, node) is browser  # reused, not duplicated
    assert len(seq.nodes_of_class(scene, seq.BROWSER_CLASS)) == 1

    browser.SetSelectedItemNumber(2)
    assert seq.current_item(sequences_logic, node) == 2
    # A sequence synchronized to the browser maps through the master's index value.
    synced = seq.sequence_from_arrays(scene, coded_frames(2), np.eye(4), [1, 2], "other")
    browser.AddSynchronizedSequenceNode(synced)
    assert seq.current_item(sequences_logic, synced) == 1
    lonely = seq.sequence_from_arrays(scene, coded_frames(2), np.eye(4), [0, 1], "lonely")
    assert seq.current_item(sequences_logic, lonely) is None


def test_sequence_copy_display_gives_new_frames_the_input_look(
        scene: slicer.vtkMRMLScene) -> None:
    source = scene.AddNewNodeByClass(seq.VOLUME_CLASS)
    slicer.util.updateVolumeFromArray(source, np.zeros((2, 2, 2), np.float32))
    source.CreateDefaultDisplayNodes()
    source.GetDisplayNode().SetAutoWindowLevel(0)
    source.GetDisplayNode().SetWindowLevel(400, 40)
    target = scene.AddNewNodeByClass(seq.VOLUME_CLASS)
    slicer.util.updateVolumeFromArray(target, np.zeros((2, 2, 2), np.float32))

    seq.copy_display(source, target)

    display = target.GetDisplayNode()
    assert (display.GetWindow(), display.GetLevel()) == (400, 40)
    assert not display.GetAutoWindowLevel()


def test_sequence_describe(scene: slicer.vtkMRMLScene) -> None:
    node = seq.sequence_from_arrays(scene, coded_frames(3), np.eye(4), [0, 40, 80], "cine",
                                    "time", "ms")
    assert seq.describe(node) == "3 frames, time from 0 to 80 ms."
    assert seq.describe(node, (0, 2)).endswith("A at 0 ms, B at 80 ms.")
    assert "A at" not in seq.describe(node, (0, 5))


def test_sequence_items_written_as_one_file_keep_their_index_values(
        scene: slicer.vtkMRMLScene, tmp_path: Path) -> None:
    """What the evaluation hands the engine: a subset of items, unevenly spaced in time."""
    frames, matrix = coded_frames(5), oblique_matrix()
    node = seq.sequence_from_arrays(scene, frames, matrix, [0, 10, 30, 60, 100], "cine",
                                    "time", "ms")
    before = scene.GetNumberOfNodes()
    path = tmp_path / "items.seq.nrrd"

    seq.write_sequence_file(node, [1, 2, 3], path)

    engine = read_4d(path)
    assert engine.index_values == [10.0, 30.0, 60.0]
    np.testing.assert_array_equal(engine.frames, frames[1:4])
    assert engine.geometry.allclose(geometry_from_ras_affine(matrix), atol=1e-6)
    assert [v for v, _ in seq.read_sequence_file(path)] == [10.0, 30.0, 60.0]
    assert scene.GetNumberOfNodes() == before  # the copy lived in a scratch scene


def test_sequence_ras_from_lps_matches_the_engine() -> None:
    geometry = geometry_from_ras_affine(oblique_matrix())
    np.testing.assert_allclose(seq.ras_from_lps(geometry.ijk_to_lps()),
                               ras_affine_from_geometry(geometry), atol=1e-12)
    np.testing.assert_allclose(seq.ras_from_lps(geometry.ijk_to_lps()), oblique_matrix(),
                               atol=1e-12)


def slice_views(scene: slicer.vtkMRMLScene) -> dict[str, tuple]:
    """Red, Yellow and Green views as Slicer's layout creates them (presets, default axes)."""
    views = {}
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)  # new slice nodes get them
    for name, orientation in zip(seq.SIDE_BY_SIDE_VIEWS, ("Axial", "Sagittal", "Coronal"),
                                 strict=True):
        node = scene.AddNewNodeByClass("vtkMRMLSliceNode")
        node.SetLayoutName(name)
        node.SetOrientation(orientation)
        composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        composite.SetLayoutName(name)
        views[name] = (node, composite)
    return views


def test_sequence_side_by_side_views(scene: slicer.vtkMRMLScene) -> None:
    views = slice_views(scene)
    volumes = [scene.AddNewNodeByClass(seq.VOLUME_CLASS, name) for name in ("t", "p", "e")]

    seq.show_side_by_side(scene, volumes)

    for (node, composite), volume in zip(views.values(), volumes, strict=True):
        assert composite.GetBackgroundVolumeID() == volume.GetID()
        assert node.GetOrientationString() == "Axial"  # all three show the same slice


def test_sequence_code_never_leaks_node_collections() -> None:
    """``GetNodesByClass`` hands Python a collection it does not own: each call leaks one."""
    module_dir = Path(__file__).resolve().parents[1] / "TTTInterpolation"
    calls = [(path.name, node.lineno) for path in module_dir.rglob("*.py")
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Attribute) and node.attr == "GetNodesByClass"]
    assert not calls


def test_sequence_nodes_of_class(scene: slicer.vtkMRMLScene) -> None:
    added = [scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode") for _ in range(3)]
    scene.AddNewNodeByClass(seq.VOLUME_CLASS)
    assert seq.nodes_of_class(scene, "vtkMRMLSliceCompositeNode") == added
