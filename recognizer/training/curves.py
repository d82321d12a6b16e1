"""Training curves as PNG files (matplotlib's Agg backend: no display needed)."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ACCURACY_PNG", "LOSS_PNG", "plot_curves"]

LOSS_PNG = "curves_loss.png"
ACCURACY_PNG = "curves_accuracy.png"


def plot_curves(history: list, out_dir: Path) -> list[Path]:
    """Loss and accuracy per epoch (train and val) into two PNGs in `out_dir`; returns their paths."""
    import matplotlib  # heavy: imported only when curves are drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [e.epoch for e in history]
    paths = []
    for metric, fname, ylabel in (("loss", LOSS_PNG, "cross-entropy"), ("accuracy", ACCURACY_PNG, "accuracy")):
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        ax.plot(epochs, [getattr(e, f"train_{metric}") for e in history], label="train")
        val = [getattr(e, f"val_{metric}") for e in history]
        if any(v is not None for v in val):
            ax.plot(epochs, val, label="val")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = Path(out_dir) / fname
        tmp = path.with_name(f".{fname}.tmp.png")
        fig.savefig(tmp)
        plt.close(fig)
        os.chmod(tmp, 0o600)  # in the model directory, beside the biometric data: owner only
        tmp.replace(path)
        paths.append(path)
    return paths
