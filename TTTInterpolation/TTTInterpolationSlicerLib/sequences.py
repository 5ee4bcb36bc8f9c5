"""MRML helpers for 4D data: sequence nodes, their frames, files, browsers and views.

Every function takes the scene (and the sequences logic) as an argument instead of using
``slicer.mrmlScene``, so the same code runs in Slicer and in tests against ``slicer-core``.
Arrays follow the engine's convention, ``[i, j, k]`` (``frames[t, i, j, k]``); Slicer's
``arrayFromVolume`` gives ``[k, j, i]``, and the transposes live here only. Geometry in MRML
is a 4x4 IJK-to-RAS matrix; the engine's files are LPS, which the NRRD storage nodes handle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer
import vtk

SEQUENCE_CLASS = "vtkMRMLSequenceNode"
BROWSER_CLASS = "vtkMRMLSequenceBrowserNode"
VOLUME_CLASS = "vtkMRMLScalarVolumeNode"
DEFAULT_TOLERANCE = 0.001  # vtkMRMLSequenceNode's own default
GEOMETRY_ATOL = 1e-3  # mm; NRRD headers store geometry as decimal text


@dataclass
class FrameStack:
    """Frames of a sequence as arrays: ``frames`` is ``(T, I, J, K)``, all on one grid."""

    frames: np.ndarray
    ijk_to_ras: np.ndarray
    index_values: list[float]


def index_values(sequence: slicer.vtkMRMLSequenceNode) -> list[float]:
    """Numeric index values of all items, in item order.

    Raises ``ValueError`` for a text-indexed sequence: new frames need positions *between*
    existing ones, which only numbers have.
    """
    if sequence.GetIndexType() != slicer.vtkMRMLSequenceNode.NumericIndex:
        raise ValueError(f"sequence '{sequence.GetName()}' has a text index; "
                         "interpolation needs a numeric index (e.g. time)")
    return [float(sequence.GetNthIndexValue(i)) for i in range(sequence.GetNumberOfDataNodes())]


def frame_volume(sequence: slicer.vtkMRMLSequenceNode,
                 item: int) -> slicer.vtkMRMLScalarVolumeNode:
    """The volume of item ``item``, checked to be a single-component scalar volume."""
    count = sequence.GetNumberOfDataNodes()
    if not 0 <= item < count:
        raise ValueError(f"frame {item} does not exist: '{sequence.GetName()}' has frames "
                         f"0 to {count - 1}")
    node = sequence.GetNthDataNode(item)
    if node is None or not node.IsA(VOLUME_CLASS) or node.IsA("vtkMRMLLabelMapVolumeNode"):
        kind = node.GetClassName() if node is not None else "nothing"
        raise ValueError(f"frame {item} of '{sequence.GetName()}' is {kind}; "
                         "only scalar (grayscale) volume sequences can be interpolated")
    image = node.GetImageData()
    if image is None or image.GetNumberOfScalarComponents() != 1:
        raise ValueError(f"frame {item} of '{sequence.GetName()}' has no single-component "
                         "image data")
    return node


def ijk_to_ras(volume: slicer.vtkMRMLVolumeNode) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def same_grid(a: slicer.vtkMRMLVolumeNode, b: slicer.vtkMRMLVolumeNode,
              atol: float = GEOMETRY_ATOL) -> bool:
    """Same dimensions and same voxel-to-world placement (within ``atol`` millimetres)."""
    return (a.GetImageData().GetDimensions() == b.GetImageData().GetDimensions()
            and bool(np.allclose(ijk_to_ras(a), ijk_to_ras(b), atol=atol)))


def ras_from_lps(matrix: np.ndarray) -> np.ndarray:
    """A voxel-to-LPS matrix (the engine's convention) as voxel-to-RAS (Slicer's): x, y negated."""
    ras = np.array(matrix, dtype=np.float64)
    ras[:2, :] *= -1.0
    return ras


def set_ijk_to_ras(volume: slicer.vtkMRMLVolumeNode, matrix: np.ndarray) -> None:
    volume.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(np.asarray(matrix, dtype=float)))


def array_ijk(volume: slicer.vtkMRMLScalarVolumeNode) -> np.ndarray:
    """A copy of the voxels as ``[i, j, k]``."""
    return np.ascontiguousarray(slicer.util.arrayFromVolume(volume).transpose(2, 1, 0))


def volume_from_array(array_ijk_: np.ndarray, matrix: np.ndarray,
                      name: str = "") -> slicer.vtkMRMLScalarVolumeNode:
    """A standalone volume node (not in any scene) holding ``array_ijk_`` on ``matrix``.

    ``updateVolumeFromArray`` copies voxels but not geometry, so the matrix is set here.
    """
    volume = slicer.vtkMRMLScalarVolumeNode()
    volume.SetName(name)
    slicer.util.updateVolumeFromArray(volume, np.ascontiguousarray(array_ijk_.transpose(2, 1, 0)))
    set_ijk_to_ras(volume, matrix)
    return volume


def frames_as_arrays(sequence: slicer.vtkMRMLSequenceNode,
                     items: Sequence[int] | None = None) -> FrameStack:
    """Frames ``items`` (default all) as a ``(T, I, J, K)`` array with their common geometry."""
    items = list(range(sequence.GetNumberOfDataNodes())) if items is None else list(items)
    if not items:
        raise ValueError(f"sequence '{sequence.GetName()}' has no frames")
    volumes = [frame_volume(sequence, item) for item in items]
    for item, volume in zip(items[1:], volumes[1:], strict=True):
        if not same_grid(volumes[0], volume):
            raise ValueError(f"frames {items[0]} and {item} of '{sequence.GetName()}' lie on "
                             "different voxel grids")
    values = index_values(sequence)
    return FrameStack(np.stack([array_ijk(v) for v in volumes]), ijk_to_ras(volumes[0]),
                      [values[i] for i in items])


def tolerance_for(values: Sequence[float], current: float = DEFAULT_TOLERANCE) -> float:
    """Index-value tolerance that keeps every value in ``values`` distinct.

    The sequence node treats values closer than its tolerance as the same item (a new frame
    would *replace* its neighbour), so it must stay below half the smallest gap.
    """
    ordered = sorted(values)
    gaps = [b - a for a, b in zip(ordered, ordered[1:], strict=False) if b > a]
    if not gaps:
        return current
    return min(current, min(gaps) / 4.0)


def format_index_value(value: float, tolerance: float) -> str:
    """Shortest decimal text keeping ``value`` well inside ``tolerance`` (``"0.25"``, ``"3"``)."""
    decimals = max(0, math.ceil(-math.log10(tolerance)) + 2)
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def fill_sequence(sequence: slicer.vtkMRMLSequenceNode,
                  frames: Sequence[tuple[float | str, slicer.vtkMRMLVolumeNode]],
                  like: slicer.vtkMRMLSequenceNode) -> None:
    """Replace the content of ``sequence`` by ``frames`` (index value, volume).

    Index name and unit come from ``like``; the tolerance is tightened so that all values
    stay distinct. A value given as text is kept verbatim (an original frame keeps its exact
    index value); a number is formatted to suit the tolerance. Volumes are deep-copied.
    """
    values = [float(value) for value, _ in frames]
    if len(set(values)) != len(values):
        raise ValueError(f"index values collide: {sorted(values)}")
    tolerance = tolerance_for(values, like.GetNumericIndexValueTolerance())
    texts = [value if isinstance(value, str) else format_index_value(value, tolerance)
             for value, _ in frames]
    sequence.RemoveAllDataNodes()
    sequence.SetIndexName(like.GetIndexName())
    sequence.SetIndexUnit(like.GetIndexUnit())
    sequence.SetIndexType(slicer.vtkMRMLSequenceNode.NumericIndex)
    sequence.SetNumericIndexValueTolerance(tolerance)
    rows = sorted(zip(values, texts, frames, strict=True), key=lambda row: row[0])
    for _, text, (_, volume) in rows:
        sequence.SetDataNodeAtValue(volume, text)


#: Node attribute on every frame the engine made (value "1") and on a sequence holding such
#: frames: the space-separated index values of its synthetic items. An exported or merged
#: sequence then still tells which frames were measured and which were computed.
SYNTHETIC_ATTRIBUTE = "TTTInterpolation.Synthetic"


def mark_synthetic(volume: slicer.vtkMRMLVolumeNode) -> None:
    """Mark ``volume`` as computed, not acquired (:data:`SYNTHETIC_ATTRIBUTE`)."""
    volume.SetAttribute(SYNTHETIC_ATTRIBUTE, "1")


def synthetic_values(sequence: slicer.vtkMRMLSequenceNode) -> list[str]:
    """Index values of the items of ``sequence`` whose volumes are marked synthetic; the
    sequence's own attribute is set to them (empty: the attribute is removed)."""
    values = [sequence.GetNthIndexValue(i) for i in range(sequence.GetNumberOfDataNodes())
              if sequence.GetNthDataNode(i).GetAttribute(SYNTHETIC_ATTRIBUTE) == "1"]
    sequence.SetAttribute(SYNTHETIC_ATTRIBUTE, " ".join(values) if values else None)
    return values


