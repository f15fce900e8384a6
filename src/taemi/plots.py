"""PNG plots for numbers a user would rather see than read.

Figures are built with matplotlib's object API (`Figure`, no pyplot), so the kit never
touches the global backend: it draws the same in a terminal, a server or a notebook.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from taemi.artifacts import atomic_path
from taemi.data import TARGETS


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    return path


def bar_chart(values: pd.Series, path: str | os.PathLike, title: str,
              xlabel: str = "mean Pearson r") -> Path:
    """One horizontal bar per entry of `values` (its index names the bars)."""
    fig = Figure(figsize=(7, 0.45 * len(values) + 1.2))
    ax = fig.subplots()
    ax.barh([str(i) for i in values.index][::-1], values.to_numpy()[::-1])
    for y, v in enumerate(values.to_numpy()[::-1]):
        ax.text(v, y, f" {v:.3f}", va="center", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return _save(fig, path)


def grouped_bars(table: pd.DataFrame, path: str | os.PathLike, title: str,
                 columns: list[str] | None = None, reference: float | None = None,
                 reference_label: str = "oracle") -> Path:
    """One group of bars per row of `table` (its index), one bar per column."""
    columns = columns or ["mean", *TARGETS]
    fig = Figure(figsize=(max(6, 1.3 * len(columns) + 2), 4))
    ax = fig.subplots()
    width = 0.8 / max(1, len(table))
    x = np.arange(len(columns))
    for i, (name, row) in enumerate(table.iterrows()):
        ax.bar(x + i * width, [row[c] for c in columns], width, label=str(name))
    if reference is not None:
        ax.axhline(reference, color="k", linestyle="--", linewidth=1, label=reference_label)
    ax.set_xticks(x + width * (len(table) - 1) / 2, columns, rotation=20)
    ax.set_ylabel("Pearson r")
    ax.set_title(title)
    # beside the axes: with many entries a legend inside hides the bars
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    return _save(fig, path)


def oof_scatter(y_true: np.ndarray, y_pred: np.ndarray, path: str | os.PathLike,
                title: str) -> Path:
    """Predicted against true intensity, one panel per target."""
    fig = Figure(figsize=(10, 6.5))
    axes = fig.subplots(2, 3, sharex=True, sharey=True)
    for k, ax in enumerate(axes.ravel()):
        ax.scatter(y_true[:, k], y_pred[:, k], s=3, alpha=0.3)
        ax.plot([0, 1], [0, 1], color="k", linewidth=0.8)
        ax.set_title(TARGETS[k], fontsize=9)
    fig.suptitle(title)
    fig.supxlabel("label")
    fig.supylabel("out-of-fold prediction")
    return _save(fig, path)
