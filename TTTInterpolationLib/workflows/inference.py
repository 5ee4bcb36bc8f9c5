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

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..config import (
    MOTIONS,
    UPSAMPLE_DEFAULT_TASK,
    TTTConfig,
    _check_choice,
    check_method_task,
    resolve_method,
)
from ..data.model_grid import GridMapping, plan_mapping
from ..errors import InputError
from ..models.loading import LoadedModel, load_model
from ..runtime.progress import NullProgress, Progress, SubProgress
from ..volume import Sequence4D
from .fill import FillJob, FillResult, Gap, fill
from .validation import CheckedRequest, _check_pair, check_request, times_between

__all__ = ["interpolate", "interpolate_sequence", "interpolate_file", "upsample_sequence",
           "upsample_file"]


def ttt_config(ttt: str | TTTConfig = "none", *, scheme: str | None = None,
               steps: int | None = None, lr: float | None = None,
               seed: int | None = None) -> TTTConfig:
    """The TTT settings of an API call: a task name or a :class:`TTTConfig`, plus keywords.

    Keywords that are given (not ``None``) override the config's fields, so
    ``ttt=TTTConfig(task="mae"), steps=50`` runs 50 steps (they were silently dropped once).
    """
    base = ttt if isinstance(ttt, TTTConfig) else TTTConfig(task=ttt)
    return base.with_options(scheme=scheme, steps=steps, lr=lr, seed=seed)


def interpolate(
    frame0: np.ndarray,
    frame1: np.ndarray,
    times: Sequence[float],
    *,
    method: str | None = None,
    ttt: str | TTTConfig = "none",
    scheme: str | None = None,
    steps: int | None = None,
    lr: float | None = None,
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    seed: int | None = None,
    flow_resolution: str | None = None,
    motion: str = "auto",
    model: LoadedModel | None = None,
    progress: Progress | None = None,
) -> list[np.ndarray]:
    """Frames at fractional ``times`` (strictly between 0 and 1) between two 3D volumes.

    Returns float32 volumes of the inputs' shape, in the inputs' intensity units (both frames
    share one intensity window, :mod:`.preprocess`). ``model`` reuses an already loaded model.
    ``method`` (:data:`~.config.METHODS`; default :func:`~.config.resolve_method`: UVI-Net
    where a TTT task, weights, a model or a flow resolution is given, else registration,
    which fits the motion to the frames).
    ``ttt`` is a task name or a :class:`TTTConfig`; ``scheme``, ``steps``, ``lr`` and ``seed``
    override its fields when given (:func:`ttt_config`). ``seed`` (default: the config's, 0)
    also seeds an untrained model's initialisation. ``flow_resolution`` (``"full"`` /
    ``"half"``) runs the motion estimate at another resolution than the model was trained at
    (``None``: its own). ``motion`` (:data:`~.config.MOTIONS`): ``in-plane`` holds the flow
    still across the slices of a stack of thick slices, ``auto`` decides from the volume
    (:mod:`.data.slices`; arrays carry no spacing, so from their shape).
    """
    times = times_between(times=times)
    config = ttt_config(ttt, scheme=scheme, steps=steps, lr=lr, seed=seed)
    method = resolve_method(method, config.task, weights, model, flow_resolution)
    _check_choice("motion", motion, MOTIONS)
    f0, f1 = _check_pair(frame0, frame1)
    pair = Sequence4D(np.stack([f0, f1]))
    job = FillJob(pair, [Gap(0, 1, tuple(times))], mapping=plan_mapping(f0.shape), motion=motion)
    model = _model(method, config, model, weights, device, flow_resolution, progress)
    return _fill(job, method, config, model, progress, device).frames[0]


def _model(method: str, config: TTTConfig, model: LoadedModel | None,
           weights: str | os.PathLike | None, device: str, flow_resolution: str | None,
           progress: Progress | None) -> LoadedModel | None:
    """The model a job runs (``None`` for linear blending): ``model`` as given, else loaded
    from ``weights`` (the first 5 % of the progress)."""
    check_method_task(method, config.task)
    if method != "uvinet":
        return None
    if model is not None:
        if flow_resolution is not None:
            raise ValueError("give flow_resolution to load_model, not with a loaded model")
        return model
    progress = progress or NullProgress()
    progress.update("load", 0.0, "loading model")
    return load_model(weights, device, seed=config.seed, flow_resolution=flow_resolution,
                      progress=SubProgress(progress, 0.0, 0.05))


def _fill(job: FillJob, method: str, config: TTTConfig, model: LoadedModel | None,
          progress: Progress | None, device: str = "auto") -> FillResult:
    """One job through :func:`.fill.fill` (after the model load's share of the progress)."""
    return fill([job], method, config, model,
                SubProgress(progress or NullProgress(), 0.05, 1.0), device)[0]


def outside_job(seq: Sequence4D, a: int, b: int, times: Sequence[float],
                mapping: GridMapping, motion: str = "auto") -> FillJob:
    """The job of filling between items ``a`` and ``b``: the frames strictly between them are
    left out of what the model sees (the ``frames`` task and the guard learn from the rest),
    exactly as evaluation hides them, so a validated setting runs the same way here."""
    low, high = min(a, b), max(a, b)
    visible = [i for i in range(seq.num_frames) if not low < i < high]
    values = seq.index_values or []
    shown = Sequence4D(seq.frames[visible], seq.geometry, [values[i] for i in visible],
                       seq.index_name, seq.index_unit)
    gap = Gap(visible.index(a), visible.index(b), tuple(float(t) for t in times))
    return FillJob(shown, [gap], mapping=mapping, motion=motion)