def sequence_from_arrays(scene: slicer.vtkMRMLScene, frames: np.ndarray, matrix: np.ndarray,
                         values: Sequence[float], name: str, index_name: str = "time",
                         index_unit: str = "") -> slicer.vtkMRMLSequenceNode:
    """A new sequence node in ``scene`` from ``(T, I, J, K)`` frames on one grid."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] != len(values):
        raise ValueError(f"need (T, I, J, K) frames and T index values, got {frames.shape} "
                         f"and {len(values)} values")
    template = slicer.vtkMRMLSequenceNode()
    template.SetIndexName(index_name)
    template.SetIndexUnit(index_unit)
    sequence = scene.AddNewNodeByClass(SEQUENCE_CLASS, scene.GenerateUniqueName(name))
    volumes = [volume_from_array(frame, matrix, f"{name}_{i}") for i, frame in enumerate(frames)]
    fill_sequence(sequence, list(zip((float(v) for v in values), volumes, strict=True)), template)
    return sequence


def write_sequence_file(sequence: slicer.vtkMRMLSequenceNode, items: Sequence[int],
                        path: Path) -> None:
    """Write items ``items`` of ``sequence`` as one ``.seq.nrrd``, index values included.

    The copy is made in a scratch scene, so the user's scene never sees it; the engine reads
    the index values from the file, so unevenly spaced frames keep their true times.
    """
    scratch = slicer.vtkMRMLScene()
    copy = scratch.AddNewNodeByClass(SEQUENCE_CLASS, sequence.GetName())
    copy.SetIndexName(sequence.GetIndexName())
    copy.SetIndexUnit(sequence.GetIndexUnit())
    copy.SetIndexType(sequence.GetIndexType())
    copy.SetNumericIndexValueTolerance(sequence.GetNumericIndexValueTolerance())
    for item in items:
        copy.SetDataNodeAtValue(frame_volume(sequence, item), sequence.GetNthIndexValue(item))
    storage = scratch.AddNewNodeByClass("vtkMRMLVolumeSequenceStorageNode")
    storage.SetFileName(str(path))
    storage.SetUseCompression(0)
    try:
        if not storage.WriteData(copy):
            raise OSError(f"could not write {path}")
    finally:
        scratch.Clear(1)


def write_volume(volume: slicer.vtkMRMLVolumeNode, path: Path) -> None:
    """Write one 3D volume with its geometry (NRRD, uncompressed: it is read back at once)."""
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(0)
    if not storage.WriteData(volume):
        raise OSError(f"could not write {path}")


def read_sequence_file(path: Path) -> list[tuple[float, slicer.vtkMRMLScalarVolumeNode]]:
    """Frames of a ``.seq.nrrd`` file as (index value, standalone volume) pairs.

    The file is read in a scratch scene, so a failure leaves the user's scene untouched, and
    every frame is copied out so nothing refers to that scene afterwards.
    """
    scratch = slicer.vtkMRMLScene()
    sequence = scratch.AddNewNodeByClass(SEQUENCE_CLASS)
    storage = scratch.AddNewNodeByClass("vtkMRMLVolumeSequenceStorageNode")
    storage.SetFileName(str(path))
    if not Path(path).is_file() or not storage.ReadData(sequence):
        raise OSError(f"could not read the sequence file {path}")
    frames = []
    for item in range(sequence.GetNumberOfDataNodes()):
        source = frame_volume(sequence, item)
        volume = slicer.vtkMRMLScalarVolumeNode()
        image = vtk.vtkImageData()
        image.DeepCopy(source.GetImageData())
        volume.SetAndObserveImageData(image)
        set_ijk_to_ras(volume, ijk_to_ras(source))
        frames.append((float(sequence.GetNthIndexValue(item)), volume))
    scratch.Clear(1)
    return frames


def browser_for(scene: slicer.vtkMRMLScene, sequences_logic: slicer.vtkSlicerSequencesLogic,
                sequence: slicer.vtkMRMLSequenceNode) -> slicer.vtkMRMLSequenceBrowserNode:
    """The browser that plays ``sequence``: the existing one, or a new one with a proxy node.

    The sequences logic must be set on ``scene`` (Slicer does this; tests do it by hand),
    or the browser gets no proxy node.
    """
    browser = sequences_logic.GetFirstBrowserNodeForSequenceNode(sequence)
    if browser is None:
        browser = scene.AddNewNodeByClass(
            BROWSER_CLASS, scene.GenerateUniqueName(f"{sequence.GetName()} browser"))
        browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    browser.SetSelectedItemNumber(0)
    sequences_logic.UpdateProxyNodesFromSequences(browser)
    return browser


def current_item(sequences_logic: slicer.vtkSlicerSequencesLogic,
                 sequence: slicer.vtkMRMLSequenceNode) -> int | None:
    """Item of ``sequence`` that its browser shows now, or ``None`` without a browser.

    When ``sequence`` is only synchronized to the browser's master sequence, the item is
    found through the master's current index value.
    """
    browser = sequences_logic.GetFirstBrowserNodeForSequenceNode(sequence)
    if browser is None or browser.GetSelectedItemNumber() < 0:
        return None
    master = browser.GetMasterSequenceNode()
    selected = browser.GetSelectedItemNumber()
    if master.GetID() == sequence.GetID():
        return selected
    item = sequence.GetItemNumberFromIndexValue(master.GetNthIndexValue(selected))
    return item if item >= 0 else None


def describe(sequence: slicer.vtkMRMLSequenceNode,
             items: tuple[int, int] | None = None) -> str:
    """One line about ``sequence`` and, if given, where its items ``items`` lie on the index."""
    count = sequence.GetNumberOfDataNodes()
    if count == 0:
        return f"'{sequence.GetName()}' is empty."
    try:
        values = index_values(sequence)
    except ValueError as error:
        return str(error)
    unit = f" {sequence.GetIndexUnit()}" if sequence.GetIndexUnit() else ""
    text = (f"{count} frames, {sequence.GetIndexName() or 'index'} from {values[0]:g} to "
            f"{values[-1]:g}{unit}.")
    if items is not None and all(0 <= item < count for item in items):
        text += f" A at {values[items[0]]:g}{unit}, B at {values[items[1]]:g}{unit}."
    return text


FOLDER_CLASSES = ("vtkMRMLSequenceNode", "vtkMRMLTableNode", "vtkMRMLVolumeNode")


def put_in_folder(scene: slicer.vtkMRMLScene, nodes: Sequence[slicer.vtkMRMLNode],
                  name: str) -> int:
    """A new subject-hierarchy folder ``name`` under the scene holding the data nodes among
    ``nodes`` (sequences, tables, volumes: what the Data module shows); its item ID."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
    folder = hierarchy.CreateFolderItem(hierarchy.GetSceneItemID(), name)
    for node in nodes:
        if not any(node.IsA(c) for c in FOLDER_CLASSES) or node.GetHideFromEditors():
            continue
        item = hierarchy.GetItemByDataNode(node)
        if item:
            hierarchy.SetItemParent(item, folder)
        else:
            hierarchy.CreateItem(folder, node)
    return folder


