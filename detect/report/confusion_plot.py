"""The confusion matrix of detect.evaluation.confusion as a picture: counts in cells, rows normalised
for the colour, so a rare class's errors are as visible as a common one's."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from detect.report.figures import pyplot, save_figure


def plot_confusion_matrix(confusion: dict, path: str | Path, title: str = "") -> Path:
    matrix = np.asarray(confusion["matrix"], dtype=float)
    rows, columns = confusion["rows"], confusion["columns"]
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = pyplot().subplots(figsize=(1.2 + 0.9 * len(columns), 1.0 + 0.6 * len(rows)))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for r in range(len(rows)):
        for c in range(len(columns)):
            ax.text(c, r, f"{int(matrix[r, c])}", ha="center", va="center", fontsize=8,
                    color="white" if shares[r, c] > 0.6 else "black")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel(f"detected (score >= {confusion['score_threshold']:g})")
    ax.set_ylabel(f"truth (IoU >= {confusion['iou']:g}; mislocalised: {confusion['low_iou']:g} <= IoU < {confusion['iou']:g})",
                  fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path, dpi=110)
