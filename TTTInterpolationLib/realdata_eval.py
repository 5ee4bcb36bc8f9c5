"""Evaluation on real ED/ES pairs, where no intermediate frame exists (ACDC test split).

Without the frames in between, interpolation cannot be scored directly; what the two ends and
their manual labels can score is the motion the model finds between them. Per setting (no
motion, UVI-Net, UVI-Net after each TTT task and scheme) and per case, on the model grid
(docs/method-notes.md §6: in-plane centre crop, slices cropped or zero-padded, min-max per volume;
labels cropped the same way):

- **registration NCC** and **registration PSNR**: ED warped by the flow toward ES,
  ``W(ED, phi01)``, against ES, with the published metrics (local NCC 9^3, PSNR at range 1).
  phi01 is UVI-Net's first flow output: ``W(I0, phi01)`` is its estimate of ``I1``.
- **Dice**: the ED labels warped the same way (nearest neighbour, so classes are never blended)
  against the ES labels; per class (1 RV, 2 myocardium, 3 LV cavity) and their mean. A class
  absent from both volumes has no Dice (NaN), and is left out of means.
- **cycle PSNR**: how well the interpolator reconstructs the real ends from virtual frames,
  UVI-Net's own training signal (docs/method-notes.md §5) with fixed instead of random times
  ``t1, t2, t3 = -0.25, 0.5, 1.25`` (the middles of the training ranges):
  ``V1 = W(ED, t1 phi01)``, ``V3 = W(ES, (1 - t3) phi10)`` and ``V2`` = the interpolator's own
  frame at ``t2``; ED is rebuilt between ``(V1, V2)`` at ``s0 = -t1 / (t2 - t1) = 1/3`` and ES
  between ``(V2, V3)`` at ``s1 = (1 - t2) / (t3 - t2) = 2/3``, both clamped to the range the
  real pair spans; PSNR of
  the two rebuilt ends against the real ones, one MSE over both volumes. It is a consistency
  score, not an accuracy score: TTT with the cycle task minimises a random-time version of it
  on the very same pair, so its cycle PSNR is optimistic by construction.
- **seconds per case**: TTT (if any) plus the flow pass; scoring time is not counted.

The no-motion baseline is the same computation with zero flows and linear blending as the
interpolator: registration scores compare ED with ES as they are (the ED labels unchanged), and
its cycle rebuilds ED as ``5/6 ED + 1/6 ES`` (and ES symmetrically).
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .api import LoadedModel, load_model
from .atomic import strict_json
from .config import DEFAULT_GRID_SIZE
from .datasets import PairSource, find_pairs
from .errors import InputError
from .heads import TTTModel
from .losses import CYCLE_TIMES, Flows, Interpolator, cycle_reconstruction
from .metrics import ncc, psnr
from .model_grid import plan_mapping, to_model_grid
from .preprocess import prepare_pair
from .progress import NullProgress, Progress, SubProgress
from .settings import EvalSetting, evaluation_settings
from .tables import Column, format_table, summarize
from .ttt import Case, adapt_and_apply
from .warp import warp

TEST_SPLIT = "091-100"
DEFAULT_SIZE = DEFAULT_GRID_SIZE
CLASSES = {1: "RV", 2: "Myo", 3: "LV"}
METRICS = ("NCC", "PSNR", "Dice", *(f"Dice_{n}" for n in CLASSES.values()), "cycle_PSNR")
NO_MOTION = "identity"



# ------------------------------------------------------------------------------ data


@dataclass
class LabelledPair:
    """One case on the model grid: ED/ES ``(1, 1, D1, D2, D3)`` in [0, 1] and their labels."""

    case: str
    ed: torch.Tensor
    es: torch.Tensor
    ed_labels: torch.Tensor
    es_labels: torch.Tensor

    def to(self, device: torch.device) -> LabelledPair:
        return LabelledPair(self.case, *(t.to(device) for t in (self.ed, self.es, self.ed_labels,
                                                                self.es_labels)))


def parse_cases(spec: str) -> list[tuple[int, int] | str] | None:
    """``"091-100"``, ``"1,5,91-93"``, ``"patient091"`` or ``"all"`` (None: every case).

    Numbers and ranges match a case name's trailing number; other words match names exactly.
    """
    if spec.strip().lower() == "all":
        return None
    wanted: list[tuple[int, int] | str] = []
    for token in filter(None, (t.strip() for t in spec.split(","))):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", token)
        if match is None:
            wanted.append(token)
            continue
        low = int(match[1])
        high = int(match[2]) if match[2] else low
        if high < low:
            raise InputError(f"--cases range {token!r} runs backwards")
        wanted.append((low, high))
    if not wanted:
        raise InputError("--cases is empty: give numbers, ranges like 091-100, names or 'all'")
    return wanted


def _case_number(name: str) -> int | None:
    match = re.search(r"(\d+)$", name)
    return int(match[1]) if match else None


def _selected(name: str, wanted: list[tuple[int, int] | str]) -> bool:
    number = _case_number(name)
    return any(w == name if isinstance(w, str)
               else number is not None and w[0] <= number <= w[1] for w in wanted)


def select_pairs(data: str | os.PathLike, cases: str | None = TEST_SPLIT,
                 limit: int | None = None) -> list[PairSource]:
    """The ED/ES pairs of ``data`` named by ``cases`` (default the ACDC test split), at most
    ``limit`` of them, in name order."""
    pairs = find_pairs(data)
    wanted = parse_cases(cases) if cases is not None else None
    if wanted is not None:
        pairs = [p for p in pairs if _selected(p.case, wanted)]
    if not pairs:
        raise InputError(f"no case in {data} matches --cases {cases} (the default is the ACDC "
                         "test split 091-100); use --cases all for every pair")
    if limit is not None:
        if limit < 1:
            raise InputError(f"--limit must be >= 1, got {limit}")
        pairs = pairs[:limit]
    return pairs


def label_paths(pair: PairSource) -> tuple[Path, Path]:
    """``<case>_ED_gt.nii.gz`` and ``<case>_ES_gt.nii.gz`` next to the images (ACDC layout)."""
    if pair.is_4d:
        raise InputError(f"pair {pair.case} is two frames of a 4D file; evaluate-pairs needs "
                         "ED/ES files with their labels (the ACDC layout)")

    def label(image: Path) -> Path:
        for ext in (".nii.gz", ".nii"):
            if image.name.endswith(ext):
                return image.with_name(image.name[: -len(ext)] + "_gt" + ext)
        raise InputError(f"{image} is not a NIfTI file: labels are looked for as <name>_gt.nii.gz")

    found = label(pair.path_a), label(pair.path_b)
    for path in found:
        if not path.is_file():
            raise InputError(f"{pair.case} has no label file {path.name}: evaluate-pairs needs "
                             "the ED and ES labels (0 background, 1 RV, 2 myocardium, 3 LV)")
    return found


def _read_labels(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    from .volume_io import read_volume

    labels = read_volume(path)[0]
    if labels.shape != shape:
        raise InputError(f"labels {path.name} have shape {labels.shape}, the image {shape}")
    rounded = np.rint(labels)
    if not np.array_equal(rounded, labels) or rounded.min() < 0 or rounded.max() > max(CLASSES):
        raise InputError(f"{path.name} is not a label map with classes 0..{max(CLASSES)}")
    return rounded.astype(np.float32)


def crop_labels(labels: np.ndarray, size: Sequence[int]) -> torch.Tensor:
    """Labels on the model grid exactly as the images (centre crop/zero-pad, no resampling)."""
    grid = to_model_grid(labels, plan_mapping(labels.shape, size))
    return torch.from_numpy(np.ascontiguousarray(grid, dtype=np.float32))[None, None]


def load_labelled_pair(pair: PairSource, size: Sequence[int] = DEFAULT_SIZE) -> LabelledPair:
    """Read and preprocess one case (:func:`.preprocess.prepare_pair`), labels cropped alike."""
    from .volume_io import read_volume

    ed, es = read_volume(pair.path_a)[0], read_volume(pair.path_b)[0]
    if ed.shape != es.shape:
        raise InputError(f"{pair.case}: ED {ed.shape} and ES {es.shape} differ in shape")
    ed_labels, es_labels = (_read_labels(p, ed.shape) for p in label_paths(pair))
    grid = tuple(size)
    prepared = prepare_pair(ed, es, grid)
    return LabelledPair(pair.case, prepared.i0, prepared.i1,
                        crop_labels(ed_labels, grid), crop_labels(es_labels, grid))


# ------------------------------------------------------------------------------ scores


def dice_scores(predicted: np.ndarray | torch.Tensor,
                truth: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Dice per class (``Dice_RV``, ``Dice_Myo``, ``Dice_LV``) and their mean (``Dice``).

    ``2 |P & T| / (|P| + |T|)``; NaN for a class absent from both, left out of the mean.
    """
    p, t = np.asarray(_numpy(predicted)).round(), np.asarray(_numpy(truth)).round()
    scores = {}
    for value, name in CLASSES.items():
        in_p, in_t = p == value, t == value
        total = int(in_p.sum() + in_t.sum())
        scores[f"Dice_{name}"] = 2.0 * int((in_p & in_t).sum()) / total if total else math.nan
    present = [v for v in scores.values() if not math.isnan(v)]
    return {"Dice": float(np.mean(present)) if present else math.nan, **scores}