def add_table(scene: slicer.vtkMRMLScene, name: str, columns: Sequence[str],
              rows: Sequence[Sequence[str]]) -> slicer.vtkMRMLTableNode:
    """A table node of text cells (saved with the scene; Slicer exports it as CSV/TSV)."""
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
    for title in columns:
        table.AddColumn().SetName(title)
    for r, row in enumerate(rows):
        table.AddEmptyRow()
        for c, text in enumerate(row):
            table.SetCellText(r, c, str(text))
    return table


def copy_display(source: slicer.vtkMRMLVolumeNode | None,
                 target: slicer.vtkMRMLVolumeNode) -> None:
    """Give ``target`` the window/level and colour table of ``source`` (if it has any).

    New frames then look like the originals instead of getting their own auto window/level.
    """
    if target.GetDisplayNode() is None:
        target.CreateDefaultDisplayNodes()
    src = source.GetDisplayNode() if source is not None else None
    dst = target.GetDisplayNode()
    if src is None or dst is None:
        return
    dst.SetAutoWindowLevel(src.GetAutoWindowLevel())
    if not src.GetAutoWindowLevel():
        dst.SetWindowLevel(src.GetWindow(), src.GetLevel())
    if src.GetColorNodeID():
        dst.SetAndObserveColorNodeID(src.GetColorNodeID())


