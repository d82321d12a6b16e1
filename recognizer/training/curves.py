"""Training curves as PNG files (matplotlib's Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path

from recognizer.evaluation.report import pyplot, save_png

__all__ = ["ACCURACY_PNG", "LOSS_PNG", "plot_curves"]

LOSS_PNG = "curves_loss.png"
ACCURACY_PNG = "curves_accuracy.png"


def plot_curves(history: list, out_dir: Path) -> list[Path]:
    """Loss and accuracy per epoch (train and val) into two PNGs in `out_dir`; returns their paths."""
    plt = pyplot()
    epochs = [e.epoch for e in history]
    paths = []
    for metric, fname, ylabel in (("loss", LOSS_PNG, "cross-entropy"), ("accuracy", ACCURACY_PNG, "accuracy")):
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        ax.plot(epochs, [getattr(e, f"train_{metric}") for e in history], label="train")
        val = [getattr(e, f"val_{metric}") for e in history]
        if any(v is not None for v in val):
            ax.plot(epochs, val, label="val")
        ax.set(xlabel="epoch", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        # owner only (atomic_write's mode): in the model directory, beside the biometric data
        paths.append(save_png(fig, Path(out_dir) / fname))
    return paths
