"""Tests for volume_io: round trips through every format with an oblique geometry, the
RAS<->LPS flip checked by hand and against SimpleITK, every user error, atomic writes, and
interoperability with Slicer's own volume-sequence reader/writer (slicer-core).

Slicer tests are named ``*slicer*`` / ``*sequence*`` so ``pytest -k "slicer or mrml or
sequence"`` selects them; they skip when slicer-core is not installed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
import SimpleITK as sitk

from TTTInterpolationLib.errors import InputError
from TTTInterpolationLib.fileio.geometry import (
    LPS_FROM_RAS,
    geometry_from_ras_affine,
    ras_affine_from_geometry,
)
from TTTInterpolationLib.fileio.volume_io import (
    is_4d_path,
    read_4d,
    read_volume,
    write_4d,
    write_volume,
)
from TTTInterpolationLib.volume import Geometry, Sequence4D

SHAPE = (6, 7, 5)
FRACTIONS = [0.0, 1.0 / 3.0, 0.5, 2.0 / 3.0, 10.0 / 3.0]


def _rotation(axis: tuple[float, float, float], angle: float) -> np.ndarray:
    """Rodrigues' formula: rotation by ``angle`` about ``axis``."""
    a = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    k = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


OBLIQUE = Geometry(
    spacing=(0.8, 1.25, 2.5),
    origin=(-12.5, 40.25, 7.75),
    direction=tuple(tuple(float(v) for v in row) for row in _rotation((1.0, 2.0, 3.0), 0.7)),
)


def _sequence(index_values=FRACTIONS, seed: int = 0) -> Sequence4D:
    rng = np.random.default_rng(seed)
    frames = rng.normal(100.0, 30.0, size=(len(index_values), *SHAPE)).astype(np.float32)
    return Sequence4D(frames, OBLIQUE, list(index_values), "cardiac phase", "ms")


def _assert_same_sequence(read: Sequence4D, expected: Sequence4D, atol: float = 1e-5) -> None:
    assert read.frames.dtype == np.float32
    np.testing.assert_array_equal(read.frames, expected.frames)
    assert read.geometry.allclose(expected.geometry, atol=atol)
    assert read.index_values == expected.index_values  # exact, not approximately
    assert (read.index_name, read.index_unit) == (expected.index_name, expected.index_unit)


def _one_line_input_error(call, match: str) -> InputError:
    with pytest.raises(InputError, match=match) as info:
        call()
    assert "\n" not in str(info.value)
    return info.value


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("suffix", [".seq.nrrd", ".nrrd", ".nii.gz", ".nii"])
def test_4d_round_trip_oblique_fractional(tmp_path: Path, suffix: str) -> None:
    seq = _sequence()
    path = tmp_path / f"series{suffix}"
    write_4d(path, seq)
    _assert_same_sequence(read_4d(path), seq)
    assert sorted(os.listdir(tmp_path)) == [path.name]  # no temp file left behind


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".mha"])
def test_frame_list_round_trip(tmp_path: Path, suffix: str) -> None:
    seq = _sequence(index_values=[0.0, 1.0, 2.0])
    paths = [tmp_path / f"frame{t}{suffix}" for t in range(seq.num_frames)]
    for path, frame in zip(paths, seq.frames, strict=True):
        write_volume(path, frame, OBLIQUE)
    read = read_4d([str(p) for p in paths])
    np.testing.assert_array_equal(read.frames, seq.frames)
    assert read.geometry.allclose(OBLIQUE, atol=1e-5)
    assert read.index_values == [0.0, 1.0, 2.0]


def test_frame_list_keeps_given_order(tmp_path: Path) -> None:
    seq = _sequence(index_values=[0.0, 1.0])
    a, b = tmp_path / "a.nrrd", tmp_path / "b.nrrd"
    write_volume(a, seq.frames[0], OBLIQUE)
    write_volume(b, seq.frames[1], OBLIQUE)
    np.testing.assert_array_equal(read_4d([b, a]).frames, seq.frames[::-1])


