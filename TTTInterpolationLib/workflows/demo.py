"""``tttinterp demo``: the embedded default run, needing no data and no arguments.

Makes a cardiac phantom with a distribution shift (MRI-like noise, gamma and a coil bias
field), hides the frames between end-diastole and end-systole, predicts them with linear
blending, UVI-Net, and UVI-Net after test-time training with the cycle loss, and writes into
one folder: the input and every prediction as ``.seq.nrrd``, the metrics table (text and JSON)
and a figure in the spirit of the TTT paper's Figure 3.

Every file is written atomically (:mod:`.atomic`): a failure leaves no temp file and no
half-written output behind. The figure is drawn on matplotlib's Agg canvas directly, without
pyplot, so running the demo from a notebook or Slicer never switches the host's backend.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np

from ..data.phantoms.sequences import end_frames, make_phantom_sequence
from ..data.phantoms.shifts import Shift
from ..errors import InputError
from ..fileio.atomic import atomic_write, atomic_write_json, atomic_write_text
from ..fileio.volume_io import write_4d
from ..models.loading import UNTRAINED_NOTE
from ..runtime.progress import make_progress
from ..volume import Sequence4D
from .evaluation import Evaluation, evaluate_sequence, format_table
from .settings import EvalSetting, evaluation_settings

DEMO_SHIFT = Shift(noise=0.03, gamma=1.4, bias=0.2)
DEMO_SIZE = (64, 64, 32)
DEMO_FRAMES = 10


def _slug(label: str) -> str:
    """File-name part of a row label: lower case, each run of other characters one dash."""
    return re.sub(r"[^0-9a-z]+", "-", label.lower()).strip("-")


def save_figure(path: str | os.PathLike, seq: Sequence4D, evaluation: Evaluation) -> None:
    """Inputs, ground truth, each prediction and its error map at the middle hidden frame."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    case = evaluation.cases[0]
    a, b, hidden = case.a, case.b, case.hidden
    low, high = case.window
    mid = len(hidden) // 2
    z = seq.frames.shape[3] // 2
    labels = list(evaluation.predictions)
    columns = 2 + 1 + len(labels)
    fig = Figure(figsize=(2.2 * columns, 4.8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, columns, squeeze=False)
    gt = evaluation.truths[0][mid]
    top = [(f"frame {a} (input)", (seq.frames[a] - low) / (high - low)),
           (f"frame {b} (input)", (seq.frames[b] - low) / (high - low)),
           (f"frame {hidden[mid]} (truth)", gt)]
    top += [(label, evaluation.predictions[label][0][mid]) for label in labels]
    for ax, (title, vol) in zip(axes[0], top, strict=True):
        ax.imshow(vol[:, :, z].T, cmap="gray", vmin=0, vmax=1, origin="lower")
        ax.set_title(title, fontsize=7)
    errors = [np.abs(evaluation.predictions[label][0][mid] - gt)[:, :, z] for label in labels]
    vmax = max(float(e.max()) for e in errors) or 1.0
    for ax in axes[1][:3]:
        ax.set_visible(False)
    for ax, err, row in zip(axes[1][3:], errors, evaluation.rows, strict=True):
        ax.imshow(err.T, cmap="inferno", vmin=0, vmax=vmax, origin="lower")
        ax.set_xlabel(f"|error|, PSNR {row['PSNR']:.2f} dB", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("TTTInterpolation demo: cardiac phantom with "
                 f"shift {DEMO_SHIFT}, mid-ventricular slice", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def run_demo(out: str | os.PathLike = "tttinterp-demo", steps: int = 10, device: str = "auto",
             weights: str | os.PathLike | None = None, progress_kind: str | None = "bar",
             seed: int = 0) -> Evaluation:
    """Run the demo and write its files into ``out`` (created if missing).

    Settings and weights are checked before the folder is made, so bad input leaves nothing.
    """
    from ..models.loading import load_model

    settings = evaluation_settings(EvalSetting("linear blending", "linear"), ["cycle"],
                                   method=("registration", "uvinet"), steps=steps, seed=seed)
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--out {folder} is a file; give a folder for the demo's results")
    if not folder.parent.is_dir():
        raise InputError(f"the folder {folder.parent} for --out does not exist; create it first")
    loaded = load_model(weights, device, seed=seed)
    folder.mkdir(exist_ok=True)
    progress = make_progress(progress_kind)
    if not loaded.trained:
        print(f"tttinterp: note: {UNTRAINED_NOTE}", file=sys.stderr)
    seq = make_phantom_sequence("cardiac", DEMO_FRAMES, DEMO_SIZE, seed=seed, shift=DEMO_SHIFT)
    ed, es = end_frames("cardiac", DEMO_FRAMES)
    evaluation = evaluate_sequence(seq, [(ed, es)], settings, model=loaded, seed=seed,
                                   progress=progress)
    progress.update("write", 0.99, f"writing results to {folder}")
    write_4d(folder / "input.seq.nrrd", seq)
    hidden = evaluation.cases[0].hidden
    for label, predicted in evaluation.predictions.items():
        write_4d(folder / f"{_slug(label)}.seq.nrrd",
                 Sequence4D(np.stack(predicted[0]), seq.geometry,
                            [seq.index_values[i] for i in hidden], seq.index_name,
                            seq.index_unit))
    table = format_table(evaluation.rows)
    header = (f"cardiac phantom {DEMO_SIZE}, shift {DEMO_SHIFT}, frames {ed} -> {es}, hidden "
              f"{hidden}; weights: {loaded.source}\n")
    atomic_write_text(folder / "metrics.txt", header + table + "\n")
    atomic_write_json(folder / "metrics.json", evaluation.rows)  # strict: inf PSNR -> null
    save_figure(folder / "figure.png", seq, evaluation)
    progress.update("done", 1.0, f"wrote {folder}")
    progress.close()
    print(header + table)
    print(f"\nwrote {folder}/: input.seq.nrrd, one .seq.nrrd per method, metrics.txt, "
          "metrics.json, figure.png")
    return evaluation
