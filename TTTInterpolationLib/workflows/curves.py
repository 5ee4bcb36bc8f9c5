"""The training-curve figure written next to a checkpoint (``<out>.curve.png``).

Why a file and not a live plot: training runs in shells, on servers and under ``torchrun``;
a PNG that is rewritten after every epoch can be opened at any time, and it stays with the
weights. Drawn with matplotlib's Agg canvas directly (no pyplot), so it never touches a
display or the global backend of a host application such as Slicer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TRAIN_SERIES = (("total", "total (L_main + lambda L_aux)"), ("main", "cycle loss L_main"),
                ("rotation", "rotation"), ("mae", "MAE"))


def write_training_curve(path: str | Path, history: list[dict[str, Any]]) -> None:
    """Training losses per epoch (left) and validation metrics (right), written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from ..fileio.atomic import atomic_write

    fig = Figure(figsize=(11, 4), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    marker = "o" if len(history) <= 30 else None
    for key, label in TRAIN_SERIES:
        if all(key in h for h in history):
            left.plot(epochs, [h[key] for h in history], marker=marker, label=label)
    left.set(xlabel="epoch", ylabel="training loss (mean over steps)", title="training")
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    _plot_validation(right, [(e, h) for e, h in zip(epochs, history, strict=True)
                             if "val_cycle" in h or "val_psnr_seq" in h])
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def _plot_validation(ax: Any, points: list[tuple[int, dict[str, Any]]]) -> None:
    """Interpolation PSNR of held-out sequences (``--val-cases``) when every point has it;
    else held-out cycle loss (left axis) and registration NCC of warped A vs B (right axis)."""
    ax.set(xlabel="epoch", title="validation")
    if not points:
        ax.text(0.5, 0.5, "no validation data\n(--val-data, --val-fraction or --val-cases)",
                ha="center", va="center", transform=ax.transAxes)
        return
    epochs = [e for e, _ in points]
    if all("val_psnr_seq" in h for _, h in points):  # interpolation itself (--val-cases)
        ax.plot(epochs, [h["val_psnr_seq"] for _, h in points], marker="o", color="tab:blue",
                label="UVI-Net")
        ax.plot(epochs, [h["val_psnr_seq_linear"] for _, h in points], ls="--",
                color="tab:gray", label="linear blending")
        ax.set_ylabel("hidden frames: PSNR (seq), dB")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        return
    ax.plot(epochs, [h["val_cycle"] for _, h in points], marker="o", color="tab:blue",
            label="cycle loss")
    ax.set_ylabel("cycle loss", color="tab:blue")
    ax.grid(alpha=0.3)
    twin = ax.twinx()
    twin.plot(epochs, [h["val_ncc"] for _, h in points], marker="s", color="tab:red",
              label="NCC(warped A, B)")
    twin.set_ylabel("registration NCC (higher is better)", color="tab:red")