def test_read_volume_converts_to_float32(tmp_path: Path) -> None:
    path = tmp_path / "labels.nrrd"
    labels = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    write_volume(path, labels, OBLIQUE)
    volume, geometry = read_volume(path)
    assert volume.dtype == np.float32
    np.testing.assert_array_equal(volume, labels)
    assert geometry.allclose(OBLIQUE, atol=1e-9)


def test_read_4d_metaimage_4d(tmp_path: Path) -> None:
    seq = _sequence(index_values=[0.0, 1.0, 2.0])
    images = []
    for frame in seq.frames:
        image = sitk.GetImageFromArray(frame.transpose(2, 1, 0).copy())
        image.SetSpacing(OBLIQUE.spacing)
        image.SetOrigin(OBLIQUE.origin)
        image.SetDirection(tuple(OBLIQUE.direction_matrix().ravel()))
        images.append(image)
    path = tmp_path / "series.mha"
    sitk.WriteImage(sitk.JoinSeries(images), str(path))
    read = read_4d(path)
    np.testing.assert_array_equal(read.frames, seq.frames)
    assert read.geometry.allclose(OBLIQUE, atol=1e-9)


def test_overwrite_is_complete(tmp_path: Path) -> None:
    path = tmp_path / "series.seq.nrrd"
    write_4d(path, _sequence(seed=1))
    seq = _sequence(index_values=[0.25, 0.5, 0.75], seed=2)
    write_4d(path, seq)
    _assert_same_sequence(read_4d(path), seq)
    assert os.listdir(tmp_path) == [path.name]


def test_is_4d_path() -> None:
    assert all(is_4d_path(p) for p in ["a.seq.nrrd", "b.NRRD", "c.nii.gz", Path("d.nii")])
    assert not any(is_4d_path(p) for p in ["a.mha", "b.nhdr", "c.png", "nii.gz", "d.gz"])


# --------------------------------------------------------------------------- RAS <-> LPS


