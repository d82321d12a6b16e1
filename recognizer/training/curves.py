"""Training curves as PNG files (matplotlib's Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path

from recognizer.evaluation.report import pyplot, save_png

__all__ = ["ACCURACY_PNG", "LOSS_PNG", "curve_figure", "plot_curves"]

LOSS_PNG = "curves_loss.png"
ACCURACY_PNG = "curves_accuracy.png"


def curve_figure(history: list, metric: str, ylabel: str, best: int | None = None):
    """One metric per epoch (train and val), titled, with the `best` epoch (the one training kept) marked;
    a matplotlib figure."""
    plt = pyplot()
    epochs = [e.epoch for e in history]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(epochs, [getattr(e, f"train_{metric}") for e in history], marker=".", label="train")
    val = [getattr(e, f"val_{metric}") for e in history]
    if any(v is not None for v in val):
        ax.plot(epochs, val, marker=".", label="val")
    title = f"Fine-tuning: {ylabel} per epoch"
    if best:
        ax.axvline(best, color="grey", linestyle="--", label=f"best epoch ({best}), the one kept")
        title += f", best epoch {best}"
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    if len(epochs) <= 20:
        ax.set_xticks(epochs)  # whole epochs, not 1.25
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_curves(history: list, out_dir: Path, best: int | None = None) -> list[Path]:
    """Loss and accuracy per epoch (train and val), the `best` epoch marked, into two PNGs in `out_dir`;
    returns their paths."""
    paths = []
    for metric, fname, ylabel in (("loss", LOSS_PNG, "cross-entropy"), ("accuracy", ACCURACY_PNG, "accuracy")):
        fig = curve_figure(history, metric, ylabel, best)
        # owner only (atomic_write's mode): in the model directory, beside the biometric data
        paths.append(save_png(fig, Path(out_dir) / fname))
    return paths
