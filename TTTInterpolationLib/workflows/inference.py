"""The Python API's interpolation: new frames from numpy arrays or 4D files.

This is what the CLI, the Slicer module's background process and console scripts call. Arrays
are 3D ``(I, J, K)`` volumes in any intensity range; both frames of a pair are normalised with
one robust intensity window and zero-padded to the network's grid (multiples of 16) by
:func:`.preprocess.prepare_pair`, and mapped back, so outputs lie on the input's grid in the
input's intensity range.

Requests are validated once, at the edge: :func:`interpolate` checks its arrays and times,
:func:`check_request` a 4D input's frame pairs, index values and grid (the CLI calls it before
loading a model, and passes the :class:`CheckedRequest` on), and the work below trusts them.

Example::

    import TTTInterpolationLib as tl
    frames = tl.interpolate(ed, es, [0.25, 0.5, 0.75], ttt="cycle", steps=10)
    seq = tl.interpolate_file("cine.nii.gz", frames=(0, 4), num=3, output="out.seq.nrrd")
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import METHODS, TTTConfig, _check_choice
from ..data.model_grid import GridMapping, plan_mapping
from ..data.preprocess import PreparedPair, prepare_pair
from ..data.volume import Sequence4D
from ..models.loading import LoadedModel, load_model
from ..models.ttt import Case, run_ttt
from ..runtime.progress import NullProgress, Progress, SubProgress
from .validation import CheckedRequest, _check_pair, check_request, times_between

__all__ = ["interpolate", "interpolate_sequence", "interpolate_file"]


@dataclass
class _Prepared:
    """One pair on the model grid (see :mod:`.preprocess`) as a TTT case."""

    pair: PreparedPair
    case: Case
    frames: tuple[np.ndarray, np.ndarray]  # the checked inputs, for linear blending

    def to(self, device: torch.device) -> None:
        self.case.i0, self.case.i1 = self.case.i0.to(device), self.case.i1.to(device)


def _prepare(f0: np.ndarray, f1: np.ndarray, times: Sequence[float],
             mapping: GridMapping | None = None) -> _Prepared:
    """A checked pair on the model grid (CPU tensors ``(1, 1, D1, D2, D3)``)."""
    pair = prepare_pair(f0, f1, mapping=mapping)
    return _Prepared(pair, Case(pair.i0, pair.i1, list(times), pair.bounds), (f0, f1))


def _predict(prepared: Sequence[_Prepared], method: str, ttt: TTTConfig,
             loaded: LoadedModel | None, progress: Progress) -> list[list[np.ndarray]]:
    """Per case, the frames at its times on the input's grid, in the input's units."""
    if method == "linear":
        out = [[_blend(*p.frames, t) for t in p.case.times] for p in prepared]
        progress.update("predict", 1.0, "linear blending")
        return out
    if loaded is None:
        raise ValueError("UVI-Net prediction needs a loaded model")
    frames = run_ttt(loaded.model, [p.case for p in prepared], ttt, progress)
    return [[p.pair.restore(f) for f in case_frames]
            for p, case_frames in zip(prepared, frames, strict=True)]


def ttt_config(ttt: str | TTTConfig = "none", *, scheme: str | None = None,
               steps: int | None = None, lr: float | None = None,
               seed: int | None = None) -> TTTConfig:
    """The TTT settings of an API call: a task name or a :class:`TTTConfig`, plus keywords.

    Keywords that are given (not ``None``) override the config's fields, so
    ``ttt=TTTConfig(task="mae"), steps=50`` runs 50 steps (they were silently dropped once).
    """
    base = ttt if isinstance(ttt, TTTConfig) else TTTConfig(task=ttt)
    return base.with_options(scheme=scheme, steps=steps, lr=lr, seed=seed)


def _blend(f0: np.ndarray, f1: np.ndarray, t: float) -> np.ndarray:
    """Linear blending in the inputs' own units (float64 inside, so a still pair stays exact)."""
    return ((1.0 - t) * f0.astype(np.float64) + t * f1.astype(np.float64)).astype(np.float32)


