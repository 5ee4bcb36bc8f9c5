"""Motion fitted to one sequence: registration of neighbouring frames, trajectories quadratic
in time (``--method registration``; no network, no weights).

Why: between neighbouring frames of cine MRI the heart moves a few pixels, and UVI-Net,
trained on end-diastole -> end-systole pairs, finds less of that motion than a registration
of the two frames themselves (keep every 2nd frame of ACDC validation: network -0.08 dB,
this +0.49 dB against linear blending; docs/acdc4d-headroom.md §8). The sequence's other
frames also say how the motion bends in time: with the frame beyond each end of a gap, the
trajectory through three frames is quadratic, not linear (QVI's idea, on fitted fields).

For the frames of one sequence (visible frames only) and the gaps to fill between them:

1. The frames, min-max normalised over the sequence, on their own grid.
2. For every gap ``(a, b)``: smooth displacement fields with ``warp(x_a, B[a->b]) ~ x_b``
   and ``warp(x_b, B[b->a]) ~ x_a``; where the frame ``a'`` beyond ``a`` (away from ``b``)
   lies between :data:`NEIGHBOUR_RANGE` gap lengths away, ``B[a->a']`` as well (and so for
   ``b``). Each field minimises the mean squared difference plus :data:`SMOOTHNESS` x the
   mean squared differences of its parameters (Adam, :data:`STEPS` steps), parameters at
   1 / :data:`COARSENING` of the resolution (finer for single steps of a sequence); along a
   held (through-plane) axis the parameters keep every slice and the displacement is zero
   (:mod:`.data.slices`).
3. A frame at fraction ``t``: from ``a`` the displacement quadratic in time through
   ``B[a->a']``, zero and ``B[a->b]`` (linear in time where there is no ``a'``), scaled fields
   on the target grid as UVI-Net scales its flows; from ``b`` likewise; the two warped frames
   blended ``(1 - t, t)``. Sampling is trilinear, or for a stack of slices bilinear or (for
   single steps of a sequence, :func:`fill_gaps`) bicubic within each slice.
4. A gap that no neighbour bends (neither end has one within range: end-diastole ->
   end-systole, or two frames alone) lies, as a rule, between turning points of the motion,
   and there the motion eases in and out: ``t`` above becomes :func:`gap_timing` ``(t)``
   (learned from the training sequences), and the two warped frames are aligned to each
   other before they are blended (:func:`_aligned`). End-diastole -> end-systole, gain over
   blending: ACDC validation +0.78 dB without either, +0.99 with both; Sunnybrook +0.29,
   +0.68 (docs/acdc4d-headroom.md §9).

Where nothing moves, the fields stay within a hundredth of a voxel of zero and the result
is blending: linear blending for the steps of a sequence; over a gap no neighbour bends,
blending weighted by the timing curve (Testing/test_fitted_motion.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..nn.warp import warp
from ..runtime.progress import NullProgress, Progress, SubProgress

#: Adam steps per field, the learning rate and the smoothness weight, chosen on ACDC
#: validation at x2 (docs/acdc4d-headroom.md §8).
STEPS = 100
LEARNING_RATE = 0.1
SMOOTHNESS = 0.2
#: The field's parameters at 1 / this of the resolution: for single steps of a sequence
#: (small motion, upsampling) and for one long gap (end-diastole -> end-systole: large,
#: smooth motion; 1/4 gained 0.10 dB on ACDC validation and 0.05 dB on Sunnybrook over 1/2,
#: and was level at x4 and worse at x2).
COARSENING = {"single steps": 2, "long gap": 4}
#: A neighbour beyond a gap's end bends the trajectory only if it lies this many gap lengths
#: away (a much closer or farther frame makes the curvature an extrapolation).
NEIGHBOUR_RANGE = (0.5, 2.0)
#: Adam divides each gradient by its own size, so a gradient of rounding noise would move a
#: field as fast as a real one: the warp of a still frame differs from the frame by ~1e-7,
#: which moved fields of identical frames by 0.1 voxel in 20 steps. The loss is summed over
#: the voxels (gradients of real motion ~1e-2, independent of the volume's size) and an
#: ``eps`` far above rounding but far below those keeps still frames still.
ADAM_EPS = 1e-4
#: A long gap with no neighbour frame to bend its trajectories (end-diastole -> end-systole,
#: or two frames alone): the motion eases in and out, as it does between the turning points
#: of a beat or a breath. Fraction of the motion done at fraction ``t`` of the time: the cubic
#: from 0 to 1 with these slopes at the two ends (:func:`gap_timing`; 1, 1 is linear in
#: time). Fitted on ACDC training patients 001-080, every frame between end-diastole and
#: end-systole (``analysis/gap_timing.py``); docs/acdc4d-headroom.md §9.
GAP_TIMING_SLOPES = (0.5, 0.1)
#: Voxels fitted at once (fields are independent; chunks bound the memory, not the result).
CHUNK_VOXELS = 2**24


class FittedFields:
    """Fields fitted between pairs of one sequence's frames, kept at their parameters'
    resolution (a full-resolution field is made when a frame needs it)."""

    def __init__(self, shape: tuple[int, int, int], held_axis: int | None,
                 single_steps: bool = False) -> None:
        self.shape = shape
        self.held_axis = held_axis
        self.sharp = single_steps and held_axis is not None  # bicubic within slices
        self.coarsening = COARSENING["single steps" if single_steps else "long gap"]
        self.free = [axis for axis in range(3) if axis != held_axis]
        self.coarse = tuple(size if axis == held_axis else max(1, size // self.coarsening)
                            for axis, size in enumerate(shape))
        self.params: dict[tuple[int, int], torch.Tensor] = {}

    def full(self, params: torch.Tensor) -> torch.Tensor:
        """``(P, 3, *shape)`` displacement in voxels from ``(P, len(free), *coarse)``."""
        up = F.interpolate(params, size=self.shape, mode="trilinear",
                           align_corners=False) * self.coarsening
        zero = torch.zeros_like(up[:, :1])
        parts = [up[:, self.free.index(axis):self.free.index(axis) + 1]
                 if axis in self.free else zero for axis in range(3)]
        return torch.cat(parts, dim=1)

    def field(self, source: int, target: int) -> torch.Tensor:
        """``(1, 3, *shape)``: ``warp(x[source], field) ~ x[target]``."""
        return self.full(self.params[(source, target)][None])

    def warp(self, image: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
        """``image`` warped by ``field``: bicubic within the slices of a stack where
        :attr:`sharp`, else (bi/tri)linear (see :func:`fill_gaps`)."""
        if self.held_axis is None:
            return warp(image, field)
        return warp(image, field, "bicubic" if self.sharp else "bilinear",
                    held_axis=self.held_axis)

    def roughness(self, params: torch.Tensor) -> torch.Tensor:
        """Per field, the mean squared differences of neighbouring parameters along the free
        axes (slices along a held axis are independent)."""
        total = params.new_zeros(params.shape[0])
        for axis in self.free:
            diff = params.diff(dim=2 + axis)
            total = total + diff.pow(2).flatten(1).mean(dim=1)
        return total


def fit_fields(frames: torch.Tensor, pairs: Sequence[tuple[int, int]],
               held_axis: int | None = None, single_steps: bool = False,
               steps: int = STEPS, progress: Progress | None = None,
               task: str = "fitting motion") -> FittedFields:
    """Fit one field per ``(source, target)`` pair of ``frames`` ``(N, 1, D1, D2, D3)``
    (``task`` names the work in the progress messages).

    Each field's loss is its own, summed over its voxels (so a field's result does not
    depend on which chunk it was fitted in, nor its gradients on the volume's size).
    """
    progress = progress or NullProgress()
    shape = tuple(int(s) for s in frames.shape[2:])
    fields = FittedFields(shape, held_axis, single_steps)  # type: ignore[arg-type]
    pairs = list(dict.fromkeys(pairs))
    voxels = int(np.prod(shape))
    chunk = max(1, CHUNK_VOXELS // voxels)
    for start in range(0, len(pairs), chunk):
        part = pairs[start:start + chunk]
        sources = frames[[s for s, _ in part]]
        targets = frames[[t for _, t in part]]
        params = torch.zeros(len(part), len(fields.free), *fields.coarse, device=frames.device,
                             dtype=frames.dtype, requires_grad=True)
        optimizer = torch.optim.Adam([params], lr=LEARNING_RATE, eps=ADAM_EPS)
        # Adam's normalised steps jitter around the optimum at the scale of the learning rate;
        # decayed to zero, the fields settle instead.
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        for step in range(steps):
            residual = fields.warp(sources, fields.full(params)) - targets
            loss = voxels * (residual.pow(2).flatten(1).mean(dim=1)
                             + SMOOTHNESS * fields.roughness(params)).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            if step % 10 == 0:
                done = (start + (step + 1) / steps * len(part)) / len(pairs)
                progress.update("fit", done, f"{task}: fields {start + 1}-"
                                f"{start + len(part)} of {len(pairs)}")
        for k, pair in enumerate(part):
            fields.params[pair] = params[k].detach()
    return fields


def gap_timing(t: float, slopes: tuple[float, float] | None = None) -> float:
    """Fraction of a gap's motion done at fraction ``t`` of its time: the cubic (Hermite)
    through 0 at 0 and 1 at 1 with ``slopes`` (in gap units; default
    :data:`GAP_TIMING_SLOPES`) at the two ends."""
    start, end = slopes or GAP_TIMING_SLOPES
    return ((t**3 - 2 * t**2 + t) * start + (3 * t**2 - 2 * t**3)
            + (t**3 - t**2) * end)


def quadratic(near: torch.Tensor, far: torch.Tensor | None, tau_far: float,
              tau: float) -> torch.Tensor:
    """Displacement at ``tau`` (gap lengths from the source frame) of a trajectory through
    zero at 0, ``near`` at 1 and ``far`` at ``tau_far`` (< 0); linear without ``far``."""
    if far is None:
        return tau * near
    return (near * (tau * (tau - tau_far) / (1.0 - tau_far))
            + far * (tau * (tau - 1.0) / (tau_far * (tau_far - 1.0))))


def _beyond(values: Sequence[float], a: int, b: int) -> tuple[int, float] | None:
    """The frame beyond ``a`` (away from ``b``) and its place in gap lengths (negative), if it
    lies within :data:`NEIGHBOUR_RANGE`."""
    other = a - (1 if b > a else -1)
    if not 0 <= other < len(values):
        return None
    ratio = abs(values[other] - values[a]) / abs(values[b] - values[a])
    low, high = NEIGHBOUR_RANGE
    return (other, -ratio) if low <= ratio <= high else None


def move_frame(fields: FittedFields, x: torch.Tensor, source: int, target: int,
               far: tuple[int, float] | None, tau: float) -> torch.Tensor:
    """Frame ``source`` moved ``tau`` gap lengths along its trajectory towards ``target``
    (bent through the frame ``far``, as :func:`_beyond` gives it, where there is one)."""
    bend = fields.field(source, far[0]) if far else None
    displacement = quadratic(fields.field(source, target), bend, far[1] if far else 0.0, tau)
    return fields.warp(x[source:source + 1], displacement)


def fill_gaps(frames: np.ndarray, gaps: Sequence[tuple[int, int, Sequence[float]]],
              values: Sequence[float] | None = None, held_axis: int | None = None,
              single_steps: bool = False,
              device: torch.device | str = "cpu", steps: int = STEPS,
              progress: Progress | None = None) -> list[list[np.ndarray]]:
    """Frames at fractions ``t`` of each gap ``(a, b, times)`` of ``frames`` ``(N, D1, D2, D3)``
    (index values ``values``; default ``0..N-1``), in the frames' units (module docstring).

    ``single_steps``: the gaps are single steps of a sequence (upsampling): fields at half
    resolution (:data:`COARSENING`) and, with a ``held_axis``, fitted and warped bicubically
    within the slices. There the motion is small and well fitted, and bilinear sampling's
    smoothing of a frame moved by a fraction of a pixel is the larger error: at x2 on ACDC
    validation bicubic gained 0.2 dB (one case went from -0.23 to +0.40 dB against
    blending). Over a long gap (end-diastole -> end-systole) the fitted motion is rougher,
    and blurred frames blend better: there bicubic lost 0.12 dB.
    """
    progress = progress or NullProgress()
    low, high = float(frames.min()), float(frames.max())
    scale = high - low if high > low else 1.0
    x = torch.from_numpy(((frames.astype(np.float32) - low) / scale)[:, None]).to(device)
    out = []
    for moved in moved_pairs(x, gaps, values, held_axis, single_steps, steps, progress):
        frames_t = []
        for from_a, from_b, s in moved:
            frame = ((1.0 - s) * from_a + s * from_b)[0, 0].double().cpu().numpy()
            frames_t.append((low + frame * scale).astype(np.float32))
        out.append(frames_t)
    progress.update("fit", 1.0, "motion fitted")
    return out


def moved_pairs(x: torch.Tensor, gaps: Sequence[tuple[int, int, Sequence[float]]],
                values: Sequence[float] | None = None, held_axis: int | None = None,
                single_steps: bool = False, steps: int = STEPS,
                progress: Progress | None = None,
                ) -> Iterator[list[tuple[torch.Tensor, torch.Tensor, float]]]:
    """Per gap of ``x`` ``(N, 1, D1, D2, D3)`` (0..1), per new frame: the two end frames moved
    to its time and the blend weight of the second (:func:`fill_gaps`, which blends them).

    One gap at a time, so that only one gap's moved frames are held at once.
    """
    progress = progress or NullProgress()
    values = list(values) if values is not None else list(range(len(x)))
    ends = {g[:2]: (_beyond(values, g[0], g[1]), _beyond(values, g[1], g[0])) for g in gaps}
    pairs: list[tuple[int, int]] = []
    for (a, b), (far_a, far_b) in ends.items():
        pairs += [(a, b), (b, a)]
        pairs += [(a, far_a[0])] if far_a else []
        pairs += [(b, far_b[0])] if far_b else []
    # Gaps no neighbour bends ease in and out and align their two moved frames (a long gap:
    # half the progress after the fit of the trajectories).
    unbent = [k for k, g in enumerate(gaps) if ends[g[:2]] == (None, None)]
    fields = fit_fields(x, pairs, held_axis, single_steps, steps,
                        SubProgress(progress, 0.0, 0.5 if unbent else 1.0))
    for k, (a, b, times) in enumerate(gaps):
        far_a, far_b = ends[(a, b)]
        moved = []
        with torch.no_grad():
            for t in times:
                s = gap_timing(t) if k in unbent else t
                moved.append((move_frame(fields, x, a, b, far_a, s),
                              move_frame(fields, x, b, a, far_b, 1.0 - s), s))
        if k in unbent:
            done = unbent.index(k) / len(unbent)
            moved = _aligned(moved, held_axis, single_steps, steps, SubProgress(
                progress, 0.5 + 0.5 * done, 0.5 + 0.5 * (done + 1 / len(unbent))))
        yield moved


def _aligned(moved: list[tuple[torch.Tensor, torch.Tensor, float]], held_axis: int | None,
             single_steps: bool, steps: int,
             progress: Progress) -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """The two moved frames of each new frame, aligned to each other where they meet.

    Why: each end frame reaches the new frame's time along its own fitted trajectory; where
    the two disagree by a pixel or two, blending them doubles the edges. A field fitted
    between the two moved frames (both ways) moves each the fraction of the way to the other
    that its blend weight gives the other, so the edges meet where the blend would put them.
    """
    stacked = torch.cat([torch.cat([from_a, from_b]) for from_a, from_b, _ in moved])
    pairs = [(2 * k, 2 * k + 1) for k in range(len(moved))]
    pairs += [(b, a) for a, b in pairs]
    fields = fit_fields(stacked, pairs, held_axis, single_steps, steps, progress,
                        "aligning the frames moved from both ends")
    with torch.no_grad():
        return [(fields.warp(from_a, s * fields.field(2 * k, 2 * k + 1)),
                 fields.warp(from_b, (1.0 - s) * fields.field(2 * k + 1, 2 * k)), s)
                for k, (from_a, from_b, s) in enumerate(moved)]
