"""Matplotlib figures written as PNG (Agg: no display needed)."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from asl_pipeline.atomic import atomic_file  # noqa: E402


def save_figure(figure, path: Path) -> None:
    with atomic_file(path) as tmp:
        figure.savefig(tmp, dpi=100, bbox_inches="tight", format="png")
    plt.close(figure)


def learning_curves(history: list[dict], path: Path, fine_tune_start: int | None = None) -> None:
    """Loss and accuracy per epoch, train and val side by side; a dashed line where fine-tuning starts."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    epochs = range(1, len(history) + 1)
    for axis, metric in zip(axes, ("loss", "accuracy")):
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
    save_figure(figure, path)