def nodes_of_class(scene: slicer.vtkMRMLScene, class_name: str) -> list[slicer.vtkMRMLNode]:
    """Every node of ``class_name`` in ``scene``.

    Indexed access instead of ``GetNodesByClass``: that returns a new collection the caller
    would have to ``UnRegister`` (Python does not own it), so each call would leak one.
    """
    return [scene.GetNthNodeByClass(i, class_name)
            for i in range(scene.GetNumberOfNodesByClass(class_name))]


def show_in_slice_views(scene: slicer.vtkMRMLScene, volume: slicer.vtkMRMLVolumeNode) -> None:
    """Make ``volume`` the background of every slice view of ``scene``."""
    for composite in nodes_of_class(scene, "vtkMRMLSliceCompositeNode"):
        composite.SetBackgroundVolumeID(volume.GetID())


SIDE_BY_SIDE_VIEWS = ("Red", "Yellow", "Green")
#: A layout of the three slice views in one row (truth, prediction, error), registered with
#: the scene's layout node under this ID the first time it is used.
SIDE_BY_SIDE_LAYOUT = 51730
_VIEW_COLORS = {"Red": "#F34A33", "Yellow": "#EDD54C", "Green": "#6EB04B"}
SIDE_BY_SIDE_LAYOUT_XML = "<layout type=\"horizontal\">" + "".join(
    f"<item><view class=\"vtkMRMLSliceNode\" singletontag=\"{view}\">"
    f"<property name=\"orientation\" action=\"default\">Axial</property>"
    f"<property name=\"viewlabel\" action=\"default\">{view[0]}</property>"
    f"<property name=\"viewcolor\" action=\"default\">{color}</property></view></item>"
    for view, color in _VIEW_COLORS.items()) + "</layout>"


