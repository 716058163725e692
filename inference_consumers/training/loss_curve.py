"""The loss curve of a run: ``loss.csv`` (one row per step) and ``loss.png`` (matplotlib, Agg).

``loss.csv`` columns: ``step, epoch, train_loss, validation_loss, learning_rate, tokens,
seconds``. Row 0 holds the validation loss before training; a step's ``validation_loss`` is
empty unless the split was evaluated after it.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from inference_consumers.training.lora import StepRecord

__all__ = ["CSV_FILE", "PNG_FILE", "moving_average", "write_loss_csv", "write_loss_png"]

CSV_FILE = "loss.csv"
PNG_FILE = "loss.png"
COLUMNS = ("step", "epoch", "train_loss", "validation_loss", "learning_rate", "tokens", "seconds")


def write_loss_csv(
    folder: Path, steps: Sequence[StepRecord], validation: Sequence[tuple[int, float]]
) -> Path:
    path = folder / CSV_FILE
    by_step = dict(validation)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        if 0 in by_step:
            writer.writerow([0, 0, "", f"{by_step[0]:.6f}", "", "", ""])
        for s in steps:
            held_out = f"{by_step[s.step]:.6f}" if s.step in by_step else ""
            writer.writerow(
                [
                    s.step,
                    f"{s.epoch:.4f}",
                    f"{s.loss:.6f}",
                    held_out,
                    f"{s.learning_rate:.6g}",
                    s.tokens,
                    f"{s.seconds:.4f}",
                ]
            )
    return path


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """The mean of each value and the ``window - 1`` before it (fewer at the start)."""
    out: list[float] = []
    total = 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def write_loss_png(
    folder: Path,
    steps: Sequence[StepRecord],
    validation: Sequence[tuple[int, float]],
    *,
    title: str,
) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = folder / PNG_FILE
    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    xs = [s.step for s in steps]
    losses = [s.loss for s in steps]
    axes.plot(xs, losses, color="tab:blue", alpha=0.35, linewidth=1, label="train loss (step)")
    window = max(1, min(20, len(steps) // 10))
    if window > 1:
        axes.plot(
            xs,
            moving_average(losses, window),
            color="tab:blue",
            linewidth=2,
            label=f"train loss (mean of {window})",
        )
    if validation:
        axes.plot(
            [step for step, _ in validation],
            [loss for _, loss in validation],
            color="tab:orange",
            marker="o",
            linewidth=2,
            label="validation loss",
        )
    axes.set_xlabel("step")
    axes.set_ylabel("cross entropy per assistant token")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    return path
