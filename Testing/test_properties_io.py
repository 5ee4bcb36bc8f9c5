"""Property-based tests of the file formats: whatever we write reads back, or is refused.

Random shapes, dtypes, spacings, directions (proper and improper rotations), origins, index
values and index names/units go through NIfTI, NRRD and Slicer's .seq.nrrd (3D also MetaImage):
each either round-trips (voxels exactly as float32, geometry to 1e-4 mm, index values and
header fields exactly) or is refused with an :class:`InputError` (one line), on write or on
read, leaving no file behind. Corrupt files (bytes flipped, truncated, header fields replaced)
read back as a valid series or raise :class:`InputError`, never anything else.

Deterministic: ``derandomize=True`` (the examples are a function of the test), bounded
``max_examples``, no deadline (the machine is shared).
"""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from TTTInterpolationLib.errors import InputError
from TTTInterpolationLib.fileio.volume_io import read_4d, read_volume, write_4d, write_volume
from TTTInterpolationLib.volume import Geometry, Sequence4D

PROPERTY = settings(max_examples=60, derandomize=True, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=300, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

SUFFIXES_4D = (".seq.nrrd", ".nrrd", ".nii.gz", ".nii")
SUFFIXES_3D = (".nrrd", ".nii.gz", ".nii", ".mha")
DTYPES = (np.float32, np.float64, np.uint8, np.int8, np.int16, np.uint16, np.int32)


@st.composite
def geometries(draw: st.DrawFn) -> Geometry:
    """Positive spacings, any origin, an orthonormal direction (det +1 or -1)."""
    spacing = tuple(draw(st.floats(0.05, 20.0)) for _ in range(3))
    origin = tuple(draw(st.floats(-2000.0, 2000.0)) for _ in range(3))
    q = np.array([draw(st.floats(-1.0, 1.0)) for _ in range(4)])
    if np.linalg.norm(q) < 1e-3:
        q = np.array([1.0, 0.0, 0.0, 0.0])
    w, x, y, z = q / np.linalg.norm(q)
    rotation = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    if draw(st.booleans()):
        rotation[:, draw(st.integers(0, 2))] *= -1.0  # an improper (mirrored) direction
    return Geometry(spacing, origin, tuple(tuple(float(v) for v in row) for row in rotation))


def volumes(shape: tuple[int, ...], dtype: type) -> st.SearchStrategy[np.ndarray]:
    if np.issubdtype(dtype, np.floating):
        elements = st.floats(-1e6, 1e6, width=32)
    else:
        info = np.iinfo(dtype)
        elements = st.integers(int(info.min), int(info.max))
    return hnp.arrays(dtype, shape, elements=elements)


shapes_3d = st.tuples(*[st.integers(1, 5)] * 3)
# Index names and units: words with spaces and punctuation, as users type them.
header_text = st.text(st.characters(codec="ascii", categories=("L", "N", "P", "Zs")),
                      max_size=12)
index_values = st.floats(-1e6, 1e6)


@st.composite
def sequences(draw: st.DrawFn) -> Sequence4D:
    frames = draw(st.integers(2, 4))
    shape = draw(shapes_3d)
    data = draw(volumes((frames, *shape), draw(st.sampled_from(DTYPES))))
    values = draw(st.lists(index_values, min_size=frames, max_size=frames, unique=True))
    name = draw(header_text.filter(str.strip)) if draw(st.booleans()) else "time"
    unit = draw(header_text)
    return Sequence4D(data, draw(geometries()), values, name, unit)


def _expected(data: np.ndarray) -> np.ndarray:
    return np.asarray(data).astype(np.float32)


def _assert_one_line(exc: InputError) -> None:
    message = str(exc)
    assert message and "\n" not in message, message


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@PROPERTY
@given(seq=sequences(), suffix=st.sampled_from(SUFFIXES_4D))
def test_4d_round_trip_or_input_error(seq: Sequence4D, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"series{suffix}"
        try:
            write_4d(path, seq)
        except InputError as exc:
            _assert_one_line(exc)
            assert _files(Path(tmp)) == []
            return
        assert _files(Path(tmp)) == [path.name]  # no temp file left beside it
        try:
            back = read_4d(path)
        except InputError as exc:
            _assert_one_line(exc)
            return
        np.testing.assert_array_equal(back.frames, _expected(seq.frames))
        assert back.geometry.allclose(seq.geometry), (back.geometry, seq.geometry)
        assert back.index_values == seq.index_values
        assert (back.index_name, back.index_unit) == (seq.index_name, seq.index_unit)


@PROPERTY
@given(shape=shapes_3d, dtype=st.sampled_from(DTYPES), geometry=geometries(),
       suffix=st.sampled_from(SUFFIXES_3D), data=st.data())
def test_3d_round_trip(shape, dtype, geometry: Geometry, suffix: str, data) -> None:
    volume = data.draw(volumes(shape, dtype))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"frame{suffix}"
        write_volume(path, volume, geometry)
        back, back_geometry = read_volume(path)
        np.testing.assert_array_equal(back, _expected(volume))
        assert back_geometry.allclose(geometry), (back_geometry, geometry)


@PROPERTY
@given(seq=sequences(), suffix=st.sampled_from(SUFFIXES_4D),
       bad=st.sampled_from([math.nan, math.inf, -math.inf]), where=st.integers(0, 3))
def test_non_finite_index_values_are_refused(seq: Sequence4D, suffix: str, bad: float,
                                             where: int) -> None:
    """A NaN or infinite index value cannot place a frame in time: refused, nothing written."""
    seq.index_values[where % seq.num_frames] = bad
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"series{suffix}"
        with pytest.raises(InputError, match="index value") as info:
            write_4d(path, seq)
        _assert_one_line(info.value)
        assert _files(Path(tmp)) == []


# --------------------------------------------------------------------------- corrupt files

_VALID = Sequence4D(np.arange(2 * 4 * 3 * 2, dtype=np.float32).reshape(2, 4, 3, 2),
                    Geometry((1.5, 1.5, 8.0), (10.0, -5.0, 3.0)), [0.0, 0.5], "time", "ms")


def _valid_bytes(suffix: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"v{suffix}"
        write_4d(path, _VALID)
        return path.read_bytes()


_VALID_BYTES = {suffix: _valid_bytes(suffix) for suffix in SUFFIXES_4D}


def _read_back(raw: bytes, suffix: str) -> None:
    """Read a (possibly corrupt) file: a valid series or an InputError, nothing else."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"c{suffix}"
        path.write_bytes(raw)
        try:
            seq = read_4d(path)
        except InputError as exc:
            _assert_one_line(exc)
            return
        assert seq.frames.ndim == 4 and seq.num_frames >= 2
        assert np.isfinite(seq.frames).all()
        assert len(seq.index_values) == seq.num_frames
        assert all(math.isfinite(v) for v in seq.index_values)


@FUZZ
@given(suffix=st.sampled_from(SUFFIXES_4D), data=st.data())
def test_flipped_or_truncated_bytes_read_or_raise_input_error(suffix: str, data) -> None:
    raw = bytearray(_VALID_BYTES[suffix])
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
    else:
        # Mostly in the header (NIfTI: 348 bytes + extension; NRRD: the text part), where a
        # reader must interpret what it finds; sometimes anywhere.
        head = min(len(raw), 600) if data.draw(st.booleans(), label="in header") else len(raw)
        for _ in range(data.draw(st.integers(1, 8), label="flips")):
            at = data.draw(st.integers(0, head - 1), label="at")
            raw[at] = data.draw(st.integers(0, 255), label="byte")
    _read_back(bytes(raw), suffix)


_FIELD_VALUES = st.one_of(
    st.sampled_from(["", "nan", "-1", "0", "1e400", "none", "???", "(nan,nan,nan)",
                     "(0,0,0) (0,0,0) (0,0,0)", "list domain", "5 4 3 2 1", "abc def",
                     "left-posterior-superior", "3D-right-handed", "float", "raw", "gzip"]),
    st.text(st.characters(codec="ascii", categories=("L", "N", "P", "Zs")), max_size=20))


@FUZZ
@given(suffix=st.sampled_from((".seq.nrrd", ".nrrd")), data=st.data())
def test_nrrd_header_fields_replaced_read_or_raise_input_error(suffix: str, data) -> None:
    """Every header line of a valid file, its value replaced by something else."""
    raw = _VALID_BYTES[suffix]
    end = raw.index(b"\n\n")
    lines = raw[:end].decode("ascii").split("\n")
    for _ in range(data.draw(st.integers(1, 3), label="fields")):
        k = data.draw(st.integers(1, len(lines) - 1), label="line")
        match = re.match(r"([^:]+:=?\s?)", lines[k])
        if match is None:
            continue
        lines[k] = match.group(1) + data.draw(_FIELD_VALUES, label="value")
    _read_back("\n".join(lines).encode("ascii") + raw[end:], suffix)


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.sampled_from([math.nan, math.inf])
    | st.floats(-10, 10) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5),
                                                                     children, max_size=3),
    max_leaves=6)


@FUZZ
@given(meta=st.dictionaries(st.sampled_from(["index_values", "index_name", "index_unit", "x"]),
                            _JSON_VALUES | st.lists(st.floats(allow_nan=True), min_size=2,
                                                    max_size=2), max_size=3),
       wrap=st.booleans())
def test_nifti_index_extension_with_any_content_reads_or_raises(meta, wrap: bool) -> None:
    """Our JSON comment extension as another tool (or a user) might have edited it."""
    import json

    import nibabel as nib

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "e.nii"
        image = nib.Nifti1Image(np.zeros((3, 3, 3, 2), np.float32), np.eye(4))
        content = json.dumps({"TTTInterpolation": meta} if wrap else meta).encode()
        image.header.extensions.append(nib.nifti1.Nifti1Extension(6, content))
        nib.save(image, str(path))
        _read_back(path.read_bytes(), ".nii")
