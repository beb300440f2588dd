"""Recall-vs-number-of-proposals plot (the usual way proposal methods are compared)."""
from __future__ import annotations

from pathlib import Path

from detect.report.figures import pyplot, save_figure


def plot_recall_curves(results: dict[str, dict], path: str | Path, title: str = "") -> Path:
    """One line per method and measure (recall@0.5, recall@0.7, AR) against N on a log axis; PNG."""
    fig, ax = pyplot().subplots(figsize=(6.4, 4.4))
    styles = {"recall@0.5": "-", "recall@0.7": "--", "average_recall": ":"}
    for name, result in results.items():
        curve = result["curve"]
        colour = None
        for key, style in styles.items():
            (line,) = ax.plot(curve["num_proposals"], curve[key], style, color=colour, label=f"{name} {key}")
            colour = line.get_color()
    ax.set_xscale("log")
    ax.set_xlabel("number of proposals per image")
    ax.set_ylabel("recall")
    ax.set_ylim(0, 1)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return save_figure(fig, path)
