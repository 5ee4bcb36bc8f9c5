"""Evaluation cases: which frames of a real sequence are hidden, which the model may see.

Protocols (:data:`~.config.PROTOCOLS`):

- ``edes``: every frame strictly between end-diastole and end-systole is hidden; the model
  sees the rest of the sequence (frames outside the interval are the patient's own frames,
  which the ``frames`` TTT task and the guard may learn from).
- ``x2`` / ``x4``: keep every 2nd / 4th frame (0, k, 2k, ...), hide the frames between two
  kept ones and fill them (upsampling by k). Frames after the last kept one are dropped,
  neither seen nor scored.
- a pair (``evaluate INPUT --frames A B``): the frames strictly between items A and B hidden.

An :class:`EvalCase` holds the visible frames as a :class:`Sequence4D` of their own (a copy
without the hidden frames, so no code path that receives it can reach them) and, apart, the
hidden frames (``truths``), scored on the whole sequence's min-max ``window``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..config import PROTOCOLS, _check_choice
from ..errors import InputError
from ..frame_pairs import KEEP_EVERY, kept_frames, protocol_pairs
from ..volume import Sequence4D
from .fill import Gap
from .validation import HiddenCase, hidden_case

#: Keep every k-th frame, by protocol (the rule is :mod:`..frame_pairs`', shared with Slicer).
FACTORS = KEEP_EVERY


@dataclass(frozen=True)
class EvalCase:
    """One sequence under one protocol: what the model may see and what it must predict."""

    name: str
    visible: Sequence4D
    gaps: tuple[Gap, ...]
    truths: tuple[tuple[np.ndarray, ...], ...]  # per gap, the hidden frames, in gap order
    window: tuple[float, float]  # the full sequence's min and max: the PSNR (seq) scale
    protocol: str = "pair"
    pairs: tuple[tuple[int, int], ...] = ()  # each gap's ends, as frame numbers of the input

    @property
    def num_hidden(self) -> int:
        return sum(len(g.times) for g in self.gaps)

    @property
    def hidden(self) -> list[int]:
        """Every hidden frame number, in gap order (the order of ``truths`` flattened)."""
        return [h for g in self.gaps for h in g.hidden]

    def hidden_values(self) -> list[float]:
        """Index values of the hidden frames (order of :attr:`hidden`), from their gaps' ends."""
        values = self.visible.index_values or []
        return [values[g.a] + t * (values[g.b] - values[g.a]) for g in self.gaps for t in g.times]

    def hidden_sequence(self, frames: Sequence[np.ndarray]) -> Sequence4D:
        """``frames`` (one per hidden frame) as a sequence at the hidden frames' index values,
        on the case's geometry."""
        return Sequence4D(np.stack(frames).astype(np.float32), self.visible.geometry,
                          self.hidden_values(), self.visible.index_name,
                          self.visible.index_unit)

    @property
    def a(self) -> int:
        """Frame number of the first gap's start (the pair of a one-gap case)."""
        return self.pairs[0][0]

    @property
    def b(self) -> int:
        """Frame number of the first gap's end."""
        return self.pairs[0][1]


def sequence_window(frames: np.ndarray) -> tuple[float, float]:
    """The sequence's min and max (a constant sequence gets a unit window)."""
    low, high = float(frames.min()), float(frames.max())
    return low, (high if high > low else low + 1.0)


def _case(seq: Sequence4D, visible: list[int], runs: Sequence[HiddenCase], name: str,
          protocol: str) -> EvalCase:
    """The case that shows ``visible`` (frame numbers) and hides each run's frames."""
    position = {frame: k for k, frame in enumerate(visible)}
    values = seq.index_values or []
    gaps = tuple(Gap(position[r.a], position[r.b], tuple(r.times), tuple(r.hidden))
                 for r in runs)
    truths = tuple(tuple(seq.frames[h].copy() for h in r.hidden) for r in runs)
    shown = Sequence4D(seq.frames[visible].copy(), seq.geometry, [values[i] for i in visible],
                       seq.index_name, seq.index_unit)
    return EvalCase(name, shown, gaps, truths, sequence_window(seq.frames), protocol,
                    tuple((r.a, r.b) for r in runs))


def pair_case(seq: Sequence4D, a: int, b: int, name: str | None = None,
              checked: HiddenCase | None = None) -> EvalCase:
    """Hide every frame strictly between items ``a`` and ``b`` (either order); the rest shows.

    ``checked`` is the pair's :func:`hidden_case` when the caller has it already.
    """
    run = checked or hidden_case(seq, a, b)
    hidden = set(run.hidden)
    visible = [i for i in range(seq.num_frames) if i not in hidden]
    return _case(seq, visible, [run], name or f"{a}->{b}", "pair")


def protocol_case(seq: Sequence4D, protocol: str, ed: int = 0, es: int | None = None,
                  name: str = "case") -> EvalCase:
    """Split ``seq`` into visible frames and hidden gaps under ``protocol``."""
    _check_choice("protocol", protocol, PROTOCOLS)
    n = seq.num_frames
    if protocol == "edes":
        if es is None or not 0 <= ed < es < n or es - ed < 2:
            raise InputError(f"{name}: protocol edes needs frames between ed and es, got ed={ed}, "
                             f"es={es} of {n} frames")
        return _case(seq, [i for i in range(n) if not ed < i < es], [hidden_case(seq, ed, es)],
                     name, protocol)
    pairs = protocol_pairs(n, protocol, name)
    visible = kept_frames(n, FACTORS[protocol])
    runs = [hidden_case(seq, a, b) for a, b in pairs]
    return _case(seq, visible, runs, name, protocol)