def interpolate_sequence(seq: Sequence4D | CheckedRequest, frames: tuple[int, int],
                         times: Sequence[float], *, method: str | None = None,
                         ttt: str | TTTConfig = "none", scheme: str | None = None,
                         steps: int | None = None, lr: float | None = None,
                         seed: int | None = None, weights: str | os.PathLike | None = None,
                         device: str = "auto", flow_resolution: str | None = None,
                         motion: str = "auto", model: LoadedModel | None = None,
                         progress: Progress | None = None) -> Sequence4D:
    """New frames between items ``frames`` of ``seq``, at fractional index values.

    The index value of ``t`` is ``v_A + t (v_B - v_A)``, strictly between the two frames' own.
    ``seq`` may be a :class:`CheckedRequest` (the checks are then not repeated). Keywords as
    :func:`interpolate`.
    """
    request = check_request(seq, [frames])
    times = times_between(times=times)
    config = ttt_config(ttt, scheme=scheme, steps=steps, lr=lr, seed=seed)
    method = resolve_method(method, config.task, weights, model, flow_resolution)
    _check_choice("motion", motion, MOTIONS)
    a, b = request.pairs[0]
    model = _model(method, config, model, weights, device, flow_resolution, progress)
    out = _fill(outside_job(request.seq, a, b, times, request.mapping, motion), method, config,
                model, progress, device).frames[0]
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


def check_upsample(seq: Sequence4D, factor: int) -> GridMapping:
    """Everything an upsampling request can get wrong, before any slow work: the factor, the
    frame count, the index values (finite, strictly increasing) and the volume size."""
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
        raise InputError(f"--factor must be a whole number >= 2 (new frames per gap + 1), "
                         f"got {factor!r}")
    if seq.num_frames < 2:
        raise InputError(f"upsampling needs at least 2 frames, the input has {seq.num_frames}")
    values = seq.index_values or []
    if not all(math.isfinite(v) for v in values) or any(
            b <= a for a, b in zip(values, values[1:], strict=False)):
        raise InputError("the input's index values must be finite and strictly increasing to "
                         "upsample: sort the frames by time first")
    return plan_mapping(seq.shape3d)


def upsample_task(seq: Sequence4D, requested: str | None, method: str) -> str:
    """The TTT task of an upsampling: the one asked for, else for UVI-Net
    :data:`UPSAMPLE_DEFAULT_TASK` (``none`` for fewer than 3 frames: nothing to adapt on);
    other methods adapt no network (``none``)."""
    if requested is not None:
        return requested
    return UPSAMPLE_DEFAULT_TASK if method == "uvinet" and seq.num_frames >= 3 else "none"


def upsample_sequence(seq: Sequence4D, factor: int, *, method: str | None = None,
                      ttt: str | TTTConfig | None = None, scheme: str | None = None,
                      steps: int | None = None, lr: float | None = None,
                      seed: int | None = None, weights: str | os.PathLike | None = None,
                      device: str = "auto", flow_resolution: str | None = None,
                      motion: str = "auto", model: LoadedModel | None = None,
                      progress: Progress | None = None) -> Sequence4D:
    """``seq`` with ``factor - 1`` new frames between every two neighbours, in time order.

    One model load and one job (:mod:`.fill`): the ``frames`` task adapts once on the
    sequence's own frames and the guard judges the model on them; the paper's tasks adapt per
    pair. New frames sit at index values ``v_i + k / factor (v_{i+1} - v_i)``. ``ttt=None``
    takes :func:`upsample_task`'s default. Other keywords as :func:`interpolate`.
    """
    mapping = check_upsample(seq, factor)
    method = resolve_method(method, ttt.task if isinstance(ttt, TTTConfig) else ttt, weights,
                            model, flow_resolution)
    task = ttt if isinstance(ttt, TTTConfig) else upsample_task(seq, ttt, method)
    config = ttt_config(task, scheme=scheme, steps=steps, lr=lr, seed=seed)
    _check_choice("motion", motion, MOTIONS)
    progress = progress or NullProgress()
    times = tuple(k / factor for k in range(1, factor))
    gaps = [Gap(i, i + 1, times) for i in range(seq.num_frames - 1)]
    model = _model(method, config, model, weights, device, flow_resolution, progress)
    result = _fill(FillJob(seq, gaps, mapping=mapping, motion=motion), method, config, model,
                   progress, device)
    values = seq.index_values or []
    frames: list[np.ndarray] = []
    index: list[float] = []
    for i in range(seq.num_frames):
        frames.append(seq.frames[i].astype(np.float32))
        index.append(values[i])
        if i < len(gaps):
            frames.extend(result.frames[i])
            index.extend(values[i] + t * (values[i + 1] - values[i]) for t in times)
    note = "" if result.used != "linear (guard)" else " (guard: linear blending)"
    progress.update("predict", 1.0, f"{len(gaps) * len(times)} new frames{note}")
    return Sequence4D(np.stack(frames), seq.geometry, index, seq.index_name, seq.index_unit)


def upsample_file(inputs: str | os.PathLike | Sequence[str | os.PathLike], factor: int,
                  output: str | os.PathLike, **options: Any) -> Sequence4D:
    """Read a 4D file, :func:`upsample_sequence`, write ``output`` atomically."""
    from ..fileio.volume_io import check_output_path, read_4d, write_4d

    check_output_path(output)
    seq = read_4d(inputs)
    check_upsample(seq, factor)
    result = upsample_sequence(seq, factor, **options)
    write_4d(output, result)
    return result
