"""Matplotlib figures written as PNG: learning curves and Grad-CAM overlays.

Bare Figures on an Agg canvas, not pyplot: no global figure state and no display needed.
"""
import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from asl_pipeline.atomic import atomic_file


def _save_figure(path: Path, figure: Figure) -> None:
    FigureCanvasAgg(figure)
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")


def _show(axes, rgb: np.ndarray, title: str, fontsize: int) -> None:
    axes.imshow(rgb)
    axes.set_title(title, fontsize=fontsize)
    axes.axis("off")


def save_titled_overlay(path: Path, overlay_rgb: np.ndarray, title: str) -> None:
    figure = Figure(figsize=(4, 4.4))
    _show(figure.add_subplot(), overlay_rgb, title, fontsize=11)
    _save_figure(path, figure)


def save_grid(path: Path, items, columns: int) -> None:
    """items: (overlay_rgb, title) pairs, laid out `columns` to a row."""
    columns = max(1, min(columns, len(items)))
    rows = max(1, math.ceil(len(items) / columns))
    figure = Figure(figsize=(2.4 * columns, 2.6 * rows))
    for index in range(rows * columns):
        axes = figure.add_subplot(rows, columns, index + 1)
        if index < len(items):
            _show(axes, *items[index], fontsize=8)
        else:
            axes.axis("off")
    if not items:
        figure.text(0.5, 0.5, "no images selected", ha="center", va="center")
    _save_figure(path, figure)


def learning_curves(history: list[dict], path: Path, fine_tune_start: int | None = None) -> None:
    """Loss and accuracy per epoch, train and val side by side; a dashed line where fine-tuning starts."""
    figure = Figure(figsize=(11, 4))
    epochs = range(1, len(history) + 1)
    for axis, metric in zip(figure.subplots(1, 2), ("loss", "accuracy")):
        for split in ("train", "val"):
            values = [row.get(f"{split}/{metric}") for row in history]
            if any(v is not None for v in values):
                axis.plot(epochs, values, marker=".", label=split)
        if fine_tune_start:
            axis.axvline(fine_tune_start + 0.5, color="gray", linestyle="--", label="fine-tuning")
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    _save_figure(path, figure)