HAND_AFFINE = np.array(
    [
        [-2.0, 0.0, 0.0, 10.0],
        [0.0, 3.0, 0.0, -20.0],
        [0.0, 0.0, 4.0, 30.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
# RAS x -> LPS -x, RAS y -> LPS -y: i steps +2 mm in L, j steps -3 mm in P, k +4 mm in S.
HAND_GEOMETRY = Geometry(
    spacing=(2.0, 3.0, 4.0),
    origin=(-10.0, 20.0, 30.0),
    direction=((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
)


def test_ras_lps_flip_hand_checked() -> None:
    np.testing.assert_array_equal(LPS_FROM_RAS @ LPS_FROM_RAS, np.eye(3))
    geometry = geometry_from_ras_affine(HAND_AFFINE)
    assert geometry == HAND_GEOMETRY
    np.testing.assert_array_equal(ras_affine_from_geometry(geometry), HAND_AFFINE)


def test_nifti_written_by_nibabel_reads_as_lps(tmp_path: Path) -> None:
    path = tmp_path / "hand.nii.gz"
    data = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    nib.save(nib.Nifti1Image(data, HAND_AFFINE), str(path))
    volume, geometry = read_volume(path)
    np.testing.assert_array_equal(volume, data)
    assert geometry.allclose(HAND_GEOMETRY, atol=1e-6)


def test_written_nifti_agrees_with_simpleitk_lps(tmp_path: Path) -> None:
    """SimpleITK reports NIfTI geometry in LPS itself: an independent check of our flip."""
    path = tmp_path / "oblique.nii.gz"
    write_volume(path, _sequence().frames[0], OBLIQUE)
    image = sitk.ReadImage(str(path))
    np.testing.assert_allclose(image.GetOrigin(), OBLIQUE.origin, atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing(), OBLIQUE.spacing, atol=1e-5)
    np.testing.assert_allclose(
        np.reshape(image.GetDirection(), (3, 3)), OBLIQUE.direction_matrix(), atol=1e-5
    )


def test_4d_nifti_header(tmp_path: Path) -> None:
    path = tmp_path / "series.nii.gz"
    write_4d(path, _sequence(index_values=[2.0, 2.5, 3.0, 3.5]))
    image = nib.load(str(path))
    assert image.shape == (*SHAPE, 4)
    np.testing.assert_allclose(image.affine, ras_affine_from_geometry(OBLIQUE), atol=1e-5)
    assert image.header.get_zooms()[3] == pytest.approx(0.5)
    assert float(image.header["toffset"]) == pytest.approx(2.0)
    assert image.header.get_xyzt_units() == ("mm", "msec")
    assert int(image.header["qform_code"]) == 1 and int(image.header["sform_code"]) == 1


def test_plain_4d_nifti_gets_frame_numbers(tmp_path: Path) -> None:
    path = tmp_path / "plain.nii.gz"
    data = np.random.default_rng(4).random((*SHAPE, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, HAND_AFFINE), str(path))
    read = read_4d(path)
    np.testing.assert_array_equal(read.frames, np.moveaxis(data, -1, 0))
    assert read.index_values == [0.0, 1.0, 2.0]
    assert read.geometry.allclose(HAND_GEOMETRY, atol=1e-6)


@pytest.mark.parametrize("list_first", [True, False])
def test_hand_made_nrrd_layouts_in_ras_space(tmp_path: Path, list_first: bool) -> None:
    """Old Slicer files (list axis first, RAS space) and new ones (list axis last, axis 3 keys)."""
    seq = _sequence(index_values=[0.0, 0.5, 1.5])
    ras_linear = LPS_FROM_RAS @ OBLIQUE.ijk_to_lps()[:3, :3]
    ras_origin = LPS_FROM_RAS @ np.asarray(OBLIQUE.origin)
    directions = list(ras_linear.T)
    axis = 0 if list_first else 3
    if list_first:
        data, kinds = seq.frames, ["list", "domain", "domain", "domain"]
        directions.insert(0, np.full(3, np.nan))
        labels = ["frame", "", "", ""]
    else:
        data, kinds = np.moveaxis(seq.frames, 0, -1), ["domain", "domain", "domain", "list"]
        directions.append(np.full(3, np.nan))
        labels = ["", "", "", "frame"]
    header = {
        "space": "right-anterior-superior",
        "kinds": kinds,
        "labels": labels,
        "space directions": np.asarray(directions),
        "space origin": ras_origin,
        f"axis {axis} index values": "0 0.5 1.5",
    }
    path = tmp_path / "hand.seq.nrrd"
    nrrd.write(str(path), data, header, index_order="F")
    read = read_4d(path)
    np.testing.assert_array_equal(read.frames, seq.frames)
    assert read.geometry.allclose(OBLIQUE, atol=1e-9)
    assert read.index_values == [0.0, 0.5, 1.5]
    assert (read.index_name, read.index_unit) == ("frame", "")


def test_seq_nrrd_header_has_slicer_keys(tmp_path: Path) -> None:
    path = tmp_path / "series.seq.nrrd"
    write_4d(path, _sequence(index_values=[0.0, 1.0 / 3.0, 0.5, 3.333333]))
    header = nrrd.read_header(str(path))
    assert header["dimension"] == 4
    assert list(header["sizes"]) == [4, *SHAPE]
    assert header["kinds"] == ["list", "domain", "domain", "domain"]
    assert header["space"] == "left-posterior-superior"
    assert np.isnan(header["space directions"][0]).all()
    np.testing.assert_allclose(header["space directions"][1:].T, OBLIQUE.ijk_to_lps()[:3, :3])
    np.testing.assert_allclose(header["space origin"], OBLIQUE.origin)
    assert header["labels"] == ["cardiac phase", "", "", ""]
    assert header["units"] == ["ms", "", "", ""]
    assert header["DataNodeClassName"] == "vtkMRMLScalarVolumeNode"
    assert header["axis 0 index type"] == "numeric"
    assert header["axis 0 index values"] == "0 0.3333333333333333 0.5 3.333333"


# --------------------------------------------------------------------------- input errors


def _garbage(path: Path) -> Path:
    path.write_bytes(b"this is not an image\n" * 4)
    return path


def _truncated_nifti(path: Path) -> Path:
    write_4d(path, _sequence())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


@pytest.mark.parametrize(
    "name", ["bad.nii.gz", "bad.nii", "bad.seq.nrrd", "bad.nrrd", "bad.mha"]
)
def test_corrupt_file_is_input_error(tmp_path: Path, name: str) -> None:
    path = _garbage(tmp_path / name)
    message = _one_line_input_error(lambda: read_4d(path), "cannot read .*valid")
    assert str(path) in str(message)


def test_truncated_file_is_input_error(tmp_path: Path) -> None:
    path = _truncated_nifti(tmp_path / "cut.nii.gz")
    _one_line_input_error(lambda: read_4d(path), f"cannot read {re.escape(str(path))}")


def test_missing_file(tmp_path: Path) -> None:
    _one_line_input_error(lambda: read_4d(tmp_path / "nope.seq.nrrd"), "does not exist")
    write_volume(tmp_path / "a.nrrd", np.zeros(SHAPE), OBLIQUE)
    _one_line_input_error(
        lambda: read_4d([tmp_path / "a.nrrd", tmp_path / "b.nrrd"]), r"b\.nrrd does not exist"
    )


def test_folder_instead_of_file(tmp_path: Path) -> None:
    (tmp_path / "dicom").mkdir()
    _one_line_input_error(lambda: read_4d(tmp_path / "dicom"), "is not a file")


def test_unsupported_suffix_lists_accepted(tmp_path: Path) -> None:
    path = _garbage(tmp_path / "frames.png")
    _one_line_input_error(lambda: read_4d(path), r"unsupported file type.*\.seq\.nrrd.*\.nii\.gz")


def test_single_3d_file_is_not_4d(tmp_path: Path) -> None:
    path = tmp_path / "one.nii.gz"
    write_volume(path, np.zeros(SHAPE), OBLIQUE)
    _one_line_input_error(
        lambda: read_4d(path), "single 3D volume, not a 4D series; pass two or more 3D frame"
    )
    _one_line_input_error(lambda: read_4d([path]), "not a 4D series")


def test_one_frame_series(tmp_path: Path) -> None:
    path = tmp_path / "one.seq.nrrd"
    write_4d(path, _sequence(index_values=[0.0]))
    _one_line_input_error(lambda: read_4d(path), "only 1 frame.*at least 2 frames")


def test_no_paths() -> None:
    _one_line_input_error(lambda: read_4d([]), "no input files given")


def test_4d_file_where_3d_frame_expected(tmp_path: Path) -> None:
    path = tmp_path / "series.nii.gz"
    write_4d(path, _sequence())
    _one_line_input_error(lambda: read_volume(path), "4D series of 5 frames, not a 3D volume")
    _one_line_input_error(lambda: read_4d([path, path]), "not a 3D volume")


def test_non_finite_values_name_the_file(tmp_path: Path) -> None:
    seq = _sequence(index_values=[0.0, 1.0, 2.0])
    paths = [tmp_path / f"f{t}.nii.gz" for t in range(3)]
    bad = seq.frames[1].copy()
    bad[2, 3, 1] = np.nan
    for path, frame in zip(paths, [seq.frames[0], bad, seq.frames[2]], strict=True):
        write_volume(path, frame, OBLIQUE)
    _one_line_input_error(lambda: read_4d(paths), f"{re.escape(str(paths[1]))} contains 1 NaN")

    seq.frames[2, 0, 0, 0] = np.inf
    series = tmp_path / "series.seq.nrrd"
    write_4d(series, seq)
    _one_line_input_error(lambda: read_4d(series), f"{re.escape(str(series))} .*infinite")


def test_mismatched_frame_shape(tmp_path: Path) -> None:
    write_volume(tmp_path / "a.nrrd", np.zeros(SHAPE), OBLIQUE)
    write_volume(tmp_path / "b.nrrd", np.zeros((6, 7, 4)), OBLIQUE)
    _one_line_input_error(
        lambda: read_4d([tmp_path / "a.nrrd", tmp_path / "b.nrrd"]),
        r"b\.nrrd has shape \(6, 7, 4\).*\(6, 7, 5\).*share one voxel grid",
    )


def test_mismatched_frame_geometry(tmp_path: Path) -> None:
    shifted = Geometry(OBLIQUE.spacing, (-12.5, 40.25, 8.75), OBLIQUE.direction)
    write_volume(tmp_path / "a.mha", np.zeros(SHAPE), OBLIQUE)
    write_volume(tmp_path / "b.mha", np.zeros(SHAPE), shifted)
    _one_line_input_error(
        lambda: read_4d([tmp_path / "a.mha", tmp_path / "b.mha"]),
        r"b\.mha has a different origin, spacing or direction",
    )


def test_vector_nrrd_is_input_error(tmp_path: Path) -> None:
    path = tmp_path / "rgb.nrrd"
    header = {"kinds": ["RGB-color", "domain", "domain", "domain"]}
    nrrd.write(str(path), np.zeros((3, *SHAPE), dtype=np.uint8), header)
    _one_line_input_error(lambda: read_4d(path), "'rgb-color' axis; only scalar")


# --------------------------------------------------------------------------- write errors


def test_write_to_missing_folder(tmp_path: Path) -> None:
    _one_line_input_error(
        lambda: write_4d(tmp_path / "no" / "out.seq.nrrd", _sequence()),
        "output folder .* does not exist",
    )
    assert os.listdir(tmp_path) == []


def test_write_bad_suffix_leaves_nothing(tmp_path: Path) -> None:
    _one_line_input_error(
        lambda: write_4d(tmp_path / "out.mha", _sequence()),
        r"unsupported file type for 4D output.*\.seq\.nrrd",
    )
    _one_line_input_error(
        lambda: write_volume(tmp_path / "out.seq.nrrd", np.zeros(SHAPE), OBLIQUE),
        r"unsupported file type for 3D output",
    )
    _one_line_input_error(
        lambda: write_volume(tmp_path / "out.mhd", np.zeros(SHAPE), OBLIQUE),
        r"unsupported file type.*\.mha",
    )
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("suffix", [".seq.nrrd", ".nii.gz"])
def test_failed_write_removes_temp_file(tmp_path: Path, suffix: str) -> None:
    """The target is a folder: the temp file is fully written, the final rename fails."""
    target = tmp_path / f"out{suffix}"
    target.mkdir()
    _one_line_input_error(lambda: write_4d(target, _sequence()), "cannot write .*writable")
    assert os.listdir(tmp_path) == [target.name]
    assert os.listdir(target) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores modes")
def test_unwritable_folder(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        _one_line_input_error(
            lambda: write_volume(folder / "out.nii.gz", np.zeros(SHAPE), OBLIQUE), "cannot write"
        )
        assert os.listdir(folder) == []
    finally:
        folder.chmod(0o700)


# --------------------------------------------------------------------------- Slicer interop


@pytest.fixture
def slicer_core():
    """slicer-core's ``slicer`` package (MRML without Qt); skip the test where it is missing."""
    slicer = pytest.importorskip("slicer")
    pytest.importorskip("slicer.util")
    return slicer


def _lps_from_ijk_to_ras(node) -> np.ndarray:
    import slicer.util
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ijk_to_ras = slicer.util.arrayFromVTKMatrix(matrix)
    ijk_to_ras[:3, :] = LPS_FROM_RAS @ ijk_to_ras[:3, :]
    return ijk_to_ras


def _slicer_read(slicer_core, path: Path):
    """Read ``path`` with Slicer's own sequence storage node into a fresh scene.

    Returns the sequence node and the storage node (to write the sequence back with).
    """
    scene = slicer_core.vtkMRMLScene()
    sequence_node = scene.AddNode(slicer_core.vtkMRMLSequenceNode())
    storage = scene.AddNode(slicer_core.vtkMRMLVolumeSequenceStorageNode())
    storage.SetFileName(str(path))
    assert storage.ReadData(sequence_node) == 1
    return sequence_node, storage


def test_slicer_reads_seq_nrrd_written_by_write_4d(tmp_path: Path, slicer_core) -> None:
    import slicer.util

    seq = _sequence(index_values=[0.0, 1.0 / 3.0, 0.5, 2.0 / 3.0, 3.333333, 7.0])
    path = tmp_path / "written.seq.nrrd"
    write_4d(path, seq)

    sequence_node, _ = _slicer_read(slicer_core, path)

    assert sequence_node.GetNumberOfDataNodes() == seq.num_frames
    assert sequence_node.GetIndexName() == "cardiac phase"
    assert sequence_node.GetIndexUnit() == "ms"
    assert sequence_node.GetIndexTypeAsString() == "numeric"
    values = [float(sequence_node.GetNthIndexValue(t)) for t in range(seq.num_frames)]
    assert values == seq.index_values
    np.testing.assert_allclose(values[1], 1.0 / 3.0, rtol=0, atol=1e-6)
    for t in range(seq.num_frames):
        volume = sequence_node.GetNthDataNode(t)
        voxels = slicer.util.arrayFromVolume(volume).transpose(2, 1, 0)  # KJI -> IJK
        np.testing.assert_array_equal(voxels, seq.frames[t])
        np.testing.assert_allclose(volume.GetSpacing(), OBLIQUE.spacing, atol=1e-9)
        np.testing.assert_allclose(
            LPS_FROM_RAS @ np.asarray(volume.GetOrigin()), OBLIQUE.origin, atol=1e-9
        )
        np.testing.assert_allclose(_lps_from_ijk_to_ras(volume), OBLIQUE.ijk_to_lps(), atol=1e-9)


def test_read_4d_reads_sequence_written_by_slicer(tmp_path: Path, slicer_core) -> None:
    import slicer.util

    seq = _sequence(index_values=[0.0, 1.0 / 3.0, 0.5, 3.333333])
    texts = ["0", "0.3333333333333333", "0.5", "3.333333"]
    ijk_to_ras = slicer.util.vtkMatrixFromArray(ras_affine_from_geometry(OBLIQUE))

    scene = slicer_core.vtkMRMLScene()
    sequence_node = scene.AddNode(slicer_core.vtkMRMLSequenceNode())
    sequence_node.SetIndexName("cardiac phase")
    sequence_node.SetIndexUnit("ms")
    for frame, text in zip(seq.frames, texts, strict=True):
        volume = slicer_core.vtkMRMLScalarVolumeNode()
        slicer.util.updateVolumeFromArray(volume, frame.transpose(2, 1, 0))  # IJK -> KJI
        volume.SetIJKToRASMatrix(ijk_to_ras)  # updateVolumeFromArray sets no geometry
        sequence_node.SetDataNodeAtValue(volume, text)
    path = tmp_path / "by_slicer.seq.nrrd"
    storage = scene.AddNode(slicer_core.vtkMRMLVolumeSequenceStorageNode())
    storage.SetFileName(str(path))
    assert storage.WriteData(sequence_node) == 1

    read = read_4d(path)
    np.testing.assert_array_equal(read.frames, seq.frames)
    assert read.geometry.allclose(OBLIQUE, atol=1e-9)
    np.testing.assert_allclose(read.index_values, seq.index_values, rtol=0, atol=1e-6)
    assert read.index_values == [float(text) for text in texts]
    assert (read.index_name, read.index_unit) == ("cardiac phase", "ms")


def test_slicer_sequence_round_trip_through_both(tmp_path: Path, slicer_core) -> None:
    """write_4d -> Slicer reads and rewrites (its own layout) -> read_4d: nothing drifts."""
    seq = _sequence(index_values=[0.25, 0.5, 0.75])
    first, second = tmp_path / "ours.seq.nrrd", tmp_path / "theirs.seq.nrrd"
    write_4d(first, seq)
    sequence_node, storage = _slicer_read(slicer_core, first)
    storage.SetFileName(str(second))
    assert storage.WriteData(sequence_node) == 1
    _assert_same_sequence(read_4d(second), seq, atol=1e-9)


def test_file_io_sits_below_data_and_workflows():
    """Layers: ``volume`` (Sequence4D, Geometry) at the bottom, ``fileio`` on it, ``data`` and
    ``workflows`` above: no fileio module imports from ``data`` or ``workflows``."""
    import ast
    from pathlib import Path

    import TTTInterpolationLib

    root = Path(TTTInterpolationLib.__file__).parent
    for path in (root / "fileio").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[0] not in ("data", "workflows"), (path, node.module)