def _numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def linear_blend(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """The no-motion interpolator (also an extrapolator for t outside [0, 1])."""
    return (1.0 - t) * a + t * b


def uvinet_interpolator(model: TTTModel) -> Interpolator:
    """UVI-Net's frame at ``t`` between two volumes (flows computed for that pair), unclamped
    (:func:`.losses.cycle_reconstruction` clamps what it returns)."""
    return lambda a, b, t: model.uvinet(a, b, t)


@dataclass
class MotionEstimate:
    """What a setting produced for one case: its flows and its cycle reconstruction."""

    flows: Flows
    cycle: tuple[torch.Tensor, torch.Tensor]
    scoring_seconds: float = 0.0


def estimate(i0: torch.Tensor, i1: torch.Tensor, flows: Flows,
             interpolate: Interpolator) -> MotionEstimate:
    """Flows plus the cycle reconstruction, timing the reconstruction (it is scoring work)."""
    _synchronize(i0.device)
    start = time.perf_counter()
    with torch.no_grad():
        cycle = cycle_reconstruction(i0, i1, flows, interpolate)
    _synchronize(i0.device)
    return MotionEstimate(flows, cycle, time.perf_counter() - start)


def score_case(pair: LabelledPair, result: MotionEstimate) -> dict[str, float]:
    """Every metric of one case and setting (definitions in the module docstring)."""
    phi01 = result.flows[0]
    with torch.no_grad():
        warped = warp(pair.ed, phi01)
        warped_labels = warp(pair.ed_labels, phi01, mode="nearest")
    ends = torch.cat([pair.ed, pair.es]).cpu()
    rebuilt = torch.cat(result.cycle).cpu()
    return {"NCC": ncc(warped.cpu(), pair.es.cpu()), "PSNR": psnr(warped.cpu(), pair.es.cpu()),
            **dice_scores(warped_labels, pair.es_labels), "cycle_PSNR": psnr(rebuilt, ends)}


# ------------------------------------------------------------------------------ settings


def pair_settings(tasks: Iterable[str] = ("none",), schemes: Iterable[str] = ("online",),
                  method: str = "uvinet", **ttt_options: Any) -> list[EvalSetting]:
    """No motion, then (for ``method="uvinet"``) UVI-Net and one row per TTT task and scheme.

    ``ttt_options`` are further :class:`~.config.TTTConfig` fields (steps, lr, optimizer,
    adapt, seed); ``None`` values take the defaults (:func:`~.settings.evaluation_settings`).
    """
    return evaluation_settings(EvalSetting("no motion (ED as is)", NO_MOTION), tasks, schemes,
                               method, **ttt_options)


def _no_motion(pairs: Sequence[LabelledPair]) -> list[MotionEstimate]:
    results = []
    for pair in pairs:
        zero = torch.zeros((1, 3, *pair.ed.shape[2:]), device=pair.ed.device)
        results.append(estimate(pair.ed, pair.es, (zero, zero), linear_blend))
    return results


def _with_model(pairs: Sequence[LabelledPair], setting: EvalSetting, loaded: LoadedModel,
                progress: Progress) -> list[MotionEstimate]:
    """TTT per the setting's scheme (``ttt.adapt_and_apply``), then flows from the adapted model."""
    def apply(model: TTTModel, case: Case) -> MotionEstimate:
        with torch.no_grad():
            flows = model.uvinet.flow(case.i0, case.i1)
        return estimate(case.i0, case.i1, flows, uvinet_interpolator(model))

    cases = [Case(p.ed, p.es, []) for p in pairs]
    return adapt_and_apply(loaded.model, cases, setting.ttt, apply, progress)


def _run_setting(pairs: Sequence[LabelledPair], setting: EvalSetting, loaded: LoadedModel | None,
                 progress: Progress) -> tuple[list[MotionEstimate], float]:
    """Results per case and seconds per case (without the scoring time)."""
    _synchronize(pairs[0].ed.device)
    start = time.perf_counter()
    if setting.method == NO_MOTION:
        results = _no_motion(pairs)
    elif loaded is None:
        raise ValueError(f"setting {setting.label!r} needs a loaded model")
    else:
        results = _with_model(pairs, setting, loaded, progress)
    _synchronize(pairs[0].ed.device)
    total = time.perf_counter() - start - sum(r.scoring_seconds for r in results)
    return results, total / len(pairs)


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock times measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------ evaluation


@dataclass
class PairEvaluation:
    """One row per setting (means, standard deviations, seconds) and every case's scores."""

    rows: list[dict[str, Any]]
    per_case: dict[str, list[dict[str, Any]]]
    cases: list[str]
    size: tuple[int, int, int]

    def to_json(self) -> dict[str, Any]:
        """Plain data for a JSON file; NaN and infinities become null (strict JSON)."""
        return strict_json({"cases": self.cases, "size": list(self.size),
                            "metrics": list(METRICS), "cycle_times": list(CYCLE_TIMES),
                            "rows": self.rows, "per_case": self.per_case})


def check_request(data: str | os.PathLike, cases: str | None, limit: int | None,
                  size: Sequence[int]) -> list[PairSource]:
    """Everything checkable before slow work: grid size, case selection, label files."""
    plan_mapping((16, 16, 16), size)  # an invalid grid size is an InputError
    files = select_pairs(data, cases, limit)
    for pair in files:
        label_paths(pair)
    return files


def evaluate_pairs(data: str | os.PathLike, settings: Sequence[EvalSetting], *,
                   cases: str | None = TEST_SPLIT, limit: int | None = None,
                   size: Sequence[int] = DEFAULT_SIZE, weights: str | os.PathLike | None = None,
                   device: str = "auto", seed: int = 0, model: LoadedModel | None = None,
                   progress: Progress | None = None) -> PairEvaluation:
    """Score every setting on the selected ED/ES pairs of ``data`` (module docstring).

    TTT schemes run across the cases in name order; ``model`` reuses a loaded model.
    """
    progress = progress or NullProgress()
    size = tuple(int(s) for s in size)
    files = check_request(data, cases, limit, size)
    loaded = None
    if any(s.method != NO_MOTION for s in settings):
        loaded = model or load_model(weights, device, seed=seed)
    target = loaded.device if loaded is not None else torch.device("cpu")
    pairs = []
    for k, f in enumerate(files):
        progress.update("load", 0.05 * k / len(files), f"reading {f.case}")
        pairs.append(load_labelled_pair(f, size).to(target))
    rows, per_case = [], {}
    for k, setting in enumerate(settings):
        sub = SubProgress(progress, 0.05 + 0.95 * k / len(settings),
                          0.05 + 0.95 * (k + 1) / len(settings))
        results, seconds = _run_setting(pairs, setting, loaded, sub)
        scores = [score_case(p, r) for p, r in zip(pairs, results, strict=True)]
        per_case[setting.label] = [{"case": p.case, **s} for p, s in zip(pairs, scores,
                                                                          strict=True)]
        rows.append(_row(setting, scores, seconds, loaded))
    return PairEvaluation(rows, per_case, [p.case for p in pairs], size)  # type: ignore[arg-type]


def _row(setting: EvalSetting, scores: list[dict[str, float]], seconds: float,
         loaded: LoadedModel | None) -> dict[str, Any]:
    row: dict[str, Any] = {"label": setting.label, "method": setting.method,
                           **summarize(scores, METRICS), "n_cases": len(scores),
                           "seconds_per_case": seconds}
    if setting.method != NO_MOTION and loaded is not None:
        row.update(ttt=setting.ttt.resolved().to_dict(), weights=loaded.source,
                   trained=loaded.trained)
    return row


#: Columns of the real-pair table (``tables.format_table``).
PAIR_COLUMNS: tuple[Column, ...] = (
    ("NCC", "reg NCC", 3), ("PSNR", "reg PSNR", 2), ("Dice", "Dice", 3), ("Dice_RV", "Dice RV", 3),
    ("Dice_Myo", "Dice Myo", 3), ("Dice_LV", "Dice LV", 3), ("cycle_PSNR", "cycle PSNR", 2))


def format_pairs_table(rows: Sequence[dict[str, Any]]) -> str:
    """Plain-text table: one row per setting, mean ± std over cases."""
    return format_table(rows, PAIR_COLUMNS, label_title="setting", count=("n_cases", "cases"))