def use_side_by_side_layout(scene: slicer.vtkMRMLScene) -> int | None:
    """Switch the scene's layout to :data:`SIDE_BY_SIDE_LAYOUT` (registered on first use);
    returns the arrangement it replaced, to restore later (``None``: no layout node, as in a
    scene without views, or already in it)."""
    layouts = nodes_of_class(scene, "vtkMRMLLayoutNode")
    if not layouts:
        return None
    layout = layouts[0]
    if not layout.IsLayoutDescription(SIDE_BY_SIDE_LAYOUT):
        layout.AddLayoutDescription(SIDE_BY_SIDE_LAYOUT, SIDE_BY_SIDE_LAYOUT_XML)
    previous = layout.GetViewArrangement()
    if previous == SIDE_BY_SIDE_LAYOUT:
        return None
    layout.SetViewArrangement(SIDE_BY_SIDE_LAYOUT)
    return previous


def restore_layout(scene: slicer.vtkMRMLScene, arrangement: int | None) -> None:
    """Put back the arrangement :func:`use_side_by_side_layout` replaced, if the user did not
    pick another one since."""
    layouts = nodes_of_class(scene, "vtkMRMLLayoutNode")
    if arrangement is None or not layouts:
        return
    if layouts[0].GetViewArrangement() == SIDE_BY_SIDE_LAYOUT:
        layouts[0].SetViewArrangement(arrangement)


def show_side_by_side(scene: slicer.vtkMRMLScene,
                      volumes: Sequence[slicer.vtkMRMLVolumeNode | None]) -> None:
    """Volume ``n`` in slice view ``SIDE_BY_SIDE_VIEWS[n]``, all views in Red's orientation.

    Truth, prediction and error then show the same slice next to each other; with their
    sequences synchronized to one browser, the slider scrubs all three together.
    """
    slices = {node.GetLayoutName(): node for node in nodes_of_class(scene, "vtkMRMLSliceNode")}
    composites = {node.GetLayoutName(): node
                  for node in nodes_of_class(scene, "vtkMRMLSliceCompositeNode")}
    red = slices.get(SIDE_BY_SIDE_VIEWS[0])
    orientation = red.GetOrientationString() if red is not None else ""
    for view, volume in zip(SIDE_BY_SIDE_VIEWS, volumes, strict=False):
        if view in composites and volume is not None:
            composites[view].SetBackgroundVolumeID(volume.GetID())
            composites[view].SetForegroundVolumeID(None)
        if view in composites:  # linked: moving through slices or zooming moves all three
            composites[view].SetLinkedControl(True)
        target = slices.get(view)
        # A reformatted (oblique) Red has no preset name to copy; the views then stay as set.
        if target is not None and target is not red and target.HasSliceOrientationPreset(
                orientation):
            target.SetOrientation(orientation)