def interpolate(
    frame0: np.ndarray,
    frame1: np.ndarray,
    times: Sequence[float],
    *,
    method: str = "uvinet",
    ttt: str | TTTConfig = "none",
    scheme: str | None = None,
    steps: int | None = None,
    lr: float | None = None,
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    seed: int | None = None,
    model: LoadedModel | None = None,
    progress: Progress | None = None,
) -> list[np.ndarray]:
    """Frames at fractional ``times`` (strictly between 0 and 1) between two 3D volumes.

    Returns float32 volumes of the inputs' shape, in the inputs' intensity units (both frames
    share one intensity window, :mod:`.preprocess`). ``model`` reuses an already loaded model.
    ``ttt`` is a task name or a :class:`TTTConfig`; ``scheme``, ``steps``, ``lr`` and ``seed``
    override its fields when given (:func:`ttt_config`). ``seed`` (default: the config's, 0)
    also seeds an untrained model's initialisation.
    """
    times = times_between(times=times)
    config = ttt_config(ttt, scheme=scheme, steps=steps, lr=lr, seed=seed)
    _check_choice("method", method, METHODS)
    f0, f1 = _check_pair(frame0, frame1)
    return _interpolate(f0, f1, times, plan_mapping(f0.shape), method=method, config=config,
                        weights=weights, device=device, model=model, progress=progress)


def _interpolate(f0: np.ndarray, f1: np.ndarray, times: Sequence[float], mapping: GridMapping, *,
                 method: str, config: TTTConfig, weights: str | os.PathLike | None,
                 device: str, model: LoadedModel | None,
                 progress: Progress | None) -> list[np.ndarray]:
    """:func:`interpolate` on checked inputs (nothing is validated again here)."""
    progress = progress or NullProgress()
    prepared = _prepare(f0, f1, times, mapping)
    loaded = None
    if method == "uvinet":
        progress.update("load", 0.0, "loading model")
        loaded = model or load_model(weights, device, seed=config.seed,
                                     progress=SubProgress(progress, 0.0, 0.05))
        prepared.to(loaded.device)
    return _predict([prepared], method, config, loaded, SubProgress(progress, 0.05, 0.95))[0]


def interpolate_sequence(seq: Sequence4D | CheckedRequest, frames: tuple[int, int],
                         times: Sequence[float], *, method: str = "uvinet",
                         ttt: str | TTTConfig = "none", scheme: str | None = None,
                         steps: int | None = None, lr: float | None = None,
                         seed: int | None = None, weights: str | os.PathLike | None = None,
                         device: str = "auto", model: LoadedModel | None = None,
                         progress: Progress | None = None) -> Sequence4D:
    """New frames between items ``frames`` of ``seq``, at fractional index values.

    The index value of ``t`` is ``v_A + t (v_B - v_A)``, strictly between the two frames' own.
    ``seq`` may be a :class:`CheckedRequest` (the checks are then not repeated). Keywords as
    :func:`interpolate`.
    """
    request = check_request(seq, [frames])
    times = times_between(times=times)
    config = ttt_config(ttt, scheme=scheme, steps=steps, lr=lr, seed=seed)
    _check_choice("method", method, METHODS)
    a, b = request.pairs[0]
    frames4d = request.seq.frames
    f0, f1 = _check_pair(frames4d[a], frames4d[b])
    out = _interpolate(f0, f1, times, request.mapping, method=method, config=config,
                       weights=weights, device=device, model=model, progress=progress)
    va, vb = request.seq.index_values[a], request.seq.index_values[b]
    return Sequence4D(np.stack(out), request.seq.geometry, [va + t * (vb - va) for t in times],
                      request.seq.index_name, request.seq.index_unit)


def interpolate_file(inputs: str | os.PathLike | Sequence[str | os.PathLike],
                     frames: tuple[int, int], output: str | os.PathLike, *,
                     num: int | None = None, times: Sequence[float] | None = None,
                     **options: Any) -> Sequence4D:
    """Read a 4D file (or a list of 3D frame files), interpolate, write ``output`` atomically."""
    from ..fileio.volume_io import check_output_path, read_4d, write_4d

    check_output_path(output)
    fractions = times_between(num, times)
    seq = read_4d(inputs)
    result = interpolate_sequence(seq, frames, fractions, **options)
    write_4d(output, result)
    return result
